"""Decode speed of photo-like JPEGs to a model input: the full decode vs JPEG draft (DCT-domain 1/2-1/8 scale).

    python benchmarks/decode_speed.py [--dir SAMPLE] [--n 400] [--targets 64,128,224] [--repeats 5]

One thread, as each of the decode cache's workers runs it: ``resize(load_rgb(path), t)`` against
``resize(load_rgb(path, target=t), t)``, over the same files, the two alternated within each repeat so that
load from other processes falls on both alike; medians over repeats. Also the mean absolute difference of the two
inputs (0-255 levels). Without --dir it builds a ``comp sample --kind photo`` folder (300-700 px JPEGs) first.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from comp.data.images import load_rgb
from comp.data.preprocess import resize
from comp.data.sample import make_sample


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "uptime: unavailable"


def one_pass(paths: list[Path], target: int, use_draft: bool) -> float:
    start = time.perf_counter()
    for p in paths:
        resize(load_rgb(p, target=target if use_draft else None), target)
    return len(paths) / (time.perf_counter() - start)


def mean_abs_diff(paths: list[Path], target: int) -> float:
    return float(np.mean([np.abs(resize(load_rgb(p, target=target), target).astype(np.int16)
                                 - resize(load_rgb(p), target).astype(np.int16)).mean() for p in paths]))


def run(folder: Path, n: int, targets: list[int], repeats: int) -> None:
    paths = sorted((folder / "train_images").glob("*.jpg"))[:n]
    sizes = [min(load_rgb(p).shape[:2]) for p in paths[:50]]
    print(f"{len(paths)} JPEGs from {folder} (short side median {int(np.median(sizes))} px), 1 thread, "
          f"{repeats} repeats, full and draft alternated")
    print(f"load before: {uptime()}")
    one_pass(paths[:20], targets[0], False)  # warm the page cache and the imports
    rates: dict[tuple[int, bool], list[float]] = {(t, d): [] for t in targets for d in (False, True)}
    for r in range(repeats):
        for t in targets:
            for d in ((False, True) if r % 2 == 0 else (True, False)):
                rates[(t, d)].append(one_pass(paths, t, d))
    print(f"load after:  {uptime()}")
    print(f"{'target':>6} {'full img/s':>11} {'draft img/s':>12} {'ratio':>6} {'mean |diff|':>12}")
    for t in targets:
        full, fast = statistics.median(rates[(t, False)]), statistics.median(rates[(t, True)])
        print(f"{t:>6} {full:>11.0f} {fast:>12.0f} {fast / full:>5.2f}x {mean_abs_diff(paths[:50], t):>12.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="a `comp sample --kind photo` folder (default: build one)")
    ap.add_argument("--n", type=int, default=400, help="images decoded per pass")
    ap.add_argument("--targets", default="64,128,224", help="model input sides, comma-separated")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    targets = [int(t) for t in args.targets.split(",")]
    if args.dir:
        run(args.dir, args.n, targets, args.repeats)
        return
    with tempfile.TemporaryDirectory() as tmp:
        info = make_sample(Path(tmp) / "photo", n_train=args.n, n_test=10, seed=0, kind="photo")
        run(info.out, args.n, targets, args.repeats)


if __name__ == "__main__":
    main()
