"""What one fold is made of: the run's ``Session`` (the accelerator, the pool of rows, the decoded images) and the
``Fold`` that ``setup_fold`` builds and the accelerator prepares (loaders, model, optimizer, scheduler, EMA, loss,
augmentation), with the banner that says what it will train. comp.train.loop trains it."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from comp import weights
from comp.config import Config, resolve
from comp.data.dataset import CachedImages, EpochSampler, make_loader
from comp.metrics import Metric
from comp.tasks import competition_metric, task_of
from comp.tasks.losses import DistillLoss
from comp.train.augment import build_mixup
from comp.train.batch_augment import training_augment
from comp.train.model import (
    create_model,
    freeze_stages,
    normalization,
)
from comp.train.optim import create_optimizer, create_scheduler, warmup_epochs
from comp.train.outputs import model_meta
from comp.train.rows import Pool, Source, fold_rows
from comp.train.setup import num_workers
from comp.train.state import (
    FoldState,
    unit_name,
)


@dataclass
class Session:
    cfg: Config
    accelerator: object
    pool: Pool  # the table, classes and image paths (comp.train.rows)
    images: np.ndarray  # every path of the pool, decoded once
    echo: Callable[[str], None]
    on_epoch: Callable[[int, dict], None] | None = None  # (fold, metrics row + best) after each committed epoch
    sources: Sequence[Source] = ()  # the techniques plugged into each fold's training set

    @property
    def table(self) -> pd.DataFrame:
        return self.pool.table

    @property
    def classes(self) -> list[str]:
        return self.pool.classes


def banner(s: Session, name: str, model, n_train: int, n_val: int, steps: int) -> str:
    c, t, a = s.cfg, s.cfg.train, s.accelerator
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    w = weights.resolve(c.model.name, c.model.pretrained, resolve(c, c.model.pretrained_file))
    aug = "pipeline (cpu)" if c.augment.pipeline else f"{c.augment.preset} ({c.augment.on})"
    if c.augment.mixup or c.augment.cutmix:
        aug += f" + mixup {c.augment.mixup}/cutmix {c.augment.cutmix}"
    loss = task_of(c).loss_label(t)
    loss += f" (smoothing {t.label_smoothing})" if t.label_smoothing else ""
    loss += f", class weights {t.class_weights}" if t.class_weights else ""
    loss += f" + distill {t.teacher} (alpha {t.distill_alpha:g}, T {t.distill_t:g})" if t.teacher else ""
    extras = [x for x, on in (("ema", t.ema), ("channels_last", t.channels_last), ("compile", t.compile),
                              (f"layer_decay {t.layer_decay}", t.layer_decay),
                              (f"progressive from {t.progressive}x", t.progressive),
                              ("freeze_bn", c.model.freeze_bn),
                              (f"freeze_epochs {c.model.freeze_epochs}", c.model.freeze_epochs)) if on]
    return (
        f"{name}: {n_train} train / {n_val} val images | model {c.model.name} ({n_params:.2f}M params"
        f", {'pretrained ' + w.why if w.pretrained else 'from scratch'}) | input {c.input.size}px "
        f"{c.input.resize} | epochs {t.epochs} | batch {t.batch_size} x {a.num_processes} processes x "
        f"{t.accum_steps} accum, {steps} steps/epoch | lr {t.lr:g} {t.optimizer} wd {t.weight_decay:g} | "
        f"scheduler {t.scheduler}, warmup {warmup_epochs(t)} epochs | loss {loss} | sampler {t.sampler} | "
        f"augment {aug} | precision {a.mixed_precision} | device {a.device} | processes {a.num_processes}"
        + (f" | {' '.join(extras)}" if extras else "")
    )


# ---------------------------------------------------------------- one fold: setup, epoch, commit


@dataclass(kw_only=True)
class Fold:
    """Everything one fold creates. It lives only inside ``_train_fold``: when the fold ends the accelerator's
    registries are cleared (``free_memory``), so nothing of it outlives the fold (memory, state files)."""

    k: int | str  # the fold, or a full-data run's folder name (full_s0)
    fd: Path
    va: pd.DataFrame
    train_set: CachedImages
    train_loader: object
    val_loader: object
    model: torch.nn.Module  # as prepared (DDP-wrapped under several processes)
    raw: torch.nn.Module  # the plain module: checkpoints load anywhere
    optimizer: object
    scheduler: object
    ema: object
    criterion: torch.nn.Module
    mixup: object
    batch_aug: object  # BatchAugment on the device, or None (albumentations on the CPU, or no augmentation)
    mean: list
    std: list
    frozen: set
    steps: int
    meta: dict
    cm: Metric  # data.metric: the best-epoch criterion
    state_bytes: int = 0  # size of the last state written (one epoch's commit)
    teacher: torch.Tensor | None = None  # train.teacher: its fold-k probabilities of each training row (device)
    full: dict | None = None  # a full-data run (refit.FullPlan.info): no validation rows, no OOF, last weights win

    @property
    def name(self) -> str:
        return unit_name(self.k)

    def meta_at(self, st: FoldState) -> dict:
        """model.json of the weights published at ``st.best_epoch`` (comp.train.outputs.model_meta)."""
        return model_meta(self.meta, self.full is not None, self.cm.name, st)


def setup_fold(s: Session, k: int | str, fd: Path, full: dict | None = None) -> Fold:
    """Loaders, model, optimizer, scheduler, EMA and loss of fold ``k`` (or of the full-data run ``full``),
    prepared by the accelerator."""
    cfg, t, acc = s.cfg, s.cfg.train, s.accelerator
    va = s.table[(s.table["fold"] == k) & (full is None)]  # a full-data run holds out nothing
    fr = fold_rows(s.pool, k, s.sources)  # base rows + each technique's (comp.train.rows)
    rows, targets, hard = fr.rows, fr.targets, fr.hard
    rank = acc.process_index
    transform, batch_aug = training_augment(cfg.augment, cfg.input.size, t.seed, rank)
    train_set = CachedImages(s.images, rows, targets, transform, seed=t.seed, rank=rank)
    task = s.pool.task
    val_set = CachedImages(s.images, va.index, s.pool.truth[va.index.to_numpy()])
    weights = task.sampler_weights(hard, targets) if t.sampler == "balanced" else None
    mixup = build_mixup(cfg.augment, len(s.classes), t.label_smoothing, multi_label=task.sigmoid)
    # Mixup needs even batches, and BatchNorm cannot train on a batch of one image (40 rows at batch 16 on 3 folds
    # left a last batch of 1, found by the competition fuzzer): drop the ragged last batch then, when there is more.
    per_step = t.batch_size * acc.num_processes
    ragged = 0 < len(rows) % per_step <= acc.num_processes
    drop_last = (mixup is not None or ragged) and len(rows) >= (2 if mixup is not None else 1) * per_step
    workers = num_workers(cfg)
    train_loader = make_loader(train_set, t.batch_size, EpochSampler(len(rows), t.seed, weights), workers, drop_last)
    val_loader = make_loader(val_set, cfg.infer.batch_size, None, workers) if full is None else None

    torch.manual_seed(t.seed)  # same initial weights on every rank and every run
    model = create_model(cfg, len(s.classes))
    mean, std = normalization(cfg, model)
    frozen = freeze_stages(model, cfg.model.freeze_stages, cfg.model.name)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model, t)
    ema = None
    if t.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=t.ema_decay, device=acc.device)
    model, optimizer, train_loader, val_loader = acc.prepare(model, optimizer, train_loader, val_loader)
    raw = acc.unwrap_model(model, keep_torch_compile=False)
    steps = len(train_loader)
    scheduler = create_scheduler(optimizer, t, updates_per_epoch=math.ceil(steps / t.accum_steps))
    criterion = task.loss(t, targets, hard, len(s.classes)).to(acc.device)
    teacher = None
    if fr.teacher is not None:  # train.teacher: its fold-k model never trained on fold k's validation rows
        teacher = torch.as_tensor(fr.teacher, dtype=torch.float32, device=acc.device)
        criterion = DistillLoss(criterion, t.distill_alpha, t.distill_t)
    meta = dict(classes=s.classes, input_size=cfg.input.size, resize=cfg.input.resize, mean=mean, std=std,
                model_name=cfg.model.name, fold=k, exp=cfg.exp, num_classes=len(s.classes),
                stem_stride=cfg.model.stem_stride, **task.model_meta)
    if full is not None:
        meta.update(full, fold=None)
    return Fold(k=k, fd=fd, va=va, train_set=train_set, train_loader=train_loader, val_loader=val_loader, model=model,
                raw=raw, optimizer=optimizer, scheduler=scheduler, ema=ema, criterion=criterion, mixup=mixup,
                batch_aug=batch_aug, mean=mean, std=std, frozen=frozen, steps=steps, meta=meta,
                cm=competition_metric(cfg, s.classes), teacher=teacher, full=full)
