"""Trained models of a run, found, loaded and run: the one loader that predict, serve, export, distillation,
analyze and relabel use.

    find_fold_models / find_full_models   runs/E/fold_k/ and runs/E/full_s{i}/ (model.safetensors + model.json)
    load_model                            a FoldModel's weights in its timm architecture, eval mode
    predict_images                        softmax probabilities averaged over TTA views, sharded by accelerate
    run_models                            several models over the same images, decoded once per input size
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from comp.config import Config
from comp.console import progress_bar
from comp.data.cache import load_images
from comp.data.competition import DataError
from comp.infer.tta import create_views
from comp.runs import read_json_file
from comp.tasks import Task, task_of
from comp.train.model import create_model, load_checkpoint


@dataclass
class FoldModel:
    fold: int | None  # None: a full-data model (runs/E/full_s{i})
    path: Path
    meta: dict

    @property
    def name(self) -> str:
        return f"fold {self.fold}" if self.fold is not None else self.path.parent.name

    @property
    def size(self) -> int:
        s = self.meta["input_size"]
        return int(s[-1] if isinstance(s, (list, tuple)) else s)

    @property
    def resize(self) -> str:
        return self.meta.get("resize", "stretch")

    @property
    def task(self) -> Task:
        """The task it was trained for (model.json's ``task``; one class per image before it had one)."""
        return task_of(self.meta.get("task", "multiclass"))


def _saved_models(run: Path, prefix: str, finished: bool = False) -> list[tuple[int, Path, dict]]:
    """(index, model.safetensors, model.json's meta) of each ``run/<prefix><index>/`` holding both files (and
    done.json when ``finished``), by index."""
    out = []
    for d in run.glob(f"{prefix}*"):
        i, f = d.name[len(prefix):], d / "model.safetensors"
        done = not finished or (d / "done.json").exists()
        if i.isdigit() and f.exists() and f.with_suffix(".json").exists() and done:
            fix = (f"train it again (comp train --exp {run.name} --fold {i} --overwrite, or --resume while its "
                   f"state/ is there)" if prefix == "fold_" else f"train it again (comp train --exp {run.name} --full)")
            out.append((int(i), f, read_json_file(f.with_suffix(".json"), fix)))
    return sorted(out, key=lambda x: x[0])


def saved_fold_models(run: Path) -> list[FoldModel]:
    """Every fold of a run that has a saved model (model.safetensors + model.json), by fold; [] when none has."""
    return [FoldModel(k, f, meta) for k, f, meta in _saved_models(run, "fold_")]


def check_same_classes(models: Sequence[FoldModel]) -> None:
    """Models averaged together must predict the same classes, in the same order."""
    classes = list(models[0].meta["classes"])
    for m in models[1:]:
        if list(m.meta["classes"]) != classes:
            raise DataError(f"{m.path}: its classes differ from {models[0].name}'s; retrain it with the same data")


def find_fold_models(run: Path, expected: Sequence[int] | None = None) -> list[FoldModel]:
    """The fold models of a run, sorted by fold; all of ``expected`` must be there and agree on the classes."""
    models = saved_fold_models(run)
    exp = run.name
    if not models:
        raise DataError(f"{run}: no fold models (fold_k/model.safetensors); train them: "
                        f"comp train --exp {exp} --all-folds")
    have = {m.fold for m in models}
    missing = sorted(set(expected or ()) - have)
    if missing:
        k = missing[0]
        raise DataError(
            f"{run}: no model for fold(s) {missing} that {run / 'oof.csv'} lists; "
            f"train them first: comp train --exp {exp} --fold {k} (or --all-folds)"
        )
    check_same_classes(models)
    return models


def find_full_models(run: Path) -> list[FoldModel]:
    """The finished full-data models of a run (``full_s*/`` with done.json), by seed index."""
    models = [FoldModel(None, f, meta) for _, f, meta in _saved_models(run, "full_s", finished=True)]
    if not models:
        raise DataError(f"{run}: no finished full-data models (full_sI/done.json); train them: "
                        f"comp train --exp {run.name} --full")
    return models


def load_model(cfg: Config, fm: FoldModel, device: torch.device) -> torch.nn.Module:
    """A trained fold or full model, ready to predict on ``device`` (the one loader: predict, serve, export,
    distillation, analyze and relabel use it)."""
    mcfg = copy.deepcopy(cfg)
    mcfg.model.name = fm.meta.get("model_name", cfg.model.name)
    mcfg.model.pretrained, mcfg.model.pretrained_file = False, None  # the fold's own weights replace them
    mcfg.model.stem_stride = fm.meta.get("stem_stride")  # the stem the fold trained with
    model = create_model(mcfg, len(fm.meta["classes"]))
    load_checkpoint(fm.path, model)
    model.eval().to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


@dataclass
class Timing:
    seconds: float = 0.0  # in the inference loops only (no decoding, no model loading)
    images: int = 0  # images x views x folds that went through a model

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def memory_format(model: torch.nn.Module) -> torch.memory_format:
    """channels_last when the model's convolution weights are (train.channels_last), else contiguous."""
    w = next((p for p in model.parameters() if p.dim() == 4), None)
    cl = w is not None and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


@torch.inference_mode()
def predict_images(
    model: torch.nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    views: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    accelerator,
    batch_size: int = 128,
    timing: Timing | None = None,
    bar=None,  # a progress_bar to advance
    task: Task | None = None,  # data.task's activation (default: softmax, one class per image)
) -> np.ndarray:
    """Probabilities of ``images[rows]`` averaged over ``views``: (len(rows), C), in ``rows`` order (softmax,
    or one sigmoid per class for several labels per image: ``task.activation``).

    ``images`` is uint8 NHWC (every process holds it; each one predicts its shard). Returns the gathered
    result on every process; raises if any row came back missing or twice.
    """
    from torch.utils.data import DataLoader

    fns = create_views(views)
    activation = (task or task_of("multiclass")).activation
    fmt = memory_format(model)
    n = len(rows)
    loader = accelerator.prepare_data_loader(DataLoader(torch.arange(n), batch_size=batch_size), device_placement=False)
    device = accelerator.device
    scale = torch.tensor([1 / (255.0 * s) for s in std], device=device).view(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], device=device).view(1, 3, 1, 1)
    out = None
    seen = np.zeros(n, np.int64)
    t0 = time.perf_counter()
    for pos in loader:
        idx = rows[pos.numpy()]
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        batch = images[lo:hi] if hi - lo == len(idx) and np.all(np.diff(idx) == 1) else images[idx]
        # NHWC uint8 -> NCHW float in the model's memory format (a mismatch costs ~15% on CPU), reordered
        # while still uint8 (a quarter of the bytes)
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device, non_blocking=True).permute(0, 3, 1, 2)
        x = x.contiguous(memory_format=fmt).float().mul_(scale).sub_(shift)
        probs = None
        with accelerator.autocast():
            for fn in fns:
                logits = model(fn(x)).float()
                p = activation(logits)
                probs = p if probs is None else probs.add_(p)
        probs /= len(fns)
        g_pos, g_probs = accelerator.gather_for_metrics((pos.to(device), probs))
        g_pos, g_probs = g_pos.cpu().numpy(), g_probs.cpu().numpy()
        if out is None:
            out = np.zeros((n, g_probs.shape[1]), np.float64)
        out[g_pos] = g_probs
        np.add.at(seen, g_pos, 1)
        if bar is not None:
            bar.update(len(g_pos))
    if timing is not None:
        timing.seconds += time.perf_counter() - t0
        timing.images += n * len(fns)
    bad = np.flatnonzero(seen != 1)
    if len(bad):
        raise RuntimeError(
            f"prediction gathered {len(bad)} row(s) missing or duplicated across processes "
            f"(first: row {int(bad[0])} seen {int(seen[bad[0]])} times); please report this"
        )
    return out


