"""Fold locks (comp/orchestrate/locks.py): token, liveness by boot id + pid + start time, takeover by an atomic
rename, `comp train` refusing a held fold, and two real taker processes racing 100 times."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from comp.orchestrate.locks import (
    FoldLock,
    LockedError,
    check_lock_token,
    is_stale,
    process_identity,
    read_lock,
    refuse_if_locked,
)

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_token_liveness_and_takeover_by_rename(tmp_path):
    path = tmp_path / "fold_0" / "lock"
    a, b = FoldLock(path), FoldLock(path)
    assert a.try_acquire() and not b.try_acquire()
    rec = read_lock(path)
    assert rec["token"] == a.token and rec["pid"] == os.getpid() and rec["boot_id"] and rec["pid_start"] > 0
    assert not is_stale(rec)
    # The same pid with another start time is a reused pid, not the holder: stale.
    assert is_stale(dict(rec, pid_start=rec["pid_start"] + 1))
    # A record from an earlier boot of this host: stale, whatever runs under that pid now.
    assert is_stale(dict(rec, boot_id="0" * 8))
    # Another host: only the heartbeat tells.
    assert not is_stale(dict(rec, host="elsewhere"), stale_after=60)
    assert is_stale(dict(rec, host="elsewhere", beat=time.time() - 61), stale_after=60)
    a.release()
    assert not path.exists() and b.try_acquire()
    b.release()
    # A lock of a dead process is taken over in place: the lock file is replaced, never missing.
    path.write_text(json.dumps({**process_identity(), "pid": _dead_pid(), "token": "old"}))
    inode = path.stat().st_ino
    c = FoldLock(path)
    assert c.try_acquire() and c.took_over["token"] == "old" and read_lock(path)["token"] == c.token
    assert path.stat().st_ino != inode
    c.release()
    assert sorted(p.name for p in path.parent.iterdir()) == []  # no claim, temp or aside file left
    # The temp file of a job killed in the middle of taking a lock goes once its maker is gone.
    orphan, alive = path.with_name("lock.dead.new"), path.with_name("lock.alive.new")
    orphan.write_text(json.dumps({**process_identity(), "pid": _dead_pid(), "token": "dead"}))
    alive.write_text(json.dumps({**process_identity(), "token": "alive"}))
    d = FoldLock(path)
    assert d.try_acquire() and not orphan.exists() and alive.exists()
    d.release()


def test_beat_touches_only_its_own_lock_and_a_lost_lock_is_noticed(tmp_path):
    path = tmp_path / "lock"
    a = FoldLock(path)
    assert a.try_acquire() and a.beat() and a.holds()
    # Another job took the fold over (its record renamed over ours): beat() must not refresh it.
    other = {**process_identity(), "token": "someone-else"}
    path.write_text(json.dumps(other))
    os.utime(path, (1000, 1000))
    assert not a.beat() and not a.holds() and not a.update(train_pid=1)
    assert path.stat().st_mtime == 1000 and read_lock(path)["token"] == "someone-else"
    # release() leaves another job's lock in place.
    a.release()
    assert read_lock(path)["token"] == "someone-else"


def test_an_abandoned_looking_claim_of_a_live_taker_is_respected(tmp_path):
    """A taker stalled in the middle of a takeover (its claim file old, its process alive) keeps its claim: a
    second taker must not take the lock over under it (the old mutex expired by its mtime alone)."""
    path = tmp_path / "lock"
    path.write_text(json.dumps({**process_identity(), "pid": _dead_pid(), "token": "stale"}))
    claim = tmp_path / "lock.take-stale"
    claim.write_text(json.dumps({**process_identity(), "token": "stalled-taker"}))
    os.utime(claim, (time.time() - 3600,) * 2)
    old_mutex = tmp_path / "lock.takeover"  # what the previous protocol's stalled taker held
    old_mutex.mkdir()
    os.utime(old_mutex, (time.time() - 3600,) * 2)
    b = FoldLock(path)
    assert not b.try_acquire() and not b.try_acquire()
    assert read_lock(path)["token"] == "stale"
    # Once the stalled taker is gone, its claim is dropped and the lock taken over.
    claim.write_text(json.dumps({**process_identity(), "pid": _dead_pid(), "token": "stalled-taker"}))
    assert not b.try_acquire()  # this try drops the abandoned claim
    assert b.try_acquire() and read_lock(path)["token"] == b.token
    b.release()


def test_comp_train_refuses_a_fold_held_by_a_running_job(tmp_path, monkeypatch):
    path = tmp_path / "fold_0" / "lock"
    a = FoldLock(path, launch="host-1-abc")
    assert a.try_acquire()
    monkeypatch.delenv("COMP_FOLD_LOCK_TOKEN", raising=False)
    with pytest.raises(LockedError, match=r"fold 0 is being trained by .*:%d \(comp launch host-1-abc\)" % os.getpid()):
        refuse_if_locked(path, "fold 0")
    monkeypatch.setenv("COMP_FOLD_LOCK_TOKEN", a.token)  # the launch's own comp train
    refuse_if_locked(path, "fold 0")
    check_lock_token(path, "fold 0")
    path.write_text(json.dumps({**process_identity(), "token": "thief"}))
    with pytest.raises(LockedError, match="lost its lock"):
        check_lock_token(path, "fold 0")
    a.release()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_comp_train_cli_refuses_a_locked_fold(workdir):
    """The real `comp train` process: a fold whose lock is held by a live job is refused, naming the holder."""
    from comp.config import load_config
    from comp.data.folds import make_folds

    make_folds(load_config(workdir / "comp.yaml"), n_splits=2, echo=lambda s: None)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from comp.orchestrate.locks import FoldLock
        lock = FoldLock("runs/x/fold_1/lock", launch="other-launch")
        assert lock.try_acquire()
        print("held", flush=True)
        time.sleep(120)
    """)], cwd=workdir, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "held"
        out = subprocess.run([sys.executable, "-m", "comp", "train", "--exp", "x", "--fold", "1", "--set",
                              "model.name=test_resnet", "--set", "train.epochs=1"], cwd=workdir, capture_output=True,
                             text=True, timeout=240, env=dict(os.environ, PYTHONPATH=str(ROOT),
                                                              NO_ALBUMENTATIONS_UPDATE="1"))
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode != 0
    assert f":{holder.pid} (comp launch other-launch)" in out.stderr and "fold 1" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not (workdir / "runs" / "x" / "fold_1" / "metrics.csv").exists()


