"""What every ``comp analyze`` page reads from a run, multi-class or multi-label: the OOF (whole or the finished
folds), the fold models, the Grad-CAM overlays made with the model of the fold that held each image out, and the
training curves of every fold."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from comp import runs
from comp.config import Config
from comp.data.competition import DataError
from comp.infer.models import FoldModel, load_model, saved_fold_models
from comp.reports.page import Report, pyplot, save_figure, thumbnail
from comp.tasks import task_of


def read_run_oof(cfg: Config, run: Path) -> tuple[pd.DataFrame, str]:
    """The OOF table (columns id, fold, label, classes...) and a note on where it came from."""
    path = run / "oof.csv"
    if path.exists():
        return runs.read_oof(path, cfg), ""
    parts = sorted(run.glob("fold_*/oof.csv"))
    if not parts:
        raise DataError(f"{path} not found and no fold has an oof.csv yet: train first: "
                        f"comp train --exp {run.name} --all-folds")
    oof = pd.concat([runs.read_oof(p, cfg) for p in parts], ignore_index=True)
    folds = ", ".join(p.parent.name for p in parts)
    return oof, f"{path} is not written yet (not every fold is done): analysing the finished folds ({folds})"


def fold_models(run: Path) -> dict[int, FoldModel]:
    """fold -> its trained model, for every fold with a saved model (comp.infer.models' scan)."""
    return {m.fold: m for m in saved_fold_models(run)}


def curves_figure(metrics: dict[int, pd.DataFrame], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    cmap = plt.get_cmap("tab10")
    for n, (k, m) in enumerate(sorted(metrics.items())):
        c = cmap(n % 10)
        if "train_loss" in m:
            axes[0].plot(m["epoch"], m["train_loss"], "--", color=c, label=f"fold {k} train")
        if "val_loss" in m:
            axes[0].plot(m["epoch"], m["val_loss"], "-", color=c, label=f"fold {k} val")
        if "val_macro_f1" in m:
            axes[1].plot(m["epoch"], m["val_macro_f1"], "-o", ms=3, color=c, label=f"fold {k}")
        if "lr" in m:
            axes[2].plot(m["epoch"], m["lr"], "-", color=c, label=f"fold {k}")
    for ax, title in zip(axes, ("loss (dashed: train, solid: validation)", "validation macro F1", "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def input_batch(paths: list[str], meta: dict, cfg: Config):
    """uint8 model inputs (N, S, S, 3) as the fold saw them, and the normalised tensor."""
    from comp.data.dataset import to_tensor_batch
    from comp.data.images import load_rgb
    from comp.data.preprocess import resize

    s = meta["input_size"]
    size = int(s[-1] if isinstance(s, (list, tuple)) else s)
    mode = meta.get("resize", "stretch")
    rgb = np.stack([resize(load_rgb(p, cfg.data.max_pixels, target=size), size, mode) for p in paths])
    return rgb, to_tensor_batch(rgb, meta["mean"], meta["std"])


def make_cams(cfg: Config, models: dict, rows: pd.DataFrame, out: Path, echo: Callable) -> tuple[dict, list[str]]:
    """Grad-CAM overlays for ``rows`` (columns pos, fold, path, target, file): {pos: file written}, notes."""
    import torch

    from comp.reports.cam import find_target_layer, grad_cam, overlay

    done, notes = {}, []
    for fold, grp in rows.groupby("fold", sort=True):
        if fold not in models:
            notes.append(f"fold {fold}: no model.safetensors, so no Grad-CAM for its {len(grp)} images")
            continue
        meta = models[fold].meta
        model = load_model(cfg, models[fold], torch.device("cpu"))
        s = meta.get("input_size", 224)
        layer, name = find_target_layer(model, int(s[-1] if isinstance(s, (list, tuple)) else s))
        if layer is None:
            notes.append(f"Grad-CAM skipped: {meta.get('model_name', cfg.model.name)}: {name}")
            break
        rgb, x = input_batch(grp["path"].tolist(), meta, cfg)
        with torch.enable_grad():
            masks = grad_cam(model, x, grp["target"].tolist(), layer)
        for (pos, file), img, mask in zip(zip(grp["pos"], grp["file"]), rgb, masks):
            thumbnail(overlay(img, mask), out / file, side=max(128, 2 * 112))
            done[pos] = file
        echo(f"analyze: Grad-CAM fold {fold} ({len(grp)} images, layer {name})")
    return done, notes


def curves_section(cfg: Config, rep: Report, tmp: Path, run: Path) -> None:
    """Loss, validation macro F1 and learning rate per epoch of every fold, and each fold's chosen epoch."""
    sec = rep.section("Training curves", "curves")
    metrics = {}
    for mpath in sorted(run.glob("fold_*/metrics.csv")):
        if mpath.parent.name[5:].isdigit():
            m = pd.read_csv(mpath)
            if len(m) and "epoch" in m:
                metrics[int(mpath.parent.name[5:])] = m
    if not metrics:
        sec.note(f"no fold_k/metrics.csv in {run}")
        return
    curves_figure(metrics, tmp / "training_curves.png")
    sec.image("training_curves.png", "training curves of all folds")
    rows = []
    for fk, m in sorted(metrics.items()):
        # The trainer's own choice (data.metric, raw or EMA weights: done.json), else the best macro F1.
        done_info = runs.read_done(run / f"fold_{fk}") or {}
        at = m[m["epoch"] == done_info.get("epoch")]
        best = at.iloc[0] if len(at) else (m.loc[m["val_macro_f1"].idxmax()] if "val_macro_f1" in m
                                           else m.iloc[-1])
        rows.append({"fold": fk, "epochs": len(m), "best epoch": int(best["epoch"]),
                     f"best val {cfg.data.metric}": float(done_info.get("score", best.get("val_score", np.nan))),
                     "val macro F1 then": float(best.get("val_macro_f1", np.nan)),
                     "last val loss": float(m["val_loss"].iloc[-1]) if "val_loss" in m else None,
                     "minutes": float(m["seconds"].sum() / 60) if "seconds" in m else None})
    sec.table(rows)


def oof_classes(cfg: Config, oof: pd.DataFrame, classes: list[str] | None) -> list[str]:
    """The OOF table's classes (its probability columns when ``classes`` is None), after checking that it has the
    id, fold and label columns and a probability column per class; raises DataError naming what is missing."""
    d = cfg.data
    for col in (d.id_col, "fold", d.label_col):
        if col not in oof.columns:
            raise DataError(f"OOF file has no column '{col}'; columns are {list(oof.columns)}")
    if classes is None:
        classes = [c for c in oof.columns if c not in (d.id_col, "fold", d.label_col)]
    missing = [c for c in classes if c not in oof.columns]
    if missing:
        raise DataError(f"OOF file has no probability column for class {missing[0]!r} (the model's classes)")
    return classes


def oof_arrays(cfg: Config, oof: pd.DataFrame, classes: list[str] | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(classes, the truth (the task's: class indices (N,), or a multi-hot (N, K) for several labels per image),
    probabilities (N, K)); raises DataError naming what is missing."""
    d = cfg.data
    task = task_of(cfg)
    classes = oof_classes(cfg, oof, classes)
    unknown = task.unknown(oof[d.label_col], classes)
    if unknown:
        raise DataError(f"OOF label {unknown[0]!r} is not one of the model's classes")
    y = task.truth(oof[d.label_col], classes, "OOF").astype(np.int64)
    probs = oof[classes].to_numpy(dtype=np.float64)
    return classes, y, probs
