"""input.size and train.epochs fitted to the machine and a time budget, for images larger than 64 px whose size the
user left unset: every fold of the experiment should train within ``train.fit_minutes`` (60 by default) here.

    candidates   multiples of 32 from 64 up to the size the image headers suggest (comp.data.sizes)
    layout       train.channels_last, when unset: the two layouts' steps in turn at the first candidate >= 96 px,
                 taken when it trains >= CL_GAIN_MIN x faster (tf_efficientnet_lite0 at 96 px: 1.4-2x on 2 cores)
    batch        on a CPU, train.batch_size when unset: the fastest of 32, 64 and 128 images a step at that size
                 (lite0 at 96 px, 2 cores: 129, 106 and 61 img/s), keeping >= 16 steps an epoch
    size         a probe at each candidate (smallest first, stopping once one affords too few epochs): the largest
                 whose folds afford MIN_FINETUNE_EPOCHS (3) when fine-tuning, half the default epochs (15) from
                 scratch, or all of them when the user set train.epochs; else the smallest
    epochs       the default, or what the budget affords at that size when less (train.epochs unset)

The estimate (folds x epochs x a fold epoch's seconds) is printed before training, with each candidate's figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from comp.config import Config
from comp.train import probe
from comp.train.probe import EFFICIENCY_CPU, EFFICIENCY_GPU, channels_last_gain, probe_model

STEP, FIRST = 32, 64
REF_SIZE = 96  # layout and batch are chosen at the first candidate from this size
CL_GAIN_MIN = 1.05
CPU_BATCHES = (32, 64, 128)
GPU_PROBE_BATCH = 64  # a GPU's batch comes later, from a memory probe at the chosen size (comp.train.defaults)
EPOCH_OVERHEAD_S = 0.3  # state, checkpoint and metrics writes of an epoch
SETUP_S = 10.0  # the run's start: accelerator, model, the first decode's setup
DECODE_S = 0.004  # seconds to decode one training image once (300-700 px JPEGs, draft decoding, 2 cores)
# A pretrained backbone needs pixels more than epochs: on 5,000 photos (docs/benchmarks.md), at equal time a fold,
# lite0 at 64 px x 17 epochs scored 0.42 single-model hold-out macro F1 where 96 px x 7 epochs scored 0.61.
MIN_FINETUNE_EPOCHS = 3


@dataclass
class SizeCost:
    size: int
    train_ips: float
    infer_ips: float
    epoch_s: float  # one fold epoch, end to end
    epochs: int  # what the budget affords on every fold

    def text(self) -> str:
        return f"{self.size}px {self.train_ips:.0f} img/s, {self.epoch_s:.0f}s a fold epoch, {self.epochs} epochs fit"


def fold_epoch_s(n_rows: int, folds: int, train_ips: float, infer_ips: float, gpu: bool) -> float:
    eff = EFFICIENCY_GPU if gpu else EFFICIENCY_CPU
    return (n_rows * (folds - 1) / folds / (train_ips * eff) + n_rows / folds / (infer_ips * eff)
            + EPOCH_OVERHEAD_S)


def fit_to_machine(cfg: Config, n_rows: int, folds: int, num_classes: int, top: int, header_why: str) -> str:
    """Set cfg.input.size (and the unset train.epochs, channels_last and CPU batch_size) as the module docstring
    says; returns the reason printed with input.size."""
    import torch

    gpu = torch.cuda.is_available()
    sizes = list(range(FIRST, top + 1, STEP)) or [top]
    ref = next((s for s in sizes if s >= REF_SIZE), sizes[-1])
    fit_layout(cfg, num_classes, ref)
    if cfg.train.batch_size is None and not gpu:
        fit_cpu_batch(cfg, num_classes, ref, n_rows * (folds - 1) // folds)
    batch = cfg.train.batch_size or GPU_PROBE_BATCH
    user_epochs = "train.epochs" not in cfg.derived
    target = cfg.train.epochs
    need = target if user_epochs else min_fold_epochs(cfg, target)
    budget = cfg.train.fit_minutes * 60 - SETUP_S - n_rows * DECODE_S
    costs = []
    for s in sizes:
        tr, inf = probe_model(cfg, cfg.model.name, num_classes, s, batch, bool(cfg.train.channels_last))
        e_s = fold_epoch_s(n_rows, folds, tr, inf, gpu)
        costs.append(SizeCost(s, tr, inf, e_s, int(max(0, budget) // (folds * e_s))))
        if costs[-1].epochs < need:
            break
    fits = [c for c in costs if c.epochs >= need]
    best = fits[-1] if fits else costs[0]
    if not user_epochs:
        cfg.train.epochs = max(1, cfg.model.freeze_epochs + 1, min(target, best.epochs))
        cfg.derived["train.epochs"] = (f"{cfg.train.epochs} ({'the default' if cfg.train.epochs == target else 'what'}"
                                       f"{'' if cfg.train.epochs == target else ' train.fit_minutes affords'} at "
                                       f"{best.size}px; set train.epochs to change)")
    cfg.input.size = best.size
    est = SETUP_S + n_rows * DECODE_S + folds * cfg.train.epochs * best.epoch_s
    other = [c.text() for c in costs if c is not best]
    return (f"fitted to train.fit_minutes {cfg.train.fit_minutes:g} here: {folds} folds x {cfg.train.epochs} epochs "
            f"x ~{best.epoch_s:.0f}s a fold epoch = ~{est / 60:.0f} min in all, ~{est / folds / 60:.1f} min a fold "
            f"({cfg.model.name}, {best.train_ips:.0f} img/s training at batch {batch}"
            f"{', channels_last' if cfg.train.channels_last else ''}); probed: {'; '.join(other) or 'no other size'}; "
            f"{header_why}")


def min_fold_epochs(cfg: Config, default_epochs: int) -> int:
    """The fewest epochs a candidate size must afford on every fold (train.epochs unset): 3 fine-tuning, else half the
    default."""
    tuned = cfg.model.pretrained is True or bool(cfg.model.pretrained_file)
    return min(default_epochs, MIN_FINETUNE_EPOCHS) if tuned else max(1, math.ceil(default_epochs / 2))


def fit_layout(cfg: Config, num_classes: int, size: int) -> None:
    """train.channels_last, when unset: the layout that trains faster here (>= CL_GAIN_MIN x for channels_last)."""
    if cfg.train.channels_last is not None:
        return
    batch = cfg.train.batch_size or CPU_BATCHES[0]
    gain = channels_last_gain(cfg, cfg.model.name, num_classes, batch, size=size)
    cfg.train.channels_last = gain >= CL_GAIN_MIN
    cfg.derived["train.channels_last"] = (f"{str(cfg.train.channels_last).lower()} ({cfg.model.name} trains "
                                          f"{gain:.2f}x as fast channels_last at {size}px here; set "
                                          f"train.channels_last to change)")


def fit_cpu_batch(cfg: Config, num_classes: int, size: int, n_train: int) -> None:
    """train.batch_size on a CPU: the fastest of CPU_BATCHES at ``size`` that keeps >= 16 steps an epoch."""
    allowed = [b for b in CPU_BATCHES if n_train // b >= 16] or [CPU_BATCHES[0]]
    cl = bool(cfg.train.channels_last)
    ips = {b: probe_model(cfg, cfg.model.name, num_classes, size, b, cl, probe.PROBE_MIN_S / 2)[0] for b in allowed}
    cfg.train.batch_size = max(ips, key=ips.get)
    shown = ", ".join(f"{b}: {v:.0f}" for b, v in ips.items())
    cfg.derived["train.batch_size"] = (f"{cfg.train.batch_size} (the fastest here at {size}px, img/s by batch "
                                       f"{shown}; set train.batch_size to change)")
