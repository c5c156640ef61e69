"""The competition's metric (``data.metric``), one factory keyed by name as timm's loss and optimizer factories.

Every metric scores integer class codes ``y`` (indices into the sorted class names) against probabilities
``probs`` (N, C); label metrics score the argmax. The metric picks the best epoch, is the CV figure, the
ensemble weight objective and ``comp score``'s headline; macro F1 is reported beside it whatever it is.

  macro_f1  sklearn f1_score(average="macro") of the argmax                      higher is better
  accuracy  sklearn accuracy_score of the argmax                                 higher is better
  log_loss  sklearn log_loss of the probabilities                                lower is better
  qwk       sklearn cohen_kappa_score(weights="quadratic") of the argmax grade    higher is better
            (class names must be numbers: the ordered grades 0, 1, 2, ...)
  roc_auc   sklearn roc_auc_score one-vs-rest, macro average of the probabilities higher is better

Multi-label (data.task multilabel: ``y`` is (N, C) 0/1, ``probs`` (N, C) sigmoid probabilities; label metrics
score ``probs >= 0.5``, or the 0/1 decisions given to ``from_labels``), all higher is better:

  macro_f1    sklearn f1_score(average="macro")      micro_f1    f1_score(average="micro")
  samples_f1  f1_score(average="samples")            f2          fbeta_score(beta=2, average="samples")
  map         average_precision_score, macro mean over the classes that have a positive
  roc_auc     roc_auc_score, mean column-wise over the classes that have both values
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    cohen_kappa_score,
    f1_score,
    fbeta_score,
    log_loss,
    roc_auc_score,
)


def _norm(probs: np.ndarray) -> np.ndarray:
    """Rows rescaled to sum 1 (sklearn clips zeros itself, at float64 eps, as Kaggle's log loss does)."""
    p = np.clip(np.asarray(probs, np.float64), 0, None)
    return p / np.clip(p.sum(1, keepdims=True), 1e-300, None)


def grade_values(classes: Sequence[str]) -> np.ndarray:
    """The numeric grade of each class name (``"3"`` -> 3.0); ValueError naming a class that is not a number."""
    out = []
    for c in classes:
        try:
            out.append(float(c))
        except ValueError:
            raise ValueError(f"data.metric qwk needs ordered numeric labels (0, 1, 2, ...); class {c!r} is not a "
                             "number: pick another data.metric (macro_f1, accuracy, log_loss, roc_auc)") from None
    return np.asarray(out)


def _macro_f1(y, probs, classes):
    return float(f1_score(y, np.asarray(probs).argmax(1), average="macro", zero_division=0))


def _accuracy(y, probs, classes):
    return float(accuracy_score(y, np.asarray(probs).argmax(1)))


def _log_loss(y, probs, classes):
    return float(log_loss(y, _norm(probs), labels=list(range(len(classes)))))


def _qwk(y, probs, classes):
    return qwk_from_labels(y, np.asarray(probs).argmax(1), classes)


def qwk_from_labels(y, pred, classes) -> float:
    v = grade_values(classes)
    y, pred = v[np.asarray(y, np.int64)], v[np.asarray(pred, np.int64)]
    if len(np.unique(np.concatenate([y, pred]))) < 2:
        return 1.0 if np.array_equal(y, pred) else 0.0  # sklearn divides 0 by 0 here
    return float(cohen_kappa_score(y, pred, weights="quadratic"))


def _roc_auc(y, probs, classes):
    y = np.asarray(y, np.int64)
    p = _norm(probs)
    c = p.shape[1]
    if c == 2:
        return float(roc_auc_score(y, p[:, 1])) if len(np.unique(y)) == 2 else float("nan")
    if len(np.unique(y)) == c:
        return float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(c))))
    # A class absent from y (a small fold): the macro mean over the classes that have positives, as sklearn's
    # one-vs-rest does per class.
    aucs = [roc_auc_score(y == k, p[:, k]) for k in range(c) if 0 < (y == k).sum() < len(y)]
    return float(np.mean(aucs)) if aucs else float("nan")


@dataclass(frozen=True)
class Metric:
    """A competition metric: ``metric(y, probs, classes)`` -> float; ``greater_is_better`` says its direction."""

    name: str
    title: str
    greater_is_better: bool
    uses_proba: bool  # scored from probabilities (a label-only submission can't be scored by it)
    fn: Callable[[np.ndarray, np.ndarray, Sequence[str]], float]

    def __call__(self, y, probs, classes) -> float:
        return self.fn(np.asarray(y, np.int64), np.asarray(probs, np.float64), list(classes))

    def from_labels(self, y, pred, classes) -> float:
        """The metric of hard predictions (class codes); probability metrics raise ValueError."""
        if self.uses_proba:
            raise ValueError(f"{self.name} scores probabilities; a label submission can't be scored by it")
        onehot = np.eye(len(classes))[np.asarray(pred, np.int64)]
        return self(y, onehot, classes)

    def better(self, a: float, b: float | None) -> bool:
        """``a`` strictly better than ``b`` (anything beats None or NaN)."""
        if b is None or np.isnan(b):
            return not np.isnan(a)
        return a > b if self.greater_is_better else a < b

    def gain(self, new: float, old: float) -> float:
        """How much better ``new`` is than ``old`` (positive = better) in either direction."""
        return (new - old) if self.greater_is_better else (old - new)

    @property
    def sign(self) -> float:
        """+1 or -1: ``sign * value`` is always higher-is-better (for schedulers and searches that maximise)."""
        return 1.0 if self.greater_is_better else -1.0


