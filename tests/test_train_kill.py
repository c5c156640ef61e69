"""SIGKILL mid-fold, resume in a new process: the killed fold ends exactly where an uninterrupted run ends.

Each run is a separate `comp train --all-folds` process (one process, or `torchrun --nproc_per_node 2`); the
test waits until fold k has committed epoch 1 and is inside epoch 2 (train.step_delay slows each step so the
epoch lasts seconds), kills the launcher and every process under it with SIGKILL, then resumes with `--resume`
in a new process and compares every fold's OOF and model.safetensors with an uninterrupted run's (1e-6, CPU).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from train_utils import TINY, folded_workdir, make_folds_file

# Every random path on: device augmentation, Mixup, dropout, EMA.
SETS = [*TINY, "augment.preset=heavy", "augment.on=device", "augment.mixup=0.2", "model.drop_rate=0.2",
        "train.ema=true", "train.ema_decay=0.9"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ONE = [sys.executable]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")  # same threads in every run: same sums


def command(launcher, exp, *extra):
    sets = [a for s in SETS for a in ("--set", s)]
    return [*launcher, "-m", "comp", "train", "--exp", exp, "--all-folds", *sets, *extra]


def run(launcher, exp, cwd, *extra, timeout=300) -> str:
    r = subprocess.run(command(launcher, exp, *extra), cwd=cwd, env=ENV, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r.stdout + r.stderr


def kill_in_second_epoch(launcher, exp, cwd, fold: int, timeout=240) -> None:
    """Start the run; SIGKILL it and every process under it once fold ``fold`` is inside epoch 2."""
    proc = subprocess.Popen(command(launcher, exp, "--set", "train.step_delay=0.15"), cwd=cwd, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = cwd / "runs" / exp / f"fold_{fold}" / "metrics.csv"
    deadline = time.monotonic() + timeout
    try:
        while not (metrics.exists() and len(pd.read_csv(metrics)) >= 1):
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before fold {fold} epoch 1"
            assert time.monotonic() < deadline, f"fold {fold} did not finish epoch 1 in {timeout}s"
            time.sleep(0.05)
        time.sleep(0.8)  # a few steps into epoch 2 (each step sleeps 0.15 s; an epoch has 13 steps per process)
    finally:
        # torchrun starts its workers in sessions of their own: kill the launcher's whole tree, workers first.
        for pid in [*descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)
        time.sleep(0.2)  # the killed workers' files are closed; nothing writes under runs/ any more
    fd = cwd / "runs" / exp / f"fold_{fold}"
    assert not (fd / "done.json").exists(), "the kill came too late: the fold had finished"
    assert json.loads((fd / "state" / "trainer.json").read_text())["epoch"] == 1
    assert json.loads((fd / "state" / "trainer.json").read_text())["fold"] == fold


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), deepest first."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out[::-1]


def assert_fold_equal(cwd, exp, ref, fold):
    a, b = cwd / "runs" / exp / f"fold_{fold}", cwd / "runs" / ref / f"fold_{fold}"
    oa, ob = pd.read_csv(a / "oof.csv"), pd.read_csv(b / "oof.csv")
    assert oa["image_id"].tolist() == ob["image_id"].tolist()
    num = oa.select_dtypes("number").columns
    np.testing.assert_allclose(oa[num].to_numpy(), ob[num].to_numpy(), rtol=0, atol=1e-6,
                               err_msg=f"fold {fold}: OOF differs from the uninterrupted run")
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k].double(), wb[k].double(), rtol=0, atol=1e-6), f"fold {fold}: weight {k} differs"


@pytest.fixture(scope="module")
def single(tmp_path_factory, competition):
    """A working directory with an uninterrupted one-process run `ref`."""
    with folded_workdir(tmp_path_factory, competition, "kill") as cwd:
        pass
    out = run(ONE, "ref", cwd)
    assert "\r" not in out, "a log (stdout not a terminal) got carriage-return progress updates"
    # Prediction (and its decode) in a log: summary lines, no bars either.
    sets = [a for s in SETS for a in ("--set", s)]
    r = subprocess.run([sys.executable, "-m", "comp", "predict", "--exp", "ref", *sets, "--tta", "identity,hflip"],
                       cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "wrote runs/ref/test.csv" in r.stdout, r.stdout + r.stderr
    assert "\r" not in r.stdout + r.stderr and "img/s]" not in r.stdout + r.stderr
    return cwd


@pytest.mark.slow
@pytest.mark.parametrize("fold", [0, 1])
def test_sigkill_in_second_epoch_then_resume_equals_uninterrupted(single, fold):
    exp = f"kill{fold}"
    kill_in_second_epoch(ONE, exp, single, fold)
    state = single / "runs" / exp / f"fold_{fold}" / "state"
    assert sorted(p.name for p in state.glob("model*")) == ["model.safetensors"]
    out = run(ONE, exp, single, "--resume")
    assert f"fold {fold}: resuming after epoch 1 of 2" in out
    # A log gets one line per epoch: no carriage-return progress, and the resumed epoch once.
    assert "\r" not in out and out.count(f"fold {fold} epoch 2/2:") == 1
    for k in range(3):
        assert_fold_equal(single, exp, "ref", k)
    assert not state.exists(), "a finished fold keeps no state unless train.keep_state"


@pytest.mark.slow
def test_torchrun_sigkill_in_fold_1_then_resume_equals_uninterrupted(folded_ddp, competition):
    cwd = folded_ddp
    out = run(TORCHRUN, "ddp", cwd)
    assert "processes 2" in out and out.count("CV macro F1") == 1  # only the main process prints and writes
    train = pd.read_csv(competition / "train.csv", dtype=str, keep_default_na=False)
    oof = pd.read_csv(cwd / "runs" / "ddp" / "oof.csv", dtype={"image_id": str}, keep_default_na=False)
    assert oof["image_id"].tolist() == train["image_id"].tolist()  # every id exactly once, in train.csv order
    folds = pd.read_csv(cwd / "folds" / "folds.csv", dtype=str)
    for k in range(3):
        assert json.loads((cwd / "runs" / "ddp" / f"fold_{k}" / "done.json").read_text())["processes"] == 2
        fold_oof = pd.read_csv(cwd / "runs" / "ddp" / f"fold_{k}" / "oof.csv", dtype={"image_id": str})
        assert sorted(fold_oof["image_id"]) == sorted(folds.loc[folds["fold"] == str(k), "image_id"])

    kill_in_second_epoch(TORCHRUN, "ddpkill", cwd, 1)
    state = cwd / "runs" / "ddpkill" / "fold_1" / "state"
    # One model and one optimizer; both ranks' RNG states.
    assert sorted(p.name for p in state.glob("model*")) == ["model.safetensors"]
    assert sorted(p.name for p in state.glob("optimizer*")) == ["optimizer.bin"]
    assert sorted(p.name for p in state.glob("random_states_*")) == ["random_states_0.pkl", "random_states_1.pkl"]
    out = run(TORCHRUN, "ddpkill", cwd, "--resume")
    assert "fold 1: resuming after epoch 1 of 2" in out
    for k in range(3):
        assert_fold_equal(cwd, "ddpkill", "ddp", k)


@pytest.fixture
def folded_ddp(workdir):
    make_folds_file(workdir)
    return workdir
