"""ONNX export of fold models (``comp export``) and the onnxruntime engine of ``comp predict``.

Each fold model is wrapped so that the file is the whole inference step: input ``image`` uint8 NHWC at the
training size (batch 1, or any batch with ``dynamic_batch``), normalisation with the fold's mean/std inside the
graph, output ``probs`` (softmax; for a multi-label fold, ``meta["task"] == "multilabel"``, one sigmoid per
class). ``runs/E/export/export.json`` beside the ``fold_k.onnx`` files gives the
classes, size, resize mode and what each file was checked against.

The exporter is PyTorch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``): on torch 2.x it
needs only the ``onnx`` package (the dynamo exporter also needs ``onnxscript``), writes one self-contained file
(the dynamo exporter writes weights as external data by default), exports timm CNNs in about a second, and
names the unsupported ``aten::`` op when it fails, which :class:`ExportError` turns into a ``--opset`` hint.

Every export checks itself: onnxruntime and the torch model (with comp's own normalisation, as ``comp predict``
runs it) see the same real images and the largest absolute difference of probabilities must be at most
``tolerance`` (1e-4); the file is moved into place only when it passes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from comp.config import Config, ConfigError
from comp.data.competition import DataError
from comp.errors import CompError, OutputExists
from comp.files import write_text
from comp.infer.models import FoldModel, find_fold_models, load_model
from comp.infer.onnxrt import INPUT_NAME, OUTPUT_NAME, export_dir, run_session, same_source, session, source_stamp
from comp.runs import git_commit, run_dir
from comp.serve import require
from comp.tasks import Task

DEFAULT_OPSET = 17
MAX_OPSET = 20  # the TorchScript exporter's newest
TOLERANCE = 1e-4
PARITY_IMAGES = 32


class ExportError(CompError, RuntimeError):
    """A model that could not be exported, or an export that does not match its torch model."""


class Normalized(nn.Module):
    """uint8 NHWC images -> class probabilities: comp's normalisation, the model and a softmax (``sigmoid``: one
    independent sigmoid per class, multi-label) in one graph."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], task: Task):
        super().__init__()
        self.model = model
        self.task = task
        self.register_buffer("scale", torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1))
        self.register_buffer("shift", torch.tensor([-m / s for m, s in zip(mean, std)]).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float() * self.scale + self.shift
        logits = self.model(x).float()
        return self.task.activation(logits)


def _export_error(e: Exception, fm: FoldModel, opset: int) -> ExportError:
    msg = str(e)
    m = re.search(r"operator '([^']+)'", msg) or re.search(r"(aten::\w+|onnx::\w+|prim::\w+)", msg)
    op = m.group(1) if m else None
    name = fm.meta.get("model_name", "the model")
    what = f"the op {op}" if op else f"{type(e).__name__}: {msg.splitlines()[0] if msg else ''}"
    added = re.search(r"added in (?:opset )?version (\d+)", msg)
    if added:
        hint = f"it needs opset {added.group(1)} or later: pass --opset {added.group(1)}"
    elif opset < MAX_OPSET:
        hint = f"try a newer opset (--opset {MAX_OPSET} is the newest this exporter writes)"
    else:
        hint = "it has no ONNX form in this torch; pick another model.name or a newer torch"
    return ExportError(f"fold {fm.fold} ({name}) could not be exported at opset {opset}: {what} is not "
                       f"supported; {hint}")


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2: on failure the TorchScript exporter dumps the whole graph there from C++
    (its log switch tests a function object, so it is always on); ExportError names the op instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def parity_images(cfg: Config, fm: FoldModel, n: int = PARITY_IMAGES) -> np.ndarray:
    """Up to ``n`` real images at the fold's input size: test images, else train images."""
    from comp.data.cache import load_images
    from comp.data.competition import load_test, load_train

    paths: list[str] = []
    for load in (load_test, load_train):
        try:
            df = load(cfg)
        except Exception:  # noqa: BLE001 - no test set: the train images will do
            continue
        paths = [p for p in df["path"] if isinstance(p, str) and os.path.isfile(p)][:n]
        if paths:
            break
    if not paths:
        raise DataError("no readable test or train image to check the export against; run `comp check`")
    return load_images(paths, fm.size, fm.resize, max_pixels=cfg.data.max_pixels, cache="none", progress=False)


def export_fold(cfg: Config, fm: FoldModel, out: Path, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False,
                tolerance: float = TOLERANCE, images: np.ndarray | None = None) -> dict:
    """Export one fold model to ``out`` and check it against torch; returns its export.json entry."""
    model = load_model(cfg, fm, torch.device("cpu"))
    mean, std = fm.meta.get("mean"), fm.meta.get("std")
    if mean is None or std is None:
        raise DataError(f"{fm.path.with_suffix('.json')}: no mean/std; retrain fold {fm.fold} with this comp")
    wrapped = Normalized(model, mean, std, fm.task).eval()
    example = torch.zeros(1, fm.size, fm.size, 3, dtype=torch.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), _quiet_stderr():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice; see the docstring
            torch.onnx.export(
                wrapped, (example,), str(tmp), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], do_constant_folding=True,
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None,
            )
    except Exception as e:  # noqa: BLE001 - any exporter failure becomes one clear message
        tmp.unlink(missing_ok=True)
        raise _export_error(e, fm, opset) from e
    seconds = time.perf_counter() - t0
    try:
        import onnx

        onnx.checker.check_model(str(tmp))
        imgs = parity_images(cfg, fm) if images is None else images
        from comp.data.dataset import to_tensor_batch

        with torch.inference_mode():  # the torch side exactly as comp predict runs it
            logits = model(to_tensor_batch(imgs, mean, std)).float()
            ref = fm.task.activation(logits).numpy()
        got = run_session(session(tmp), imgs, None if dynamic_batch else 1)
        diff = float(np.abs(got - ref).max())
        if not diff <= tolerance:
            raise ExportError(f"fold {fm.fold}: onnxruntime and torch differ by up to {diff:.2e} on {len(imgs)} "
                              f"images (tolerance {tolerance:g}); the export was not written")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return {"file": out.name, "fold": fm.fold, "opset": opset, "dynamic_batch": dynamic_batch,
            "batch": None if dynamic_batch else 1, "parity_max_abs_diff": diff, "parity_images": len(imgs),
            **fm.task.agreement(got, ref), "export_seconds": round(seconds, 2),
            "source": {"file": str(fm.path.name), **source_stamp(fm)}}


