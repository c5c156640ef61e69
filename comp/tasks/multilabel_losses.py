"""Multi-label training (``data.task: multilabel``): sigmoid losses, per-class pos_weight, the validation pass.

Every loss takes logits (B, C) and multi-hot targets (B, C) in [0, 1] (Mixup/CutMix mix them: timm's Mixup with
``multi_label=True``), one independent sigmoid per class:

    bce       binary cross-entropy (the default; ``ce``, TrainConfig's default, is read as bce here)
    asl       asymmetric loss (Ridnik et al. 2021): y (1-p)^g+ log p + (1-y) p_m^g- log(1-p_m), p_m = max(p-clip, 0);
              train.asl_gamma_neg, asl_gamma_pos, asl_clip
    focal     sigmoid focal loss (Lin et al. 2017), train.focal_gamma
    soft_f1   1 - macro F1 of the sigmoid probabilities over the batch (differentiable)
    bce+soft_f1

``train.class_weights`` gives each class a ``pos_weight`` (its positives weigh negatives/positives, to the power
0.5 for sqrt_inverse), from the training rows' label counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from comp.errors import ConfigError

MULTILABEL_LOSSES = ("bce", "asl", "focal", "soft_f1", "bce+soft_f1")
POWERS = {"balanced": 1.0, "inverse": 1.0, "inv_freq": 1.0, "sqrt_inverse": 0.5}


def pos_weight(method: str | None, pos: np.ndarray, n: int) -> torch.Tensor | None:
    """Per-class weight of the positive term: (negatives / positives) ** power; None without class_weights."""
    if method is None:
        return None
    if method not in POWERS:
        raise ConfigError(f"train.class_weights {method!r}: with data.task multilabel use one of {tuple(POWERS)} "
                          "(a per-class pos_weight)")
    pos = np.maximum(np.asarray(pos, np.float64), 1.0)
    return torch.as_tensor(((n - pos) / pos).clip(min=1e-3) ** POWERS[method], dtype=torch.float32)


class SigmoidLoss(nn.Module):
    """bce / focal / asl in one: the asymmetric form with (gamma_pos, gamma_neg, clip); bce is (0, 0, 0)."""

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 0.0, clip: float = 0.0,
                 weight: torch.Tensor | None = None):
        super().__init__()
        self.gp, self.gn, self.clip = gamma_pos, gamma_neg, clip
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y = logits.float(), target.float()
        p = torch.sigmoid(x)
        log_p, log_q = F.logsigmoid(x), F.logsigmoid(-x)
        if self.clip > 0:  # probability shifting of the negatives (ASL)
            p_m = (p - self.clip).clamp(min=0)
            log_q = torch.log((1 - p_m).clamp(min=1e-8))
        else:
            p_m = p
        pos = y * log_p
        neg = (1 - y) * log_q
        if self.gp:
            pos = pos * (1 - p).pow(self.gp)
        if self.gn:
            neg = neg * p_m.pow(self.gn)
        if self.weight is not None:
            pos = pos * self.weight
        return -(pos + neg).sum(1).mean() / x.shape[1]


class SoftF1(nn.Module):
    """1 - mean over classes of 2TP / (2TP + FP + FN) from sigmoid probabilities (batch statistics)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, y = torch.sigmoid(logits.float()), target.float()
        tp, fp, fn = (p * y).sum(0), (p * (1 - y)).sum(0), ((1 - p) * y).sum(0)
        return 1 - (2 * tp / (2 * tp + fp + fn + 1e-7)).mean()


class _Sum(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module, wb: float):
        super().__init__()
        self.a, self.b, self.wb = a, b, wb

    def forward(self, logits, target):
        return self.a(logits, target) + self.wb * self.b(logits, target)


def create_multilabel_loss(t, pos: np.ndarray | None = None, n: int = 0) -> nn.Module:
    """The multi-label loss named by train.loss (``pos``: each class's training positives, of ``n`` rows)."""
    name = "bce" if t.loss == "ce" else t.loss
    if name not in MULTILABEL_LOSSES:
        raise ConfigError(f"train.loss {t.loss!r}: with data.task multilabel use one of {MULTILABEL_LOSSES}")
    w = None
    if t.class_weights is not None:
        if name == "soft_f1":
            raise ConfigError("train.class_weights has no effect on soft_f1; use bce+soft_f1 or no class_weights")
        w = pos_weight(t.class_weights, pos if pos is not None else np.ones(1), max(n, 2))
    if name == "asl":
        return SigmoidLoss(t.asl_gamma_pos, t.asl_gamma_neg, t.asl_clip, w)
    if name == "focal":
        return SigmoidLoss(t.focal_gamma, t.focal_gamma, 0.0, w)
    if name == "soft_f1":
        return SoftF1()
    if name == "bce+soft_f1":
        return _Sum(SigmoidLoss(weight=w), SoftF1(), t.soft_f1_weight)
    return SigmoidLoss(weight=w)


def rarest_label_weights(hot: np.ndarray) -> np.ndarray:
    """train.sampler balanced: each row drawn with weight 1 / (count of its rarest label); no label: 1 / rows."""
    hot = np.asarray(hot) > 0.5
    counts = np.maximum(hot.sum(0), 1)
    inv = np.where(hot, 1.0 / counts, 0.0).max(1)
    return np.where(hot.any(1), inv, 1.0 / len(hot))


@dataclass
class MultiLabelEval:
    loss: float
    macro_f1: float  # at 0.5
    acc: float  # every label of the image right
    probs: np.ndarray
    score: float


def evaluate_logits(logits: torch.Tensor, y_val: np.ndarray, metric, classes) -> MultiLabelEval:
    """Validation figures of (N, C) logits against multi-hot ``y_val``: BCE loss, sigmoid probabilities."""
    from sklearn.metrics import f1_score

    y = torch.as_tensor(np.asarray(y_val, np.float32))
    loss = F.binary_cross_entropy_with_logits(logits.float(), y).item()
    probs = torch.sigmoid(logits.float()).numpy()
    bits = (probs >= 0.5).astype(np.int64)
    yi = np.asarray(y_val).astype(np.int64)
    f1 = float(f1_score(yi, bits, average="macro", zero_division=0))
    score = metric(yi, probs, classes) if metric is not None else f1
    return MultiLabelEval(loss, f1, float((bits == yi).all(1).mean()), probs, float(score))


def check_multilabel_config(cfg) -> None:
    """What multi-label training does not do yet: named, so it is never silently ignored."""
    t = cfg.train
    for key, on in (("train.teacher", t.teacher), ("data.relabel", cfg.data.relabel)):
        if on:
            raise ConfigError(f"{key} is not supported with data.task multilabel yet; leave it empty")
    create_multilabel_loss(t, np.ones(2), 4)
