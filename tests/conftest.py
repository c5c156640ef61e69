"""Shared fixtures: one small real competition per session (Fashion-MNIST, else scikit-learn digits)."""

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from comp.config import load_config  # noqa: E402
from comp.data.sample import make_sample  # noqa: E402


@pytest.fixture(scope="session")
def competition(tmp_path_factory) -> Path:
    """A balanced 600-image competition (ids without extension, PNG files) with solution.csv."""
    out = tmp_path_factory.mktemp("sample") / "comp"
    make_sample(out, n_train=600, n_test=150, imbalance=1.0, seed=0)
    return out


@pytest.fixture(scope="session")
def imbalanced_competition(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample_imb") / "comp"
    make_sample(out, n_train=800, n_test=200, imbalance=8.0, seed=1)
    return out


def write_config(workdir: Path, root: Path, **sections) -> Path:
    """comp.yaml in ``workdir`` for a `comp sample` folder, plus any extra sections."""
    data = {"root": str(root), "id_has_ext": False, "ext": ".png", "id_col": "image_id", "label_col": "label"}
    data.update(sections.pop("data", {}))
    values = {"data": data, **sections}
    path = workdir / "comp.yaml"
    path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def workdir(tmp_path, competition, monkeypatch) -> Path:
    """A working directory (cwd) holding comp.yaml for ``competition``; outputs land in it."""
    write_config(tmp_path, competition)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cfg(workdir):
    return load_config(workdir / "comp.yaml")
