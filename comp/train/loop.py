"""``comp train``: one model per fold, written to ``runs/<exp>/fold_k/`` (layout in comp/runs.py).

The same loop runs on CPU, one GPU or many processes (``accelerate launch`` / ``torchrun``): accelerate picks the
device, shards the batches and gathers the validation predictions; only the main process writes files.

Reproducibility: every random draw of epoch e (batch order, augmentation, dropout, Mixup) is seeded from
(train.seed, e, rank), and the state saved after each epoch (accelerate ``save_state`` + EMA + trainer.json)
holds everything else, so ``--resume`` ends where an uninterrupted run ends (bit for bit on CPU).

This module is one fold's lifecycle and its epoch (``train_unit``). The run around it (train_folds, train_full,
train_helper: the session, the units in turn, the CV) is comp.train.session; validation is comp.train.evaluate;
what a fold publishes (OOF, weights, model.json, metrics, curves) is comp.train.outputs; the config checks and
the accelerator are comp.train.setup; the competition metric is comp.metrics.

One fold, one training context: ``comp.train.fold.setup_fold`` builds and prepares everything a fold owns (a ``Fold``),
``_train_epoch`` and ``_commit_epoch`` run and commit one epoch, ``_finish_fold`` writes done.json and removes the
state (unless train.keep_state), and ``_release`` clears the accelerator's registries so the next fold's state
holds only its own model and optimizer and nothing of a finished fold stays in memory. The process group
(torchrun / accelerate launch) lives across folds.

A full-data run (comp.train.session.train_full, ``comp train --full``; comp.train.refit) is a fold whose validation
part is empty: the same functions train it, with a ``Fold.full`` that says so. It trains every row for the epochs
E's folds chose, publishes every epoch's weights (the last one is the model), and writes no OOF.
"""

from __future__ import annotations

import gc
import json
import math
import time
from pathlib import Path

import torch

from comp import runs
from comp.config import ConfigError
from comp.console import progress_bar
from comp.data.dataset import epoch_seed, to_tensor_batch
from comp.errors import CompError
from comp.files import write_text
from comp.train.epochs import record_epoch
from comp.train.evaluate import Eval, evaluate
from comp.train.fold import Fold, Session, banner, setup_fold
from comp.train.model import (
    keep_norm_stats,
    set_backbone_trainable,
    sync_buffers,
)
from comp.train.optim import current_lr
from comp.train.outputs import plot_curves, publish, published_epoch, same_bytes, write_metrics
from comp.train.state import (
    FoldState,
    check_state,
    dir_bytes,
    find_state,
    human_bytes,
    json_safe,
    load_state,
    remove_states,
    save_state,
    unit_name,
)

NAN_CHECK_UPDATES = 50  # a non-finite loss is looked for on the host every this many optimizer updates (and at an
# epoch's end): a per-step .item() would stall a GPU's queue once per step


