"""Full-data refit: ``comp train --exp E --full`` trains on every row with E's recipe, for as long as its CV says.

There is no held-out row left, so nothing about the run can be chosen by validation; both choices come from E's
finished folds:

- **length**: the median best epoch over E's folds, scaled by n_all / n_train (the full run sees more images per
  epoch, and a model fit on more data usually peaks a little later), rounded;
- **weights**: the full model is the last epoch's weights: the EMA's when ``train.ema`` is on and most of E's folds
  kept their EMA weights as their best checkpoint (ties go to the EMA), else the raw ones.

Seeds: ``--seeds N`` trains ``runs/E/full_s0`` .. ``full_s{N-1}``; ``full_s{i}`` uses ``train.seed + i`` for every
draw (initial weights, batch order, augmentation), so the models differ and their mean is an ensemble.

The full models have no OOF (every row trained them): every CV figure that mentions them comes from E's folds
(``comp ensemble --use full`` weighs on the folds' OOF and records ``cv_from: folds``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from comp.config import Config, ConfigError
from comp.data.competition import DataError, read_folds
from comp.runs import fold_done, full_name

NO_OOF = "every training row trained this model, so no row is left to predict out of fold; CV comes from the folds"


def _done_folds(cfg: Config) -> tuple[dict[int, dict], list[int], object]:
    folds = read_folds(cfg)
    expected = sorted(folds["fold"].unique().tolist())
    done = {k: fold_done(cfg.exp, k) for k in expected}
    missing = [k for k in expected if done[k] is None]
    if missing:
        raise DataError(f"--full takes its length from the CV: fold(s) {missing} of {cfg.exp} are not finished; "
                        f"run comp train --exp {cfg.exp} --all-folds first")
    return done, expected, folds


def full_epochs(cfg: Config) -> tuple[int, str]:
    """(epochs, why) for a full-data run of ``cfg.exp``, from its finished folds' best epochs."""
    done, expected, folds = _done_folds(cfg)
    best = [int(done[k]["epoch"]) for k in expected]
    n_all = len(folds)
    n_train = float(np.mean([int((folds["fold"] != k).sum()) for k in expected]))
    med = float(np.median(best))
    epochs = max(1, int(math.floor(med * n_all / n_train + 0.5)))
    why = (f"median best epoch {med:g} over {len(best)} folds (best epochs {best}) x n_all/n_train = {n_all}/"
           f"{n_train:.0f} = {n_all / n_train:.3f} -> {epochs} epochs")
    return epochs, why


def full_ema(cfg: Config) -> tuple[bool, str]:
    """(use the EMA weights, why): EMA when train.ema is on and at least half of E's folds' best were EMA's."""
    if not cfg.train.ema:
        return False, "train.ema is off: the last epoch's weights"
    done, expected, _ = _done_folds(cfg)
    n_ema = sum(bool(done[k].get("ema")) for k in expected)
    use = 2 * n_ema >= len(expected)
    return use, (f"{n_ema} of {len(expected)} folds kept their EMA weights as best -> the last epoch's "
                 f"{'EMA' if use else 'raw'} weights")


@dataclass
class FullPlan:
    """What ``comp train --full`` trains: the epoch count and weights chosen from the CV, and one config per seed."""

    epochs: int
    why: str
    ema: bool
    ema_why: str
    configs: list[Config]  # E's config with train.epochs and train.seed replaced, one per seed index

    def info(self, i: int) -> dict:
        """What model.json and done.json of ``full_s{i}`` record about the run."""
        return dict(full=True, name=full_name(i), seed_index=i, seed=self.configs[i].train.seed, epochs=self.epochs,
                    epochs_why=self.why, ema=self.ema, ema_why=self.ema_why, oof=None, oof_why=NO_OOF)


def plan_full(cfg: Config, seeds: int = 1) -> FullPlan:
    """The full-data runs of ``cfg.exp``: refuses while a fold of E is unfinished or when the recipe needs a
    validation score (train.scheduler plateau)."""
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: train at least one full model (--seeds 1)")
    per_fold = [k for k, v in (("data.pseudo", cfg.data.pseudo), ("data.synthetic", cfg.data.synthetic),
                               ("train.teacher", cfg.train.teacher)) if v]
    if per_fold:
        raise ConfigError(f"--full: {' and '.join(per_fold)} give fold k what a fold-k teacher or generator made, "
                          f"and a full-data run has no fold; refit an experiment without {per_fold[0]}")
    if cfg.train.scheduler == "plateau":
        raise ConfigError("train.scheduler plateau lowers the lr when the validation score stalls, and a full-data run "
                          "has no validation rows; refit an experiment with a fixed schedule (e.g. cosine)")
    epochs, why = full_epochs(cfg)
    ema, ema_why = full_ema(cfg)
    configs = []
    for i in range(seeds):
        c = copy.deepcopy(cfg)
        c.train.epochs, c.train.seed = epochs, cfg.train.seed + i
        configs.append(c)
    return FullPlan(epochs, why, ema, ema_why, configs)
