"""Graded labels (``data.task: ordinal``): one regression output per image, for grades scored by quadratic weighted
kappa (APTOS 2019, Diabetic Retinopathy, PANDA).

The model's classifier is one linear output ``x`` (the grade, started at the middle grade), followed by a fixed
layer that turns it into one logit per grade, ``-(x - k)^2 / 2`` for grade positions k = 0..K-1. Their softmax is a
Gaussian of width 1 around ``x``: every file comp writes keeps one probability column per grade, its argmax is the
nearest grade and its expected grade rises with ``x``. So folds, OOF, TTA, blends, the app and exports work as
for one class per image, and ``comp ensemble --tune-thresholds`` (what ``comp auto`` runs for qwk) fits the cut
points on the expected grade on the OOF, cross-fitted like every decision.

Training is regression: the Huber loss between ``x`` and the grade position (the expected position of a Mixup
target). Labels must be numbers whose text order is their numeric order (0-9, or zero-padded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from comp.errors import ConfigError, DataError
from comp.tasks.base import LogitScores
from comp.tasks.single import SingleLabel

if TYPE_CHECKING:  # loaded by the methods that use them (comp.tasks.base)
    import torch
    from torch import nn

    from comp.metrics import Metric

METRICS = ("qwk", "accuracy", "macro_f1")  # scored from the grade decisions (probability metrics mean nothing here)
NOT_YET = {
    "relabel": "comp relabel ranks suspect single labels from calibrated class probabilities; data.task ordinal's "
               "grade distributions are not, so it does not take data.task ordinal yet (look at the worst-missed "
               "grades in: comp analyze --exp {exp})",
    "lr-find": "comp lr-find does not take data.task ordinal yet; pick train.lr from a short run",
}


class Ordinal(SingleLabel):
    name = "ordinal"
    metric_names = METRICS
    init_metric = "qwk"
    init_note = ("task: ordinal (--task ordinal): one regression output per image, grade cut points fitted on the "
                 "OOF by comp ensemble --tune-thresholds (cross-fitted); metric: qwk (quadratic weighted kappa)")
    auto_fixed = ("train.loss",)  # the loss is the regression's
    model_meta = {"task": "ordinal"}
    not_yet = NOT_YET
    output_meaning = "grade distribution: softmax of -(x - k)^2 / 2 around the regression output x, grades in order"

    def validate(self, data) -> None:
        if data.metric not in METRICS:
            raise ConfigError(f"data.metric {data.metric!r}: data.task ordinal is scored from grade decisions; use one "
                              f"of {', '.join(METRICS)} (qwk: the graded competitions' own)")

    def classes(self, labels: Sequence[str], label_cols: Sequence[str] | None, names) -> list[str]:
        out = names(labels)
        bad = [c for c in out if not c.strip().lstrip("-").replace(".", "", 1).isdigit()]
        if bad:
            raise DataError(f"data.task ordinal needs numeric grades; label {bad[0]!r} is not a number (set data.task: "
                            f"multiclass for named classes)")
        if out != sorted(out, key=float):
            raise DataError(f"data.task ordinal: the grades {', '.join(out)} sort differently as text and as numbers; "
                            f"write them zero-padded (01, 02, ..., 10) so every file keeps one order")
        return out

    def score_logits(self, logits: torch.Tensor, y: np.ndarray, metric: Metric | None,
                     classes: Sequence[str] | None) -> LogitScores:
        import torch

        from comp.tasks.grade_head import GradeLoss

        s = super().score_logits(logits, y, metric, classes)
        loss = GradeLoss()(logits, torch.as_tensor(np.asarray(y, np.int64))).item()
        return LogitScores(loss, s.macro_f1, s.acc, s.probs, s.score)

    def loss(self, t, targets: np.ndarray, hard: np.ndarray, n_classes: int) -> nn.Module:
        from comp.tasks.grade_head import GradeLoss

        return GradeLoss()

    def loss_label(self, t) -> str:
        return "huber on the grade (data.task ordinal)"

    def check_train(self, cfg) -> None:
        t = cfg.train
        for key, value, default in (("train.loss", t.loss, "ce"), ("train.class_weights", t.class_weights, None),
                                    ("train.teacher", t.teacher, None), ("data.relabel", cfg.data.relabel, None)):
            if value != default:
                raise ConfigError(f"{key} {value!r} is not used by data.task ordinal (a regression on the grade with "
                                  f"the Huber loss); leave it unset")

    def adapt_head(self, model: nn.Module, n_classes: int) -> None:
        """timm's classifier (n_classes outputs) -> one output started at the middle grade, then GradeKernel."""
        import torch
        from torch import nn

        from comp.tasks.grade_head import GradeKernel

        path = model.pretrained_cfg["classifier"]
        parent, _, attr = path.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        old = getattr(owner, attr)
        head = nn.Linear(old.in_features, 1)
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_((n_classes - 1) / 2)
        setattr(owner, attr, nn.Sequential(head, GradeKernel(n_classes)))
