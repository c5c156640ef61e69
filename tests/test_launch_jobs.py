"""One `comp launch` job without Ray (``run_job`` called directly, as a Ray task calls it), with real `comp train`
processes on tiny data: retry decisions read the current attempt only, the training process has its own session
(no preexec_fn) and dies with its job, a lost lock stops the fold, --job-timeout kills a job that runs too long."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from comp.config import load_config
from comp.data.folds import make_folds
from comp.orchestrate.launch import run_job
from comp.orchestrate.locks import process_identity, read_lock

pytest.importorskip("ray", reason='needs ray: pip install "comp[ray]"')

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.name=test_resnet", "input.size=32", "train.batch_size=32", "train.lr=3e-3", "train.epochs=1"]


def _spec(work: Path, **kw) -> dict:
    return dict(dict(workdir=str(work), config=str(work / "comp.yaml"), exp="j", fold=0, overrides=TINY,
                     max_retries=1, cpus=1, launch_id="test-launch", job_timeout=None), **kw)


@pytest.fixture
def job_dir(workdir, monkeypatch):
    make_folds(load_config(workdir / "comp.yaml"), n_splits=2, echo=lambda s: None)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the job's `comp train` imports this tree
    fd = workdir / "runs" / "j" / "fold_0"
    fd.mkdir(parents=True)
    return fd


def _when_training(fd: Path, timeout: float = 120) -> int:
    """The training process's pid, once the job has started it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        rec = read_lock(fd / "lock")
        if rec and rec.get("train_pid"):
            return int(rec["train_pid"])
        time.sleep(0.02)
    raise AssertionError("the job never started its training process")


def _gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_an_old_error_line_does_not_block_the_retry_of_a_killed_attempt(job_dir):
    """An earlier run's `Error:` line in train.log, then an attempt killed (as the OOM killer does) before it
    printed much: the job must retry it with --resume, and the fold ends done."""
    (job_dir / "train.log").write_text("=== an earlier launch\nError: config key train.lrr unknown\n")
    seen = {}

    def killer():
        pid = _when_training(job_dir)
        seen["sid"], seen["pid"] = os.getsid(pid), pid
        os.kill(pid, signal.SIGKILL)

    t = threading.Thread(target=killer)
    t.start()
    out = run_job(_spec(job_dir.parents[2]))
    t.join()
    import ray

    assert not ray.is_initialized(), "a direct run_job started a Ray of its own (ray.get_gpu_ids outside a task)"
    assert seen["sid"] == seen["pid"], "the training process leads its own session (start_new_session)"
    assert out["state"] == "done" and out["attempts"] == 2, out
    log = (job_dir / "train.log").read_text()
    assert "killed by signal 9" in log and "attempt 2/2" in log and log.count("fold 0 epoch 1/1") == 1
    assert not (job_dir / "lock").exists() and not list(job_dir.glob("lock.*")) and not list(job_dir.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_job_that_loses_its_lock_stops_the_fold_and_job_timeout_kills(job_dir):
    work = job_dir.parents[2]
    slow = TINY + ["train.epochs=50", "train.step_delay=0.05"]
    # Another job takes the lock over (its record renamed over ours): this job kills its training and stops.
    res = {}
    t = threading.Thread(target=lambda: res.update(run_job(_spec(work, overrides=slow))))
    t.start()
    pid = _when_training(job_dir)
    other = {**process_identity(), "token": "another-job", "launch": "other-launch"}
    (job_dir / "lock.x").write_text(json.dumps(other))
    os.replace(job_dir / "lock.x", job_dir / "lock")
    t.join(timeout=60)
    assert not t.is_alive() and res["state"] == "skipped" and "lost its lock" in res["note"], res
    assert _gone(pid, 5), "the training process was stopped"
    assert read_lock(job_dir / "lock")["token"] == "another-job", "the other job's lock is left alone"
    assert not (job_dir / "done.json").exists()
    (job_dir / "lock").unlink()
    # --job-timeout: a job running past it is killed and reported.
    t0 = time.time()
    out = run_job(_spec(work, overrides=slow, job_timeout=20, fold=1))
    assert out["state"] == "failed" and "timed out after 20s (--job-timeout)" in out["note"], out
    assert time.time() - t0 < 60 and out["attempts"] == 1
    fd1 = work / "runs" / "j" / "fold_1"
    assert "ran past --job-timeout 20s" in (fd1 / "train.log").read_text()
    assert not (fd1 / "lock").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_training_process_dies_with_its_job(job_dir):
    """A job killed with SIGKILL (its Ray worker dies) takes its training process with it (PR_SET_PDEATHSIG,
    set by the exec stub instead of a preexec_fn)."""
    work = job_dir.parents[2]
    code = ("import json, sys\nfrom comp.orchestrate.launch import run_job\n"
            "run_job(json.loads(sys.argv[1]))")
    spec = _spec(work, overrides=TINY + ["train.epochs=50", "train.step_delay=0.05"])
    job = subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)], cwd=work, env=dict(os.environ))
    try:
        pid = _when_training(job_dir)
        job.kill()
        job.wait(timeout=30)
        assert _gone(pid, 20), "the training process outlived its job"
    finally:
        job.kill()
