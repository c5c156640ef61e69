"""From class scores to labels for macro F1: argmax, or argmax after per-class additive log-score biases.

Argmax maximises accuracy, not macro F1: under class imbalance a rare class is under-predicted, and a small
positive bias on its log-probability trades a few majority-class errors for many minority-class hits. The
biases are fit by coordinate ascent on the OOF; ``cv_bias`` refits them K times inside the OOF and scores each
fit on the part it did not see, so the reported gain is what a new test set should get, not an in-sample one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedKFold

DEFAULT_GRID = np.round(np.arange(-3.0, 3.0001, 0.1), 4)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, class_weight: np.ndarray | None = None
             ) -> float:
    """Macro F1 over the classes present in y_true or y_pred: sklearn's ``f1_score(average='macro')``, with
    ``class_weight`` (C,) as sklearn's ``sample_weight=class_weight[y_true]`` (a label-shift reweighting: the
    figure a test set with another class prior would give; comp.infer.shift).

    Written with bincount because the bias search calls it thousands of times (sklearn: ~1 ms a call).
    """
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    w = None if class_weight is None else np.asarray(class_weight, np.float64)[y_true]
    hit = y_true == y_pred
    tp = np.bincount(y_true[hit], weights=None if w is None else w[hit], minlength=n_classes)
    n_true = np.bincount(y_true, weights=w, minlength=n_classes)
    n_pred = np.bincount(y_pred, weights=w, minlength=n_classes)
    present = (n_true + n_pred) > 0
    f1 = 2 * tp[present] / (n_true[present] + n_pred[present])
    return float(f1.mean()) if f1.size else 0.0


def apply_bias(scores: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Labels (argmax) of log-scores plus per-class biases."""
    return np.argmax(scores if bias is None else scores + bias, axis=1)


