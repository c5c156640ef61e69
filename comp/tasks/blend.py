"""Blending members' probabilities, and the greedy weight search (Caruana et al., 2004): one copy of each, used
by ``comp ensemble``, the app, pseudo-labels and every task.

Blend methods (``method``), all giving log-scores whose argmax is the label:
  mean       log of the weighted mean of probabilities
  geometric  weighted mean of log-probabilities (renormalised)
  rank       log of the weighted mean of per-class ranks (each member's column ranked within OOF / test)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import log_softmax
from scipy.stats import rankdata

METHODS = ("mean", "geometric", "rank")
EPS = 1e-7


def rank(p: np.ndarray) -> np.ndarray:
    return rankdata(p, axis=0) / len(p)


def blend(probs: Sequence[np.ndarray], weights: Sequence[float], method: str = "mean") -> np.ndarray:
    """Log-scores (N, C) of the weighted blend of members' probabilities; argmax gives the labels."""
    if method not in METHODS:
        raise ValueError(f"Unknown ensemble method {method!r}, expected one of {METHODS}")
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    if method == "geometric":
        return log_softmax(sum(wi * np.log(np.clip(p, EPS, 1)) for wi, p in zip(w, probs) if wi), axis=1)
    if method == "rank":
        return np.log(sum(wi * rank(p) for wi, p in zip(w, probs) if wi))
    return np.log(np.clip(sum(wi * p for wi, p in zip(w, probs) if wi), EPS, None))


def mean_blend(probs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted mean of the members' probabilities (independent per-class probabilities stay probabilities)."""
    w = np.asarray(weights, np.float64)
    return sum(wi * p for wi, p in zip(w / w.sum(), probs))


def greedy_weights(probs: Sequence[np.ndarray], objective: Callable[[np.ndarray], float], steps: int = 40,
                   combine: Callable[[Sequence[np.ndarray], np.ndarray], np.ndarray] = blend) -> np.ndarray:
    """Non-negative weights summing to 1 that maximise ``objective(combine(probs, counts))`` by greedy selection
    with replacement: the first pick is the best single member; each further pick adds the member whose extra
    copy gives the best blend; returns the counts of the best prefix (the earliest on ties, so fewer members
    win), after ``steps`` picks."""
    m = len(probs)
    counts = np.zeros(m)
    best, best_counts = -np.inf, np.eye(m)[0]
    for _ in range(steps):
        trials = [objective(combine(probs, counts + np.eye(m)[i])) for i in range(m)]
        counts = counts + np.eye(m)[int(np.argmax(trials))]
        if max(trials) > best + 1e-12:
            best, best_counts = max(trials), counts.copy()
    return best_counts / best_counts.sum()
