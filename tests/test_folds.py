"""comp folds: stratified / grouped K folds, byte-identical per seed, kept unless --overwrite."""

import pandas as pd
import pytest
import yaml
from bad_images import bad_config, build_bad_competition
from click.testing import CliRunner

from comp.cli import cli
from comp.config import load_config
from comp.data.competition import DataError, read_folds
from comp.data.folds import make_folds


def quiet(s):
    pass


def _with_train_csv(workdir, competition, df: pd.DataFrame, **data):
    """A config whose train.csv is ``df`` (written in workdir), reading the sample's images."""
    df.to_csv(workdir / "train_alt.csv", index=False)
    cfg_path = workdir / "comp.yaml"
    values = yaml.safe_load(cfg_path.read_text())
    values["data"].update({"train_csv": str(workdir / "train_alt.csv"), **data})
    cfg_path.write_text(yaml.safe_dump(values))
    return load_config(cfg_path)


def test_stratified_folds_file(cfg, workdir, competition):
    out = make_folds(cfg, n_splits=4, seed=3, echo=quiet)
    path = workdir / "folds" / "folds.csv"
    f = pd.read_csv(path, dtype=str, keep_default_na=False)
    train = pd.read_csv(competition / "train.csv", dtype=str, keep_default_na=False)
    assert list(f.columns) == ["image_id", "label", "fold"]
    assert f["image_id"].tolist() == train["image_id"].tolist()  # train.csv order
    assert (f["label"] == train["label"]).all()
    assert sorted(f["fold"].unique()) == ["0", "1", "2", "3"]
    counts = pd.crosstab(f["label"], f["fold"])
    assert (counts.max(axis=1) - counts.min(axis=1)).max() <= 1  # every class spread evenly
    assert len(out) == 600
    assert read_folds(cfg)["fold"].between(0, 3).all()


def test_same_seed_same_bytes_and_overwrite_rules(cfg, workdir):
    path = workdir / "folds" / "folds.csv"
    make_folds(cfg, n_splits=3, seed=1, echo=quiet)
    first = path.read_bytes()
    msgs = []
    make_folds(cfg, n_splits=3, seed=1, echo=msgs.append)  # same settings: kept, said so
    assert "kept" in msgs[0] and "--overwrite" in msgs[0]
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_folds(cfg, n_splits=3, seed=2, echo=quiet)
    assert path.read_bytes() == first
    make_folds(cfg, n_splits=3, seed=2, overwrite=True, echo=quiet)
    assert path.read_bytes() != first
    make_folds(cfg, n_splits=3, seed=1, overwrite=True, echo=quiet)
    assert path.read_bytes() == first


def test_grouped_folds_keep_groups_together(workdir, competition):
    train = pd.read_csv(competition / "train.csv", dtype=str, keep_default_na=False)
    train["patient"] = [f"p{i // 4:03d}" for i in range(len(train))]
    cfg = _with_train_csv(workdir, competition, train, group_col="patient")
    make_folds(cfg, n_splits=3, seed=0, echo=quiet)
    f = pd.read_csv(workdir / "folds" / "folds.csv", dtype=str)
    assert list(f.columns) == ["image_id", "label", "patient", "fold"]
    assert (f.groupby("patient")["fold"].nunique() == 1).all()
    assert f["fold"].nunique() == 3


def test_small_class_is_a_clear_error(workdir, competition):
    train = pd.read_csv(competition / "train.csv", dtype=str, keep_default_na=False)
    bag = train.index[train["label"] == "Bag"]
    train = train.drop(index=bag[2:])  # 2 bags left
    cfg = _with_train_csv(workdir, competition, train)
    with pytest.raises(DataError) as e:
        make_folds(cfg, n_splits=5, echo=quiet)
    msg = str(e.value)
    assert "'Bag' (2 rows)" in msg and "--n-splits 2" in msg


def test_cli_folds_prints_counts(workdir):
    r = CliRunner().invoke(cli, ["folds", "--n-splits", "3", "--seed", "5"])
    assert r.exit_code == 0, r.output
    assert "T-shirt/top" in r.output and "total" in r.output
    assert "20" in r.output  # 60 per class / 3 folds
    assert (workdir / "folds" / "folds.csv").exists()


def test_folds_refuse_bad_data_unless_skip_bad(tmp_path, monkeypatch):
    root = tmp_path / "bad"
    info = build_bad_competition(root)
    monkeypatch.chdir(tmp_path)
    bad_config(tmp_path, root)
    r = CliRunner().invoke(cli, ["folds", "--n-splits", "2"])
    assert r.exit_code == 1
    assert "--skip-bad" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "folds" / "folds.csv").exists()
    r = CliRunner().invoke(cli, ["folds", "--n-splits", "2", "--skip-bad"])
    assert r.exit_code == 0, r.output
    assert "truncated.jpg" in r.output and "leaving out" in r.output
    f = pd.read_csv(tmp_path / "folds" / "folds.csv", dtype=str)
    assert sorted(f["image_id"]) == sorted(info["fine"])
