"""comp init: detects columns, image folders and extensions, says why, and writes a comp.yaml that loads."""

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from comp.cli import cli
from comp.config import load_config
from comp.data.check import run_check
from comp.data.competition import DataError, load_test, load_train
from comp.data.init import init_competition


def quiet(s):
    pass


def _img(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(path)


def test_sample_competition_is_detected(competition, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["init", str(competition)])
    assert r.exit_code == 0, r.output
    assert "id column: image_id (matches sample_submission.csv's first column" in r.output
    assert "label column: label" in r.output and "train_images" in r.output
    # Issue 20: the image sizes read from the headers, and the input size training fits from them.
    assert "image sizes: median image 28x28, short side 28 (headers of 600 training images); training uses " \
           "input.size 32 unless you set it" in r.output
    d = yaml.safe_load((tmp_path / "comp.yaml").read_text())["data"]
    assert d["id_col"] == "image_id" and d["label_col"] == "label"
    assert d["train_dir"] == "train_images" and d["test_dir"] == "test_images"
    assert d["id_has_ext"] is False and d["ext"] == ".png"
    cfg = load_config(tmp_path / "comp.yaml")
    train = load_train(cfg)
    assert len(train) == 600 and train["path"].notna().all()
    assert len(load_test(cfg)) == 150
    # issue 35: the same command again is a no-op (the file and the user's edits in it kept); another folder is refused
    with open(tmp_path / "comp.yaml", "a", encoding="utf-8") as f:
        f.write("model: {name: resnet10t}\n")
    edited = (tmp_path / "comp.yaml").read_bytes()
    r = CliRunner().invoke(cli, ["init", str(competition)])
    assert r.exit_code == 0 and "already describes" in r.output and "nothing written" in r.output, r.output
    assert (tmp_path / "comp.yaml").read_bytes() == edited
    other = tmp_path / "other"
    other.mkdir()
    for name in ("train.csv", "train_images", "test_images", "sample_submission.csv"):
        (other / name).symlink_to(competition / name)
    r = CliRunner().invoke(cli, ["init", str(other)])
    assert r.exit_code == 1 and "--overwrite" in r.output and "describes" in r.output
    assert CliRunner().invoke(cli, ["init", str(competition), "--overwrite"]).exit_code == 0
    assert (tmp_path / "comp.yaml").read_bytes() != edited


def test_root_is_relative_to_the_config_folder(competition, tmp_path, monkeypatch):
    sub = tmp_path / "work"
    sub.mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = init_competition(competition, sub / "my.yaml", echo=quiet)
    assert cfg.root == competition.resolve()
    comp_dir = tmp_path / "c"
    (comp_dir / "imgs").mkdir(parents=True)
    _img(comp_dir / "imgs" / "a.jpg", 0)
    _img(comp_dir / "imgs" / "b.jpg", 1)
    pd.DataFrame({"image": ["a.jpg", "b.jpg"], "label": ["x", "x"]}).to_csv(comp_dir / "train.csv", index=False)
    init_competition("c", "comp.yaml", echo=quiet)
    assert yaml.safe_load((tmp_path / "comp.yaml").read_text())["data"]["root"] == "c"


def _odd_competition(root):
    """Columns with unusual names, ids with extension, a group column, test images in test/, no sample csv."""
    rows = []
    for i in range(8):
        name = f"scan_{i}.jpg"
        _img(root / "images" / "training" / name, i)
        rows.append({"patient": f"p{i // 2}", "file": name, "diagnosis": "Néo plasm / b" if i % 2 else "ok"})
    _img(root / "test" / "q.jpg", 99)
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)


def test_unusual_columns_and_flags(tmp_path):
    root = tmp_path / "odd"
    _odd_competition(root)
    lines = []
    cfg = init_competition(root, tmp_path / "a.yaml", group_col="patient", echo=lines.append)
    d = cfg.data
    assert (d.id_col, d.label_col, d.group_col) == ("file", "diagnosis", "patient")
    assert d.train_dir == "images/training" and d.id_has_ext and d.test_dir == "test"
    assert d.sample_submission is None
    text = "\n".join(lines)
    assert "--group-col" in text and "images/training/" in text
    assert set(load_train(cfg)["label"]) == {"ok", "Néo plasm / b"}
    # flags win over detection
    cfg = init_competition(root, tmp_path / "b.yaml", id_col="file", label_col="patient", train_dir="images/training",
                           test_dir="test", echo=quiet)
    assert cfg.data.label_col == "patient" and cfg.data.train_dir == "images/training"


