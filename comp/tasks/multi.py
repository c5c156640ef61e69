"""Several classes per image (``data.task: multilabel``): a sigmoid per class, a multi-hot (N, C) as truth.

Label cells are class names joined by data.label_sep (``comp.tasks.labels``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from comp.errors import ConfigError
from comp.tasks.base import LogitScores, Task

if TYPE_CHECKING:  # loaded by the methods that use them (comp.tasks.base)
    import torch

    from comp.metrics import CV, Metric

# comp.metrics.MULTILABEL_METRICS' names (tests/test_tasks.py keeps them equal): checked when a config is read
MULTILABEL_METRICS = ("macro_f1", "micro_f1", "samples_f1", "f2", "map", "roc_auc")

# What a command does not handle for several labels per image yet, and where to look instead.
NOT_YET = {
    "relabel": "comp relabel ranks suspect single labels (confident learning over one class per image) and does not "
               "handle data.task multilabel yet; look at the most confidently missed and false labels, each with "
               "its Grad-CAM, in: comp analyze --exp {exp}",
    "lr-find": "comp lr-find does not take data.task multilabel yet; pick train.lr from a short run",
    "pseudo --from a blend": "--from {source}: a multi-label teacher is one experiment (its fold-k thresholds come "
                             "from its own OOF; a blend's weights would need their own fold-safe search on the "
                             "multi-label metric); pass one of {members}",
}


class MultiLabel(Task):
    name = "multilabel"
    sigmoid = True
    empty_label_ok = True  # an image with no label
    auto_fixed = ("train.loss", "train.sampler")  # auto's softmax choices do not apply
    confidence = "confidence"
    pseudo_what, pseudo_from = "multi-label targets", " and thresholds"
    model_meta = {"task": "multilabel"}
    not_yet = NOT_YET
    decision = "labels"
    metric_names = MULTILABEL_METRICS
    output_meaning = "sigmoid probabilities, one per class (multi-label), classes order"

    def validate(self, data) -> None:
        if data.metric not in MULTILABEL_METRICS:
            raise ConfigError(f"data.metric {data.metric!r} does not score several labels per image; with data.task "
                              f"multilabel use one of {', '.join(MULTILABEL_METRICS)}")
        if data.label_sep == "":
            raise ConfigError("data.label_sep must not be empty (a space for '0 5 25')")
        if data.layout != "csv":
            raise ConfigError("data.task multilabel needs data.layout csv (a class-per-folder tree has one label)")

    def metric(self, name: str, classes: Sequence[str] | None = None) -> Metric:
        from comp.metrics import multilabel_metric

        return multilabel_metric(name)

    def classes(self, labels: Sequence[str], label_cols: Sequence[str] | None, names) -> list[str]:
        from comp.tasks.labels import task_classes

        return task_classes(label_cols, labels, self.sep)

    def column_labels(self, raw, cols: list[str], csv: Path):
        from comp.tasks.columns import wide_labels

        return wide_labels(raw, cols, csv, self.sep)

    def truth(self, labels: Sequence[str], classes: Sequence[str], where: str = "labels") -> np.ndarray:
        from comp.tasks.labels import multi_hot

        return multi_hot(list(labels), classes, self.sep, where)

    def unknown(self, labels: Sequence[str], classes: Sequence[str]) -> list[str]:
        from comp.tasks.labels import split_labels

        return sorted({n for v in labels for n in split_labels(v, self.sep)} - set(classes))

    def codes(self, truth: np.ndarray) -> np.ndarray:
        return np.zeros(len(truth), np.int64)  # unused: the targets are the multi-hot truth

    def train_targets(self, rows, truth: np.ndarray) -> np.ndarray:
        return truth

    def join_targets(self, mine: np.ndarray, theirs: np.ndarray, soft: bool) -> np.ndarray:
        return np.concatenate([mine, theirs]).astype(np.float32)  # per-class targets, as they are

    def pseudo_targets(self, probs: np.ndarray, soft: bool) -> np.ndarray:
        return probs  # multi-hot decisions at the teacher's fold thresholds, or its sigmoids

    def count_line(self, classes: Sequence[str], targets: np.ndarray) -> str:
        return "labels per class " + ", ".join(f"{c} {n:.0f}" for c, n in zip(classes, targets.sum(0)))

    def split(self, df, data, n_splits: int, seed: int, grouped: bool, echo) -> np.ndarray:
        from comp.tasks.labels import fold_multilabel

        return fold_multilabel(df, self.sep, n_splits, seed, grouped, echo, data.label_cols)

    def cv(self, y: np.ndarray, probs: np.ndarray, classes: Sequence[str], metric: str) -> CV:
        from comp.metrics import multilabel_cv

        return multilabel_cv(y, probs, classes, metric)

    def score_logits(self, logits: torch.Tensor, y: np.ndarray, metric: Metric | None,
                     classes: Sequence[str] | None) -> LogitScores:
        from comp.tasks.multilabel_losses import evaluate_logits

        m = evaluate_logits(logits, y, metric, classes)
        return LogitScores(m.loss, m.macro_f1, m.acc, m.probs, m.score)

    def blend_probs(self, probs: Sequence[np.ndarray], weights: Sequence[float], method: str = "mean") -> np.ndarray:
        from comp.tasks.blend import mean_blend

        return mean_blend(probs, weights)  # as comp ensemble blends sigmoids: the weighted mean

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid()

    def loss(self, t, targets: np.ndarray, hard: np.ndarray, n_classes: int) -> torch.nn.Module:
        from comp.tasks.multilabel_losses import create_multilabel_loss

        return create_multilabel_loss(t, targets.sum(0), len(targets))

    def loss_label(self, t) -> str:
        return "bce" if t.loss == "ce" else t.loss

    def check_train(self, cfg) -> None:
        from comp.tasks.multilabel_losses import check_multilabel_config

        check_multilabel_config(cfg)

    def fold_rules(self, teacher_oof, folds: Sequence[int], metric: str) -> dict:
        from comp.tasks.thresholds import FAST, LabelsAtCuts, Rule, fit_thresholds

        probs, truth, fold = teacher_oof()
        metric = metric if metric in FAST else "macro_f1"  # a decision metric, else macro F1
        rule = Rule(np.full(probs.shape[1], 0.5))
        return {k: LabelsAtCuts(fit_thresholds(probs[fold != k], truth[fold != k], metric, rule)) for k in folds}

    def agreement(self, got: np.ndarray, ref: np.ndarray) -> dict:
        return {**super().agreement(got, ref), "agree_labels_at_0.5": int(((got >= 0.5) == (ref >= 0.5)).all(1).sum())}

    def sampler_weights(self, hard: np.ndarray, targets: np.ndarray) -> np.ndarray:
        from comp.tasks.multilabel_losses import rarest_label_weights

        return rarest_label_weights(targets)
