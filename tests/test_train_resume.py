"""Resume, determinism and faults: an interrupted fold ends exactly where an uninterrupted one ends (CPU)."""

import json
import shutil

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from train_utils import make_folds_file, quiet, tiny_cfg

import comp.tasks.losses
from comp.train.loop import TrainingError
from comp.train.session import train_folds
from comp.train.state import find_state

# Every random path on: augmentation, Mixup/CutMix, dropout, balanced sampling, EMA; 3 epochs with warmup-free
# cosine so the lr differs each epoch.
RANDOM = ["train.epochs=3", "augment.preset=medium", "augment.mixup=0.2", "augment.cutmix=1.0",
          "model.drop_rate=0.2", "train.sampler=balanced", "train.ema=true", "train.ema_decay=0.9"]


@pytest.fixture
def folded(workdir):
    make_folds_file(workdir)
    return workdir


def outputs(workdir, exp, fold=0):
    fd = workdir / "runs" / exp / f"fold_{fold}"
    metrics = pd.read_csv(fd / "metrics.csv").drop(columns=["seconds", "images_per_s"])
    return (fd / "oof.csv").read_text(), load_file(str(fd / "model.safetensors")), metrics, \
        json.loads((fd / "model.json").read_text())


def assert_same(a, b):
    assert a[0] == b[0], "OOF probabilities differ"
    assert a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1]), "weights differ"
    pd.testing.assert_frame_equal(a[2], b[2])
    assert {**a[3], "exp": None} == {**b[3], "exp": None}


@pytest.mark.slow
def test_resume_after_interruptions_equals_uninterrupted_run_and_runs_are_deterministic(folded):
    train_folds(tiny_cfg(folded, "full", *RANDOM), [0], echo=quiet)
    full = outputs(folded, "full")

    # Stopped after epoch 1 (as if killed), then killed again while saving epoch 2's state: the new state folder
    # is half-written and the old one was already moved aside. Resume must pick the complete one.
    res = train_folds(tiny_cfg(folded, "part", *RANDOM, "train.stop_after_epochs=1"), [0], echo=quiet)
    assert res["interrupted"]
    res = train_folds(tiny_cfg(folded, "part", *RANDOM, "train.stop_after_epochs=1"), [0], resume=True, echo=quiet)
    assert res["interrupted"]
    fd = folded / "runs" / "part" / "fold_0"
    assert json.loads((fd / "state" / "trainer.json").read_text())["epoch"] == 2
    (fd / "state").rename(fd / "state.old")
    half = fd / ".state.tmp"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\0" * 100)  # no trainer.json: incomplete, never loaded
    assert find_state(fd) == fd / "state.old"
    msgs = []
    train_folds(tiny_cfg(folded, "part", *RANDOM), [0], resume=True, echo=msgs.append)
    assert any("resuming after epoch 2 of 3" in m for m in msgs)
    assert_same(outputs(folded, "part"), full)

    # Same config and seed, fresh run: the same OOF and weights.
    train_folds(tiny_cfg(folded, "again", *RANDOM), [0], echo=quiet)
    assert_same(outputs(folded, "again"), full)


@pytest.mark.slow
def test_resume_rewrites_outputs_lost_after_the_state_commit(folded):
    """A kill right after the state was committed but before model/oof/metrics were published."""
    train_folds(tiny_cfg(folded, "lost", "train.stop_after_epochs=1"), [0], echo=quiet)
    fd = folded / "runs" / "lost" / "fold_0"
    ref = (fd / "oof.csv").read_text()
    for name in ("oof.csv", "model.safetensors", "model.json", "metrics.csv"):
        (fd / name).unlink()
    train_folds(tiny_cfg(folded, "lost", "train.stop_after_epochs=1"), [0], resume=True, echo=quiet)
    assert pd.read_csv(fd / "metrics.csv")["epoch"].tolist() == [1, 2]
    assert (fd / "model.json").exists() and (fd / "done.json").exists()
    if json.loads((fd / "model.json").read_text())["epoch"] == 1:
        assert (fd / "oof.csv").read_text() == ref


@pytest.mark.slow
def test_nan_loss_stops_the_fold_and_keeps_the_last_good_state(folded, monkeypatch):
    real = comp.tasks.losses.create_loss  # SingleLabel.loss imports it when a fold is set up
    steps_per_epoch = 13  # 400 training images / batch 32

    def poisoned(t, counts=None):
        loss = real(t, counts)
        calls = {"n": 0}

        def fn(logits, target):
            calls["n"] += 1
            out = loss(logits, target)
            return out * float("nan") if calls["n"] > steps_per_epoch + 2 else out

        return fn

    monkeypatch.setattr(comp.tasks.losses, "create_loss", lambda t, class_counts=None: _Loss(poisoned(t, class_counts)))
    with pytest.raises(TrainingError, match=r"fold 0: the training loss became NaN/inf at epoch 2, step 3.*"
                                            r"state after epoch 1.*best model \(epoch 1.*train\.grad_clip"):
        train_folds(tiny_cfg(folded, "nan"), [0], echo=quiet)
    fd = folded / "runs" / "nan" / "fold_0"
    assert json.loads((fd / "state" / "trainer.json").read_text())["epoch"] == 1
    assert json.loads((fd / "model.json").read_text())["epoch"] == 1
    assert len(pd.read_csv(fd / "metrics.csv")) == 1 and not (fd / "done.json").exists()
    monkeypatch.setattr(comp.tasks.losses, "create_loss", real)  # (not undo(): that would undo the fixture's chdir)
    res = train_folds(tiny_cfg(folded, "nan"), [0], resume=True, echo=quiet)
    assert res["folds"][0]["epochs_run"] == 2 and (fd / "done.json").exists()


class _Loss(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, logits, target):
        return self.fn(logits, target)


@pytest.mark.slow
def test_overwrite_restarts_a_finished_fold(folded):
    train_folds(tiny_cfg(folded, "ow", "train.epochs=1"), [0], echo=quiet)
    fd = folded / "runs" / "ow" / "fold_0"
    shutil.copy(fd / "metrics.csv", fd.parent / "before.csv")
    msgs = []
    train_folds(tiny_cfg(folded, "ow", "train.epochs=1"), [0], overwrite=True, echo=msgs.append)
    assert not any("already finished" in m for m in msgs)
    assert any("best macro F1" in m for m in msgs)
