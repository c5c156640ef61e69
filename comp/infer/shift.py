"""Label shift: the test set's class prior estimated from the model's own predictions, and the OOF reweighted to it.

A long-tailed training set is often scored on a test set with other class frequencies (balanced, in many
long-tail competitions). Biases tuned on the OOF then fit the training prior, and the OOF's macro F1 is the figure
of a test set that looks like train.csv. Black-box shift estimation (Lipton, Wang & Smola, 2018, "Detecting and
Correcting for Label Shift with Black Box Predictors") needs no test labels: with J[i, j] = P(predicted i, true j)
on the OOF and mu[i] = P(predicted i) on the test, the test prior q satisfies J w = mu for w = q / p (p: the
training prior), solved with non-negative least squares (the soft form: J and mu from probabilities). Every OOF
row of class j then counts w[j] times (comp.infer.decision.macro_f1's ``class_weight``), so the biases comp
ensemble tunes, and the CV it reports, are those of the estimated test prior.

The estimate reads the OOF's labels (C numbers in all, from every OOF row); the biases and the CV that use it are
cross-validated as usual (comp.infer.ensemble's nested loop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOISE_X = 2.0  # "auto" applies the estimate when its total variation from train.csv's prior is 2x the noise's
W_MAX = 20.0  # a class the test seems to hold 20x more often than train.csv is clipped there


@dataclass
class Shift:
    train_prior: np.ndarray  # (C,) class frequencies of the OOF rows
    test_prior: np.ndarray  # (C,) estimated
    weight: np.ndarray  # (C,) test_prior / train_prior: a class-j OOF row counts weight[j] times
    tv: float  # total variation distance between the two priors
    noise: float  # the total variation a test set of this size drawn from train.csv's prior would show
    applied: bool

    def summary(self, classes: list[str]) -> str:
        state = "applied" if self.applied else f"not applied (under {NOISE_X:g}x the {self.noise:.3f} of noise)"
        rows = ", ".join(f"{c} {p:.3f}->{q:.3f}" for c, p, q in zip(classes, self.train_prior, self.test_prior))
        return (f"label shift (black-box shift estimation from the test predictions): total variation "
                f"{self.tv:.3f}, {state}; class prior train.csv -> test (estimated): {rows}")


def estimate_weights(oof_probs: np.ndarray, y: np.ndarray, test_probs: np.ndarray) -> np.ndarray:
    """w = q / p from OOF probabilities ``oof_probs`` of labels ``y`` and test probabilities ``test_probs``: the
    soft confusion J[i, j] = sum of p(i | x) over the OOF rows of class j, / N (hard argmax counts were far less
    stable on a weak model: total variation 0.32 from the truth against 0.07, 800 rows, 10 classes)."""
    from scipy.optimize import nnls

    y = np.asarray(y, np.int64)
    c = oof_probs.shape[1]
    joint = np.stack([oof_probs[y == j].sum(0) for j in range(c)], axis=1) / len(y)
    w, _ = nnls(joint, test_probs.mean(0))
    p = np.bincount(y, minlength=c) / len(y)
    w = np.where(p > 0, np.clip(w, 0.0, W_MAX), 0.0)
    return w / max(1e-12, float(w @ p))


def noise_tv(p: np.ndarray, n_test: int, acc: float) -> float:
    """Expected total variation of the estimate when the test has train.csv's prior ``p``: a class's test share
    of ``n_test`` rows is off by sqrt(2 p (1-p) / (pi n)) on average, and inverting the confusion of a model of
    accuracy ``acc`` multiplies that by about 1 / acc."""
    return float(0.5 * np.sqrt(2 * p * (1 - p) / (np.pi * max(1, n_test))).sum() / max(acc, 0.2))


def estimate_shift(oof_scores: np.ndarray, y: np.ndarray, test_scores: np.ndarray, mode: str = "auto") -> Shift:
    """The estimated test prior of ``y``'s classes from OOF and test log-scores; ``mode`` "on"
    applies it always, "auto" only past NOISE_X times the total variation that noise alone would give."""
    from scipy.special import softmax

    c = oof_scores.shape[1]
    y = np.asarray(y, np.int64)
    pred = oof_scores.argmax(1)
    w = estimate_weights(softmax(oof_scores, axis=1), y, softmax(test_scores, axis=1))
    p = np.bincount(y, minlength=c) / len(y)
    q = w * p
    tv = 0.5 * float(np.abs(q - p).sum())
    noise = noise_tv(p, len(test_scores), float((pred == y).mean()))
    return Shift(p, q, w, tv, noise, mode == "on" or (mode == "auto" and tv >= NOISE_X * noise))