def _inputs_and_outputs(fm) -> tuple:
    """What every fold of one export shares: classes, input size and resize, and the task its outputs answer."""
    return fm.meta["classes"], fm.size, fm.resize, fm.task.name


def _exported(info: dict, fm, path: Path, opset: int, dynamic_batch: bool) -> bool:
    """``path`` exists and export.json says it came from ``fm``'s weights as they are now, with these options."""
    entry = (info.get("folds") or {}).get(str(fm.fold)) or {}
    source = entry.get("source") or {}
    return path.exists() and entry.get("opset") == opset and entry.get("dynamic_batch") == dynamic_batch and \
        source.get("file") == str(fm.path.name) and same_source(source, fm)


def export(cfg: Config, folds: Sequence[int] | None = None, opset: int = DEFAULT_OPSET,
           dynamic_batch: bool = False, overwrite: bool = False, tolerance: float = TOLERANCE,
           echo: Callable[[str], None] = print) -> dict:
    """``comp export``: write ``runs/E/export/fold_k.onnx`` for ``folds`` (None: every fold) + export.json."""
    require("onnx", "onnxruntime")
    exp = cfg.exp
    if not exp:
        raise ConfigError("export needs an experiment: comp export --exp NAME --format onnx")
    models = find_fold_models(run_dir(exp))
    if folds is not None:
        have = {m.fold: m for m in models}
        missing = [k for k in folds if k not in have]
        if missing:
            raise DataError(f"{run_dir(exp)}: no model for fold {missing[0]} (have {sorted(have)}); "
                            f"train it: comp train --exp {exp} --fold {missing[0]}")
        models = [have[k] for k in folds]
    out_dir = export_dir(exp)
    targets = [(fm, out_dir / f"fold_{fm.fold}.onnx") for fm in models]
    info_path = out_dir / "export.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    if not overwrite and all(_exported(info, fm, p, opset, dynamic_batch) for fm, p in targets):
        echo(f"export {exp}: folds {[fm.fold for fm in models]} already exported from these weights with these "
             f"options ({info_path}); nothing to do (pass --overwrite to export again)")
        return info
    exists = [str(p) for _, p in targets if p.exists()]
    if exists and not overwrite:
        raise OutputExists(f"{exists[0]} already exists, exported from other weights or options; pass "
                           f"--overwrite to export again")
    fm0 = models[0]
    head = {"exp": exp, "format": "onnx", "classes": fm0.meta["classes"], "size": fm0.size, "resize": fm0.resize,
            "mean": fm0.meta.get("mean"), "std": fm0.meta.get("std"), "model_name": fm0.meta.get("model_name"),
            "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC",
                      "shape": ["batch" if dynamic_batch else 1, fm0.size, fm0.size, 3]},
            "task": fm0.task.name,
            "output": {"name": OUTPUT_NAME, "dtype": "float32", "meaning": fm0.task.output_meaning}}
    if info and (info.get("classes") != head["classes"] or info.get("size") != head["size"]
                 or info.get("task", "multiclass") != head["task"]):
        info = {}  # exports of an earlier run with other classes or size: start the record afresh
    entries = dict(info.get("folds", {}))
    for fm, path in targets:
        if _inputs_and_outputs(fm) != _inputs_and_outputs(fm0):
            raise DataError(f"{fm.path}: its classes, size, resize or task differ from fold {fm0.fold}'s; retrain it")
        entry = export_fold(cfg, fm, path, opset, dynamic_batch, tolerance)
        entries[str(fm.fold)] = entry
        echo(f"export {exp} fold {fm.fold}: {path} (opset {opset}, {'dynamic' if dynamic_batch else 'batch 1'}, "
             f"{path.stat().st_size / 1e6:.1f} MB); parity on {entry['parity_images']} images: max abs diff "
             f"{entry['parity_max_abs_diff']:.2e} (<= {tolerance:g}), argmax agrees on "
             f"{entry['agree_argmax']}/{entry['parity_images']}")
    import onnx
    import onnxruntime

    info = {**head, "folds": dict(sorted(entries.items(), key=lambda kv: int(kv[0]))),
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
            "git_commit": git_commit(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_text(info_path, json.dumps(info, indent=2, ensure_ascii=False))
    echo(f"wrote {info_path}; predict with it: comp predict --exp {exp} --engine onnxruntime")
    return info
