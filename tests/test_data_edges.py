"""Edge cases of the competition tables and of `comp sample --overwrite` found in review."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comp.config import from_dict
from comp.data.competition import DataError, load_train
from comp.data.sample import make_sample


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def test_folder_layout_keeps_image_files_only(tmp_path):
    root = tmp_path / "tree"
    _png(root / "cat" / "a.png", 10)
    _png(root / "dog sitting" / "b.jpg", 200)
    (root / "cat" / "README.txt").write_text("notes")
    _png(root / "cat" / ".hidden" / "c.png", 5)
    (root / "runs" / ".cache").mkdir(parents=True)  # comp's own outputs inside the tree
    (root / "runs" / ".cache" / "check-1.json").write_text("{}")
    cfg = from_dict({"data": {"root": str(root), "layout": "folders", "train_dir": "."}})
    df = load_train(cfg)
    assert sorted(df["id"]) == ["cat/a.png", "dog sitting/b.jpg"]
    assert sorted(df["label"]) == ["cat", "dog sitting"]


def test_header_only_train_csv_is_a_clear_error(tmp_path):
    (tmp_path / "train.csv").write_text("image_id,label\n")
    cfg = from_dict({"data": {"root": str(tmp_path)}})
    with pytest.raises(DataError, match="no rows below the header"):
        load_train(cfg)


def test_non_utf8_csv_is_a_clear_error(tmp_path):
    (tmp_path / "train.csv").write_bytes("image_id,label\na.png,caf\xe9\n".encode("latin-1"))
    cfg = from_dict({"data": {"root": str(tmp_path)}})
    with pytest.raises(DataError, match="not UTF-8"):
        load_train(cfg)


def test_sample_overwrite_replaces_only_an_earlier_sample_and_only_when_complete(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not an earlier `comp sample` folder"):
        make_sample(other, n_train=50, n_test=20, overwrite=True)
    assert (other / "keep.txt").read_text() == "user data"

    out = tmp_path / "s"
    make_sample(out, n_train=50, n_test=20)
    with pytest.raises(ValueError, match="only"):  # asks for more images than a class has
        make_sample(out, n_train=10_000_000, n_test=20, overwrite=True)
    assert (out / "train.csv").exists() and len((out / "train.csv").read_text().splitlines()) == 51