class TrainingError(CompError, RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says what was kept and what to try."""


class Stopped(Exception):
    """train.stop_after_epochs reached: leave the state for --resume, as a kill would."""


# ---------------------------------------------------------------- one epoch


def _train_epoch(s: Session, f: Fold, st: FoldState, epoch: int) -> tuple[float, float, float]:
    """One pass over the training rows; returns (mean train loss, images/s, the lr of the last update)."""
    t, acc, model, optimizer = s.cfg.train, s.accelerator, f.model, f.optimizer
    from accelerate.utils import set_seed

    # Every draw of this epoch (order, augmentation, dropout, mixup) follows from (seed, epoch, rank).
    set_seed(epoch_seed(t.seed, epoch, acc.process_index))
    f.train_set.set_epoch(epoch)
    f.train_loader.set_epoch(epoch)
    if f.batch_aug is not None:
        f.batch_aug.set_epoch(epoch)
    probe = epoch < s.cfg.model.freeze_epochs
    set_backbone_trainable(f.raw, not probe, f.frozen)
    lr = current_lr(optimizer)
    model.train()
    if probe or s.cfg.model.freeze_bn:
        keep_norm_stats(f.raw)
    loss_sum = torch.zeros((), device=acc.device, dtype=torch.float64)
    first_bad = torch.full((), -1, device=acc.device, dtype=torch.long)  # the first non-finite step, on the device
    seen, t0 = 0, time.perf_counter()
    size = epoch_size(s.cfg.input.size, t.progressive, epoch, t.epochs)
    bar = progress_bar(f.train_loader, desc=f"{f.name} epoch {epoch + 1}/{t.epochs}",
                       enabled=acc.is_local_main_process)
    for step, (u8, y, r) in enumerate(bar):
        x = to_tensor_batch(u8, f.mean, f.std, t.channels_last, augment=f.batch_aug)
        if size < x.shape[-1]:  # train.progressive
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        target = y
        if f.mixup is not None and len(x) % 2 == 0:
            x, target = f.mixup(x, y)
        with acc.accumulate(model):
            with acc.autocast():
                logits = model(x)
            loss = f.criterion(logits, target) if f.teacher is None else f.criterion(logits, target, f.teacher[r])
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
            acc.backward(loss)
            if t.grad_clip is not None and acc.sync_gradients:
                acc.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if acc.sync_gradients:
            lr = current_lr(optimizer)  # the lr this update used (metrics.csv reports the epoch's last)
            st.num_updates += 1
            if f.scheduler is not None:
                f.scheduler.step_update(st.num_updates)
            if f.ema is not None:
                f.ema.update(f.raw, step=st.num_updates)
            if st.num_updates % NAN_CHECK_UPDATES == 0:
                _check_finite(s, f, st, epoch, first_bad)
        loss_sum += loss.detach().double() * len(x)
        seen += len(x)
        if t.step_delay:
            time.sleep(t.step_delay)
    _check_finite(s, f, st, epoch, first_bad)
    seconds = time.perf_counter() - t0
    tot = acc.reduce(torch.tensor([loss_sum.item(), float(seen)], device=acc.device), "sum").cpu()
    return float(tot[0] / tot[1]), float(tot[1]) / seconds, lr


def _commit_epoch(s: Session, f: Fold, st: FoldState, epoch: int, train_loss: float, images_per_s: float,
                  lr: float, t0: float) -> None:
    """Validate, update the best model and early stopping, then commit: state first, outputs after.

    A full-data run (``f.full``) has nothing to validate: each epoch's weights are published, the last one wins."""
    cfg, t, acc = s.cfg, s.cfg.train, s.accelerator
    ev, ev_ema = _validate(s, f) if f.full is None else (None, None)
    if f.scheduler is not None:
        f.scheduler.step(epoch + 1, None if ev is None else f.cm.sign * ev.score)  # plateau maximises
        st.scheduler = json_safe(f.scheduler.state_dict())
    seconds = time.perf_counter() - t0
    st.seconds += seconds
    row = dict(epoch=epoch + 1, train_loss=train_loss, **_val_columns(ev), lr=lr, seconds=round(seconds, 3),
               images_per_s=round(images_per_s, 2))
    st.history.append(row)
    if ev_ema is not None:
        st.ema_history.append(dict(row, **_val_columns(ev_ema)))
    if f.full is None:
        new_best, is_ema, best_oof, report = _best_and_stop(s, f, st, epoch, ev, ev_ema)
    else:  # the last epoch's weights are the model: the EMA's when E's folds preferred theirs (refit.full_ema)
        new_best, is_ema, best_oof, report = True, f.full["ema"], None, ""
        st.best_epoch, st.best_is_ema = epoch + 1, is_ema
    st.epoch = epoch + 1

    f.state_bytes = save_state(acc, f.fd, st, f.ema, best_oof)  # the commit point of this epoch
    if acc.is_main_process:
        if ev is not None:  # what the checkpoint would pick at this epoch, kept for the fixed-epoch CV
            cand = ev_ema if ev_ema is not None and f.cm.better(ev_ema.score, ev.score) else ev
            truth = s.pool.truth[f.va.index.to_numpy()]
            record_epoch(f.fd, epoch + 1, f.va["id"], truth, cand.probs, s.classes)
        if new_best:
            publish(f.fd, f.ema.module if is_ema else f.raw, best_oof, f.meta_at(st))
        write_metrics(f.fd, st)
        if s.on_epoch is not None:
            s.on_epoch(f.k, dict(row, best_score=st.best_score, best_epoch=st.best_epoch))
    if cfg.train.trackers:
        tag = f.k if f.full else f"fold_{f.k}"
        acc.log({f"{tag}/{k}": v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
    s.echo(f"{f.name} epoch {epoch + 1}/{t.epochs}: train_loss {train_loss:.4f} {report}"
           f"| lr {lr:.2e} | {images_per_s:.0f} img/s | {seconds:.1f}s" + (" *" if new_best and not f.full else ""))
    if st.stopped_early:
        s.echo(f"{f.name}: early stop, {t.early_stopping_metric} has not improved for {t.patience} epochs")


def _validate(s: Session, f: Fold) -> tuple[Eval, Eval | None]:
    """The raw weights' and (train.ema) the EMA weights' evaluation on the fold's validation rows."""
    t, acc, cm = s.cfg.train, s.accelerator, f.cm
    y_val = s.pool.truth[f.va.index.to_numpy()]
    sync_buffers(f.raw, acc)
    ev = evaluate(f.model, f.val_loader, y_val, f.mean, f.std, t.channels_last, acc, s.pool.task, cm, s.classes)
    ev_ema = None
    if f.ema is not None:
        sync_buffers(f.ema.module, acc)
        ev_ema = evaluate(f.ema.module, f.val_loader, y_val, f.mean, f.std, t.channels_last, acc, s.pool.task, cm,
                          s.classes)
    return ev, ev_ema


def _val_columns(ev: Eval | None) -> dict:
    """metrics.csv's validation columns (NaN for a full-data run: it has no validation rows)."""
    if ev is None:
        return dict(val_loss=math.nan, val_macro_f1=math.nan, val_acc=math.nan, val_score=math.nan)
    return dict(val_loss=ev.loss, val_macro_f1=ev.macro_f1, val_acc=ev.acc, val_score=ev.score)


def _best_and_stop(s: Session, f: Fold, st: FoldState, epoch: int, ev: Eval, ev_ema: Eval | None):
    """Best checkpoint and early stopping of a fold; (new best, is EMA, best OOF, echo part)."""
    cfg, t, cm = s.cfg, s.cfg.train, f.cm
    # Best checkpoint: the better validation data.metric of the raw and EMA weights.
    cand, is_ema = (ev_ema, True) if ev_ema is not None and cm.better(ev_ema.score, ev.score) else (ev, False)
    new_best = st.best_epoch == 0 or cm.better(cand.score, st.best_score)
    best_oof = None
    if new_best:
        st.best_score, st.best_epoch, st.best_is_ema = cand.score, epoch + 1, is_ema
        best_oof = runs.oof_frame(cfg, f.va["id"], f.va["label"], f.k, cand.probs, s.classes)
    # Early stopping on train.early_stopping_metric (raw weights' value, or EMA's when better).
    metric = t.early_stopping_metric
    value = {"val_score": cand.score, "val_macro_f1": max(ev.macro_f1, ev_ema.macro_f1 if ev_ema else 0.0),
             "val_acc": max(ev.acc, ev_ema.acc if ev_ema else ev.acc),
             "val_loss": min(ev.loss, ev_ema.loss if ev_ema else ev.loss)}[metric]
    lower = metric == "val_loss" or (metric == "val_score" and not cm.greater_is_better)
    better = st.stop_best is None or (value < st.stop_best if lower else value > st.stop_best)
    st.stop_best, st.bad_epochs = (value, 0) if better else (st.stop_best, st.bad_epochs + 1)
    st.stopped_early = t.patience is not None and st.bad_epochs >= t.patience and epoch + 1 < t.epochs
    report = (f"val_loss {ev.loss:.4f} " + (f"{cm.name} {ev.score:.4f} " if cm.name != "macro_f1" else "")
              + f"macro_f1 {ev.macro_f1:.4f} acc {ev.acc:.4f} "
              + (f"| ema {cm.name} {ev_ema.score:.4f} " if ev_ema else ""))
    return new_best, is_ema, best_oof, report


def train_unit(s: Session, fold: int | str, resume: bool, overwrite: bool, full: dict | None = None,
                fd: Path | None = None) -> dict:
    """Train fold ``fold``, or with ``full`` (refit.FullPlan.info) the full-data run named ``fold`` (full_s0), in
    ``fd`` (default: the fold's or full run's folder; train_helper passes its own)."""
    cfg, t, acc = s.cfg, s.cfg.train, s.accelerator
    name = unit_name(fold)
    if fd is None:
        fd = runs.fold_dir(cfg.exp, fold) if full is None else runs.full_dir(cfg.exp, full["seed_index"])
    done = runs.read_done(fd)
    if done is not None and not overwrite:
        what = (f"{done['epochs_run']} epochs on every row" if full else
                f"{cfg.data.metric} {done['score']:.4f}, epoch {done['epoch']}")
        s.echo(f"{name}: already finished ({what}); skipped")
        return done
    state_path = find_state(fd)
    if state_path is not None and not (resume or overwrite):
        st = json.loads((state_path / "trainer.json").read_text(encoding="utf-8"))
        raise ConfigError(f"{fd} holds an interrupted run (epoch {st['epoch']} of {t.epochs} finished); pass "
                          f"--resume to continue it or --overwrite to start it again")
    if state_path is not None and not overwrite:
        check_state(state_path, fold, runs.config_digest(cfg))  # before anything is built or loaded
    acc.wait_for_everyone()
    if acc.is_main_process and fd.exists() and (overwrite or state_path is None):
        runs.clear_fold_dir(fd)  # --overwrite, or leftovers of a run killed before its first epoch ended
    acc.wait_for_everyone()
    if overwrite:
        state_path = None
    fd.mkdir(parents=True, exist_ok=True)

    f = setup_fold(s, fold, fd, full)
    try:
        st = FoldState(fold=fold, config_digest=runs.config_digest(cfg))
        if state_path is not None:
            st = load_state(acc, state_path, f.ema)
            if f.scheduler is not None and st.scheduler:
                f.scheduler.load_state_dict(st.scheduler)
            f.state_bytes = dir_bytes(state_path)
            s.echo(f"{name}: resuming after epoch {st.epoch} of {t.epochs}" + ("" if full else f" (best {f.cm.name} "
                   f"{st.best_score:.4f} at epoch {st.best_epoch})"))
            if acc.is_main_process:
                _repair_outputs(s, f, st, state_path)
        s.echo(banner(s, name, f.raw, len(f.train_set), len(f.va), f.steps))
        ran = 0
        for epoch in range(st.epoch, t.epochs):
            if t.stop_after_epochs is not None and ran >= t.stop_after_epochs:
                s.echo(f"{name}: stopped after {ran} epochs (train.stop_after_epochs); continue with --resume")
                raise Stopped()
            t0 = time.perf_counter()
            train_loss, images_per_s, lr = _train_epoch(s, f, st, epoch)
            _commit_epoch(s, f, st, epoch, train_loss, images_per_s, lr, t0)
            ran += 1
            if st.stopped_early:
                break
        return _finish_fold(s, f, st)
    finally:
        _release(acc, f, t.compile)


def _finish_fold(s: Session, f: Fold, st: FoldState) -> dict:
    """done.json (the fold is finished), then the state goes unless train.keep_state."""
    acc, t = s.accelerator, s.cfg.train
    summary = dict(fold=f.k, score=st.best_score, epoch=st.best_epoch, ema=st.best_is_ema,
                   epochs_run=st.epoch, stopped_early=st.stopped_early, seconds=round(st.seconds, 2),
                   processes=acc.num_processes, state_bytes_per_epoch=f.state_bytes)
    if f.full is not None:  # no validation score; the files say there is no OOF and why
        summary.update(f.full, fold=None, score=None, train_loss=st.history[-1]["train_loss"] if st.history else None)
    if acc.is_main_process:
        plot_curves(f.fd, st)
        write_text(f.fd / "done.json", json.dumps(summary, indent=2))
        if not t.keep_state:
            remove_states(f.fd)
    acc.wait_for_everyone()
    kept = f"kept in {f.fd / 'state'}" if t.keep_state else "removed (train.keep_state: true keeps it)"
    what = (f"best {f.cm.title} {st.best_score:.4f} at epoch {st.best_epoch}" if f.full is None else
            f"{st.epoch} epochs on every training row, no OOF; the last epoch's weights")
    s.echo(f"{f.name}: {what}"
           f"{' (EMA weights)' if st.best_is_ema else ''} -> {f.fd / 'model.safetensors'} ({acc.num_processes} "
           f"process{'es' if acc.num_processes > 1 else ''}, {st.seconds:.0f}s) | state {human_bytes(f.state_bytes)}"
           f" written per epoch, {kept}")
    return summary


def _release(acc, f: Fold, compiled: bool) -> None:
    """Drop every reference the accelerator (and compile caches) hold to this fold's objects."""
    acc.free_memory()  # the registries save_state writes: the next fold's state holds only its own objects
    if compiled:
        torch._dynamo.reset()
    for name in ("model", "raw", "optimizer", "scheduler", "ema", "train_loader", "val_loader", "train_set",
                 "criterion", "batch_aug", "mixup", "teacher"):
        setattr(f, name, None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def epoch_size(size: int, progressive: float | None, epoch: int, epochs: int) -> int:
    """The input size of ``epoch`` (0-based): train.progressive's fraction of ``size`` at the first epoch, growing
    linearly in steps of 16 px to ``size`` for the last quarter of the epochs; ``size`` when it is off."""
    if not progressive or progressive >= 1 or epochs < 2:
        return size
    ramp = max(1, math.ceil(0.75 * epochs) - 1)  # epochs ramp .. epochs-1 train at the full size
    start = progressive * size
    return int(min(size, max(16, 16 * round((start + (size - start) * min(1.0, epoch / ramp)) / 16))))


def _check_finite(s: Session, f: Fold, st: FoldState, epoch: int, first_bad: torch.Tensor) -> None:
    """Raise TrainingError when a rank saw a non-finite loss: one small gather every NAN_CHECK_UPDATES optimizer
    updates and at the epoch's end, never a host sync per step. Every rank calls it at the same updates, so all stop
    together; the weights a bad step touched are never saved (the epoch's commit comes after)."""
    bad = s.accelerator.gather(first_bad.view(1)).cpu()
    bad = bad[bad >= 0]
    if len(bad):
        raise TrainingError(_nan_message(f.name, epoch, int(bad.min()), st, s.cfg.train))


def _nan_message(name: str, epoch: int, step: int, st: FoldState, t) -> str:
    kept = (f"the state after epoch {st.epoch} (for --resume) and the best model (epoch {st.best_epoch}, score "
            f"{st.best_score:.4f}) are kept" if st.epoch else "nothing was saved yet")
    hints = "a lower train.lr"
    if t.grad_clip is None:
        hints += ", train.grad_clip=1.0"
    if t.precision in ("fp16", "auto"):
        hints += ", train.precision=bf16 or no"
    return (f"{name}: the training loss became NaN/inf at epoch {epoch + 1}, step {step + 1}; training of "
            f"this fold stopped and {kept}. Try {hints}.")


def _repair_outputs(s: Session, f: Fold, st: FoldState, state_path: Path) -> None:
    """A kill after the state commit but before model/oof/metrics were written: write them from the state.

    The state holds the best epoch's weights and OOF only when that epoch is the last one committed; then a
    model.json of another epoch (or none, or unreadable) or an OOF that is not the state's is published again."""
    write_metrics(f.fd, st)
    if not st.best_epoch or st.best_epoch != st.epoch:
        return
    best_oof = state_path / "best_oof.csv"
    stale_oof = f.full is None and best_oof.exists() and not same_bytes(best_oof, f.fd / "oof.csv")
    if published_epoch(f.fd / "model.json") != st.best_epoch or stale_oof:
        oof = runs.read_oof(best_oof, s.cfg) if f.full is None else None
        publish(f.fd, f.ema.module if st.best_is_ema else f.raw, oof, f.meta_at(st))
