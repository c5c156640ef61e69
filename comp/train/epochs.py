"""Epoch honesty, measured: every epoch's validation probabilities of a fold, and the "fixed-epoch CV".

Each fold keeps its best epoch (and raw or EMA weights) by its own validation score, so the OOF is scored on the
rows that chose it: standard, slightly optimistic. ``runs/E/fold_k/val_epochs.npz`` keeps, for every committed
epoch, the validation probabilities of the weights the checkpoint would pick at that epoch (the better of raw and
EMA), written atomically after each epoch. ``fixed_epoch_cv`` scores each fold k at the epoch chosen from the
other folds' curves (their mean data.metric per epoch), never from fold k's own: the difference to the CV is
what choosing the epoch on the OOF's own rows is worth.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from comp.files import write_bytes
from comp.metrics import Metric

FILE = "val_epochs.npz"


def record_epoch(fd: Path, epoch: int, ids, y: np.ndarray, probs: np.ndarray, classes: list[str]) -> Path:
    """Add epoch ``epoch``'s validation probabilities to fd/val_epochs.npz (epochs >= it, from a run that was
    interrupted and resumed, are replaced)."""
    path = Path(fd) / FILE
    epochs, stack = np.zeros(0, np.int64), np.zeros((0, len(y), len(classes)), np.float16)  # y: (N,) or (N, C)
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            if z["probs"].shape[1:] == stack.shape[1:]:
                keep = z["epochs"] < epoch
                epochs, stack = z["epochs"][keep], z["probs"][keep]
    epochs = np.append(epochs, epoch)
    stack = np.concatenate([stack, np.asarray(probs, np.float16)[None]])
    buf = io.BytesIO()
    np.savez_compressed(buf, epochs=epochs, probs=stack, y=np.asarray(y, np.int64),
                        ids=np.asarray([str(i) for i in ids]), classes=np.asarray(classes))
    return write_bytes(path, buf.getvalue())


@dataclass
class FixedEpochCV:
    score: float  # data.metric of the pooled OOF, each fold at the epoch the other folds' curves chose
    own_score: float  # the same pooled from each fold's own best epoch in these files (what the CV does)
    epochs: dict  # fold -> the epoch chosen for it from the other folds


def fixed_epoch_cv(run: Path, m: Metric) -> FixedEpochCV | None:
    """The fixed-epoch CV of run folder ``run`` from its folds' val_epochs.npz; None with fewer than two folds."""
    files = sorted(Path(run).glob(f"fold_*/{FILE}"))
    folds = {}
    for p in files:
        k = p.parent.name.removeprefix("fold_")
        if k.isdigit():
            with np.load(p, allow_pickle=False) as z:
                folds[int(k)] = {n: z[n] for n in ("epochs", "probs", "y", "classes")}
    if len(folds) < 2:
        return None
    first = next(iter(folds.values()))
    classes = [str(c) for c in first["classes"]]
    curves = {k: {int(e): m(f["y"], f["probs"][i].astype(np.float64), classes) for i, e in enumerate(f["epochs"])}
              for k, f in folds.items()}
    chosen, ys, fixed, own = {}, [], [], []
    for k, f in folds.items():
        others = [curves[j] for j in folds if j != k]
        common = sorted(set.intersection(*(set(c) for c in others)))
        mean = [np.mean([c[e] for c in others]) for e in common]
        e = common[int(np.argmax(mean) if m.greater_is_better else np.argmin(mean))]
        e = max(x for x in curves[k] if x <= e) if any(x <= e for x in curves[k]) else min(curves[k])
        chosen[k] = e
        pos = {int(x): i for i, x in enumerate(f["epochs"])}
        best = max(curves[k], key=lambda x: curves[k][x] * m.sign)
        ys.append(f["y"])
        fixed.append(f["probs"][pos[e]].astype(np.float64))
        own.append(f["probs"][pos[best]].astype(np.float64))
    y = np.concatenate(ys)
    return FixedEpochCV(score=m(y, np.concatenate(fixed), classes), own_score=m(y, np.concatenate(own), classes),
                        epochs=chosen)
