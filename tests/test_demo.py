"""The demo's flow at test scale, through the real trainer: folds -> train -> predict with TTA (test + OOF)
-> ensemble with bias tuning -> score against the held-out solution."""

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import write_config

from comp.cli import cli
from comp.config import load_config
from comp.data.folds import make_folds
from comp.infer import ledger
from comp.infer.predict import predict
from comp.infer.score import score_files
from comp.train.session import train_folds

QUIET = {"echo": lambda s: None}
REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_flow_from_training_to_scored_submission(competition, tmp_path, monkeypatch):
    write_config(tmp_path, competition, model={"name": "resnet10t"}, input={"size": 32},
                 train={"epochs": 2, "batch_size": 64, "lr": 0.003}, infer={"tta": ["identity", "hflip"]})
    monkeypatch.chdir(tmp_path)
    make_folds(load_config(tmp_path / "comp.yaml"), n_splits=2, **QUIET)
    cfg = load_config(tmp_path / "comp.yaml", exp="base")
    trained = train_folds(cfg, **QUIET)
    assert trained["cv_macro_f1"] is not None
    train_oof = pd.read_csv("runs/base/oof.csv", dtype=str, keep_default_na=False)

    test = predict(cfg, oof=True, **QUIET)  # views from infer.tta
    assert json.loads(Path("runs/base/predict.json").read_text())["oof_views"] == ["identity", "hflip"]
    new_oof = pd.read_csv("runs/base/oof.csv", dtype=str, keep_default_na=False)
    assert new_oof.columns.tolist() == train_oof.columns.tolist()
    assert new_oof.iloc[:, :3].equals(train_oof.iloc[:, :3])  # same rows, folds and labels; new probabilities
    assert not new_oof.iloc[:, 3:].equals(train_oof.iloc[:, 3:])
    assert len(test) == 150

    r = CliRunner().invoke(cli, ["ensemble", "--exp", "base", "--tune-bias", "--name", "first"])
    assert r.exit_code == 0, r.output
    assert "cross-validated" in r.output
    root = cfg.root
    scored = score_files("submissions/first.csv", root / "solution.csv", root / "sample_submission.csv")
    assert scored["macro_f1"] > 0.3  # 2 epochs at 32 px: far above chance (0.1), far from converged
    row = ledger.read().iloc[-1]
    assert row["name"] == "first" and row["members"] == "base"
    assert abs(float(row["cv_macro_f1"]) - scored["macro_f1"]) < 0.25  # CV tracks the hold-out


def test_demo_script_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    r = subprocess.run(["bash", str(REPO / "scripts/demo.sh"), str(tmp_path)], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 1 and "was not made by the demo" in r.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    assert shutil.which("bash")
