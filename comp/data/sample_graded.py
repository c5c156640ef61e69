"""``comp sample --graded``: a small graded competition (APTOS 2019's files), for ``data.task: ordinal`` and qwk.

Each image is a 3x3 grid of 28 px cells (84 px) on a faint noisy background. Its grade 0-4 is how many tops it
holds (Fashion-MNIST's T-shirts, pullovers, coats and shirts; with the digits fallback, 0s, 2s, 4s and 6s), beside
0-3 other items as distractors (dresses, trousers, shoes, bags), each at a random brightness in a random cell. A
grade counts the lesions that matter among others that do not, so a miss by two is worse than a miss by one, as
in graded retina photos. With ``imbalance`` r, grade g is drawn with weight r^(-g/4): grade 0 the commonest, as in
APTOS.

    train.csv              id_code,diagnosis          images train_images/<id_code>.png
    sample_submission.csv  id_code,diagnosis          images test_images/<id_code>.png
    solution.csv           the test grades (read only by ``comp score``)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from comp.data.sample import SampleInfo, load_source
from comp.errors import OutputExists
from comp.files import write_csv

GRADES = 5
CELLS = 3  # a 3 x 3 grid
COUNTED = (0, 2, 4, 6)  # the classes a grade counts: T-shirt/top, pullover, coat, shirt (digits: 0, 2, 4, 6)
DISTRACTORS = 3  # at most this many other items


def grade_images(x: np.ndarray, y: np.ndarray, n: int, imbalance: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, 84, 84) uint8 and their grades (n,): grade g = g counted items among 0-3 others, each in
    its own cell."""
    h, w = x.shape[1:3]
    p = imbalance ** (-np.arange(GRADES) / (GRADES - 1))
    grades = rng.choice(GRADES, size=n, p=p / p.sum())
    counted, other = np.flatnonzero(np.isin(y, COUNTED)), np.flatnonzero(~np.isin(y, COUNTED))
    out = rng.integers(0, 24, size=(n, CELLS * h, CELLS * w)).astype(np.float32)  # faint noise
    for i, g in enumerate(grades):
        extra = int(rng.integers(0, DISTRACTORS + 1))
        items = [*rng.choice(counted, size=int(g)), *rng.choice(other, size=extra)]
        for cell, j in zip(rng.choice(CELLS * CELLS, size=len(items), replace=False), items):
            r, c = divmod(int(cell), CELLS)
            tile = out[i, r * h:(r + 1) * h, c * w:(c + 1) * w]
            np.maximum(tile, x[j].astype(np.float32) * rng.uniform(0.5, 1.0), out=tile)
    return out.clip(0, 255).astype(np.uint8), grades


def build_sample(out, n_train: int, n_test: int, imbalance: float, seed: int, fmt: str | None, kind: str, from_dir,
                 overwrite: bool, target: str = "single", layout: str = "hpa") -> SampleInfo:
    """``comp sample``: the competition of ``target`` (single, multilabel, graded) and image ``kind``."""
    from comp.data.sample import make_sample
    from comp.data.sample_multilabel import make_multilabel_sample

    if target != "single" and kind != "fashion":
        raise ValueError(f"--{target} builds grids of the small grey images; drop --kind {kind}")
    makers = {
        "single": lambda: make_sample(out, n_train, n_test, imbalance, seed, fmt, from_dir, overwrite, kind=kind),
        "multilabel": lambda: make_multilabel_sample(out, layout, n_train, n_test, imbalance, seed, fmt or "png",
                                                     from_dir, overwrite),
        "graded": lambda: make_graded_sample(out, n_train, n_test, imbalance, seed, fmt or "png", from_dir,
                                             overwrite),
    }
    return makers[target]()


def make_graded_sample(out: str | Path, n_train: int = 2000, n_test: int = 500, imbalance: float = 1.0,
                       seed: int = 0, fmt: str = "png", from_dir=None, overwrite: bool = False) -> SampleInfo:
    """Write a graded competition folder and ``OUT/solution.csv`` (its test grades)."""
    if fmt not in ("png", "jpg"):
        raise ValueError(f"--format {fmt!r}: expected png or jpg")
    if imbalance < 1:
        raise ValueError("--imbalance is the commonest/rarest grade ratio and must be >= 1")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExists(f"{out} exists and is not empty; choose another folder or pass --overwrite")
        if not ((out / "train.csv").exists() and (out / "solution.csv").exists()):
            raise OutputExists(f"{out} is not an earlier `comp sample` folder; --overwrite replaces only those")
    source, _, xtr, ytr, xte, yte = load_source(Path(from_dir) if from_dir else None)
    rng = np.random.default_rng(seed)
    img_tr, g_tr = grade_images(xtr, ytr, n_train, imbalance, rng)
    img_te, g_te = grade_images(xte, yte, n_test, 1.0, rng)
    train_ids = [f"tr_{i:06d}" for i in range(n_train)]
    test_ids = [f"te_{i:06d}" for i in range(n_test)]
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    for folder, ids, imgs in (("train_images", train_ids, img_tr), ("test_images", test_ids, img_te)):
        (tmp / folder).mkdir(parents=True)
        for i, img in zip(ids, imgs):
            Image.fromarray(img).save(tmp / folder / f"{i}.{fmt}", **({"quality": 95} if fmt == "jpg" else {}))
    write_csv(tmp / "train.csv", pd.DataFrame({"id_code": train_ids, "diagnosis": g_tr}))
    write_csv(tmp / "sample_submission.csv", pd.DataFrame({"id_code": test_ids, "diagnosis": 0}))
    write_csv(tmp / "solution.csv", pd.DataFrame({"id_code": test_ids, "diagnosis": g_te}))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    counts = {str(g): int((g_tr == g).sum()) for g in range(GRADES)}
    return SampleInfo(out=out, source=source, n_train=n_train, n_test=n_test, classes=[str(g) for g in range(GRADES)],
                      counts=counts, kind="graded", unit="grade")