def fit_bias(
    scores: np.ndarray, y: np.ndarray, grid: np.ndarray = DEFAULT_GRID, max_rounds: int = 10,
    class_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Per-class additive biases on ``scores`` (N, C log-probabilities) that maximise macro F1 on labels ``y``
    (reweighted by ``class_weight``, see macro_f1).

    Coordinate ascent: each round tries every grid value for one class at a time, the others held, and keeps
    the best (ties keep the value nearest 0, so classes that do not matter stay unbiased). Stops when a round
    changes nothing. Returned biases are centred (a common shift changes no decision).
    """
    scores = np.asarray(scores, np.float64)
    y = np.asarray(y, np.int64)
    n, c = scores.shape
    bias = np.zeros(c)
    order = np.argsort(np.abs(grid), kind="stable")  # nearest-0 first, so argmax breaks ties toward 0
    grid = np.asarray(grid)[order]
    best = macro_f1(y, apply_bias(scores, bias), c, class_weight)
    for _ in range(max_rounds):
        changed = False
        for k in range(c):
            # Class k wins a row exactly when its biased score beats the best other class: one threshold per row.
            others = scores + bias
            others[:, k] = -np.inf
            other_lab = others.argmax(1)
            margin = others[np.arange(n), other_lab] - scores[:, k]
            f1s = np.array([macro_f1(y, np.where(b > margin, k, other_lab), c, class_weight) for b in grid])
            j = int(np.argmax(f1s))
            if f1s[j] > best + 1e-12 and grid[j] != bias[k]:
                bias[k], best, changed = grid[j], f1s[j], True
        if not changed:
            break
    return bias - bias.mean()


@dataclass
class BiasReport:
    argmax_f1: float  # OOF macro F1 of plain argmax
    in_sample_f1: float  # biases fit and scored on all of the OOF (optimistic)
    cv_f1: float  # biases fit on K-1 parts, scored on the held-out part, pooled: the honest estimate
    bias: np.ndarray  # fit on all of the OOF: the one to apply to the test
    fold_biases: list = field(default_factory=list)

    @property
    def cv_gain(self) -> float:
        return self.cv_f1 - self.argmax_f1

    def summary(self, classes: list[str] | None = None) -> str:
        lines = [
            (f"bias tuning: OOF macro F1 argmax {self.argmax_f1:.4f} | tuned in-sample {self.in_sample_f1:.4f} "
             f"| cross-validated {self.cv_f1:.4f} (gain {self.cv_gain:+.4f})")
        ]
        if classes is not None:
            lines.append("  biases: " + ", ".join(f"{c}: {b:+.1f}" for c, b in zip(classes, self.bias)))
        return "\n".join(lines)


def cv_bias(
    scores: np.ndarray, y: np.ndarray, n_splits: int = 5, seed: int = 0, grid: np.ndarray = DEFAULT_GRID,
    class_weight: np.ndarray | None = None,
) -> BiasReport:
    """Fit biases on all of ``scores`` and estimate their benefit honestly with K-fold CV inside them (every
    figure reweighted by ``class_weight`` when given, see macro_f1)."""
    scores = np.asarray(scores, np.float64)
    y = np.asarray(y, np.int64)
    c = scores.shape[1]
    counts = np.bincount(y, minlength=c)
    n_splits = int(max(2, min(n_splits, counts[counts > 0].min())))
    held = np.empty_like(y)
    fold_biases = []
    for tr, va in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(scores, y):
        b = fit_bias(scores[tr], y[tr], grid, class_weight=class_weight)
        held[va] = apply_bias(scores[va], b)
        fold_biases.append(b)
    bias = fit_bias(scores, y, grid, class_weight=class_weight)
    return BiasReport(
        argmax_f1=macro_f1(y, apply_bias(scores), c, class_weight),
        in_sample_f1=macro_f1(y, apply_bias(scores, bias), c, class_weight),
        cv_f1=macro_f1(y, held, c, class_weight),
        bias=bias,
        fold_biases=fold_biases,
    )


# ---------------------------------------------------------------- qwk: cut points on the expected grade


def expected_grade(probs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The probability-weighted mean grade of each row (classes' numeric values ``values``)."""
    return np.asarray(probs, np.float64) @ np.asarray(values, np.float64)


def apply_thresholds(expected: np.ndarray, cuts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Class codes from expected grades: grade ``sorted(values)[j]`` where ``cuts[j-1] <= e < cuts[j]``."""
    order = np.argsort(values, kind="stable")
    return order[np.searchsorted(np.asarray(cuts), expected, side="right")]


def default_cuts(values: np.ndarray) -> np.ndarray:
    """Midpoints between consecutive grades: rounding the expected grade to the nearest one."""
    v = np.sort(np.asarray(values, np.float64))
    return (v[:-1] + v[1:]) / 2


def fit_thresholds(expected: np.ndarray, y: np.ndarray, values: np.ndarray, steps: int = 40,
                   max_rounds: int = 10) -> np.ndarray:
    """Cut points on the expected grade that maximise quadratic weighted kappa against codes ``y``.

    The usual Kaggle recipe (an "optimized rounder"): start from the midpoints, then coordinate ascent, each cut
    tried at ``steps`` values between its neighbours (the others held), until a round changes nothing.
    """
    from comp.metrics import qwk_from_labels

    values = np.asarray(values, np.float64)
    classes = [str(v) for v in values]
    cuts = default_cuts(values)
    lo_all, hi_all = float(np.min(values)), float(np.max(values))

    def score(c):
        return qwk_from_labels(y, apply_thresholds(expected, c, values), classes)

    best = score(cuts)
    for _ in range(max_rounds):
        changed = False
        for k in range(len(cuts)):
            lo = cuts[k - 1] if k else lo_all
            hi = cuts[k + 1] if k + 1 < len(cuts) else hi_all
            for t in np.linspace(lo, hi, steps + 2)[1:-1]:
                trial = cuts.copy()
                trial[k] = t
                s = score(trial)
                if s > best + 1e-12:
                    best, cuts, changed = s, trial, True
        if not changed:
            break
    return cuts


@dataclass
class TuneReport:
    """A post-processing fit on the OOF, with its honest cross-validated estimate (cf. BiasReport)."""

    what: str  # "thresholds" | "temperature"
    metric: str
    plain: float  # OOF metric without it
    in_sample: float  # fit and scored on all of the OOF (optimistic)
    cv: float  # fit on K-1 parts, scored on the held-out part, pooled
    params: np.ndarray  # fit on all of the OOF: what the test gets
    greater_is_better: bool = True

    @property
    def cv_gain(self) -> float:
        d = self.cv - self.plain
        return d if self.greater_is_better else -d

    def summary(self) -> str:
        shown = ", ".join(f"{p:.3f}" for p in np.atleast_1d(self.params))
        return (f"{self.what}: OOF {self.metric} plain {self.plain:.4f} | tuned in-sample {self.in_sample:.4f} "
                f"| cross-validated {self.cv:.4f} (gain {self.cv_gain:+.4f}); {self.what} {shown}")


def _splits(y: np.ndarray, n_splits: int, seed: int):
    counts = np.bincount(y)
    n_splits = int(max(2, min(n_splits, counts[counts > 0].min())))
    return StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)


def cv_thresholds(probs: np.ndarray, y: np.ndarray, values: np.ndarray, n_splits: int = 5,
                  seed: int = 0) -> TuneReport:
    """qwk cut points fit on all of the OOF, and their gain over argmax estimated by K-fold CV inside it."""
    from comp.metrics import qwk_from_labels

    y = np.asarray(y, np.int64)
    e = expected_grade(probs, values)
    classes = [str(v) for v in values]
    held = np.empty_like(y)
    for tr, va in _splits(y, n_splits, seed):
        held[va] = apply_thresholds(e[va], fit_thresholds(e[tr], y[tr], values), values)
    cuts = fit_thresholds(e, y, values)
    return TuneReport(
        "thresholds", "qwk",
        plain=qwk_from_labels(y, np.asarray(probs).argmax(1), classes),
        in_sample=qwk_from_labels(y, apply_thresholds(e, cuts, values), classes),
        cv=qwk_from_labels(y, held, classes), params=cuts,
    )


# ---------------------------------------------------------------- log loss: temperature scaling


def apply_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities softmax(log-scores / T): T > 1 softens over-confident predictions, T < 1 sharpens them."""
    from scipy.special import softmax

    return softmax(np.asarray(scores, np.float64) / temperature, axis=1)


def fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The temperature that minimises the log loss of ``softmax(scores / T)`` on labels ``y`` (Guo et al., 2017)."""
    from scipy.optimize import minimize_scalar
    from sklearn.metrics import log_loss

    labels = list(range(scores.shape[1]))
    res = minimize_scalar(lambda lt: log_loss(y, apply_temperature(scores, np.exp(lt)), labels=labels),
                          bounds=(-3.0, 3.0), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def cv_temperature(scores: np.ndarray, y: np.ndarray, n_splits: int = 5, seed: int = 0) -> TuneReport:
    """A temperature fit on all of the OOF, and its log-loss gain estimated by K-fold CV inside it."""
    from sklearn.metrics import log_loss

    scores = np.asarray(scores, np.float64)
    y = np.asarray(y, np.int64)
    labels = list(range(scores.shape[1]))
    held = np.empty_like(scores)
    for tr, va in _splits(y, n_splits, seed):
        held[va] = apply_temperature(scores[va], fit_temperature(scores[tr], y[tr]))
    t = fit_temperature(scores, y)
    return TuneReport(
        "temperature", "log_loss",
        plain=float(log_loss(y, apply_temperature(scores, 1.0), labels=labels)),
        in_sample=float(log_loss(y, apply_temperature(scores, t), labels=labels)),
        cv=float(log_loss(y, held, labels=labels)), params=np.array([t]), greater_is_better=False,
    )
