"""The accelerator: the one place comp asks accelerate for a fresh state, and the device questions around it.

One process may train and predict several experiments (tests, notebooks, ``comp tune`` trials): each starts
accelerate's shared state afresh (``fresh_state``), keeping the process group (torchrun / accelerate launch).
"""

from __future__ import annotations

import torch

from comp.config import ConfigError


def fresh_state() -> None:
    """Forget accelerate's process-wide state (mixed precision, gradient accumulation), keeping the process group.

    accelerate has no public call for this; ``_reset_state`` is what its own tests use between Accelerators."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def has_accelerator() -> bool:
    """A GPU (or another torch accelerator) is there."""
    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return bool(acc.is_available())
    return torch.cuda.is_available()


def resolve_precision(p: str) -> str:
    """auto: bf16 on a GPU that has it, fp16 on other GPUs, fp32 ("no") on CPU."""
    if p == "auto":
        if torch.cuda.is_available():
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "no"
    if p == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.precision: fp16 needs a GPU; use bf16 or no (fp32) on CPU")
    return p


def inference_accelerator(precision: str):
    """A fresh Accelerator for prediction: ``precision`` resolved, and cpu=True when there is no accelerator
    (accelerate then sets up gloo for several CPU processes under torchrun)."""
    from accelerate import Accelerator

    fresh_state()
    return Accelerator(mixed_precision=resolve_precision(precision), cpu=not has_accelerator())
