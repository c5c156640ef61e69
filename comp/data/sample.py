"""``comp sample``: a small real Kaggle-style competition from Fashion-MNIST (or scikit-learn digits)."""

from __future__ import annotations

import gzip
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from PIL import Image

from comp.data.sample_photo import PhotoStats, write_photos
from comp.errors import MissingInput, OutputExists
from comp.files import write_csv

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


KINDS = ("fashion", "photo")


@dataclass
class SampleInfo:
    out: Path
    source: str
    n_train: int
    n_test: int
    classes: list[str]
    counts: dict
    kind: str = "fashion"
    sides: tuple[int, int] | None = None  # photo: the smallest and largest image side written
    sideways: int = 0  # photo: images stored turned, with an EXIF Orientation tag
    unit: str = "class"  # what the counts count: class, label (several per image) or grade

    def describe(self) -> str:
        """One line on what the images are."""
        lo, hi = self.sides or (0, 0)
        return {
            "photo": f"kind: photo: colour JPEGs of {lo}-{hi} px a side (varied aspect) on cluttered backgrounds; "
                     f"{self.sideways} stored sideways with an EXIF Orientation tag",
            "mosaic": "kind: mosaic: 2x2 grids of 1-3 of the source's small grey items, several labels per image",
            "graded": "kind: graded: 3x3 grids of the source's small grey items, the grade 0-4 is how many tops "
                      "among up to 3 other items (data.task ordinal, data.metric qwk)",
        }.get(self.kind, f"kind: {self.kind} (the source's own small grey images)")

    def lines(self) -> list[str]:
        """What ``comp sample`` prints."""
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1]))
        return [f"source: {self.source}", self.describe(),
                f"wrote {self.out}: {self.n_train} train, {self.n_test} test images, {len(self.classes)} classes",
                f"train {self.unit} counts: {counts}",
                f"held-out truth: {self.out / 'solution.csv'} (read only by `comp score`)"]


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).exists():
            return folder / name
    return None


