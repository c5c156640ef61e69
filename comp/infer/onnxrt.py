"""The onnxruntime engine of ``comp predict --engine onnxruntime`` (and the app): ``comp export``'s files run.

Each ``runs/E/export/fold_k.onnx`` takes uint8 NHWC images and returns probabilities (normalisation and softmax,
or a multi-label run's sigmoids, are in the graph, comp.serve.onnx); TTA views are applied to the uint8 batches. A
file exported from an earlier model.safetensors (the fold was retrained) is refused by its size and mtime stamp,
one that holds the other task's probabilities by export.json's ``task``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from comp.data.competition import DataError
from comp.extras import require
from comp.files import digest_file
from comp.infer.models import FoldModel
from comp.runs import run_dir

INPUT_NAME, OUTPUT_NAME = "image", "probs"


def export_dir(exp: str) -> Path:
    return run_dir(exp) / "export"


def source_stamp(fm: FoldModel) -> dict:
    """What an export records of the weights it came from: their size and a digest of their bytes, so a copy (a
    Kaggle dataset, another machine) still matches and a retrained fold does not."""
    return {"size": os.stat(fm.path).st_size, "sha256": digest_file(fm.path)}


def same_source(recorded: dict | None, fm: FoldModel) -> bool:
    """Whether export.json's ``source`` describes ``fm``'s weights as they are now (exports made before digests
    were recorded compare size and modification time, as they did)."""
    recorded = recorded or {}
    if "sha256" not in recorded:
        st = os.stat(fm.path)
        return recorded.get("size") == st.st_size and recorded.get("mtime_ns") == st.st_mtime_ns
    return recorded.get("size") == os.stat(fm.path).st_size and recorded["sha256"] == digest_file(fm.path)


def session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def run_session(sess, images: np.ndarray, batch: int | None) -> np.ndarray:
    step = batch or len(images)
    return np.concatenate([sess.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images[i : i + step])})[0]
                           for i in range(0, len(images), step)])


_NUMPY_VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {  # exact pixel permutations on NHWC uint8
    "identity": lambda x: x,
    "hflip": lambda x: x[:, :, ::-1],
    "vflip": lambda x: x[:, ::-1],
    "hvflip": lambda x: x[:, ::-1, ::-1],
    "rot90": lambda x: np.rot90(x, 1, axes=(1, 2)),
    "rot270": lambda x: np.rot90(x, -1, axes=(1, 2)),
}


def uint8_view(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """A TTA view on uint8 NHWC batches: flips and rotations in numpy; shift and scale<f> by comp.infer.tta on uint8
    (scale then rounds to whole pixel values, where the torch engine interpolates normalised floats)."""
    if name in _NUMPY_VIEWS:
        return _NUMPY_VIEWS[name]
    from comp.infer.tta import create_view

    return create_view(name)


class OnnxFold:
    """One exported fold model in an onnxruntime session."""

    def __init__(self, path: Path, entry: dict, threads: int | None = None):
        self.path = path
        self.batch = entry.get("batch")
        self.session = session(path, threads)

    def predict(self, images: np.ndarray, rows: np.ndarray, views: Sequence[str], batch_size: int = 128,
                bar=None) -> np.ndarray:
        """Probabilities of ``images[rows]`` averaged over ``views``: (len(rows), C)."""
        fns = [uint8_view(v) for v in views]
        step = self.batch or batch_size
        outs = []
        for s in range(0, len(rows), batch_size):
            x = images[rows[s : s + batch_size]]
            p = sum(run_session(self.session, np.ascontiguousarray(fn(x)), step) for fn in fns) / len(fns)
            outs.append(p.astype(np.float64))
            if bar is not None:
                bar.update(len(x))
        return np.concatenate(outs) if outs else np.zeros((0, 0))


def load_exports(exp: str, folds: Sequence[FoldModel]) -> dict[int, OnnxFold]:
    """fold -> OnnxFold for every fold in ``folds``; errors name the comp export command that is missing."""
    require("onnxruntime")
    d = export_dir(exp)
    info_path = d / "export.json"
    if not info_path.exists():
        raise DataError(f"{info_path} not found: export the models first: comp export --exp {exp} --format onnx "
                        "--all-folds")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    want = folds[0].task.name
    if info.get("task", "multiclass") != want:
        raise DataError(f"{info_path}: the export holds {info.get('task', 'multiclass')} probabilities but the run is "
                        f"{want}; export it again: comp export --exp {exp} --format onnx --all-folds --overwrite")
    out = {}
    for fm in folds:
        entry = info.get("folds", {}).get(str(fm.fold))
        path = d / f"fold_{fm.fold}.onnx"
        if entry is None or not path.exists():
            raise DataError(f"{path} not found: comp export --exp {exp} --format onnx --fold {fm.fold}")
        if not same_source(entry.get("source"), fm):
            raise DataError(f"{path} was exported from an earlier {fm.path} (the fold was retrained); export it "
                            f"again: comp export --exp {exp} --format onnx --fold {fm.fold} --overwrite")
        out[fm.fold] = OnnxFold(path, entry)
    return out
