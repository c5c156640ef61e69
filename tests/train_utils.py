"""Helpers shared by the training tests: tiny, fast settings and a folds file per working directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from comp.config import load_config

# test_resnet (timm's ~50k-parameter ResNet) learns Fashion-MNIST past chance in 2 epochs at 32 px in ~1 s.
TINY = [
    "model.name=test_resnet",
    "input.size=32",
    "train.epochs=2",
    "train.batch_size=32",
    "train.lr=3e-3",
    "folds.n_splits=3",
]


def make_folds_file(workdir: Path) -> Path:
    """folds/folds.csv for the workdir's competition (3 folds) via `comp folds`' library function."""
    from comp.data.folds import make_folds

    cfg = load_config(workdir / "comp.yaml", overrides=["folds.n_splits=3"])
    make_folds(cfg, echo=lambda s: None)
    return workdir / "folds" / "folds.csv"


@contextmanager
def folded_workdir(tmp_path_factory, competition: Path, name: str) -> Iterator[Path]:
    """A fresh working directory with comp.yaml and a 3-fold folds file, the cwd inside the block (module-scoped
    fixtures can't use monkeypatch.chdir)."""
    from conftest import write_config

    cwd = tmp_path_factory.mktemp(name)
    write_config(cwd, competition)
    here = os.getcwd()
    os.chdir(cwd)
    try:
        make_folds_file(cwd)
        yield cwd
    finally:
        os.chdir(here)


def tiny_cfg(workdir: Path, exp: str, *sets: str):
    return load_config(workdir / "comp.yaml", exp=exp, overrides=[*TINY, *sets])


def quiet(_msg: str) -> None:
    pass


def read_oof(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"image_id": str, "label": str}, keep_default_na=False)
