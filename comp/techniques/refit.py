"""Full-data refit: ``comp train --exp E --full`` trains on every row with E's recipe, for as long as its CV says.

There is no held-out row left, so the length can't be chosen by validation: it comes from E's folds, the median
best epoch scaled by n_all / n_train (the full run sees more images per epoch, and a model fit on more data
usually peaks a little later). The full models have no OOF; every CV figure that mentions them comes from E's
folds.
"""

from __future__ import annotations

import json
import math

import numpy as np

from comp.config import Config
from comp.data import DataError, read_folds
from comp.runs import run_dir


def full_epochs(cfg: Config) -> tuple[int, str]:
    """(epochs, why) for a full-data run of ``cfg.exp``, from its finished folds' best epochs."""
    run = run_dir(cfg.exp)
    done = {}
    for p in sorted(run.glob("fold_*/done.json")):
        k = p.parent.name[5:]
        if k.isdigit():
            done[int(k)] = json.loads(p.read_text(encoding="utf-8"))
    folds = read_folds(cfg)
    expected = sorted(folds["fold"].unique().tolist())
    missing = [k for k in expected if k not in done]
    if missing:
        raise DataError(f"--full takes its length from the CV: fold(s) {missing} of {cfg.exp} are not finished; "
                        f"run comp train --exp {cfg.exp} --all-folds first")
    best = [int(done[k]["epoch"]) for k in expected]
    n_all = len(folds)
    n_train = float(np.mean([int((folds["fold"] != k).sum()) for k in expected]))
    med = float(np.median(best))
    epochs = max(1, int(math.floor(med * n_all / n_train + 0.5)))
    why = (f"median best epoch {med:g} over {len(best)} folds (best epochs {best}) x n_all/n_train = {n_all}/"
           f"{n_train:.0f} = {n_all / n_train:.3f} -> {epochs} epochs")
    return epochs, why
