"""Training losses, picked by name (``train.loss``), and class weights (``train.class_weights``).

Every loss takes logits (B, C) and targets that are either class indices (B,) or soft distributions (B, C)
(what timm's Mixup/CutMix produce), so mixing never changes which loss can be used.

    ce         cross-entropy (torch's, with label smoothing and class weights)
    focal      focal loss, -(1 - p_t)^gamma log p_t (Lin et al. 2017), class-weighted
    soft_f1    1 - macro F1 computed on softmax probabilities (differentiable; batch statistics)
    ce+soft_f1 ce + train.soft_f1_weight * soft_f1
    bce        timm's BinaryCrossEntropy (one sigmoid per class)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.loss import BinaryCrossEntropy, compute_class_weights
from torch import nn

from comp.errors import ConfigError

LOSSES = ("ce", "focal", "soft_f1", "ce+soft_f1", "bce")

# Our names -> timm compute_class_weights(method, power). timm 1.0.31 has the function; its 'inv_freq' and
# 'effective_num' are the softmax class weights (mean 1); 'balanced' (sklearn's n / (k * count)) is inv_freq
# up to a constant, which the normalisation to mean 1 removes.
CLASS_WEIGHTS = {
    "balanced": ("inv_freq", 1.0),
    "inverse": ("inv_freq", 1.0),
    "inv_freq": ("inv_freq", 1.0),
    "sqrt_inverse": ("inv_freq", 0.5),
    "effective_num": ("effective_num", 1.0),
}


def class_weights(method: str | None, counts: Sequence[int]) -> torch.Tensor | None:
    """Per-class loss weights (mean 1) from the training class counts, or None when ``method`` is None."""
    if method is None:
        return None
    if method not in CLASS_WEIGHTS:
        raise ConfigError(f"train.class_weights: unknown method {method!r}, expected one of {tuple(CLASS_WEIGHTS)}")
    timm_method, power = CLASS_WEIGHTS[method]
    counts_t = torch.as_tensor(list(counts), dtype=torch.float64)
    _, w = compute_class_weights(counts_t, int(counts_t.sum()), method=timm_method, power=power)
    return w


def _soft_targets(target: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Class indices -> smoothed one-hot; soft targets pass through (Mixup already smoothed them)."""
    if target.ndim == 2:
        return target.float()
    off = smoothing / num_classes
    t = torch.full((target.shape[0], num_classes), off, device=target.device)
    return t.scatter_(1, target.long().unsqueeze(1), 1.0 - smoothing + off)


class CrossEntropy(nn.Module):
    """torch's cross-entropy: index or probability targets, label smoothing on index targets, class weights."""

    def __init__(self, smoothing: float = 0.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.smoothing = smoothing
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        smoothing = self.smoothing if target.ndim == 1 else 0.0
        return F.cross_entropy(logits.float(), target, weight=self.weight, label_smoothing=smoothing)


class FocalLoss(nn.Module):
    """-sum_c w_c t_c (1 - p_c)^gamma log p_c, averaged over the batch; gamma=0 is (weighted) cross-entropy."""

    def __init__(self, gamma: float = 2.0, smoothing: float = 0.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma, self.smoothing = gamma, smoothing
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1)
        t = _soft_targets(target, logits.shape[1], self.smoothing)
        if self.weight is not None:
            t = t * self.weight
        return -(t * (1 - logp.exp()).pow(self.gamma) * logp).sum(1).mean()


class SoftMacroF1Loss(nn.Module):
    """1 - mean over classes of 2TP / (2TP + FP + FN), with TP/FP/FN summed from softmax probabilities.

    Differentiable, and it optimises the competition metric directly; its statistics come from the batch, so
    batches should hold several examples of each class (use it with ce, or with a class-balanced sampler).
    """

    def __init__(self, smoothing: float = 0.0, eps: float = 1e-7):
        super().__init__()
        self.smoothing, self.eps = smoothing, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = logits.float().softmax(1)
        t = _soft_targets(target, logits.shape[1], self.smoothing)
        tp = (p * t).sum(0)
        fp = (p * (1 - t)).sum(0)
        fn = ((1 - p) * t).sum(0)
        f1 = 2 * tp / (2 * tp + fp + fn + self.eps)
        return 1 - f1.mean()


class Sum(nn.Module):
    """sum_i w_i * loss_i(logits, target)."""

    def __init__(self, losses: Sequence[nn.Module], weights: Sequence[float]):
        super().__init__()
        self.losses = nn.ModuleList(losses)
        self.weights = list(weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * loss(logits, target) for w, loss in zip(self.weights, self.losses))


class BCE(nn.Module):
    """timm's BinaryCrossEntropy, taking index or soft targets."""

    def __init__(self, smoothing: float, weight: torch.Tensor | None):
        super().__init__()
        self.hard = BinaryCrossEntropy(smoothing=smoothing, weight=weight)
        self.soft = BinaryCrossEntropy(smoothing=0.0, weight=weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (self.soft if target.ndim == 2 else self.hard)(logits.float(), target)


def create_loss(t, class_counts: Sequence[int] | None = None) -> nn.Module:
    """The loss named by ``train.loss``.

    Args (from TrainConfig):
        loss: one of LOSSES.
        label_smoothing: smoothing of index targets (with Mixup, timm's Mixup smooths instead).
        focal_gamma: focusing exponent of ``focal``.
        soft_f1_weight: weight of the soft macro-F1 term in ``ce+soft_f1``.
        class_weights: a CLASS_WEIGHTS method, computed from ``class_counts`` (ce, focal, bce).
    """
    if t.loss not in LOSSES:
        raise ConfigError(f"train.loss: unknown loss {t.loss!r}, expected one of {LOSSES}")
    w = None
    if t.class_weights is not None:
        if class_counts is None:
            raise ValueError("class_counts are needed to compute train.class_weights")
        w = class_weights(t.class_weights, class_counts)
        if t.loss == "soft_f1":
            raise ConfigError("train.class_weights has no effect on soft_f1 (macro F1 already weighs classes "
                              "equally); use loss ce+soft_f1 or leave class_weights empty")
    ls = t.label_smoothing
    if t.loss == "ce":
        return CrossEntropy(ls, w)
    if t.loss == "focal":
        return FocalLoss(t.focal_gamma, ls, w)
    if t.loss == "soft_f1":
        return SoftMacroF1Loss(ls)
    if t.loss == "ce+soft_f1":
        return Sum([CrossEntropy(ls, w), SoftMacroF1Loss(ls)], [1.0, t.soft_f1_weight])
    return BCE(ls, w)


class DistillLoss(nn.Module):
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * base(logits, target)``."""

    def __init__(self, base: nn.Module, alpha: float, temperature: float):
        super().__init__()
        self.base, self.alpha, self.t = base, alpha, temperature

    def forward(self, logits: torch.Tensor, target: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        t = self.t
        log_student = F.log_softmax(logits.float() / t, dim=1)
        # The teacher's probabilities at temperature T: softmax(log p / T) = p^(1/T), renormalised.
        log_teacher = F.log_softmax(torch.log(teacher_probs.float().clamp_min(1e-12)) / t, dim=1)
        kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
        return self.alpha * t * t * kl + (1 - self.alpha) * self.base(logits, target)