METRICS = {
    m.name: m
    for m in (
        Metric("macro_f1", "macro F1", True, False, _macro_f1),
        Metric("accuracy", "accuracy", True, False, _accuracy),
        Metric("log_loss", "log loss", False, True, _log_loss),
        Metric("qwk", "quadratic weighted kappa", True, False, _qwk),
        Metric("roc_auc", "ROC AUC (one-vs-rest macro)", True, True, _roc_auc),
    )
}
METRIC_NAMES = tuple(METRICS)


def _bits(probs) -> np.ndarray:
    return (np.asarray(probs) >= 0.5).astype(np.int64)


def _f(average: str, beta: float = 1.0):
    def fn(y, probs, classes):
        return float(fbeta_score(y, _bits(probs), beta=beta, average=average, zero_division=0))
    return fn


def _columns(score):
    def fn(y, probs, classes):
        y = np.asarray(y)
        keep = [k for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
        return float(np.mean([score(y[:, k], probs[:, k]) for k in keep])) if keep else float("nan")
    return fn


class MultiLabelMetric(Metric):
    """A multi-label metric: ``y`` (N, C) 0/1, ``probs`` (N, C) independent probabilities."""

    def from_labels(self, y, pred, classes) -> float:
        """The metric of 0/1 decisions (N, C); probability metrics raise ValueError."""
        if self.uses_proba:
            raise ValueError(f"{self.name} scores probabilities; a label submission can't be scored by it")
        return self(y, np.asarray(pred, np.float64), classes)


MULTILABEL_METRICS = {
    m.name: m
    for m in (
        MultiLabelMetric("macro_f1", "macro F1 (multi-label)", True, False, _f("macro")),
        MultiLabelMetric("micro_f1", "micro F1", True, False, _f("micro")),
        MultiLabelMetric("samples_f1", "samples F1", True, False, _f("samples")),
        MultiLabelMetric("f2", "F2 (samples)", True, False, _f("samples", 2.0)),
        MultiLabelMetric("map", "mean average precision", True, True, _columns(average_precision_score)),
        MultiLabelMetric("roc_auc", "ROC AUC (mean column-wise)", True, True, _columns(roc_auc_score)),
    )
}


def create_metric(name: str, classes: Sequence[str] | None = None) -> Metric:
    """The metric called ``name`` (one of METRIC_NAMES); with ``classes``, checks it can score them (qwk: numbers)."""
    if name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}, expected one of {METRIC_NAMES}")
    if name == "qwk" and classes is not None:
        grade_values(classes)
    return METRICS[name]


def multilabel_metric(name: str) -> MultiLabelMetric:
    """The multi-label metric called ``name`` (one of MULTILABEL_METRICS)."""
    if name not in MULTILABEL_METRICS:
        raise ValueError(f"Unknown multi-label metric {name!r}, expected one of {tuple(MULTILABEL_METRICS)}")
    return MULTILABEL_METRICS[name]


@dataclass(frozen=True)
class CV:
    """The cross-validation figure of an OOF: data.metric's value, with macro F1 and accuracy beside it."""

    metric: str
    score: float
    macro_f1: float
    acc: float
    # A config chosen by a search (search.folds): score/macro_f1/acc are over the folds it never saw, and the
    # all-folds figures sit here, optimistic; ``note`` says which (or "selected in-sample" when none is left).
    all_folds_score: float | None = None
    all_folds_macro_f1: float | None = None
    note: str = ""


def cv_score(y: np.ndarray, probs: np.ndarray, classes: Sequence[str], metric: str = "macro_f1") -> CV:
    """The CV of one class per image: ``y`` class codes (N,), ``probs`` (N, C); macro F1 and accuracy of the
    argmax beside the metric."""
    y, probs = np.asarray(y, np.int64), np.asarray(probs, np.float64)
    m = create_metric(metric, classes)
    pred = probs.argmax(1)
    return CV(m.name, float(m(y, probs, classes)), float(f1_score(y, pred, average="macro", zero_division=0)),
              float((pred == y).mean()) if len(y) else float("nan"))


def multilabel_cv(y: np.ndarray, probs: np.ndarray, classes: Sequence[str], metric: str = "macro_f1") -> CV:
    """The CV of several labels per image: ``y`` multi-hot (N, C); macro F1 at 0.5 beside the metric, and
    accuracy = every label of the image right."""
    y, probs = np.asarray(y, np.int64), np.asarray(probs, np.float64)
    m = multilabel_metric(metric)
    bits = _bits(probs)
    return CV(m.name, float(m(y, probs, classes)), float(f1_score(y, bits, average="macro", zero_division=0)),
              float((bits == y).all(1).mean()) if len(y) else float("nan"))
