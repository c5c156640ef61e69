"""The regression head and loss of ``data.task: ordinal`` (comp.tasks.ordinal explains them)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GradeKernel(nn.Module):
    """(B, 1) regression output -> (B, K) logits ``-(x - k)^2 / 2``, in float32 whatever the autocast."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("grades", torch.arange(n, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * (x.float() - self.grades) ** 2


def grade_of(logits: torch.Tensor) -> torch.Tensor:
    """The regression output ``x`` back from GradeKernel's logits: l1 - l0 = x - 1/2."""
    logits = logits.float()
    return logits[:, 1] - logits[:, 0] + 0.5


class GradeLoss(nn.Module):
    """Huber loss between the regression output and the target grade position (indices (B,), or distributions
    (B, K) from Mixup: their expected position)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = target.float() @ torch.arange(target.shape[1], device=target.device, dtype=torch.float32) \
            if target.ndim == 2 else target.float()
        return F.smooth_l1_loss(grade_of(logits), y)
