"""Optimizer and lr schedule: thin wrappers over timm's factories, with defaults derived from the run length."""

from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2, list_optimizers
from timm.scheduler import create_scheduler_v2

from comp.config import ConfigError, TrainConfig

SCHEDULERS = ("cosine", "step", "exponential", "multistep", "plateau", "poly", "tanh", "constant", "wsd", "none")
# timm optimizers whose constructor takes a momentum argument (create_optimizer_v2 passes it to these only).
_PLAIN = ("adamw", "adam", "nadam", "radam", "adamp", "lamb", "lion", "adan", "adopt", "laprop", "madgrad")


def check_names(t: TrainConfig) -> None:
    """Fail early, naming the key, when train.optimizer or train.scheduler is not a known name."""
    if t.optimizer not in list_optimizers():
        near = [o for o in list_optimizers() if o.startswith(t.optimizer[:3])][:8] or list(_PLAIN)
        raise ConfigError(f"train.optimizer: unknown optimizer {t.optimizer!r} (timm names, e.g. {near})")
    if t.scheduler not in SCHEDULERS:
        raise ConfigError(f"train.scheduler: unknown scheduler {t.scheduler!r}, expected one of {SCHEDULERS}")


def warmup_epochs(t: TrainConfig) -> int:
    """``train.warmup_epochs``, else 0 for runs under 5 epochs and about 10% of longer ones."""
    if t.warmup_epochs is not None:
        return t.warmup_epochs
    return 0 if t.epochs < 5 else max(1, round(0.1 * t.epochs))


def create_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    """timm ``create_optimizer_v2(opt=train.optimizer)``: no weight decay on norms and biases; with train.layer_decay
    each layer group's lr is scaled by decay^(its depth from the head) (timm's schedulers keep the scales).

    Only parameters that require grad at this point are optimised (freeze stages before, not after).
    """
    check_names(t)
    decay = t.layer_decay if t.layer_decay not in (None, 1.0) else None
    if decay is not None and not hasattr(model, "group_matcher"):
        raise ConfigError(f"train.layer_decay: {type(model).__name__} does not describe its layers (no group_matcher); "
                          f"leave it empty")
    return create_optimizer_v2(model, opt=t.optimizer, lr=t.lr, weight_decay=t.weight_decay, momentum=t.momentum,
                               layer_decay=decay)


def create_scheduler(optimizer: torch.optim.Optimizer, t: TrainConfig, updates_per_epoch: int):
    """timm ``create_scheduler_v2`` stepped per update (smooth warmup and decay), or per epoch for plateau.

    exponential = timm's step schedule decaying every epoch, by default to 1% of train.lr at the end.
    Returns None for ``none``.
    """
    check_names(t)
    if t.scheduler == "none":
        return None
    sched = t.scheduler
    decay_epochs: float = t.decay_epochs if t.decay_epochs is not None else max(1, t.epochs // 3)
    decay_rate: float | None = t.decay_rate if t.decay_rate is not None else 0.1
    if sched == "exponential":
        sched, decay_epochs = "step", 1
        decay_rate = t.decay_rate if t.decay_rate is not None else 0.01 ** (1 / max(1, t.epochs - 1))
    per_epoch = sched == "plateau"  # plateau reacts to a validation metric, known only at epoch ends
    milestones = [int(decay_epochs * k) for k in range(1, max(2, int(t.epochs / decay_epochs) + 1))]
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=sched,
        num_epochs=t.epochs,
        decay_epochs=decay_epochs,
        decay_milestones=milestones,
        decay_rate=decay_rate,
        min_lr=t.min_lr,
        warmup_lr=t.lr * 0.01,
        warmup_epochs=warmup_epochs(t),
        patience_epochs=t.plateau_patience,
        plateau_mode="max",
        step_on_epochs=per_epoch,
        updates_per_epoch=updates_per_epoch,
    )
    return scheduler


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return max(g["lr"] for g in optimizer.param_groups)
