"""Two CPU processes (gloo): torchrun and accelerate launch train with DDP; the OOF has every id exactly once."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from train_utils import TINY, make_folds_file, read_oof


@pytest.fixture
def folded(workdir):
    make_folds_file(workdir)
    return workdir


def launch(launcher: list[str], args: list[str], cwd, timeout=400) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")  # 2 processes on 2 cores: 1 thread each
    sets = [a for s in TINY for a in ("--set", s)]
    cmd = [sys.executable, "-m", *launcher, "-m", "comp", "train", *args, *sets]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-4000:]}\n{r.stderr[-6000:]}"
    return r


@pytest.mark.slow
def test_torchrun_two_processes_oof_has_every_id_once(folded, competition):
    r = launch(["torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
               ["--exp", "ddp", "--all-folds", "--set", "train.epochs=1", "--set", "infer.batch_size=48"], folded)
    out = r.stdout
    assert "processes 2" in out and "CV macro F1" in out
    assert out.count("CV macro F1") == 1  # only the main process prints and writes
    train = pd.read_csv(competition / "train.csv", dtype=str, keep_default_na=False)
    oof = read_oof(folded / "runs" / "ddp" / "oof.csv")
    assert oof["image_id"].tolist() == train["image_id"].tolist()
    folds = pd.read_csv(folded / "folds" / "folds.csv", dtype=str)
    for k in range(3):
        fold_oof = read_oof(folded / "runs" / "ddp" / f"fold_{k}" / "oof.csv")
        want = folds.loc[folds["fold"] == str(k), "image_id"]
        assert sorted(fold_oof["image_id"]) == sorted(want) and fold_oof["image_id"].is_unique
        assert json.loads((folded / "runs" / "ddp" / f"fold_{k}" / "done.json").read_text())["processes"] == 2
        # both ranks saved their RNG state for resume
        assert {p.name for p in (folded / "runs" / "ddp" / f"fold_{k}" / "state").glob("random_states_*")} == \
            {"random_states_0.pkl", "random_states_1.pkl"}


@pytest.mark.slow
def test_accelerate_launch_two_processes_resume(folded, competition):
    # On a machine without GPUs, accelerate's `--cpu` launcher starts a single process; its multi-process
    # launcher is the one named --multi_gpu, and comp joins its processes over gloo.
    launcher = ["accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    args = ["--exp", "acc", "--fold", "1", "--set", "train.ema=true"]
    r = launch(launcher, [*args, "--set", "train.stop_after_epochs=1"], folded)
    assert "stopped after 1 epochs" in r.stdout
    r = launch(launcher, [*args, "--resume"], folded)
    assert "resuming after epoch 1 of 2" in r.stdout and "processes 2" in r.stdout
    fd = folded / "runs" / "acc" / "fold_1"
    assert pd.read_csv(fd / "metrics.csv")["epoch"].tolist() == [1, 2]
    oof = read_oof(fd / "oof.csv")
    folds = pd.read_csv(folded / "folds" / "folds.csv", dtype=str)
    assert sorted(oof["image_id"]) == sorted(folds.loc[folds["fold"] == "1", "image_id"])
