"""The winning techniques of comp on a `comp sample` competition: CV and hold-out macro F1 side by side.

Data: `comp sample` (Fashion-MNIST, 3,000 train, 1,000 hold-out test, imbalance 5), 5 stratified folds, resnet18
at 32 px, the same recipe and epoch budget for every model (configs/base.yaml below). Every step is a comp
command, run as a user runs it, inside DIR:

    base      comp train --exp base --all-folds; comp predict; comp ensemble             (the 5-fold baseline)
    full      comp train --exp base --full --seeds 3; predict --use full; ensemble --use full
    pseudo    comp pseudo --from base --exp pseudo --threshold 0.9; train; predict; ensemble
    pseudo_soft  the same with every test image and the teacher's probabilities (--top 1.0 --soft)
    distill   train.teacher: base (the 5-fold teacher) -> fold 0 of a student (resnet18, 32 px, same recipe); that
              single model (comp predict --fold 0) against the teacher's 5-fold ensemble and base's own fold-0 model
    relabel   noisy/: the same competition with 5% of train labels flipped to another class; noisy baseline,
              comp relabel, the top suspects accepted (as many as 5% of the rows: a review of the gallery's top),
              retrained; the clean baseline is `base`

CV: the ledger's figure (OOF of the fold models, given labels); hold-out: `comp score` against solution.csv,
which no step ever reads. Steps already done in DIR are reused (comp skips finished folds), so the script can be
re-run after an interruption or to add a step.

    python benchmarks/techniques.py [--dir bench-techniques] [--epochs 10] [--steps base,full,pseudo,...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

COMP = [sys.executable, "-m", "comp"]
ENV = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")


def comp(where: Path, *args: str) -> str:
    t0 = time.perf_counter()
    print(f"  [{where.name}] comp {' '.join(args)}", flush=True)
    r = subprocess.run([*COMP, *args], cwd=where, env=ENV, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-4000:], r.stderr[-4000:], sep="\n")
        raise SystemExit(f"comp {' '.join(args)} failed in {where} (rc {r.returncode})")
    print(f"    {time.perf_counter() - t0:.0f}s", flush=True)
    return r.stdout


def base_config(epochs: int, train_extra: str = "") -> str:
    return (
        "model: {name: resnet18}\n"
        "input: {size: 32}\n"
        "augment: {preset: light}\n"
        f"train: {{epochs: {epochs}, batch_size: 64, lr: 0.003{train_extra}}}\n"
        "infer: {tta: [identity, hflip]}\n"
    )


def competition(where: Path, args, flip: float = 0.0) -> Path:
    """comp sample + init + folds in ``where`` (with ``flip`` of the train labels changed to another class)."""
    if (where / "folds" / "folds.csv").exists():
        return where
    where.mkdir(parents=True, exist_ok=True)
    comp(where, "sample", "data", "--n-train", str(args.n_train), "--n-test", str(args.n_test), "--imbalance",
         str(args.imbalance), "--overwrite")
    if flip:
        train = pd.read_csv(where / "data" / "train.csv", dtype=str)
        classes = sorted(train["label"].unique())
        rng = np.random.default_rng(0)
        pos = rng.choice(len(train), int(round(flip * len(train))), replace=False)
        orig = train["label"].iloc[pos].tolist()
        train.loc[train.index[pos], "label"] = [rng.choice([c for c in classes if c != o]) for o in orig]
        train.to_csv(where / "data" / "train.csv", index=False)
        pd.DataFrame({"image_id": train["image_id"].iloc[pos], "true": orig}).to_csv(where / "flipped.csv",
                                                                                     index=False)
    comp(where, "init", "data")
    comp(where, "folds")
    (where / "configs").mkdir(exist_ok=True)
    (where / "configs" / "base.yaml").write_text(base_config(args.epochs))
    return where


def trained(where: Path, exp: str, *how: str) -> None:
    """comp train (every fold unless ``how`` says otherwise); --resume continues a run this script left."""
    comp(where, "train", "--exp", exp, *(how or ("--all-folds",)), "--resume")


def predicted(where: Path, exp: str, *extra: str, out: str = "test.csv") -> None:
    if not (where / "runs" / exp / out).exists():
        comp(where, "predict", "--exp", exp, *extra)


def submitted(where: Path, name: str, *members: str, extra: tuple = ()) -> dict:
    """comp ensemble (argmax, auto weights) + comp score: {"cv": ..., "holdout": ...}."""
    sub = where / "submissions" / f"{name}.csv"
    if not sub.exists():
        comp(where, "ensemble", *[x for m in members for x in ("--exp", m)], "--name", name, *extra)
    ledger = pd.read_csv(where / "submissions" / "ledger.csv", dtype=str).set_index("name")
    scored = json.loads(comp(where, "score", str(sub.relative_to(where)), "--solution", "data/solution.csv",
                             "--json"))
    return {"cv": float(ledger.loc[name, "cv_macro_f1"]), "holdout": float(scored["macro_f1"])}


def holdout_of(where: Path, test_csv: str) -> float:
    """Hold-out macro F1 of a runs/E/test*.csv's argmax (a single model's or a model set's probabilities)."""
    from sklearn.metrics import f1_score

    probs = pd.read_csv(where / test_csv, dtype={"image_id": str}).set_index("image_id")
    sol = pd.read_csv(where / "data" / "solution.csv", dtype=str).set_index("image_id")
    pred = probs.loc[sol.index].idxmax(axis=1)
    return float(f1_score(sol["label"], pred, average="macro"))


