"""What Ray costs `comp launch`: its start-up, and the overhead of a fold run as a job against a plain `comp train`.

    python benchmarks/launch_overhead.py [--n-train 1200] [--epochs 2] [--model test_resnet] [--size 32] [--repeats 2]

Builds a Fashion-MNIST sample competition (`comp sample`, 2 folds) and, in one run, times (wall clock, whole
processes) for each repeat, alternating:
  - plain:  `comp train --exp pN --fold 0`
  - launch: `comp launch --exp lN --fold 0 --cpus-per-job <all cores>` (one job with the same threads)
and reads from the launch output the Ray start time and the job's own seconds. Printed:
  Ray start-up (s)            ray.init of a private local Ray (median)
  launch - plain (s)          everything a 1-fold launch adds: Ray start and stop, scheduling, job start, lock
  job - plain (s)             the job alone (Ray task + lock + `comp train` subprocess) against a plain run
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

COMP = str(Path(sys.executable).parent / "comp")


def run(args: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run([COMP, *args], cwd=cwd, capture_output=True, text=True,
                       env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"))
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"comp {' '.join(args)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return dt, p.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=1200)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--model", default="test_resnet")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="comp-launch-bench-") as d:
        work = Path(d)
        subprocess.run([COMP, "sample", "data", "--n-train", str(a.n_train), "--n-test", "100"], cwd=work, check=True,
                       capture_output=True)
        subprocess.run([COMP, "init", "data"], cwd=work, check=True, capture_output=True)
        cfg = yaml.safe_load((work / "comp.yaml").read_text())
        cfg.update(model={"name": a.model}, input={"size": a.size}, train={"epochs": a.epochs, "batch_size": 64})
        (work / "comp.yaml").write_text(yaml.safe_dump(cfg))
        subprocess.run([COMP, "folds", "--n-splits", "2"], cwd=work, check=True, capture_output=True)
        run(["train", "--exp", "warm", "--fold", "0"], work)  # page cache, bytecode
        plain, launch, start, job = [], [], [], []
        for i in range(a.repeats):
            dt, _ = run(["train", "--exp", f"p{i}", "--fold", "0"], work)
            plain.append(dt)
            dt, out = run(["launch", "--exp", f"l{i}", "--fold", "0", "--cpus-per-job", str(cores), "--no-live"],
                          work)
            launch.append(dt)
            start.append(float(re.search(r"Ray local up in ([\d.]+)s", out).group(1)))
            job.append(float(re.search(rf"^l{i}/fold_0 .*?\s(\d+)\s+done", out, re.M).group(1)))
    med = statistics.median
    print(f"machine: {cores} cores; {a.n_train} images, 2 folds, {a.model} {a.size}px, {a.epochs} epochs, "
          f"{a.repeats} repeats (medians)")
    print(f"plain comp train --fold 0 (s)   {med(plain):7.1f}   {[round(x, 1) for x in plain]}")
    print(f"comp launch --fold 0 (s)        {med(launch):7.1f}   {[round(x, 1) for x in launch]}")
    print(f"Ray start-up (s)                {med(start):7.1f}   {start}")
    print(f"launch - plain (s)              {med(launch) - med(plain):7.1f}")
    print(f"job - plain (s)                 {med(job) - med(plain):7.1f}   (job seconds {job}, whole seconds)")


if __name__ == "__main__":
    main()
