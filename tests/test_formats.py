"""Real competition layouts, end to end: comp init DIR (no flags) -> folds -> train -> predict -> ensemble -> score.

Each layout is built here from `comp sample` Fashion-MNIST images (4 easy classes, 240 train / 60 test images):
integer labels with extension ids and a label map; id_code/diagnosis with test.csv (qwk); labels.csv with train/
and test/ folders and a wide submission (log loss); one-hot labels with one shared image folder and a wide
submission (ROC AUC). The submission must keep the sample's exact header, ids and id order, and `comp score`
must accept it. Ambiguous label columns must stop `comp init`.
"""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from comp.cli import cli
from comp.data.competition import DataError
from comp.data.init import init_competition
from comp.data.sample import make_sample

CLASSES = ["T-shirt/top", "Trouser", "Bag", "Sneaker"]
EXP = {
    "model": {"name": "test_resnet"},
    "input": {"size": 32},
    "train": {"epochs": 2, "batch_size": 16, "lr": 3e-3},
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(train rows, test rows, folder) of a `comp sample` competition, cut to 4 classes."""
    out = tmp_path_factory.mktemp("fmt") / "s"
    make_sample(out, n_train=600, n_test=150, imbalance=1.0, seed=3)
    train = pd.read_csv(out / "train.csv", dtype=str)
    test = pd.read_csv(out / "solution.csv", dtype=str)
    return train[train["label"].isin(CLASSES)], test[test["label"].isin(CLASSES)], out


def _copy(ids, src, dst, ext=".png"):
    dst.mkdir(parents=True, exist_ok=True)
    for i, new in ids:
        shutil.copyfile(src / f"{i}.png", dst / f"{new}{ext}")


def _run(root, work, monkeypatch, metric=None, flags=()):
    """The whole pipeline through the CLI; returns (submission text, sample text, ensemble output, score output)."""
    monkeypatch.chdir(work)
    cli_ = CliRunner()

    def call(*args):
        r = cli_.invoke(cli, [str(a) for a in args])
        assert r.exit_code == 0, f"comp {' '.join(map(str, args))}:\n{r.output}\n{r.exception!r}"
        return r.output

    init_out = call("init", root)
    if metric:
        cfg = yaml.safe_load((work / "comp.yaml").read_text())
        cfg["data"]["metric"] = metric
        (work / "comp.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (work / "configs").mkdir()
    (work / "configs" / "e.yaml").write_text(yaml.safe_dump(EXP))
    call("folds", "--n-splits", 2)
    call("train", "--exp", "e", "--all-folds")
    call("predict", "--exp", "e")
    ens = call("ensemble", "--exp", "e", "--name", "sub", *flags)
    d = yaml.safe_load((work / "comp.yaml").read_text())["data"]
    sample_path = root / d["sample_submission"]
    score = call("score", work / "submissions" / "sub.csv", "--solution", root / "solution.csv",
                 "--sample-submission", sample_path, "--json")
    sub_text = (work / "submissions" / "sub.csv").read_text()
    sub, sample = pd.read_csv(work / "submissions" / "sub.csv", dtype=str), pd.read_csv(sample_path, dtype=str)
    assert list(sub.columns) == list(sample.columns)  # the sample's exact header,
    assert sub.iloc[:, 0].tolist() == sample.iloc[:, 0].tolist()  # ids and id order
    ledger = pd.read_csv(work / "submissions" / "ledger.csv", dtype=str, keep_default_na=False)
    return init_out, sub_text, ens, json.loads(score), ledger.iloc[-1], d


def test_integer_labels_with_extension_ids_and_label_map(base, tmp_path, monkeypatch):
    train, test, src = base
    root = tmp_path / "c"
    code = {c: str(k) for k, c in enumerate(CLASSES)}
    _copy(zip(train["image_id"], train["image_id"]), src / "train_images", root / "train_images", ".png")
    _copy(zip(test["image_id"], test["image_id"]), src / "test_images", root / "test_images", ".png")
    pd.DataFrame({"image_id": train["image_id"] + ".png", "label": train["label"].map(code)}).to_csv(
        root / "train.csv", index=False)
    pd.DataFrame({"image_id": test["image_id"] + ".png", "label": 0}).to_csv(root / "sample_submission.csv",
                                                                             index=False)
    pd.DataFrame({"image_id": test["image_id"] + ".png", "label": test["label"].map(code)}).to_csv(
        root / "solution.csv", index=False)
    (root / "label_num_to_name_map.json").write_text(json.dumps({v: k for k, v in code.items()}))
    work = tmp_path / "w"
    work.mkdir()
    init_out, sub_text, ens, score, row, d = _run(root, work, monkeypatch)
    assert "labels are integers" in init_out and "label_num_to_name_map.json" in init_out
    assert d["id_has_ext"] is True and d["label_map"] == "label_num_to_name_map.json"
    cells = [line.split(",")[1] for line in sub_text.splitlines()[1:]]
    assert all(re.fullmatch(r"[0-3]", c) for c in cells), cells[:5]  # 3, not 3.0 or "3"
    assert re.search(r"predicted classes: (T-shirt/top|Trouser|Bag|Sneaker) \d", ens), ens  # label map names
    assert score["metric"] == "macro_f1" and score["shape"] == "label" and score["macro_f1"] > 0.4
    assert row["shape"] == "label" and row["metric"] == "macro_f1"
    # the per-class table of `comp score` shows the readable names beside the integers
    r = CliRunner().invoke(cli, ["score", "submissions/sub.csv", "--solution", str(root / "solution.csv")])
    assert r.exit_code == 0 and "1 (Trouser)" in r.output


def test_test_csv_and_qwk_thresholds(base, tmp_path, monkeypatch):
    train, test, src = base
    root = tmp_path / "aptos"
    grade = {c: str(k) for k, c in enumerate(CLASSES)}
    _copy(zip(train["image_id"], "id" + train["image_id"]), src / "train_images", root / "train_images")
    _copy(zip(test["image_id"], "id" + test["image_id"]), src / "test_images", root / "test_images")
    ids = "id" + test["image_id"]
    pd.DataFrame({"id_code": "id" + train["image_id"], "diagnosis": train["label"].map(grade)}).to_csv(
        root / "train.csv", index=False)
    pd.DataFrame({"id_code": ids}).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"id_code": ids, "diagnosis": 0}).to_csv(root / "sample_submission.csv", index=False)
    pd.DataFrame({"id_code": ids, "diagnosis": test["label"].map(grade)}).to_csv(root / "solution.csv", index=False)
    work = tmp_path / "w"
    work.mkdir()
    init_out, sub_text, ens, score, row, d = _run(root, work, monkeypatch, metric="qwk",
                                                  flags=["--tune-thresholds"])
    assert d["test_csv"] == "test.csv" and "test ids: test.csv" in init_out
    assert "thresholds: OOF qwk plain" in ens and "cross-validated" in ens
    assert score["metric"] == "qwk" and score["score"] == pytest.approx(score["qwk"]) and score["qwk"] > 0.3
    assert row["metric"] == "qwk" and float(row["cv_score"]) > 0.3
    opts = json.loads(row["options"])
    assert len(opts["thresholds"]["values"]) == 3  # 3 cut points between 4 grades
    # test.csv and the sample must agree; the error names the difference
    pd.DataFrame({"id_code": ids.iloc[1:]}).to_csv(root / "test.csv", index=False)
    with pytest.raises(DataError, match=rf"only in sample_submission.csv: \['{ids.iloc[0]}'\]"):
        init_competition(root, tmp_path / "x.yaml", echo=lambda s: None)


def test_labels_csv_train_test_folders_and_wide_submission(base, tmp_path, monkeypatch):
    train, test, src = base
    root = tmp_path / "dogs"
    _copy(zip(train["image_id"], train["image_id"]), src / "train_images", root / "train", ".jpg")
    _copy(zip(test["image_id"], test["image_id"]), src / "test_images", root / "test", ".jpg")
    pd.DataFrame({"id": train["image_id"], "breed": train["label"]}).to_csv(root / "labels.csv", index=False)
    cols = ["Trouser", "Sneaker", "T-shirt/top", "Bag"]  # not sorted: the sample's order is kept
    sample = pd.DataFrame({"id": test["image_id"], **{c: 0.25 for c in cols}})
    sample.to_csv(root / "sample_submission.csv", index=False)
    pd.DataFrame({"id": test["image_id"], "breed": test["label"]}).to_csv(root / "solution.csv", index=False)
    work = tmp_path / "w"
    work.mkdir()
    init_out, sub_text, ens, score, row, d = _run(root, work, monkeypatch, metric="log_loss",
                                                  flags=["--temperature"])
    assert "label column: breed (its values are sample_submission.csv's 4 class columns" in init_out
    assert (d["train_dir"], d["test_dir"]) == ("train", "test")
    sub = pd.read_csv(work / "submissions" / "sub.csv")
    assert np.allclose(sub[cols].sum(1), 1, atol=1e-5) and (sub[cols] >= 0).all().all()
    assert "temperature: OOF log_loss plain" in ens
    assert score["shape"] == "wide" and score["metric"] == "log_loss" and score["score"] < np.log(4)
    assert score["roc_auc"] > 0.8 and score["macro_f1"] > 0.4  # argmax for F1, probabilities for AUC
    assert row["shape"] == "wide" and row["metric"] == "log_loss"
    # a wide sample whose columns are not the classes: an error listing both sets
    sample.rename(columns={"Bag": "Handbag"}).to_csv(root / "sample_submission.csv", index=False)
    r = CliRunner().invoke(cli, ["ensemble", "--exp", "e", "--name", "bad"])
    assert r.exit_code == 1 and "['Handbag']" in r.output and "['Bag']" in r.output


def test_one_hot_labels_in_one_shared_folder(base, tmp_path, monkeypatch):
    train, test, src = base
    root = tmp_path / "plants"
    _copy(zip(train["image_id"], "Train_" + train["image_id"]), src / "train_images", root / "images", ".jpg")
    _copy(zip(test["image_id"], "Test_" + test["image_id"]), src / "test_images", root / "images", ".jpg")
    names = dict(zip(CLASSES, ["healthy", "multiple_diseases", "rust", "scab"]))

    def onehot(ids, labels):
        return pd.DataFrame({"image_id": ids, **{n: (labels == c).astype(int).values for c, n in names.items()}})

    onehot("Train_" + train["image_id"], train["label"]).to_csv(root / "train.csv", index=False)
    sample = onehot("Test_" + test["image_id"], test["label"]).assign(healthy=0.25, multiple_diseases=0.25,
                                                                      rust=0.25, scab=0.25)
    sample.to_csv(root / "sample_submission.csv", index=False)
    onehot("Test_" + test["image_id"], test["label"]).to_csv(root / "solution.csv", index=False)
    pd.DataFrame({"image_id": "Test_" + test["image_id"]}).to_csv(root / "test.csv", index=False)
    work = tmp_path / "w"
    work.mkdir()
    init_out, sub_text, ens, score, row, d = _run(root, work, monkeypatch, metric="roc_auc")
    assert "a one-hot multi-class target" in init_out and "share one folder" in init_out
    assert d["label_cols"] == list(names.values()) and d["train_dir"] == d["test_dir"] == "images"
    assert score["shape"] == "wide" and score["metric"] == "roc_auc" and score["score"] > 0.8
    assert row["shape"] == "wide"


def test_ambiguous_labels_stop_init(base, tmp_path):
    train, _, src = base
    root = tmp_path / "amb"
    ids = train["image_id"].head(20)
    _copy(zip(ids, ids), src / "train_images", root / "train_images")
    # 0/1 columns summing to 1 that the sample submission does not list: one-hot, or a binary label?
    labels = train["label"].head(20)
    df = pd.DataFrame({"image_id": ids, **{c: (labels == c).astype(int).values for c in ("Bag", "Sneaker")}})
    df["rest"] = 1 - df["Bag"] - df["Sneaker"]
    df.to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_id": ["x"], "label": ["Bag"]}).to_csv(root / "sample_submission.csv", index=False)
    with pytest.raises(DataError, match="--label-cols Bag,Sneaker,rest.*--label-col NAME"):
        init_competition(root, tmp_path / "a.yaml", echo=lambda s: None)
    # a binary column next to others, none named like a label: stop and name the flags
    (root / "sample_submission.csv").unlink()
    pd.DataFrame({"image_id": ids, "flipped": [i % 2 for i in range(20)], "site": [f"s{i % 3}" for i in range(20)],
                  "grade": labels.values}).to_csv(root / "train.csv", index=False)
    r = CliRunner().invoke(cli, ["init", str(root), "-c", str(tmp_path / "b.yaml")])
    assert r.exit_code == 1 and "flipped (2 values)" in r.output and "--label-col NAME" in r.output
    assert not (tmp_path / "a.yaml").exists() and not (tmp_path / "b.yaml").exists()
    # the flags settle it
    cfg = init_competition(root, tmp_path / "c.yaml", label_col="grade", group_col="site", echo=lambda s: None)
    assert cfg.data.label_col == "grade"
