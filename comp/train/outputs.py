"""What a fold publishes: the best epoch's OOF, weights and model.json (in that order), metrics.csv and the
curves PNG. comp.train.loop calls these after each committed epoch and when it repairs a kill on --resume."""

from __future__ import annotations

import filecmp
import json
import os
from pathlib import Path

import pandas as pd
import torch

from comp import runs
from comp.files import write_csv
from comp.train.model import save_checkpoint
from comp.train.state import FoldState


def publish(fd: Path, weights: torch.nn.Module, oof: pd.DataFrame | None, meta: dict) -> None:
    """The best epoch's outputs: the OOF first, then the weights, then model.json last, so a current model.json
    says the OOF and weights beside it are current too (a kill in between is repaired on --resume)."""
    if oof is not None:  # a full-data run has none
        write_csv(fd / "oof.csv", oof)
    save_checkpoint(fd / "model.safetensors", weights, meta)


def published_epoch(meta_path: Path) -> int | None:
    """The epoch model.json says its weights are from (None when missing or unreadable: a kill mid-write)."""
    try:
        return json.loads(meta_path.read_text(encoding="utf-8")).get("epoch")
    except (OSError, ValueError, AttributeError):
        return None


def same_bytes(a: Path, b: Path) -> bool:
    return b.exists() and filecmp.cmp(a, b, shallow=False)


def model_meta(meta: dict, full: bool, metric: str, st: FoldState) -> dict:
    """model.json of the weights published at ``st.best_epoch``, the epoch just committed (its metrics row);
    ``full``: a full-data run (no validation figures)."""
    if full:
        return dict(meta, epoch=st.best_epoch, score=None, ema=st.best_is_ema,
                    train_loss=st.history[-1]["train_loss"])
    row = (st.ema_history if st.best_is_ema else st.history)[-1]
    return dict(meta, epoch=st.best_epoch, score=st.best_score, ema=st.best_is_ema, val_loss=row["val_loss"],
                val_acc=row["val_acc"], metric=metric, val_macro_f1=row["val_macro_f1"])


def write_metrics(fd: Path, st: FoldState) -> None:
    write_csv(fd / "metrics.csv", pd.DataFrame(st.history, columns=runs.METRICS_COLUMNS))
    if st.ema_history:
        write_csv(fd / "metrics_ema.csv", pd.DataFrame(st.ema_history, columns=runs.METRICS_COLUMNS))


def plot_curves(fd: Path, st: FoldState) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = pd.DataFrame(st.history)
    full = h["val_loss"].isna().all()  # a full-data run: no validation, plot the lr instead
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(h["epoch"], h["train_loss"], "o-", label="train loss")
    if full:
        b.plot(h["epoch"], h["lr"], "o-", label="lr (last update of the epoch)")
        right = f"full-data run, {st.epoch} epochs (no validation rows)"
    else:
        a.plot(h["epoch"], h["val_loss"], "o-", label="val loss")
        b.plot(h["epoch"], h["val_macro_f1"], "o-", label="val macro F1")
        b.plot(h["epoch"], h["val_acc"], "o-", label="val accuracy")
        right = f"best score {st.best_score:.4f} (epoch {st.best_epoch})"
    if st.ema_history:
        e = pd.DataFrame(st.ema_history)
        b.plot(e["epoch"], e["val_macro_f1"], "o--", label="val macro F1 (EMA)")
    b.axvline(st.best_epoch, color="grey", lw=0.8, ls=":")
    for ax, title in ((a, "loss"), (b, right)):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = fd / ".curves.png.tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, fd / "curves.png")