def load_fashion_mnist(folder: Path) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(train images, train labels, test images, test labels), or None when the IDX files are not there."""
    files = {k: [_find(folder, s) for s in v] for k, v in FASHION_FILES.items()}
    if any(p is None for ps in files.values() for p in ps):
        return None
    (xi, yi), (ti, tl) = [[_read_idx(p) for p in files[k]] for k in ("train", "test")]
    return xi, yi, ti, tl


def load_source(from_dir: Optional[Path] = None):
    """Returns (name, classes, x_train, y_train, x_test, y_test)."""
    folder = Path(from_dir) if from_dir else FASHION_DIR
    fm = load_fashion_mnist(folder)
    if fm is not None:
        return (f"Fashion-MNIST ({folder})", FASHION_CLASSES, *fm)
    if from_dir:
        raise MissingInput(
            f"--from {from_dir}: expected Fashion-MNIST IDX files there "
            f"({', '.join(s + '.gz' for v in FASHION_FILES.values() for s in v)})"
        )
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    cut = int(len(y) * 0.75)
    classes = [str(i) for i in range(10)]
    return ("scikit-learn digits (install Debian package dataset-fashion-mnist for Fashion-MNIST)", classes,
            x[idx[:cut]], y[idx[:cut]], x[idx[cut:]], y[idx[cut:]])


def class_counts(n: int, n_classes: int, imbalance: float) -> np.ndarray:
    """Long-tailed counts summing to ``n``: class k gets n_0 * imbalance^(-k/(K-1))."""
    if imbalance < 1:
        raise ValueError("--imbalance is the largest/smallest class ratio and must be >= 1")
    w = imbalance ** (-np.arange(n_classes) / max(1, n_classes - 1))
    counts = np.floor(w / w.sum() * n).astype(int)
    counts = np.maximum(counts, 1)
    counts[0] += n - counts.sum()
    return counts


def _pick(y: np.ndarray, counts: np.ndarray, order: np.ndarray, rng) -> np.ndarray:
    out = []
    for rank, c in enumerate(order):
        idx = np.flatnonzero(y == c)
        if counts[rank] > len(idx):
            raise ValueError(f"class {c} has only {len(idx)} images; ask for fewer with --n-train/--n-test")
        out.append(rng.choice(idx, size=counts[rank], replace=False))
    sel = np.concatenate(out)
    rng.shuffle(sel)
    return sel


def _save(img: np.ndarray, path: Path, fmt: str) -> None:
    im = Image.fromarray(img)
    if fmt == "jpg":
        im.save(path, quality=95)
    else:
        im.save(path)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExists(f"{out} exists and is not empty; choose another folder or pass --overwrite")
        if not ((out / "train.csv").exists() and (out / "solution.csv").exists()):
            raise OutputExists(f"{out} is not an earlier `comp sample` folder; --overwrite replaces only those")


def _write_images(kind: str, images: np.ndarray, folder: Path, ids: list[str], fmt: str, seed: int,
                  stream: int) -> Optional[PhotoStats]:
    folder.mkdir(parents=True)
    paths = [folder / f"{i}.{fmt}" for i in ids]
    if kind == "photo":
        return write_photos(images, paths, seed, stream)
    for img, path in zip(images, paths):
        _save(img, path, fmt)
    return None


def make_sample(
    out: str | Path,
    n_train: int = 2000,
    n_test: int = 500,
    imbalance: float = 1.0,
    seed: int = 0,
    fmt: Optional[str] = None,
    from_dir: Optional[str | Path] = None,
    overwrite: bool = False,
    kind: str = "fashion",
) -> SampleInfo:
    """Write OUT/{train.csv, train_images/, test_images/, sample_submission.csv, solution.csv}.

    Ids carry no extension (``tr_000001`` names ``train_images/tr_000001.png``), as in many Kaggle
    competitions. ``solution.csv`` is the held-out truth: only ``comp score`` should ever read it.
    kind: ``fashion`` (the source's own 28 px grey images, ``fmt`` png (default) or jpg) or ``photo``
    (photo-like colour JPEGs of 300-700 px, :mod:`comp.data.sample_photo`).
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown --kind {kind!r}, expected one of {KINDS}")
    fmt = fmt or ("jpg" if kind == "photo" else "png")
    if fmt not in ("png", "jpg"):
        raise ValueError(f"--format {fmt!r}: expected png or jpg")
    if kind == "photo" and fmt != "jpg":
        raise ValueError("--kind photo writes JPEGs (camera-like, with EXIF orientation); drop --format png")
    out = Path(out)
    _check_out(out, overwrite)
    source, classes, xtr, ytr, xte, yte = load_source(Path(from_dir) if from_dir else None)
    k = len(classes)
    rng = np.random.default_rng(seed)
    order = rng.permutation(k)  # which class is the largest
    tr = _pick(ytr, class_counts(n_train, k, imbalance), order, rng)
    te = _pick(yte, class_counts(n_test, k, 1.0), order, rng)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    train_ids = [f"tr_{i:06d}" for i in range(len(tr))]
    test_ids = [f"te_{i:06d}" for i in range(len(te))]
    stats = [_write_images(kind, xtr[tr], tmp / "train_images", train_ids, fmt, seed, stream=0),
             _write_images(kind, xte[te], tmp / "test_images", test_ids, fmt, seed, stream=1)]
    train = pd.DataFrame({"image_id": train_ids, "label": [classes[c] for c in ytr[tr]]})
    write_csv(tmp / "train.csv", train)
    write_csv(tmp / "sample_submission.csv", pd.DataFrame({"image_id": test_ids, "label": classes[0]}))
    write_csv(tmp / "solution.csv", pd.DataFrame({"image_id": test_ids, "label": [classes[c] for c in yte[te]]}))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # replaced only now that the new sample is complete
        shutil.rmtree(out)
    tmp.rename(out)
    counts = train["label"].value_counts().to_dict()
    info = SampleInfo(out=out, source=source, n_train=len(tr), n_test=len(te), classes=classes, counts=counts,
                      kind=kind)
    if kind == "photo":
        info.sides = (min(s.min_side for s in stats), max(s.max_side for s in stats))
        info.sideways = sum(s.sideways for s in stats)
    return info
