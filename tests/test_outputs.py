"""Outputs that survive kills, concurrency and shared folders: the fold's OOF before model.json (and its repair),
the ledger under a lock (real processes), pseudo-label folders renamed into place, fsync, modes by the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from train_utils import make_folds_file, quiet, tiny_cfg

import comp.train.loop
import comp.train.outputs
from comp import files
from comp.train.session import train_folds


@pytest.fixture
def folded(workdir):
    make_folds_file(workdir)
    return workdir


@pytest.mark.slow
def test_publish_writes_the_oof_before_model_json(folded, monkeypatch):
    """A kill between the two leaves a stale model.json (repaired on --resume), never a stale OOF behind a
    current model.json."""
    seen = []
    real = comp.train.outputs.save_checkpoint

    def spy(path, model, meta):
        oof = path.parent / "oof.csv"
        seen.append(oof.exists() and meta["epoch"] == _oof_epoch(path.parent))
        real(path, model, meta)

    monkeypatch.setattr(comp.train.outputs, "save_checkpoint", spy)
    train_folds(tiny_cfg(folded, "order", "train.epochs=1"), [0], echo=quiet)
    assert seen == [True], "model.json was written before its epoch's OOF"


def _oof_epoch(fd) -> int:
    """The epoch of fold_k/oof.csv: the state's trainer.json is committed just before publishing."""
    return json.loads((fd / "state" / "trainer.json").read_text())["best_epoch"]


class Killed(Exception):
    pass


@pytest.mark.slow
def test_resume_repairs_a_stale_or_missing_oof_and_a_corrupt_model_json(folded, monkeypatch):
    train_folds(tiny_cfg(folded, "rep", "train.stop_after_epochs=1"), [0], echo=quiet)
    fd = folded / "runs" / "rep" / "fold_0"
    ref, ref_meta = (fd / "oof.csv").read_text(), json.loads((fd / "model.json").read_text())

    def killed(*a, **k):  # stop right after the repair, before epoch 2 could publish anything itself
        raise Killed()

    monkeypatch.setattr(comp.train.loop, "_train_epoch", killed)
    for damage in ("missing_oof", "stale_oof", "corrupt_model_json"):
        if damage == "missing_oof":  # killed after model.json, before the OOF (the old order)
            (fd / "oof.csv").unlink()
        elif damage == "stale_oof":
            oof = pd.read_csv(fd / "oof.csv", dtype=str, keep_default_na=False)
            oof.iloc[:, -1] = "0.5"
            oof.to_csv(fd / "oof.csv", index=False)
        else:  # killed mid-write by an older comp, or a disk that filled up
            (fd / "model.json").write_text('{"epoch": 1, "cla')
        with pytest.raises(Killed):
            train_folds(tiny_cfg(folded, "rep", "train.stop_after_epochs=1"), [0], resume=True, echo=quiet)
        assert (fd / "oof.csv").read_text() == ref, damage
        assert json.loads((fd / "model.json").read_text()) == ref_meta, damage


APPEND = textwrap.dedent("""
    import sys
    from comp.infer import ledger
    who, n = sys.argv[1], int(sys.argv[2])
    for i in range(n):
        ledger.append(f"{who}_{i}", ["a", "b"], [0.5, 0.5], 0.5, {"i": i}, path="submissions/ledger.csv")
""")


@pytest.mark.slow
def test_two_processes_appending_to_the_ledger_keep_every_row(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, "-c", APPEND, who, "50"], cwd=tmp_path, env=env) for who in "xy"]
    for p in procs:
        assert p.wait(timeout=120) == 0
    led = pd.read_csv(tmp_path / "submissions" / "ledger.csv", dtype=str, keep_default_na=False)
    assert sorted(led["name"]) == sorted(f"{w}_{i}" for w in "xy" for i in range(50))
    assert not list((tmp_path / "submissions").glob("*.tmp"))


