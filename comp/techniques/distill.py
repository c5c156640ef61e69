"""Knowledge distillation, fold-safe: ``train.teacher: T`` trains fold k of a student on T's fold-k soft targets.

The teacher's fold-k model trained on exactly the rows that the student's fold k trains on (same folds file), so
its soft targets for them carry nothing of fold k's validation rows; the student's CV stays honest. The targets are
computed once at the start of the fold (the teacher's own input size and normalisation, no augmentation) and the
loss is Hinton et al.'s (2015), comp.tasks.losses.DistillLoss:

    alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * train.loss(student, label)

where ``x_T`` is softmax(logits / T) and T^2 keeps the soft term's gradients on the scale of the hard one.
"""

from __future__ import annotations

import numpy as np

from comp.config import Config, ConfigError
from comp.data.competition import DataError


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
    from comp.infer.models import Timing, find_fold_models, run_models
    from comp.runs import run_dir

    run = run_dir(cfg.train.teacher)
    models = [m for m in find_fold_models(run) if m.fold == fold]
    if not models:
        raise DataError(f"train.teacher: {run}/fold_{fold}/model.safetensors not found; fold {fold} of the student "
                        f"may only learn from the teacher's fold-{fold} model (comp train --exp {cfg.train.teacher} "
                        f"--fold {fold})")
    (probs,) = run_models(cfg, models, paths, [rows], ["identity"], accelerator, f"teacher fold {fold}", Timing(),
                           progress=False)
    return probs, list(models[0].meta["classes"])