TAKER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from comp.orchestrate.locks import FoldLock
    d, name, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for r in range(rounds):
        while not (d / f"go{r}").exists():
            time.sleep(0.0005)
        lock = FoldLock(d / "lock")
        got = False
        for _ in range(50):  # keep trying while the lock looks takeable
            got = lock.try_acquire()
            rec = lock.holder()
            if got or (rec is not None and rec.get("token") not in (None, "stale")):
                break
        (d / f"r{r}.{name}.tmp").write_text(json.dumps({"got": got, "token": lock.token}))
        os.replace(d / f"r{r}.{name}.tmp", d / f"r{r}.{name}")
        while not (d / f"end{r}").exists():
            time.sleep(0.0005)
        lock.release()
        (d / f"released{r}.{name}").touch()
""")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_takers_race_a_stale_lock_100_times_and_exactly_one_holds(tmp_path):
    """Two real processes race for the same stale lock, 100 rounds; the test meanwhile ages every takeover claim
    (as if the takers stalled) and pauses a taker now and then. Every round exactly one holds, and it is the one
    whose token the lock carries."""
    import random

    rounds = 100
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", TAKER, str(tmp_path), n, str(rounds)], env=env)
             for n in ("a", "b")]
    rng = random.Random(0)
    try:
        for r in range(rounds):
            dead = _dead_pid()
            (tmp_path / "lock.new").write_text(json.dumps({**process_identity(), "pid": dead, "token": "stale"}))
            os.replace(tmp_path / "lock.new", tmp_path / "lock")
            (tmp_path / f"go{r}").touch()
            deadline = time.time() + 30
            while not all((tmp_path / f"r{r}.{n}").exists() for n in "ab"):
                assert time.time() < deadline, f"round {r}: a taker hangs"
                for p in tmp_path.glob("lock.take*"):  # a claim or mutex that looks abandoned
                    try:
                        os.utime(p, (0, 0))
                    except OSError:
                        pass
                if rng.random() < 0.2:
                    victim = rng.choice(procs)
                    victim.send_signal(signal.SIGSTOP)
                    time.sleep(rng.random() * 0.01)
                    victim.send_signal(signal.SIGCONT)
            got = {n: json.loads((tmp_path / f"r{r}.{n}").read_text()) for n in "ab"}
            holders = [n for n in "ab" if got[n]["got"]]
            assert len(holders) == 1, f"round {r}: holders {holders}"
            assert read_lock(tmp_path / "lock")["token"] == got[holders[0]]["token"], f"round {r}"
            (tmp_path / f"end{r}").touch()
            deadline = time.time() + 30
            while not all((tmp_path / f"released{r}.{n}").exists() for n in "ab"):
                assert time.time() < deadline
                time.sleep(0.001)
            assert not (tmp_path / "lock").exists()
            assert not list(tmp_path.glob("lock.*")), list(tmp_path.glob("lock.*"))
    finally:
        for p in procs:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()
