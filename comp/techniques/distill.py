"""Knowledge distillation, fold-safe: ``train.teacher: T`` trains fold k of a student on T's fold-k soft targets.

The teacher's fold-k model trained on exactly the rows that the student's fold k trains on (same folds file), so
its soft targets for them carry nothing of fold k's validation rows; the student's CV stays honest. The targets are
computed once at the start of the fold (the teacher's own input size and normalisation, no augmentation) and the
loss is Hinton et al.'s (2015):

    alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * train.loss(student, label)

where ``x_T`` is softmax(logits / T) and T^2 keeps the soft term's gradients on the scale of the hard one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from comp.config import Config, ConfigError
from comp.data.competition import DataError


class DistillLoss(nn.Module):
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * base(logits, target)``."""

    def __init__(self, base: nn.Module, alpha: float, temperature: float):
        super().__init__()
        self.base, self.alpha, self.t = base, alpha, temperature

    def forward(self, logits: torch.Tensor, target: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        t = self.t
        log_student = F.log_softmax(logits.float() / t, dim=1)
        # The teacher's probabilities at temperature T: softmax(log p / T) = p^(1/T), renormalised.
        log_teacher = F.log_softmax(torch.log(teacher_probs.float().clamp_min(1e-12)) / t, dim=1)
        kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
        return self.alpha * t * t * kl + (1 - self.alpha) * self.base(logits, target)


def check_teacher(cfg: Config) -> None:
    """train.teacher: a finished run on the same folds; no Mixup/CutMix (they would mix the images, not targets)."""
    from comp.runs import run_dir

    t = cfg.train
    if t.teacher is None:
        return
    if t.teacher == cfg.exp:
        raise ConfigError("train.teacher names this experiment itself; name the experiment to learn from")
    if cfg.augment.mixup or cfg.augment.cutmix:
        raise ConfigError("train.teacher with augment.mixup/cutmix is not supported: set both to 0 for distillation")
    run = run_dir(t.teacher)
    if not run.is_dir():
        raise ConfigError(f"train.teacher: {run} not found; train the teacher first: comp train --exp {t.teacher} "
                          f"--all-folds")


def teacher_targets(cfg: Config, fold: int, paths: list[str], rows: np.ndarray,
                    accelerator) -> tuple[np.ndarray, list[str]]:
    """Softmax probabilities (len(rows), C) of ``paths[rows]`` from the teacher's fold-``fold`` model, its classes."""
    from comp.infer.predict import Timing, _run_models, find_fold_models
    from comp.runs import run_dir

    run = run_dir(cfg.train.teacher)
    models = [m for m in find_fold_models(run) if m.fold == fold]
    if not models:
        raise DataError(f"train.teacher: {run}/fold_{fold}/model.safetensors not found; fold {fold} of the student "
                        f"may only learn from the teacher's fold-{fold} model (comp train --exp {cfg.train.teacher} "
                        f"--fold {fold})")
    (probs,) = _run_models(cfg, models, paths, [rows], ["identity"], accelerator, f"teacher fold {fold}", Timing(),
                           progress=False)
    return probs, list(models[0].meta["classes"])