def test_errors_name_the_flag(tmp_path):
    root = tmp_path / "x"
    _odd_competition(root)
    with pytest.raises(DataError, match="--id-col 'nope'.*diagnosis"):
        init_competition(root, tmp_path / "a.yaml", id_col="nope", echo=quiet)
    with pytest.raises(DataError, match="--train-dir"):
        init_competition(root, tmp_path / "a.yaml", train_dir="test", group_col="patient", echo=quiet)
    pd.DataFrame({"k": ["u1", "u2"], "v": ["z1", "z2"]}).to_csv(root / "train.csv", index=False)
    with pytest.raises(DataError, match="--label-col"):
        init_competition(root, tmp_path / "a.yaml", echo=quiet)
    pd.DataFrame({"k": ["nothere.jpg", "b"], "label": ["z", "z"]}).to_csv(root / "train.csv", index=False)
    with pytest.raises(DataError, match="--train-dir FOLDER"):
        init_competition(root, tmp_path / "a.yaml", echo=quiet)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no train.csv and no class folders"):
        init_competition(empty, tmp_path / "a.yaml", echo=quiet)
    assert not (tmp_path / "a.yaml").exists()


@pytest.mark.parametrize("nested", [False, True], ids=["DIR/<class>", "DIR/train/<class>"])
def test_class_per_folder_tree(tmp_path, nested, monkeypatch):
    root = tmp_path / "tree"
    base = root / "train" if nested else root
    classes = ["Ankle boot", "猫 cat", "Éclair au café"]
    for k, c in enumerate(classes):
        for j in range(3):
            _img(base / c / f"{j}.png", 10 * k + j)
    if nested:
        _img(root / "test" / "t0.png", 500)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["init", str(root)])
    assert r.exit_code == 0, r.output
    assert "layout: folders" in r.output
    cfg = load_config(tmp_path / "comp.yaml")
    assert cfg.data.layout == "folders" and cfg.data.train_dir == ("train" if nested else ".")
    assert cfg.data.test_dir == ("test" if nested else None)
    train = load_train(cfg)
    assert sorted(set(train["label"])) == sorted(classes) and len(train) == 9
    assert run_check(cfg, out_dir=None, echo=quiet, progress=False).ok


KOREAN = ["티셔츠", "바지", "풀오버", "드레스", "코트", "샌들", "셔츠", "운동화", "가방", "앵클 부츠"]


def test_spaced_class_names_with_trailing_spaces_stay_single_label(competition, tmp_path, monkeypatch):
    """Issue 35: class names that hold a space ("앵클 부츠", as "Ankle boot"), one row in seven with a trailing space
    (a spreadsheet export): 10 classes, single-label, the stripped cells counted, the evidence printed."""
    from comp.data.sample import FASHION_CLASSES

    root = tmp_path / "ko"
    root.mkdir()
    for name in ("train_images", "test_images", "sample_submission.csv"):
        (root / name).symlink_to(competition / name)
    train = pd.read_csv(competition / "train.csv", dtype=str)
    ko = dict(zip(FASHION_CLASSES, KOREAN))
    train["label"] = [ko[v] + (" " if i % 7 == 3 else "") for i, v in enumerate(train["label"])]
    train.to_csv(root / "train.csv", index=False)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["init", str(root)])
    assert r.exit_code == 0, r.output
    n = sum(i % 7 == 3 for i in range(len(train)))
    assert "task: multilabel" not in r.output and "classes: 10 in" in r.output, r.output
    assert f"whitespace: stripped around {n} cells of train.csv (label {n})" in r.output
    assert "task: single-label" in r.output and "'앵클 부츠'" in r.output
    cfg = load_config(tmp_path / "comp.yaml")
    assert cfg.data.task != "multilabel" and sorted(set(load_train(cfg)["label"])) == sorted(KOREAN)
