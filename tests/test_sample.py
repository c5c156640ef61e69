"""comp sample: a real Kaggle-style competition (Fashion-MNIST, else scikit-learn digits)."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from comp.cli import cli
from comp.data import sample
from comp.data.sample import FASHION_CLASSES, load_source, make_sample


def _csv(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_files_and_classes(competition):
    train, sub, sol = (_csv(competition / n) for n in ("train.csv", "sample_submission.csv", "solution.csv"))
    assert list(train.columns) == ["image_id", "label"] and len(train) == 600
    assert train["image_id"].is_unique
    for i in train["image_id"].head(20):
        assert (competition / "train_images" / f"{i}.png").is_file()
    assert len(list((competition / "train_images").iterdir())) == 600
    assert len(list((competition / "test_images").iterdir())) == 150
    assert sub["image_id"].tolist() == sol["image_id"].tolist()
    assert sub["label"].nunique() == 1  # a placeholder, as on Kaggle
    labels = set(train["label"])
    if sample.load_fashion_mnist(sample.FASHION_DIR) is not None:
        assert labels == set(FASHION_CLASSES) and "T-shirt/top" in labels
    assert train["label"].value_counts().max() - train["label"].value_counts().min() <= 1
    assert set(sol["label"]) <= labels
    with Image.open(competition / "train_images" / f"{train['image_id'][0]}.png") as im:
        assert im.size == (28, 28) if labels == set(FASHION_CLASSES) else im.size == (8, 8)


def test_imbalance_ratio(imbalanced_competition):
    counts = _csv(imbalanced_competition / "train.csv")["label"].value_counts()
    assert counts.sum() == 800
    assert 6 <= counts.max() / counts.min() <= 10  # asked for 8
    test_counts = _csv(imbalanced_competition / "solution.csv")["label"].value_counts()
    assert test_counts.max() - test_counts.min() <= 1  # the test set stays balanced


def test_cli_jpg_format_and_overwrite(tmp_path):
    out = tmp_path / "jpg"
    args = ["sample", str(out), "--n-train", "40", "--n-test", "20", "--format", "jpg", "--seed", "3"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "40 train" in r.output and "solution.csv" in r.output
    files = sorted((out / "train_images").iterdir())
    assert len(files) == 40 and all(f.suffix == ".jpg" for f in files)
    with Image.open(files[0]) as im:
        assert im.format == "JPEG"
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "--overwrite" in r.output
    assert CliRunner().invoke(cli, [*args, "--overwrite"]).exit_code == 0


def test_same_seed_same_data(tmp_path):
    a = make_sample(tmp_path / "a", n_train=30, n_test=10, seed=5)
    b = make_sample(tmp_path / "b", n_train=30, n_test=10, seed=5)
    assert (a.out / "train.csv").read_bytes() == (b.out / "train.csv").read_bytes()
    x = np.asarray(Image.open(a.out / "train_images" / "tr_000007.png"))
    y = np.asarray(Image.open(b.out / "train_images" / "tr_000007.png"))
    assert (x == y).all()


def test_digits_fallback(tmp_path, monkeypatch):
    empty = tmp_path / "no-fashion"
    empty.mkdir()
    monkeypatch.setattr(sample, "FASHION_DIR", empty)
    name, classes, xtr, ytr, xte, yte = load_source()
    assert name.startswith("scikit-learn digits") and classes == [str(i) for i in range(10)]
    assert xtr.dtype == np.uint8 and xtr.max() > 200 and len(xtr) + len(xte) == 1797
    assert set(ytr.tolist()) == set(yte.tolist()) == set(range(10))
    info = make_sample(tmp_path / "d", n_train=100, n_test=30, seed=0)
    assert info.source.startswith("scikit-learn digits")
    assert set(_csv(info.out / "train.csv")["label"]) == set(classes)
    with pytest.raises(FileNotFoundError, match="--from"):
        load_source(empty)