def fold_score(where: Path, exp: str, fold: int) -> float:
    """Macro F1 of a fold model on its validation part (its done.json)."""
    return float(json.loads((where / "runs" / exp / f"fold_{fold}" / "done.json").read_text())["score"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="bench-techniques")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--imbalance", type=float, default=5)
    ap.add_argument("--flip", type=float, default=0.05)
    ap.add_argument("--steps", default="base,full,pseudo,pseudo_soft,distill,relabel")
    args = ap.parse_args()
    steps = args.steps.split(",")
    root = Path(args.dir).resolve()
    clean = competition(root / "clean", args)
    rows: list[tuple[str, str, float | None, float | None, str]] = []
    t_start = time.perf_counter()

    trained(clean, "base")
    predicted(clean, "base")
    base = submitted(clean, "base", "base")
    rows.append(("5-fold baseline", "base", base["cv"], base["holdout"], "reference"))

    if "full" in steps:
        trained(clean, "base", "--full", "--seeds", "3")
        predicted(clean, "base", "--use", "full", out="test_full.csv")
        full = submitted(clean, "base_full", "base", extra=("--use", "full"))
        rows.append(("+ full refit (3 seeds)", "base --full", full["cv"], full["holdout"], "CV from the folds"))

    if "pseudo" in steps:
        if not (clean / "configs" / "pseudo.yaml").exists():
            comp(clean, "pseudo", "--from", "base", "--exp", "pseudo", "--threshold", "0.9")
        trained(clean, "pseudo")
        predicted(clean, "pseudo")
        ps = submitted(clean, "pseudo", "pseudo")
        rows.append(("+ pseudo-labels (p >= 0.9, hard)", "pseudo", ps["cv"], ps["holdout"], ""))

    if "pseudo_soft" in steps:  # every test image, with the teacher's fold-k probabilities as soft targets
        if not (clean / "configs" / "pseudo_soft.yaml").exists():
            comp(clean, "pseudo", "--from", "base", "--exp", "pseudo_soft", "--top", "1.0", "--soft")
        trained(clean, "pseudo_soft")
        predicted(clean, "pseudo_soft")
        pss = submitted(clean, "pseudo_soft", "pseudo_soft")
        rows.append(("+ pseudo-labels (every test image, soft)", "pseudo_soft", pss["cv"], pss["holdout"], ""))

    if "distill" in steps:
        cfg = clean / "configs" / "distill.yaml"
        if not cfg.exists():
            cfg.write_text(base_config(args.epochs, ", teacher: base, distill_alpha: 0.5, distill_t: 2.0"))
        trained(clean, "distill", "--fold", "0")  # one student model: what a fast single model can carry
        predicted(clean, "distill", "--fold", "0", out="test_fold0.csv")
        predicted(clean, "base", "--fold", "0", out="test_fold0.csv")
        rows.append(("single model (fold 0), not distilled", "base fold 0", fold_score(clean, "base", 0),
                     holdout_of(clean, "runs/base/test_fold0.csv"), "CV: fold 0's validation part"))
        rows.append(("single model (fold 0), distilled from base", "distill fold 0", fold_score(clean, "distill", 0),
                     holdout_of(clean, "runs/distill/test_fold0.csv"),
                     "teacher = the 5-fold row; alpha 0.5, T 2"))

    if "relabel" in steps:
        noisy = competition(root / "noisy", args, flip=args.flip)
        trained(noisy, "base")
        predicted(noisy, "base")
        nb = submitted(noisy, "base", "base")
        rel = noisy / "reports" / "base" / "relabel.csv"
        if not rel.exists():
            comp(noisy, "relabel", "--exp", "base", "--gallery", "0")
        # The review, automated: accept the top suspects, as many as args.flip of the rows (a person would look at
        # that many pictures in the gallery and accept the clear ones), leave the rest as they are.
        df = pd.read_csv(rel, dtype=str, keep_default_na=False)
        n_review = int(round(args.flip * len(pd.read_csv(noisy / "data" / "train.csv"))))
        df["accept"] = ["accept" if i < n_review else "" for i in range(len(df))]
        df.to_csv(rel, index=False)
        flipped = pd.read_csv(noisy / "flipped.csv", dtype=str)
        found = int(flipped["image_id"].isin(df["id"]).sum())
        top = df.head(n_review).merge(flipped, left_on="id", right_on="image_id")
        fixed = int((top["suggested"] == top["true"]).sum())
        (noisy / "configs" / "relabeled.yaml").write_text(
            base_config(args.epochs) + "data: {relabel: reports/base/relabel.csv}\n")
        trained(noisy, "relabeled")
        predicted(noisy, "relabeled")
        rb = submitted(noisy, "relabeled", "relabeled")
        rows.append((f"noisy baseline ({args.flip:.0%} flipped)", "noisy base", nb["cv"], nb["holdout"],
                     "CV on noisy labels"))
        rows.append((f"noisy + relabel (top {n_review} suspects accepted)", "relabeled", rb["cv"], rb["holdout"],
                     f"{len(df)} suspects hold {found} of the {len(flipped)} flips; the top {n_review} hold "
                     f"{len(top)}, {fixed} of them given back their true label"))
        rows.append(("clean baseline", "base", base["cv"], base["holdout"], ""))

    ref = base["holdout"]
    print(f"\n{'technique':<44} {'CV macro F1':>11} {'hold-out':>9} {'vs base':>8}  note")
    for label, _, cv, hold, note in rows:
        d = "" if hold is None else f"{hold - ref:+.4f}"
        print(f"{label:<44} {cv:11.4f} {hold:9.4f} {d:>8}  {note}")
    print(f"({time.perf_counter() - t_start:.0f}s; {args.epochs} epochs per model, resnet18 at 32 px, "
          f"{args.n_train} train / {args.n_test} hold-out)")
    out = root / "results.json"
    out.write_text(json.dumps([dict(zip(("technique", "exp", "cv", "holdout", "note"), r)) for r in rows],
                              indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
