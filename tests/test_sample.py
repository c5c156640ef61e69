"""comp sample: a real Kaggle-style competition (Fashion-MNIST, else scikit-learn digits), as the small grey
images or as photo-like colour JPEGs (--kind photo)."""

import io

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from comp.cli import cli
from comp.data import sample
from comp.data.images import load_rgb
from comp.data.sample import FASHION_CLASSES, load_source, make_sample
from comp.data.sample_photo import photo_bytes


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
    photo = make_sample(tmp_path / "dp", n_train=20, n_test=10, seed=0, kind="photo")
    with Image.open(photo.out / "train_images" / "tr_000000.jpg") as im:
        assert im.format == "JPEG" and min(im.size) >= 300


# ------------------------------------------------------------------ --kind photo


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    return make_sample(tmp_path_factory.mktemp("photo") / "comp", n_train=40, n_test=20, imbalance=4.0, seed=2,
                       kind="photo")


def _jpegs(root):
    return sorted((root / "train_images").iterdir()) + sorted((root / "test_images").iterdir())


def test_photo_is_colour_jpegs_of_varied_size_with_a_long_tail(photo):
    files = _jpegs(photo.out)
    assert len(files) == 60 and all(f.suffix == ".jpg" for f in files)
    sizes = []
    for f in files:
        with Image.open(f) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            sizes.append(ImageOps.exif_transpose(im).size)
            rgb = np.asarray(im.convert("RGB")).astype(int)
        assert 300 <= min(im.size) and max(im.size) <= 700
        assert np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean() > 8  # colour, not grey
    assert len(set(sizes)) > 50 and len({round(w / h, 1) for w, h in sizes}) > 10  # sizes and aspects vary
    assert photo.kind == "photo" and 300 <= photo.sides[0] < photo.sides[1] <= 700
    assert "photo" in photo.describe() and f"{photo.sideways} stored sideways" in photo.describe()
    counts = _csv(photo.out / "train.csv")["label"].value_counts()
    assert counts.sum() == 40 and counts.max() >= 4 * counts.min()  # asked for 4x
    test_counts = _csv(photo.out / "solution.csv")["label"].value_counts()
    assert len(test_counts) == 10 and (test_counts == 2).all()  # balanced hold-out
    assert sorted(_csv(photo.out / "sample_submission.csv")["image_id"]) == [f.stem for f in files[40:]]


def test_photo_sideways_files_are_upright_after_exif_transpose(photo):
    turned = 0
    for f in _jpegs(photo.out):
        with Image.open(f) as im:
            tag = im.getexif().get(0x0112)
            upright = ImageOps.exif_transpose(im).size
            if tag is None:
                continue
            assert tag in (3, 6, 8)
            turned += 1
            assert im.size == (upright[::-1] if tag in (6, 8) else upright)
        assert load_rgb(f).shape == (upright[1], upright[0], 3)  # comp's loader turns it back
    assert turned == photo.sideways == 6  # 10% of 40 and of 20


@pytest.mark.parametrize("tag", [6, 8, 3])
def test_photo_exif_tag_undoes_the_stored_turn(tag):
    item = np.zeros((28, 28), np.uint8)
    item[4:24, 8:14] = 255  # an asymmetric item: a wrong turn would not match
    ref, size = photo_bytes(item, np.random.default_rng(7))
    turned, same = photo_bytes(item, np.random.default_rng(7), orientation=tag)
    assert same == size
    a = np.asarray(Image.open(io.BytesIO(ref))).astype(int)
    with Image.open(io.BytesIO(turned)) as im:
        assert im.getexif()[0x0112] == tag
        b = np.asarray(ImageOps.exif_transpose(im)).astype(int)
    assert a.shape == b.shape and np.abs(a - b).mean() < 3  # the same picture, up to JPEG loss


def test_photo_same_seed_same_bytes_and_cli(tmp_path):
    a = make_sample(tmp_path / "a", n_train=20, n_test=10, seed=4, kind="photo")
    r = CliRunner().invoke(cli, ["sample", str(tmp_path / "b"), "--kind", "photo", "--n-train", "20", "--n-test",
                                 "10", "--seed", "4"])
    assert r.exit_code == 0, r.output
    assert "kind: photo" in r.output and "px a side" in r.output
    assert "3 stored sideways" in r.output  # 10% of 20 and of 10
    for x, y in zip(_jpegs(a.out), _jpegs(tmp_path / "b"), strict=True):
        assert x.name == y.name and x.read_bytes() == y.read_bytes()
    c = make_sample(tmp_path / "c", n_train=20, n_test=10, seed=5, kind="photo")
    assert (a.out / "train_images/tr_000000.jpg").read_bytes() != (c.out / "train_images/tr_000000.jpg").read_bytes()
    r = CliRunner().invoke(cli, ["sample", str(tmp_path / "d"), "--kind", "photo", "--format", "png"])
    assert r.exit_code == 1 and "JPEG" in r.output