def predict_size(cfg: Config, fm: FoldModel, onnx: bool = False) -> int:
    """The input size a model predicts at: infer.size when set (not for an ONNX export: its graph has its size),
    else its training size."""
    return fm.size if onnx or cfg.infer.size is None else cfg.infer.size


def decode(cfg: Config, paths: list[str], fm: FoldModel, desc: str, accelerator, progress: bool,
           size: int | None = None) -> np.ndarray:
    # The main process decodes first: a disk cache is then written once and read by the others.
    with accelerator.main_process_first():
        return load_images(
            paths, size or fm.size, fm.resize, max_pixels=cfg.data.max_pixels, cache=cfg.train.cache,
            progress=progress, desc=desc,
        )


def run_models(
    cfg: Config,
    models: list[FoldModel],
    paths: list[str],
    rows_per_model: list[np.ndarray],
    views: list[str],
    accelerator,
    desc: str,
    timing: Timing,
    progress: bool = True,
    exports: dict | None = None,
) -> list[np.ndarray]:
    """One probability array per model, for its rows; images decoded once per (size, resize).

    exports: fold -> comp.infer.onnxrt.OnnxFold; those folds run in onnxruntime instead of torch."""
    decoded: dict = {}
    outs = []
    total = sum(len(r) for r in rows_per_model)
    bar = progress_bar(total=total, desc=desc, unit="img", enabled=progress)
    for fm, rows in zip(models, rows_per_model):
        size = predict_size(cfg, fm, onnx=exports is not None)
        key = (size, fm.resize)
        if key not in decoded:
            decoded[key] = decode(cfg, paths, fm, f"decode {desc} {size}px", accelerator, progress, size)
        if exports is not None:  # onnxruntime: normalisation and softmax (multi-label: sigmoid) are in the graph
            t0 = time.perf_counter()
            outs.append(exports[fm.fold].predict(decoded[key], rows, views, cfg.infer.batch_size, bar))
            timing.seconds += time.perf_counter() - t0
            timing.images += len(rows) * len(views)
            continue
        model = load_model(cfg, fm, accelerator.device)
        mean, std = fm.meta.get("mean"), fm.meta.get("std")
        if mean is None or std is None:
            raise DataError(f"{fm.path.with_suffix('.json')}: no mean/std; retrain fold {fm.fold} with this comp")
        outs.append(predict_images(model, decoded[key], rows, views, mean, std, accelerator,
                                   cfg.infer.batch_size, timing, bar, task=task_of(cfg)))
        del model
    bar.close()
    return outs
