"""Two CPU processes (gloo) under accelerate launch (torchrun: tests/test_train_kill.py, with a kill and resume)."""

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
