"""The fine-tuning recipe of issue 34, measured: each choice of a pretrained run on photo-like data, one at a time.

Data: `comp sample --kind photo` (colour JPEGs of 300-700 px, objects at varied scale and place on clutter, 10% stored
sideways; --n-train 2000, 1,000 balanced hold-out, imbalance 5), 3 stratified folds. Each variant is fold 0 of
tf_efficientnet_lite0 with its real ImageNet weights (the hub cache, HF_HUB_OFFLINE=1; scripts/lite0_weights.py),
trained by `comp train` at --size px for --epochs epochs, batch 64, light augmentation, and scored on fold 0's
validation rows at its last epoch (no epoch chosen) and on the hold-out (`comp predict --fold 0`, identity view), at
its training size and at 4/3 of it (holdout_fixres: infer.size, the FixRes effect).
Every variant runs with --seeds seeds (train.seed 1, 2, ...); the table gives each run and the mean.

    base        comp's defaults for a pretrained run: head zeroed, AdamW lr 2e-3 (5e-4 before it was measured),
                weight decay 0.05, cosine, warmup by comp's rule, BN trained
    --parts     lr (1e-4 .. 2e-3), lr_high (3e-3, 5e-3), head (timm's own init), old (timm's init and lr 5e-4: the
                defaults before issue 34), warmup, layer_decay, probe
                (freeze_epochs 1), bn (model.freeze_bn), wd, scratch (the same model and size from scratch, at its own
                lr 3e-3), sizes (size against epochs at about equal time, progressive resizing)

    python benchmarks/finetune.py [--dir bench-finetune] [--size 96] [--epochs 5] [--seeds 2] [--parts lr,head]
        [--set train.lr=1e-3 ...]   (--set: the base of every variant, e.g. the best lr once measured)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

os.environ["HF_HUB_OFFLINE"] = "1"  # the weights come from the local hub cache; nothing is downloaded
sys.path.insert(0, str(Path(__file__).parent))
from techniques import comp, holdout_of  # noqa: E402

from comp.orchestrate.auto_plan import fixres_size  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PARTS = {
    "lr": [("lr 1e-4", ["train.lr=1e-4"]), ("lr 2.5e-4", ["train.lr=2.5e-4"]), ("lr 1e-3", ["train.lr=1e-3"]),
           ("lr 2e-3", ["train.lr=2e-3"])],
    "lr_high": [("lr 3e-3", ["train.lr=3e-3"]), ("lr 5e-3", ["train.lr=5e-3"])],
    "head": [("timm's head init", ["model.head_init_scale=1.0"])],
    "old": [("comp's defaults before issue 34: timm's head, lr 5e-4",
             ["model.head_init_scale=1.0", "train.lr=5e-4"])],
    "warmup": [("no warmup", ["train.warmup_epochs=0"])],
    "layer_decay": [("layer_decay 0.75", ["train.layer_decay=0.75"])],
    "probe": [("freeze_epochs 1 (linear probe first)", ["model.freeze_epochs=1"])],
    "bn": [("freeze_bn", ["model.freeze_bn=true"])],
    "wd": [("weight_decay 0.01", ["train.weight_decay=0.01"]), ("weight_decay 1e-4", ["train.weight_decay=1e-4"])],
    "scratch": [("from scratch, lr 3e-3", ["model.pretrained=false", "train.lr=3e-3"])],
    # size against epochs at about equal training time (a fold epoch's cost grows ~2x a step of 32 px here)
    "sizes": [("64px x 12 epochs", ["input.size=64", "train.epochs=12"]),
              ("128px x 3 epochs", ["input.size=128", "train.epochs=3"]),
              ("128px x 4 epochs, progressive from 0.5",
               ["input.size=128", "train.epochs=4", "train.progressive=0.5"])],
}


def competition(where: Path, n_train: int) -> Path:
    if (where / "folds" / "folds.csv").exists():
        return where
    where.mkdir(parents=True, exist_ok=True)
    comp(where, "sample", "data", "--kind", "photo", "--n-train", str(n_train), "--n-test", "1000", "--imbalance", "5",
         "--seed", "1")
    comp(where, "init", "data")
    comp(where, "folds", "--n-splits", "3")
    return where


def hub() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "lite0_weights.py")], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stdout + r.stderr)


def run(where: Path, exp: str, sets: list[str]) -> dict:
    t0 = time.perf_counter()
    args = [a for s in sets for a in ("--set", s)]
    comp(where, "train", "--exp", exp, "--fold", "0", "--resume", *args)
    train_s = time.perf_counter() - t0
    size = int(next(s for s in reversed(sets) if s.startswith("input.size=")).split("=")[1])
    comp(where, "predict", "--exp", exp, "--fold", "0", "--tta", "identity", "--overwrite", "--set",
         f"infer.size={fixres_size(size, top=10**6)}", "--set", "train.cache=disk")
    above = holdout_of(where, f"runs/{exp}/test_fold0.csv")
    comp(where, "predict", "--exp", exp, "--fold", "0", "--tta", "identity", "--overwrite")
    m = pd.read_csv(where / "runs" / exp / "fold_0" / "metrics.csv")
    done = json.loads((where / "runs" / exp / "fold_0" / "done.json").read_text())
    return {"last_val": float(m["val_macro_f1"].iloc[-1]), "best_val": float(done["score"]),
            "first_loss": float(m["train_loss"].iloc[0]),
            "holdout": holdout_of(where, f"runs/{exp}/test_fold0.csv"), "holdout_fixres": above, "train_s": train_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="bench-finetune")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--parts", default="base,lr,head,layer_decay,probe,bn,warmup,scratch")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    a = ap.parse_args()
    print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)
    hub()
    where = competition(Path(a.dir).resolve(), a.n_train)
    base = ["model.name=tf_efficientnet_lite0", f"input.size={a.size}", f"train.epochs={a.epochs}",
            "train.batch_size=64", "augment.preset=light", "infer.tta=[identity]", "train.cache=disk", *a.sets]
    variants = [("base", [])] + [v for p in a.parts.split(",") if p != "base" for v in PARTS[p]]
    rows = []
    for name, sets in variants:
        runs = []
        for seed in range(1, a.seeds + 1):
            tag = "-".join(s.split("=")[0].split(".")[-1] + s.split("=")[1] for s in [*a.sets, *sets]) or "base"
            exp = f"ft{a.size}-{a.epochs}-{tag}-s{seed}".replace("[", "").replace("]", "")
            runs.append(run(where, exp, [*base, *sets, f"train.seed={seed}"]))
            print(f"  {name} seed {seed}: {runs[-1]}", flush=True)
        row = {"variant": name, **{k: statistics.mean(r[k] for r in runs) for k in runs[0]},
               "runs": " / ".join(f"{r['holdout']:.4f}" for r in runs)}
        rows.append(row)
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"), flush=True)
    print(f"\n{a.size}px, {a.epochs} epochs, fold 0 of 3 ({a.n_train} rows), base {' '.join(a.sets) or '(defaults)'}; "
          f"hold-out = the fold-0 model on 1,000 balanced images; mean of {a.seeds} seeds")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
