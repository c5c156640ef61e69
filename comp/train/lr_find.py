"""``comp lr-find``: learning-rate range test (Smith 2015) on one fold's training rows.

The lr grows geometrically from ``start_lr`` to ``end_lr``, one batch each, with the experiment's model, loss,
optimizer and augmentation; the run stops once the smoothed loss passes 4x its minimum. Suggested lr: a tenth
of the lr at the minimum smoothed loss (it rarely overshoots); the steepest-descent lr is shown too.
Writes runs/<exp>/lr_find.csv (lr, loss, smoothed) and runs/<exp>/lr_find.png.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from comp import runs
from comp.config import Config, ConfigError
from comp.console import progress_bar
from comp.data.cache import load_images
from comp.data.dataset import CachedImages, EpochSampler, make_loader, to_tensor_batch
from comp.files import write_csv
from comp.tasks import task_of
from comp.tasks.losses import create_loss
from comp.train.augment import build_mixup
from comp.train.batch_augment import training_augment
from comp.train.defaults import fit_defaults
from comp.train.model import create_model, normalization
from comp.train.optim import create_optimizer
from comp.train.rows import Source, make_pool


def suggest(lrs: np.ndarray, smoothed: np.ndarray) -> dict:
    """{'suggested_lr': lr at the minimum / 10, 'steepest_lr': lr of the steepest fall, 'min_loss_lr'}."""
    i_min = int(np.nanargmin(smoothed))
    out = {"min_loss_lr": float(lrs[i_min]), "suggested_lr": float(lrs[i_min] / 10)}
    if i_min >= 2:
        grad = np.gradient(smoothed[: i_min + 1], np.log(lrs[: i_min + 1]))
        out["steepest_lr"] = float(lrs[int(np.nanargmin(grad))])
    else:
        out["steepest_lr"] = float(lrs[0])
    return out


def lr_find(cfg: Config, fold: int = 0, steps: int = 100, start_lr: float = 1e-7, end_lr: float = 10.0,
            skip_bad: bool = False, echo: Callable[[str], None] = print, sources: Sequence[Source] = ()) -> dict:
    """Run the range test; returns the suggestion dict plus ``csv`` and ``plot`` paths.

    ``sources``: as train_folds' (data.relabel's dropped rows stay out of the range test too)."""
    from comp.train.setup import check_config, make_accelerator

    if not 0 < start_lr < end_lr:
        raise ConfigError(f"--start-lr {start_lr:g} must be positive and below --end-lr {end_lr:g}")
    if steps < 5:
        raise ConfigError("--steps must be at least 5")
    check_config(cfg)
    task_of(cfg).refuse("lr-find")
    acc = make_accelerator(cfg)
    say = echo if acc.is_main_process else (lambda *_: None)
    t = cfg.train
    pool = make_pool(cfg, skip_bad, say, sources, acc)
    table, classes = pool.table, pool.classes
    fit_defaults(cfg, lambda: pool.paths, len(classes), say)
    if fold not in set(table["fold"]):
        raise ConfigError(f"--fold {fold}: {cfg.folds.file} has folds {sorted(set(table['fold']))}")
    with acc.main_process_first():
        images = load_images(table["path"].tolist(), cfg.input.size, cfg.input.resize, cfg.data.max_pixels,
                             cache=t.cache, cache_dir=runs.RUNS_DIR / ".cache", progress=acc.is_local_main_process)
    tr = table[table["fold"] != fold]
    transform, batch_aug = training_augment(cfg.augment, cfg.input.size, t.seed, acc.process_index)
    ds = CachedImages(images, tr.index, tr["y"], transform, seed=t.seed, rank=acc.process_index)
    loader = make_loader(ds, t.batch_size, EpochSampler(len(tr), t.seed))
    torch.manual_seed(t.seed)
    model = create_model(cfg, len(classes))
    mean, std = normalization(cfg, model)
    optimizer = create_optimizer(model, t)
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    criterion = create_loss(t, np.bincount(tr["y"], minlength=len(classes))).to(acc.device)
    mixup = build_mixup(cfg.augment, len(classes), t.label_smoothing)
    say(f"lr-find on fold {fold}: {len(tr)} images, {cfg.model.name} at {cfg.input.size}px, {t.optimizer}, "
        f"lr {start_lr:g} -> {end_lr:g} over {steps} batches of {t.batch_size}")

    lrs = np.geomspace(start_lr, end_lr, steps)
    rec_lr, rec_loss, rec_smooth = [], [], []
    avg, best, beta = 0.0, math.inf, 0.9
    model.train()
    epoch, it = 0, iter(loader)
    for i, lr in enumerate(progress_bar(lrs, desc="lr-find", enabled=acc.is_local_main_process)):
        try:
            u8, y, _ = next(it)
        except StopIteration:
            epoch += 1
            loader.set_epoch(epoch)
            ds.set_epoch(epoch)
            if batch_aug is not None:
                batch_aug.set_epoch(epoch)
            it = iter(loader)
            u8, y, _ = next(it)
        for g in optimizer.param_groups:
            g["lr"] = float(lr)
        x = to_tensor_batch(u8, mean, std, t.channels_last, augment=batch_aug)
        target = y
        if mixup is not None and len(x) % 2 == 0:
            x, target = mixup(x, y)
        with acc.autocast():
            logits = model(x)
        loss = criterion(logits, target)
        value = acc.reduce(loss.detach().float(), "mean").item()
        if not math.isfinite(value):
            break
        acc.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        avg = beta * avg + (1 - beta) * value
        smooth = avg / (1 - beta ** (i + 1))
        rec_lr.append(float(lr))
        rec_loss.append(value)
        rec_smooth.append(smooth)
        best = min(best, smooth)
        if i > 5 and smooth > 4 * best:
            break
    if len(rec_lr) < 3:
        raise ConfigError(f"the loss diverged within {len(rec_lr)} batches; lower --start-lr")
    out = suggest(np.array(rec_lr), np.array(rec_smooth))
    rd = runs.run_dir(cfg.exp)
    out["csv"], out["plot"] = str(rd / "lr_find.csv"), str(rd / "lr_find.png")
    if acc.is_main_process:
        write_csv(rd / "lr_find.csv", pd.DataFrame({"lr": rec_lr, "loss": rec_loss, "smoothed": rec_smooth}))
        _plot(rd / "lr_find.png", rec_lr, rec_loss, rec_smooth, out)
    say(f"suggested lr {out['suggested_lr']:.2e} (minimum loss at {out['min_loss_lr']:.2e}, steepest fall at "
        f"{out['steepest_lr']:.2e}) -> {out['plot']}")
    say(f"use it: comp train --exp {cfg.exp} --set train.lr={out['suggested_lr']:.1e} ...")
    return out


def _plot(path, lrs, loss, smooth, out: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from comp.files import atomic_path

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(lrs, loss, alpha=0.3, label="loss")
    ax.plot(lrs, smooth, label="smoothed")
    ax.axvline(out["suggested_lr"], color="C2", ls="--", label=f"suggested {out['suggested_lr']:.1e}")
    ax.axvline(out["steepest_lr"], color="C3", ls=":", label=f"steepest {out['steepest_lr']:.1e}")
    ax.set_xscale("log")
    lo, hi = min(smooth), max(smooth[: max(3, len(smooth) // 2)])
    ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), max(hi, lo) * 1.5 + 1e-9)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
