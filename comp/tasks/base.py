"""The ``Task`` interface every task implements (comp.tasks explains the tasks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from comp.errors import ConfigError

if TYPE_CHECKING:  # torch, timm and sklearn load only when a method needs them: reading a config stays fast
    import torch

    from comp.metrics import CV, Metric


@dataclass(frozen=True)
class LogitScores:
    """Validation figures of a model's logits: loss, macro F1 (at 0.5 for several labels), accuracy (every label
    of the image right), the probabilities and the competition metric."""

    loss: float
    macro_f1: float
    acc: float
    probs: np.ndarray
    score: float


class Task:
    """One kind of target. Subclasses fill in every method; ``sep`` is data.label_sep where labels are strings of
    several class names."""

    name = ""
    sigmoid = False  # one independent probability per class (timm Mixup's label_smoothing per class)
    empty_label_ok = False  # an empty label cell is a valid label (no class)
    auto_fixed: tuple[str, ...] = ()  # config keys comp auto leaves alone for this task
    confidence = "top probability"  # what a pseudo-label threshold is compared with
    pseudo_what, pseudo_from = "labels", ""  # what pseudo-labels are, and what made them besides the teacher
    model_meta: dict = {}  # what model.json records of the task
    output_meaning = ""  # what an exported model's output holds (export.json)
    metric_names: tuple[str, ...] = ()  # the data.metric values it scores
    init_metric: str | None = None  # comp init --task NAME: the metric it sets (None: comp init's own choice)
    init_note = ""  # ... and the line comp init says about it
    not_yet: dict[str, str] = {}  # command -> why it does not handle this task yet, and where to look instead
    decision = "top"  # what answers an image: "top" classes, or the "labels" over their thresholds (comp app)

    def __init__(self, sep: str | None = None):
        self.sep = sep if sep is not None else " "

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sep={self.sep!r})"

    def validate(self, data) -> None:
        """The data section's keys that depend on the task (ConfigError naming the key)."""
        raise NotImplementedError

    def metric(self, name: str, classes: Sequence[str] | None = None) -> Metric:
        """data.metric ``name`` for this task (ValueError for a name it does not score)."""
        raise NotImplementedError

    def classes(self, labels: Sequence[str], label_cols: Sequence[str] | None, names) -> list[str]:
        """The class names of a label column, in probability-column order (``names``: the one-class-per-image
        reader, comp.data.competition.class_names)."""
        raise NotImplementedError

    def column_labels(self, raw, cols: list[str], csv: Path):
        """data.label_cols of train.csv (one column per class) -> one label string per row (a pandas Series)."""
        raise NotImplementedError

    def truth(self, labels: Sequence[str], classes: Sequence[str], where: str = "labels") -> np.ndarray:
        """The given labels as targets: class codes (N,) or a multi-hot (N, C)."""
        raise NotImplementedError

    def unknown(self, labels: Sequence[str], classes: Sequence[str]) -> list[str]:
        """The class names in ``labels`` that are not in ``classes``, sorted."""
        raise NotImplementedError

    def codes(self, truth: np.ndarray) -> np.ndarray:
        """The table's ``y`` column (a class code per row) of ``truth``."""
        raise NotImplementedError

    def train_targets(self, rows, truth: np.ndarray) -> np.ndarray:
        """What ``rows`` (table rows with ``y_train``) train on, given their ``truth``."""
        raise NotImplementedError

    def join_targets(self, mine: np.ndarray, theirs: np.ndarray, soft: bool) -> np.ndarray:
        """A fold's training targets with ``theirs`` (added rows') appended."""
        raise NotImplementedError

    def pseudo_targets(self, probs: np.ndarray, soft: bool) -> np.ndarray:
        """What a pseudo-labelled image trains on, from its teacher's (N, C) probabilities (or decisions)."""
        raise NotImplementedError

    def count_line(self, classes: Sequence[str], targets: np.ndarray) -> str:
        """``per class a 3, b 0``: how many of ``targets`` fall in each class, for the provenance lines."""
        raise NotImplementedError

    def split(self, df, data, n_splits: int, seed: int, grouped: bool, echo) -> np.ndarray:
        """``comp folds``: a fold per row of clean_train's table (label, [group]), checked and counted (echo)."""
        raise NotImplementedError

    def cv(self, y: np.ndarray, probs: np.ndarray, classes: Sequence[str], metric: str) -> CV:
        raise NotImplementedError

    def score_logits(self, logits: torch.Tensor, y: np.ndarray, metric: Metric | None,
                     classes: Sequence[str] | None) -> LogitScores:
        raise NotImplementedError

    def blend_probs(self, probs: Sequence[np.ndarray], weights: Sequence[float], method: str = "mean") -> np.ndarray:
        """The members' (N, C) probabilities blended as comp ensemble blends them, as probabilities."""
        raise NotImplementedError

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, C) logits -> probabilities."""
        raise NotImplementedError

    def loss(self, t, targets: np.ndarray, hard: np.ndarray, n_classes: int) -> torch.nn.Module:
        """train.loss for a fold that trains on ``targets`` (``hard``: their class codes)."""
        raise NotImplementedError

    def loss_label(self, t) -> str:
        """The loss as the banner names it."""
        return t.loss

    def check_train(self, cfg) -> None:
        """What training on this task refuses, before any image is decoded (ConfigError naming the key)."""
        raise NotImplementedError

    def sampler_weights(self, hard: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """train.sampler balanced: a drawing weight per training row."""
        raise NotImplementedError

    def fold_rules(self, teacher_oof, folds: Sequence[int], metric: str) -> dict:
        """How each fold's teacher model decides a test image (comp pseudo): {k: rule (comp.tasks.thresholds)}, each
        fit on the teacher's OOF rows outside fold k only (``teacher_oof()``: (probs, truth, each row's fold), read
        only by a task whose rules are fit)."""
        from comp.tasks.thresholds import TopClass

        return {k: TopClass() for k in folds}  # the most likely class: nothing to fit

    def agreement(self, got: np.ndarray, ref: np.ndarray) -> dict:
        """How many images two models' (N, C) probabilities answer alike (comp export's parity record)."""
        return {"agree_argmax": int((got.argmax(1) == ref.argmax(1)).sum())}

    def adapt_head(self, model: torch.nn.Module, n_classes: int) -> None:
        """Change a new timm model's classifier (``n_classes`` outputs) for this task; most keep it."""

    def refuse(self, command: str, **names) -> None:
        """A ConfigError when ``command`` does not handle this task yet (``not_yet``; ``names`` fill its message);
        nothing when it does."""
        if command in self.not_yet:
            raise ConfigError(self.not_yet[command].format(**names))
