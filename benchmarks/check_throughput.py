"""`comp check` throughput: images/s decoding serially vs the process pool, and a cached re-run.

    python benchmarks/check_throughput.py [--n-train 3000] [--format png]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

from comp.config import load_config
from comp.data.check import run_check
from comp.data.sample import make_sample


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--format", default="png", choices=["png", "jpg"])
    ap.add_argument("--side", type=int, default=28, help="upscale the images to this side (real photos are larger)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_sample(tmp / "comp", n_train=args.n_train, n_test=args.n_test, fmt=args.format)
        if args.side != 28:
            from PIL import Image

            for f in (tmp / "comp").glob("*_images/*"):
                with Image.open(f) as im:
                    big = im.convert("RGB").resize((args.side, args.side), Image.BICUBIC)
                big.save(f, quality=90) if args.format == "jpg" else big.save(f)
        cfg_path = tmp / "comp.yaml"
        data = {"root": str(tmp / "comp"), "id_has_ext": False, "ext": f".{args.format}"}
        cfg_path.write_text(yaml.safe_dump({"data": data}))
        cfg = load_config(cfg_path)
        os.chdir(tmp)
        cores = os.cpu_count() or 1
        times = {}
        settings = [("serial", 1, None), (f"pool x{cores}", cores, None),
                    ("pool, cache cold", cores, "runs/.cache"), ("cached re-run", cores, "runs/.cache")]
        for name, workers, cache in settings:
            t = time.perf_counter()
            rep = run_check(cfg, out_dir=None, workers=workers, echo=lambda s: None, progress=False, cache_dir=cache)
            times[name] = time.perf_counter() - t
            assert rep.ok
        n = rep.n_images
        print(f"{n} {args.format} images ({args.side}x{args.side}), {cores} cores")
        for name, s in times.items():
            print(f"  {name:<18} {s:7.2f} s  {n / s:9.0f} img/s  x{times['serial'] / s:.1f} vs serial")


if __name__ == "__main__":
    main()
