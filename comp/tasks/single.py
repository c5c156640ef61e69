"""One class per image (``data.task: multiclass``): softmax over the classes, class codes as truth."""

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

# comp.metrics.METRICS' names (tests/test_tasks.py keeps them equal): checked when a config is read
METRIC_NAMES = ("macro_f1", "accuracy", "log_loss", "qwk", "roc_auc")


def per_class(classes: Sequence[str], y: np.ndarray) -> str:
    """``a 3, b 0, c 7``: how many of ``y`` (class indices) fall in each class, for the provenance lines."""
    counts = np.bincount(np.asarray(y, np.int64), minlength=len(classes))
    return ", ".join(f"{c} {n}" for c, n in zip(classes, counts))


def balanced_weights(labels: Sequence[int]) -> np.ndarray:
    """Per-row sampling weights 1 / count(class): every class is drawn equally often."""
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    return 1.0 / counts[labels]


class SingleLabel(Task):
    name = "multiclass"
    output_meaning = "softmax probabilities, classes order"
    metric_names = METRIC_NAMES

    def validate(self, data) -> None:
        if data.metric not in METRIC_NAMES:
            raise ConfigError(f"data.metric {data.metric!r} is a multi-label metric; set data.task: multilabel, or "
                              f"pick {', '.join(METRIC_NAMES[:-1])} or {METRIC_NAMES[-1]}")

    def metric(self, name: str, classes: Sequence[str] | None = None) -> Metric:
        from comp.metrics import create_metric

        return create_metric(name, classes)

    def classes(self, labels: Sequence[str], label_cols: Sequence[str] | None, names) -> list[str]:
        return names(labels)

    def column_labels(self, raw, cols: list[str], csv: Path):
        from comp.tasks.columns import onehot_labels

        return onehot_labels(raw, cols, csv)

    def truth(self, labels: Sequence[str], classes: Sequence[str], where: str = "labels") -> np.ndarray:
        """Class codes of the label names (-1 for a name not in ``classes``)."""
        import pandas as pd

        return np.asarray(pd.Categorical(pd.Series(labels).astype(str), categories=list(classes)).codes, np.int64)

    def unknown(self, labels: Sequence[str], classes: Sequence[str]) -> list[str]:
        return sorted({str(v) for v in labels} - {str(c) for c in classes})

    def codes(self, truth: np.ndarray) -> np.ndarray:
        return truth

    def train_targets(self, rows, truth: np.ndarray) -> np.ndarray:
        return rows["y_train"].to_numpy()  # a technique may have changed them (data.relabel)

    def join_targets(self, mine: np.ndarray, theirs: np.ndarray, soft: bool) -> np.ndarray:
        if not soft:
            return np.concatenate([mine, theirs])
        n = mine.shape[1] if mine.ndim == 2 else theirs.shape[1]
        mine = mine if mine.ndim == 2 else np.eye(n)[mine]
        theirs = theirs / theirs.sum(1, keepdims=True) if theirs.ndim == 2 else np.eye(n)[theirs]
        return np.concatenate([mine, theirs]).astype(np.float32)

    def pseudo_targets(self, probs: np.ndarray, soft: bool) -> np.ndarray:
        return probs if soft else probs.argmax(1)

    def count_line(self, classes: Sequence[str], targets: np.ndarray) -> str:
        return "per class " + per_class(classes, targets if targets.ndim == 1 else targets.argmax(1))

    def split(self, df, data, n_splits: int, seed: int, grouped: bool, echo) -> np.ndarray:
        from comp.tasks.folds import fold_single

        return fold_single(df, n_splits, seed, data.group_col if grouped else None, echo)

    def cv(self, y: np.ndarray, probs: np.ndarray, classes: Sequence[str], metric: str) -> CV:
        from comp.metrics import cv_score

        return cv_score(y, probs, classes, metric)

    def score_logits(self, logits: torch.Tensor, y: np.ndarray, metric: Metric | None,
                     classes: Sequence[str] | None) -> LogitScores:
        import torch
        from sklearn.metrics import f1_score

        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(np.array(y, dtype=np.int64))).item()
        probs = logits.softmax(1).numpy()
        pred = probs.argmax(1)
        f1 = float(f1_score(y, pred, average="macro", zero_division=0))
        score = metric(y, probs, classes) if metric is not None else f1
        return LogitScores(loss, f1, float((pred == y).mean()), probs, score)

    def blend_probs(self, probs: Sequence[np.ndarray], weights: Sequence[float], method: str = "mean") -> np.ndarray:
        from scipy.special import softmax

        from comp.tasks.blend import blend

        return softmax(blend(probs, weights, method), axis=1)

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(1)

    def loss(self, t, targets: np.ndarray, hard: np.ndarray, n_classes: int) -> torch.nn.Module:
        from comp.tasks.losses import create_loss

        return create_loss(t, np.bincount(hard, minlength=n_classes))

    def check_train(self, cfg) -> None:
        from comp.tasks.losses import create_loss

        create_loss(cfg.train, class_counts=[1, 1])

    def sampler_weights(self, hard: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return balanced_weights(hard)
