"""Where a comp auto run's CV - hold-out gap comes from, after the run (reads files only, trains nothing).

The CV is the out-of-fold score: each row predicted by the one fold model that did not train on it. The submission
averages every fold model. Three numbers split the gap:

    each fold model alone on the hold-out      what the CV estimates (a single model)
    the fold average on the hold-out           what the submission is
    both with the hold-out weighted to the training set's class mix (a balanced hold-out scores macro F1 on another
    class mix than the long-tailed training set the CV is computed on)

Each uses the auto run's ledger bias (log-probabilities + bias, argmax), as the submission does.

    python benchmarks/cv_gap.py DIR [--exp auto-a] [--name auto]     (DIR: a benchmarks/auto_vs_notebook.py --dir)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--exp", default="auto-a")
    ap.add_argument("--name", default="auto")
    a = ap.parse_args()
    d = Path(a.dir)
    sol = pd.read_csv(d / "data" / "solution.csv", dtype=str).set_index("image_id")
    prior = pd.read_csv(d / "data" / "train.csv", dtype=str)["label"].value_counts(normalize=True)
    per_fold = pd.read_csv(d / "runs" / a.exp / "test_folds.csv", dtype={"image_id": str})
    ledger = pd.read_csv(d / "submissions" / "ledger.csv", dtype=str)
    row = ledger[ledger["name"] == a.name].iloc[-1]
    bias_of = json.loads(row["options"]).get("bias") or {}
    classes = [c for c in per_fold.columns if c not in ("image_id", "fold")]
    bias = np.array([bias_of.get(c, 0.0) for c in classes])
    y = sol["label"].to_numpy()
    w = np.array([prior[c] for c in y]) * len(classes)

    def f1(p: np.ndarray, weight=None) -> float:
        pred = np.array(classes)[np.argmax(np.log(p + 1e-9) + bias, axis=1)]
        return float(f1_score(y, pred, average="macro", sample_weight=weight))

    folds = [g.set_index("image_id").loc[sol.index, classes].to_numpy() for _, g in per_fold.groupby("fold")]
    print(f"CV (the ledger's, out of fold): {float(row['cv_macro_f1']):.4f}")
    print("| predictions | hold-out macro F1 | weighted to the training mix |\n|---|---|---|")
    for k, p in enumerate(folds):
        print(f"| fold {k} model alone | {f1(p):.4f} | {f1(p, w):.4f} |")
    print(f"| single models' mean | {np.mean([f1(p) for p in folds]):.4f} | {np.mean([f1(p, w) for p in folds]):.4f} |")
    ens = np.mean(folds, axis=0)
    print(f"| the fold average (the submission) | {f1(ens):.4f} | {f1(ens, w):.4f} |")


if __name__ == "__main__":
    main()