def test_locked_is_exclusive_across_processes(tmp_path):
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
                               "os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True);"
                               " time.sleep(30)", str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with files.locked(lock, blocking=False) as got:
            assert not got
    finally:
        holder.kill()
        holder.wait()
    with files.locked(lock, blocking=False) as got:  # the kernel released the dead holder's lock
        assert got


def test_writes_follow_the_umask_and_leave_no_temp_file(tmp_path):
    old = os.umask(0o022)
    try:
        f = files.write_text(tmp_path / "a" / "x.txt", "hi")
        assert stat.S_IMODE(f.stat().st_mode) == 0o644  # mkstemp alone gives 0600
        with files.atomic_dir(tmp_path / "d") as d:
            (d / "y.csv").write_text("1")
        assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755  # mkdtemp alone gives 0700
        os.umask(0o077)
        assert stat.S_IMODE(files.write_text(tmp_path / "z.txt", "hi").stat().st_mode) == 0o600
        os.umask(0o002)
        assert files.umask() == 0o002
        assert stat.S_IMODE(files.write_text(tmp_path / "z.txt", "hi").stat().st_mode) == 0o664
    finally:
        os.umask(old)
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_write_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    files.write_text(tmp_path / "x.txt", "hi")
    assert any(p.startswith(str(tmp_path / ".x.txt.")) for p in synced), synced  # the temp file, before the rename
    assert synced[-1] == str(tmp_path), synced  # the folder, after it


def _fake_teacher(workdir, exp="T", seed=0):
    """runs/T/oof.csv (which fold held each row) and runs/T/test_folds.csv (each fold model's test
    probabilities), as `comp train` and `comp predict` write them."""
    import numpy as np

    folds = pd.read_csv(workdir / "folds" / "folds.csv", dtype=str, keep_default_na=False)
    classes = sorted(folds["label"].unique())
    rd = workdir / "runs" / exp
    rd.mkdir(parents=True)
    folds[["image_id", "fold", "label"]].to_csv(rd / "oof.csv", index=False)
    cfg = tiny_cfg(workdir, exp)
    test = pd.read_csv(os.path.join(cfg.data.root, "sample_submission.csv"), dtype=str)["image_id"]
    rng = np.random.default_rng(seed)
    parts = []
    for k in sorted(folds["fold"].astype(int).unique()):
        p = rng.dirichlet(np.ones(len(classes)), len(test))
        parts.append(pd.concat([pd.DataFrame({"image_id": test, "fold": k}), pd.DataFrame(p, columns=classes)],
                               axis=1))
    pd.concat(parts).to_csv(rd / "test_folds.csv", index=False)


def test_pseudo_overwrite_replaces_the_folder_whole(folded):
    from comp.techniques.pseudo import make_pseudo

    _fake_teacher(folded)
    out = make_pseudo(tiny_cfg(folded, None), "T", "tp", top=0.5, echo=quiet)
    (out / "fold_7.csv").write_text("image_id,confidence\nold,1\n")  # from an older folds file
    make_pseudo(tiny_cfg(folded, None), "T", "tp", top=0.5, overwrite=True, echo=quiet)
    assert sorted(p.name for p in out.iterdir()) == ["confidence.png", "fold_0.csv", "fold_1.csv", "fold_2.csv",
                                                     "summary.json"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "a temp folder was left"


@pytest.mark.parametrize("args", [["pseudo", "--from", "T", "--exp", "../x", "--top", "0.5"],
                                  ["pseudo", "--from", "../T", "--exp", "x", "--top", "0.5"],
                                  ["clean", "--exp", "../x"], ["clean", "--exp", ".cache"]])
def test_pseudo_and_clean_check_the_experiment_name(folded, args):
    from click.testing import CliRunner

    from comp.cli import cli

    (folded / "runs" / ".cache").mkdir(parents=True, exist_ok=True)
    (folded / "x").mkdir()
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "use letters, digits" in r.output and "Traceback" not in r.output, r.output
    assert (folded / "runs" / ".cache").exists()
