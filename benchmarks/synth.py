"""Synthetic images for rare classes (comp synth + data.synthetic) on a long-tailed `comp sample` competition.

Data: `comp sample --imbalance 10` (Fashion-MNIST, N train, M hold-out test), 3 stratified folds, resnet18 at
32 px, the same recipe and epochs for both models. Every step is a comp command, run as a user runs it:

    base    comp train --exp base --all-folds; predict; ensemble; score      (no synthetic images)
    synth   comp synth --exp base ... (fold k's generator on the other folds' rows; its quality measured by
            base's fold-k classifier -> reports/base/synth/); configs/syn.yaml = base + data.synthetic: base;
            train; predict; ensemble; score
    cost    the generators' own figures (summary.json: training seconds and steps per fold, sampling images/s),
            and the seconds of a training step at the default size (--kind's default widths, batch 64) here

CV: the ledger's figure (OOF of the fold models, given labels); hold-out: `comp score` against solution.csv.

    python benchmarks/synth.py [--dir bench-synth] [--epochs 6] [--kind gan] [--max-minutes 10] [--fill-to F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from techniques import comp, predicted, submitted, trained  # noqa: E402


def default_step_seconds(kind: str, n: int = 4) -> float:
    """Seconds of a training step of the default 32-px generator of ``kind`` (batch 64) on this machine."""
    import tempfile

    import numpy as np

    from comp.techniques import synth_models
    from comp.techniques.generator import GenSpec

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (256, 32, 32, 3), dtype=np.uint8)
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for steps in (1, n + 1):  # fresh runs: their difference is n steps without the set-up
            t0 = time.perf_counter()
            synth_models.train(GenSpec(32, 10, kind=kind), images, rng.integers(0, 10, 256), steps, 64,
                               synth_models.DEFAULT_LR[kind], 0, Path(tmp) / f"s{steps}", lambda s: None,
                               block=10_000)
            times[steps] = time.perf_counter() - t0
    return (times[n + 1] - times[1]) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="bench-synth")
    ap.add_argument("--n-train", type=int, default=1500)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--imbalance", type=float, default=10)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--kind", default="gan")
    ap.add_argument("--steps", type=int, default=0, help="0: the kind's default")
    ap.add_argument("--max-minutes", type=float, default=10.0)
    ap.add_argument("--fill-to", type=int, default=None, help="default: comp synth's (fill to the median class)")
    args = ap.parse_args()
    where = Path(args.dir).resolve()
    where.mkdir(parents=True, exist_ok=True)
    if not (where / "folds" / "folds.csv").exists():
        comp(where, "sample", "data", "--n-train", str(args.n_train), "--n-test", str(args.n_test), "--imbalance",
             str(args.imbalance), "--overwrite")
        comp(where, "init", "data")
        comp(where, "folds", "--n-splits", "3")
    (where / "configs").mkdir(exist_ok=True)
    base = (f"model: {{name: resnet18}}\ninput: {{size: 32}}\naugment: {{preset: light}}\n"
            f"train: {{epochs: {args.epochs}, batch_size: 64, lr: 0.003}}\ninfer: {{tta: [identity]}}\n")
    (where / "configs" / "base.yaml").write_text(base)
    (where / "configs" / "syn.yaml").write_text(base + "data: {synthetic: base}\n")
    out = {}
    t0 = time.perf_counter()
    trained(where, "base")
    predicted(where, "base")
    out["base"] = submitted(where, "base", "base")
    out["base"]["seconds"] = round(time.perf_counter() - t0)
    resume = ["--resume"] if (where / "folds" / "synth" / "base").exists() else []
    fill = ["--fill-to", str(args.fill_to)] if args.fill_to is not None else []
    log = comp(where, "synth", "--exp", "base", "--kind", args.kind, "--steps", str(args.steps), "--max-minutes",
               str(args.max_minutes), *fill, *resume)
    (where / "synth.log").write_text(log)
    summary = json.loads((where / "folds" / "synth" / "base" / "summary.json").read_text())
    out["generator"] = summary["folds"]
    out["quality"] = json.loads((where / "reports" / "base" / "synth" / "quality.json").read_text())["total"]
    t0 = time.perf_counter()
    trained(where, "syn")
    predicted(where, "syn")
    out["syn"] = submitted(where, "syn", "syn")
    out["syn"]["seconds"] = round(time.perf_counter() - t0)
    out["default_step_seconds"] = default_step_seconds(args.kind)
    (where / "results.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
