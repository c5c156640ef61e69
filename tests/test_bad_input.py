"""Bad input a user can make: each is one clear error naming the file and line or key and what to do, never a
traceback (ragged or badly quoted csv files, labels with spaces, a BOM, a non-integer fold, damaged done.json or
model.json, test images with another extension than the train images)."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image
from train_utils import make_folds_file, quiet, tiny_cfg

from comp import runs
from comp.cli import cli
from comp.config import ConfigError, from_dict, load_config
from comp.data.competition import DataError, load_test, load_train, read_folds
from comp.infer.models import find_fold_models


def _cfg(root, **data):
    return from_dict({"data": {"root": str(root), "id_has_ext": True, **data}})


def _write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)


@pytest.mark.parametrize("body, line, what", [
    ("a.png,cat\nb.png,dog,extra\nc.png,cat\n", 3, "3 cell(s), but the header has 2"),
    ("a.png,cat\nb.png\nc.png,cat\n", 3, "1 cell(s), but the header has 2"),  # pandas fills it silently
    ('a.png,cat\n"b.png,dog\nc.png,cat\n', 3, "never closed"),
])
def test_ragged_or_badly_quoted_train_csv_names_the_line(tmp_path, body, line, what):
    _write(tmp_path / "train.csv", "image_id,label\n" + body)
    with pytest.raises(DataError) as e:
        load_train(_cfg(tmp_path))
    msg = str(e.value)
    assert f"train.csv line {line}: " in msg and what in msg and "double quotes" in msg, msg


def test_a_ragged_sample_submission_or_folds_file_names_the_line(tmp_path):
    _write(tmp_path / "train.csv", "image_id,label\na.png,cat\n")
    _write(tmp_path / "sample_submission.csv", "image_id,label\nt1.png,cat\nt2.png,cat,dog\n")
    (tmp_path / "test_images").mkdir()
    with pytest.raises(DataError, match=r"sample_submission.csv line 3: 3 cell"):
        load_test(_cfg(tmp_path, test_dir="test_images"))
    _write(tmp_path / "folds" / "folds.csv", 'image_id,label,fold\na.png,cat,0\nb.png,"dog,1\n')
    cfg = from_dict({"data": {"root": str(tmp_path)}}, base_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"folds.csv line 3: a double quote"):
        read_folds(cfg)


def test_the_cli_prints_the_csv_error_without_a_traceback(tmp_path, monkeypatch):
    _write(tmp_path / "train.csv", "image_id,label\na.png,cat\nb.png,dog,extra\n")
    (tmp_path / "comp.yaml").write_text(json.dumps({"data": {"root": str(tmp_path), "id_has_ext": True}}))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["check"])
    assert r.exit_code == 1 and "train.csv line 3: 3 cell(s)" in r.output and "Traceback" not in r.output, r.output


def test_labels_are_stripped_like_ids_and_a_bom_is_dropped(tmp_path):
    _write(tmp_path / "train.csv", "image_id,label\n a.png ,cat \nb.png,cat\nc.png, dog\n", encoding="utf-8-sig")
    assert (tmp_path / "train.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    df = load_train(_cfg(tmp_path))  # the BOM would make the first column '\ufeffimage_id': "no column image_id"
    assert df["id"].tolist() == ["a.png", "b.png", "c.png"]
    assert df["label"].tolist() == ["cat", "cat", "dog"]


@pytest.mark.parametrize("fold", ["x", "1.5", "-1", ""])
def test_a_non_integer_fold_names_the_line(tmp_path, fold):
    _write(tmp_path / "folds" / "folds.csv", f"image_id,label,fold\na.png,cat,0\nb.png,dog,{fold}\n")
    cfg = from_dict({"data": {"root": str(tmp_path)}}, base_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"folds.csv line 3: fold .* is not a fold number .*comp folds"):
        read_folds(cfg)
    _write(tmp_path / "folds" / "folds.csv", "image_id,label,fold\na.png,cat , 0\nb.png,dog,1\n")
    assert read_folds(cfg)[["label", "fold"]].values.tolist() == [["cat", 0], ["dog", 1]]


def test_a_damaged_done_json_or_model_json_names_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fd = tmp_path / "runs" / "e" / "fold_0"
    _write(fd / "done.json", '{"fold": 0, "sco')
    with pytest.raises(ConfigError, match=r"runs/e/fold_0/done.json is damaged .*delete it and train fold_0 again"):
        runs.read_done(fd)
    _write(fd / "done.json", "[1, 2]")
    with pytest.raises(ConfigError, match=r"done.json is damaged \(a JSON object was expected"):
        runs.read_done(fd)
    (fd / "model.safetensors").write_bytes(b"")
    _write(fd / "model.json", "")
    with pytest.raises(ConfigError, match=r"fold_0/model.json is damaged .*comp train --exp e --fold 0 --overwrite"):
        find_fold_models(tmp_path / "runs" / "e")


@pytest.mark.slow
def test_test_images_with_another_extension_than_train_images(tmp_path, competition, monkeypatch):
    """Train images .png, test images .jpg: comp init detects the test extension on its own; a config that gets
    it wrong makes comp predict name the id and the path it looked for."""
    root = tmp_path / "c"
    shutil.copytree(competition, root)
    for p in sorted((root / "test_images").glob("*.png")):
        Image.open(p).convert("RGB").save(p.with_suffix(".jpg"), quality=95)
        p.unlink()
    monkeypatch.chdir(tmp_path)
    msgs = []
    from comp.data.init import init_competition

    cfg = init_competition(root, echo=msgs.append)
    assert cfg.data.ext == ".png" and cfg.data.test_ext == ".jpg", msgs
    assert any("files are <id>.jpg (data.test_ext)" in m for m in msgs), msgs
    test = load_test(cfg)
    assert test["path"].str.endswith(".jpg").all() and all(map(lambda p: Image.open(p).size, test["path"]))

    # A folder that names no test file at all is refused by comp init, naming an id and the path.
    shutil.move(root / "test_images", root / "other")
    (root / "test_images").mkdir()
    Image.new("RGB", (8, 8)).save(root / "test_images" / "unrelated.jpg")
    r = CliRunner().invoke(cli, ["init", str(root), "--test-dir", "test_images", "--overwrite"])
    assert r.exit_code == 1 and "test ids name no file" in r.output and "Traceback" not in r.output, r.output
    shutil.rmtree(root / "test_images")
    shutil.move(root / "other", root / "test_images")

    # comp.yaml as an older comp wrote it (no data.test_ext): predict names the missing file, no traceback.
    values = yaml.safe_load((tmp_path / "comp.yaml").read_text())
    del values["data"]["test_ext"]
    (tmp_path / "comp.yaml").write_text(yaml.safe_dump(values))
    make_folds_file(tmp_path)
    from comp.train.session import train_folds

    train_folds(tiny_cfg(tmp_path, "e", "train.epochs=1"), [0], echo=quiet)
    assert load_config(tmp_path / "comp.yaml").data.test_ext is None
    r = CliRunner().invoke(cli, ["predict", "--exp", "e", "--fold", "0", "--set", "model.name=test_resnet",
                                 "--set", "input.size=32"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "test id '" in r.output and ".png not found" in r.output and "data.test_ext" in r.output, r.output
