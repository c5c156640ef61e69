"""``comp sample --multilabel``: a small multi-label competition of Fashion-MNIST (or digits) mosaics.

Each image is a 2x2 grid of tiles (28 px Fashion-MNIST items: a 56 px image) holding 1-3 items of distinct
classes in random cells, the others black; its labels are the classes shown. Three layouts, as the best-known
multi-label competitions write their files:

    hpa     train.csv ``Id,Target`` with space-separated class indices (``"0 5 7"``), images train/<Id>.png,
            sample_submission.csv ``Id,Predicted``  (Human Protein Atlas)
    planet  train_v2.csv ``image_name,tags`` with space-separated names (``"coat sneaker"``), images
            train-jpg/<name>.<ext>, sample_submission_v2.csv ``image_name,tags``  (Planet: Understanding the Amazon)
    ranzcr  train.csv ``StudyInstanceUID`` + one 0/1 column per class (names as Fashion-MNIST spells them,
            spaces and ``/`` included) + ``PatientID`` (1-3 images per patient), sample_submission.csv with one
            probability column per class  (RANZCR CLiP, CheXpert)

``solution.csv`` beside the folder's csv files holds the test truth in the sample submission's shape.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from comp.data.sample import FASHION_CLASSES, SampleInfo, load_source
from comp.errors import OutputExists
from comp.files import write_csv

LAYOUTS = ("hpa", "planet", "ranzcr")
SLUGS = ["t_shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def _names(layout: str, classes: list[str]) -> list[str]:
    fashion = classes == FASHION_CLASSES
    if layout == "hpa":
        return [str(i) for i in range(len(classes))]
    if layout == "planet":
        return SLUGS if fashion else [f"digit_{c}" for c in classes]
    return list(classes) if fashion else [f"digit {c}" for c in classes]


def _mosaics(x: np.ndarray, y: np.ndarray, n: int, n_classes: int, imbalance: float, rng) -> tuple[np.ndarray,
                                                                                                       np.ndarray]:
    """``n`` 2x2 mosaics (n, 2h, 2w) uint8 and their (n, C) 0/1 labels; class k is drawn with weight
    imbalance^(-k/(C-1)) (a long tail of rare labels)."""
    h, w = x.shape[1:3]
    weights = imbalance ** (-np.arange(n_classes) / max(1, n_classes - 1))
    weights = weights / weights.sum()
    by_class = [np.flatnonzero(y == c) for c in range(n_classes)]
    out = np.zeros((n, 2 * h, 2 * w), np.uint8)
    hot = np.zeros((n, n_classes), np.int64)
    for i in range(n):
        k = int(rng.integers(1, 4))
        cls = rng.choice(n_classes, size=k, replace=False, p=weights)
        cells = rng.choice(4, size=k, replace=False)
        for c, cell in zip(cls, cells):
            item = x[rng.choice(by_class[c])]
            r, col = divmod(int(cell), 2)
            out[i, r * h:(r + 1) * h, col * w:(col + 1) * w] = item
            hot[i, c] = 1
    return out, hot


def _frames(layout: str, names: list[str], train_ids, test_ids, hot_tr, hot_te, rng):
    """(train, sample submission, solution) frames in the layout's own columns."""
    def joined(hot):
        return [" ".join(names[j] for j in np.flatnonzero(row)) for row in hot]

    if layout in ("hpa", "planet"):
        idc, lab, sub_lab = ("Id", "Target", "Predicted") if layout == "hpa" else ("image_name", "tags", "tags")
        train = pd.DataFrame({idc: train_ids, lab: joined(hot_tr)})
        sample = pd.DataFrame({idc: test_ids, sub_lab: " ".join(names[:2]) if layout == "planet" else names[0]})
        solution = pd.DataFrame({idc: test_ids, sub_lab: joined(hot_te)})
        return train, sample, solution
    idc = "StudyInstanceUID"
    train = pd.DataFrame(hot_tr, columns=names)
    train.insert(0, idc, train_ids)
    patients, p = [], 0
    while len(patients) < len(train_ids):  # 1-3 consecutive images per patient
        patients += [f"pt_{p:05d}"] * int(rng.integers(1, 4))
        p += 1
    train["PatientID"] = patients[: len(train_ids)]
    sample = pd.DataFrame(0, index=range(len(test_ids)), columns=names)
    sample.insert(0, idc, test_ids)
    solution = pd.DataFrame(hot_te, columns=names)
    solution.insert(0, idc, test_ids)
    return train, sample, solution


FILES = {  # layout -> (train csv, sample csv, train folder, test folder, id prefix)
    "hpa": ("train.csv", "sample_submission.csv", "train", "test", ""),
    "planet": ("train_v2.csv", "sample_submission_v2.csv", "train-jpg", "test-jpg", ""),
    "ranzcr": ("train.csv", "sample_submission.csv", "train", "test", "1.2.826.0."),
}


def make_multilabel_sample(out: str | Path, layout: str = "hpa", n_train: int = 2000, n_test: int = 500,
                           imbalance: float = 1.0, seed: int = 0, fmt: str = "png", from_dir=None,
                           overwrite: bool = False) -> SampleInfo:
    """Write a multi-label competition folder in ``layout`` (LAYOUTS) and ``OUT/solution.csv`` (its test truth)."""
    if layout not in LAYOUTS:
        raise ValueError(f"--layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    if fmt not in ("png", "jpg"):
        raise ValueError(f"--format {fmt!r}: expected png or jpg")
    if imbalance < 1:
        raise ValueError("--imbalance is the commonest/rarest label ratio and must be >= 1")
    out = Path(out)
    train_csv, sample_csv, train_dir, test_dir, prefix = FILES[layout]
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExists(f"{out} exists and is not empty; choose another folder or pass --overwrite")
        if not ((out / train_csv).exists() and (out / "solution.csv").exists()):
            raise OutputExists(f"{out} is not an earlier `comp sample` folder; --overwrite replaces only those")
    source, classes, xtr, ytr, xte, yte = load_source(Path(from_dir) if from_dir else None)
    rng = np.random.default_rng(seed)
    names = _names(layout, classes)
    img_tr, hot_tr = _mosaics(xtr, ytr, n_train, len(classes), imbalance, rng)
    img_te, hot_te = _mosaics(xte, yte, n_test, len(classes), 1.0, rng)
    train_ids = [f"{prefix}tr_{i:06d}" for i in range(n_train)]
    test_ids = [f"{prefix}te_{i:06d}" for i in range(n_test)]
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    for folder, ids, imgs in ((train_dir, train_ids, img_tr), (test_dir, test_ids, img_te)):
        (tmp / folder).mkdir(parents=True)
        for i, img in zip(ids, imgs):
            Image.fromarray(img).save(tmp / folder / f"{i}.{fmt}", **({"quality": 95} if fmt == "jpg" else {}))
    train, sample, solution = _frames(layout, names, train_ids, test_ids, hot_tr, hot_te, rng)
    write_csv(tmp / train_csv, train)
    write_csv(tmp / sample_csv, sample)
    write_csv(tmp / "solution.csv", solution)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    counts = {n: int(c) for n, c in zip(names, hot_tr.sum(0))}
    return SampleInfo(out=out, source=source, n_train=n_train, n_test=n_test, classes=names, counts=counts,
                      kind="mosaic", unit="label")
