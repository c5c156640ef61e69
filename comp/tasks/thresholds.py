"""Per-class thresholds: how several labels per image are decided, and how a fold's teacher model decides an image
(``Task.fold_rules``, for comp pseudo).

An image gets every class whose probability reaches the class's threshold, then optionally at most ``top_k`` (the
most likely) and at least one (the most likely when none passes). ``fit_thresholds`` fits one threshold per class
to a metric by coordinate ascent over a grid; comp ensemble cross-fits it (comp.infer.multilabel) and comp pseudo
fits one set per fold on the teacher's OOF rows outside that fold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
FAST = {"macro_f1": ("macro", 1.0), "micro_f1": ("micro", 1.0), "samples_f1": ("samples", 1.0),
        "f2": ("samples", 2.0)}


def fbeta(y: np.ndarray, bits: np.ndarray, average: str, beta: float = 1.0) -> float:
    """sklearn's fbeta_score(zero_division=0) of 0/1 matrices, in numpy (the threshold search calls it often)."""
    y, bits = np.asarray(y) > 0.5, np.asarray(bits) > 0.5
    axis = {"macro": 0, "samples": 1}.get(average)
    tp = (y & bits).sum(axis)
    fp = (~y & bits).sum(axis)
    fn = (y & ~bits).sum(axis)
    b2 = beta * beta
    num = (1 + b2) * tp
    den = num + b2 * fn + fp
    f = np.where(den > 0, num / np.maximum(den, 1), 0.0)
    return float(np.mean(f))


def decide(probs: np.ndarray, thresholds, at_least_one: bool = False, top_k: int | None = None) -> np.ndarray:
    """(N, C) 0/1: classes at or above their threshold, at most ``top_k``, at least one with ``at_least_one``."""
    p = np.asarray(probs, np.float64)
    bits = p >= np.asarray(thresholds, np.float64)
    if top_k is not None and top_k < p.shape[1]:
        rank = np.argsort(np.argsort(-p, axis=1, kind="stable"), axis=1, kind="stable")
        bits &= rank < top_k
    if at_least_one:
        none = ~bits.any(1)
        bits[none, p[none].argmax(1)] = True
    return bits.astype(np.int64)


@dataclass
class Rule:
    """How probabilities become labels."""

    thresholds: np.ndarray
    at_least_one: bool = False
    top_k: int | None = None

    def __call__(self, probs: np.ndarray, thresholds=None) -> np.ndarray:
        return decide(probs, self.thresholds if thresholds is None else thresholds, self.at_least_one, self.top_k)


def label_scorer(metric_name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """data.metric ``metric_name`` of 0/1 decisions (y, bits): numpy F-scores where it has one (fast)."""
    from comp.metrics import MULTILABEL_METRICS

    if metric_name in FAST:
        average, beta = FAST[metric_name]
        return lambda y, bits: fbeta(y, bits, average, beta)
    m = MULTILABEL_METRICS[metric_name]
    return lambda y, bits: m.from_labels(y, bits, [])


def fit_thresholds(probs: np.ndarray, y: np.ndarray, metric_name: str, rule: Rule, passes: int = 2) -> np.ndarray:
    """Per-class thresholds maximising ``metric_name`` of ``rule``'s decisions on (probs, y): coordinate ascent
    over GRID from 0.5 (a change must strictly improve, so ties keep 0.5)."""
    score = label_scorer(metric_name)
    thr = np.full(probs.shape[1], 0.5)
    best = score(y, rule(probs, thr))
    for _ in range(passes):
        changed = False
        for c in range(probs.shape[1]):
            for t in GRID:
                if t == thr[c]:
                    continue
                trial = thr.copy()
                trial[c] = t
                s = score(y, rule(probs, trial))
                if s > best + 1e-12:
                    best, thr, changed = s, trial, True
        if not changed:
            break
    return thr


class TopClass:
    """One class per image: the teacher's most likely class; its confidence is the top probability."""

    cuts = None
    note = ""  # what comp pseudo says of the decision
    confidence_is = "top probability"
    axis = "teacher's top probability (each fold model's own)"

    def confidence(self, p: np.ndarray) -> np.ndarray:
        return p.max(1)

    def targets(self, p: np.ndarray, soft: bool) -> np.ndarray:
        """What a kept image trains on: the probabilities (soft) or the one-hot decision."""
        return p if soft else np.eye(p.shape[1])[p.argmax(1)]

    def counts(self, p: np.ndarray) -> np.ndarray:
        """Images decided per class."""
        return np.bincount(p.argmax(1), minlength=p.shape[1])


class LabelsAtCuts:
    """Several labels per image: every class at or over its threshold (``cuts``); the confidence is that of the
    least sure decision, min over classes of p (a label) or 1 - p (no label)."""

    note = ("multi-label: each fold's labels are the classes at or over its thresholds, fit on the teacher's OOF "
            "without that fold's rows")
    confidence_is = "least sure decision"
    axis = "teacher's confidence: its least sure label decision (each fold model's own)"

    def __init__(self, cuts: np.ndarray):
        self.cuts = cuts

    def confidence(self, p: np.ndarray) -> np.ndarray:
        return np.where(p >= self.cuts, p, 1 - p).min(1)

    def targets(self, p: np.ndarray, soft: bool) -> np.ndarray:
        return p if soft else (p >= self.cuts).astype(np.float64)

    def counts(self, p: np.ndarray) -> np.ndarray:
        """Labels per class (an image counts once for each of its labels)."""
        return (p >= self.cuts).sum(0)
