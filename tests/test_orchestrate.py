"""comp launch / tune / leaderboard on a real local Ray (2 CPUs), real `comp train` processes, real data.

Every `comp launch` / `comp tune` runs as its own process group, bounded in time and killed as a group after,
so no Ray process outlives a test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import write_config
from test_report_browser import _check_page, browser  # noqa: F401 - the module-scoped Chromium fixture
from train_utils import read_oof

from comp.config import ConfigError, load_config
from comp.data.folds import make_folds
from comp.infer import ledger
from comp.orchestrate.leaderboard import SECTIONS, leaderboard
from comp.orchestrate.locks import FoldLock, read_lock
from comp.orchestrate.space import check_space, read_space
from comp.train.session import train_folds

pytest.importorskip("ray", reason='needs ray: pip install "comp[ray]"')
pytest.importorskip("optuna", reason='needs optuna: pip install "comp[ray]"')

COMP = str(Path(sys.executable).parent / "comp")
TINY = ["model.name=test_resnet", "input.size=32", "train.batch_size=32", "train.lr=3e-3", "train.epochs=2"]
SETS = [a for s in TINY for a in ("--set", s)]
QUIET = {"echo": lambda s: None}


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def start(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ if env is None else env, NO_ALBUMENTATIONS_UPDATE="1")
    return subprocess.Popen([COMP, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)


def finish(p: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a `comp` process; on timeout kill its whole group and fail with its output."""
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(p.pid)
        out, _ = p.communicate()
        raise AssertionError(f"timed out after {timeout}s:\n{out[-4000:]}") from None
    finally:
        _kill_group(p.pid)  # whatever of its Ray is left
    return out


def comp(args: list[str], cwd: Path, timeout: float = 300, ok: bool = True, env: dict | None = None) -> str:
    p = start(args, cwd, env)
    out = finish(p, timeout)
    if ok:
        assert p.returncode == 0, out[-4000:]
    return out


def _workdir(tmp_path_factory, competition, name: str) -> Path:
    work = tmp_path_factory.mktemp(name)
    write_config(work, competition)
    make_folds(load_config(work / "comp.yaml"), n_splits=2, **QUIET)
    (work / "configs").mkdir()
    (work / "configs" / "b.yaml").write_text("train:\n  lr: 0.001\naugment:\n  preset: none\n", encoding="utf-8")
    return work


def _sequential(work: Path, exp: str, *sets: str, folds=None) -> None:
    """Plain in-process comp train with one thread, as each launch job has (OMP_NUM_THREADS=1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    old = os.getcwd()
    os.chdir(work)
    try:
        train_folds(load_config(work / "comp.yaml", exp=exp, overrides=[*TINY, *sets]), folds=folds, **QUIET)
    finally:
        os.chdir(old)
        torch.set_num_threads(n)


def _probs(df: pd.DataFrame) -> np.ndarray:
    return df.sort_values("image_id").drop(columns=["image_id", "fold", "label"]).to_numpy(dtype=np.float64)


@pytest.fixture(scope="module")
def launched(tmp_path_factory, competition):
    """`comp launch --exp a --exp b --all-folds` (2 x 2 jobs on 2 CPU slots) and its output."""
    work = _workdir(tmp_path_factory, competition, "launch")
    out = comp(["launch", "--exp", "a", "--exp", "b", "--all-folds", *SETS], work, timeout=400)
    return work, out


# ---------------------------------------------------------------- launch


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_launch_two_experiments_equals_sequential_train(launched, tmp_path_factory, competition):
    work, out = launched
    assert "Ray local up" in out and "4 jobs, 0 failed" in out, out
    for exp in ("a", "b"):
        for k in (0, 1):
            fd = work / "runs" / exp / f"fold_{k}"
            assert (fd / "done.json").exists() and (fd / "train.log").exists()
            assert not (fd / "lock").exists(), "a finished job releases its lock"
            log = (fd / "train.log").read_text()
            assert log.count("=== comp launch") == 1 and f"fold {k} epoch 2/2" in log
            assert json.loads((fd / "job.json").read_text())["state"] == "done"
        assert re.search(rf"^{exp}: CV macro F1 0\.\d+", out, re.M), out
    base = _workdir(tmp_path_factory, competition, "sequential")
    for exp in ("a", "b"):
        _sequential(base, exp)
        got, want = read_oof(work / "runs" / exp / "oof.csv"), read_oof(base / "runs" / exp / "oof.csv")
        assert list(got["image_id"]) == list(want["image_id"])
        np.testing.assert_allclose(_probs(got), _probs(want), atol=1e-6, rtol=0)
    # b's own config (configs/b.yaml) reached its jobs: its OOF differs from a's.
    oof_a, oof_b = (_probs(read_oof(work / "runs" / e / "oof.csv")) for e in ("a", "b"))
    assert np.abs(oof_a - oof_b).max() > 1e-3
    # A second launch finds every fold finished and trains nothing.
    again = comp(["launch", "--exp", "a", "--all-folds", *SETS], work, timeout=120)
    assert "0 to run, 2 already finished" in again and "Ray local up" not in again
    assert (work / "runs" / "a" / "fold_0" / "train.log").read_text().count("=== comp launch") == 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_job_is_retried_with_resume_and_ends_as_uninterrupted(tmp_path_factory, competition):
    work = _workdir(tmp_path_factory, competition, "kill")
    sets = ["train.epochs=6", "train.batch_size=16"]
    p = start(["launch", "--exp", "k", "--fold", "0", "--max-retries", "2", *SETS,
               *[a for s in sets for a in ("--set", s)]], work)
    fd = work / "runs" / "k" / "fold_0"
    killed = None
    try:
        deadline = time.time() + 300
        while time.time() < deadline and killed is None:
            time.sleep(0.05)
            lock = read_lock(fd / "lock")
            m = fd / "metrics.csv"
            if lock and lock.get("train_pid") and m.exists() and len(m.read_text().splitlines()) >= 2:
                assert not (fd / "done.json").exists()
                os.kill(lock["train_pid"], signal.SIGKILL)  # the training process, mid-fold
                killed = lock["train_pid"]
    finally:
        out = finish(p, 400)
    assert killed, out
    assert p.returncode == 0, out
    log = (fd / "train.log").read_text()
    assert "killed by signal 9" in log and "attempt 2/3" in log and "--resume" in log
    assert "fold 0: resuming after epoch" in log
    assert re.search(r"k/fold_0 .* 2 .*done", out), out
    base = _workdir(tmp_path_factory, competition, "kill_base")
    _sequential(base, "k", *sets, folds=[0])
    got, want = read_oof(fd / "oof.csv"), read_oof(base / "runs" / "k" / "fold_0" / "oof.csv")
    np.testing.assert_allclose(_probs(got), _probs(want), atol=1e-6, rtol=0)
    assert json.loads((fd / "done.json").read_text())["epoch"] == json.loads(
        (base / "runs" / "k" / "fold_0" / "done.json").read_text())["epoch"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_concurrent_launches_never_train_a_fold_twice(tmp_path_factory, competition):
    work = _workdir(tmp_path_factory, competition, "twice")
    args = ["launch", "--exp", "c", "--all-folds", *SETS]
    p1, p2 = start(args, work), start(args, work)
    outs = [finish(p1, 500), finish(p2, 500)]
    assert p1.returncode == 0 and p2.returncode == 0, outs
    for k in (0, 1):
        log = (work / "runs" / "c" / f"fold_{k}" / "train.log").read_text()
        assert log.count("=== comp launch") == 1, log  # one training process ever started for the fold
        assert log.count(f"fold {k} epoch 1/2: train_loss") == 1
        rows = [re.search(rf"^c/fold_{k} .*$", o, re.M).group(0) for o in outs]
        assert sum(" done" in r for r in rows) == 1, rows
    assert (work / "runs" / "c" / "oof.csv").exists()


def test_fold_lock_is_exclusive_and_a_stale_one_is_taken_over(tmp_path):
    path = tmp_path / "fold_0" / "lock"
    a, b = FoldLock(path), FoldLock(path)
    assert a.try_acquire() and not b.try_acquire()
    rec = read_lock(path)
    assert rec["pid"] == os.getpid() and rec["host"] and rec["started"] > 0
    a.release()
    assert not path.exists() and b.try_acquire()
    b.release()
    # A lock left by a process that is gone (same host) is stale: the next job takes it over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"host": rec["host"], "pid": dead.pid, "started": time.time()}))
    c = FoldLock(path)
    assert c.try_acquire() and c.took_over["pid"] == dead.pid and read_lock(path)["pid"] == os.getpid()
    c.release()


def test_launch_refuses_bad_input_before_starting_ray(workdir):
    """In process (the refusal is the point, not the process): a one-line error, and no Ray was started (nor
    stopped: an earlier test of the session may have left one initialised in this process)."""
    import ray
    from click.testing import CliRunner

    from comp.cli import cli

    make_folds(load_config(workdir / "comp.yaml"), n_splits=2, **QUIET)
    for args, said in ((["launch", "--exp", "x", "--fold", "7", *SETS], "--fold 7"),
                       (["launch", "--exp", "x", "--all-folds", "--set", "model.name=no_such_net"], "model.name")):
        was = ray.is_initialized()
        r = CliRunner().invoke(cli, args)
        assert r.exit_code != 0 and said in r.output and "Traceback" not in r.output, r.output
        assert "Ray local up" not in r.output and ray.is_initialized() == was
        assert not (workdir / "runs" / "x").exists()


# ---------------------------------------------------------------- the private local Ray

RAY_SESSION = """
import json, os, sys
import ray
from comp.orchestrate.cluster import ray_session


def pid():
    return os.getpid()


with ray_session(num_cpus=1, echo=lambda s: None) as info:
    worker = ray.get(ray.remote(pid).remote())
    print(json.dumps({"tmp": info["temp_dir"], "worker": worker, "gcs": ray.get_runtime_context().gcs_address,
                      "cwd": os.getcwd()}), flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills this process)
"""

INTRUDER = """
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1]).internal_kv_get(b"x", None)
    print("CONNECTED")
except Exception as e:
    print("REFUSED", type(e).__name__, e)
"""


def _listeners(pids: set[int]) -> list[tuple[str, int, str]]:
    """(address, pid, process name) of every listening TCP socket of ``pids``, from `ss -ltnpH`."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=30, check=True).stdout
    found = []
    for line in out.splitlines():
        cols = line.split()
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            if int(pid) in pids:
                found.append((cols[3], int(pid), name))
    return found


def _ray_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    return dict(env, NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_private_ray_is_loopback_only_with_token_auth_and_a_killed_ones_folder_is_swept(tmp_path):
    import psutil

    env = _ray_env()
    p = subprocess.Popen([sys.executable, "-c", RAY_SESSION], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env, cwd=tmp_path, start_new_session=True)
    ray_pids: set[int] = set()
    try:
        info = json.loads(p.stdout.readline())
        tmp = Path(info["tmp"])
        ray_pids = {p.pid, *(c.pid for c in psutil.Process(p.pid).children(recursive=True))}
        assert info["worker"] in ray_pids
        assert info["cwd"] == str(tmp_path), "the caller's working folder is kept inside the session"
        found = _listeners(ray_pids)
        names = {n for _, _, n in found}
        assert {"gcs_server", "raylet"} <= names and len(found) >= 4, found
        beyond = [f for f in found if not re.match(r"^(127\.0\.0\.1|\[::1\]|\[::ffff:127\.0\.0\.1\]):\d+$", f[0])]
        assert not beyond, f"Ray listens beyond loopback: {beyond}"
        # Token authentication: the token is private, a client without it is refused, with it let in.
        assert (tmp.stat().st_mode & 0o777) == 0o700 and ((tmp / "auth_token").stat().st_mode & 0o777) == 0o600
        home = tmp_path / "home"
        home.mkdir()
        probe = [sys.executable, "-c", INTRUDER, info["gcs"]]
        out = subprocess.run(probe, capture_output=True, text=True, timeout=60, env=dict(env, HOME=str(home)))
        assert "REFUSED AuthenticationError" in out.stdout, out.stdout + out.stderr
        token_env = dict(env, HOME=str(home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(tmp / "auth_token"))
        out = subprocess.run(probe, capture_output=True, text=True, timeout=60, env=token_env)
        assert "CONNECTED" in out.stdout, out.stdout + out.stderr
        p.kill()  # SIGKILL: the session cannot remove its folder
        p.wait(timeout=30)
    finally:
        for pid in ray_pids:
            with __import__("contextlib").suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        p.wait(timeout=30)
    assert tmp.exists(), "a SIGKILLed session leaves its folder"
    # The next session sweeps it (its owner is gone) and removes its own at the end.
    q = subprocess.Popen([sys.executable, "-c", RAY_SESSION], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env, cwd=tmp_path, start_new_session=True)
    try:
        nxt = Path(json.loads(q.stdout.readline())["tmp"])
        assert not tmp.exists() and nxt.exists()
        q.stdin.close()
        assert q.wait(timeout=120) == 0
    finally:
        _kill_group(q.pid)
    assert not nxt.exists()


# ---------------------------------------------------------------- tune


def test_space_keys_are_checked_by_comp_config(workdir):
    (workdir / "s.yaml").write_text("train.lrr: {loguniform: [1e-4, 1e-2]}\n")
    with pytest.raises(ConfigError, match="train.lrr"):
        check_space(read_space(workdir / "s.yaml"), workdir / "comp.yaml", "e", TINY)
    (workdir / "s.yaml").write_text("model.name: {choice: [test_resnet, no_such_net]}\n")
    with pytest.raises(ConfigError, match="no_such_net"):
        check_space(read_space(workdir / "s.yaml"), workdir / "comp.yaml", "e", TINY)
    (workdir / "s.yaml").write_text("data.root: {choice: [a, b]}\n")
    with pytest.raises(ConfigError, match="only experiment keys"):
        read_space(workdir / "s.yaml")
    (workdir / "s.yaml").write_text("train.lr: {loguniform: [0, 1e-2]}\n")
    with pytest.raises(ConfigError, match="positive"):
        read_space(workdir / "s.yaml")


def test_tune_resume_refuses_a_search_folder_others_can_write(workdir):
    from comp.orchestrate.tune import check_trusted, tune

    make_folds(load_config(workdir / "comp.yaml"), n_splits=2, **QUIET)
    (workdir / "s.yaml").write_text("train.lr: {loguniform: [1e-4, 1e-2]}\n")
    td = workdir / "runs" / "s-tune"
    (td / "ray").mkdir(parents=True)
    state = td / "ray" / "tuner.pkl"
    state.write_bytes(b"not really a pickle")
    os.chmod(state, 0o666)
    old = os.getcwd()
    os.chdir(workdir)
    try:
        with pytest.raises(ConfigError, match=r"tuner\.pkl is writable by every user.*chmod -R go-w"):
            tune(workdir / "comp.yaml", "s", workdir / "s.yaml", trials=2, overrides=TINY, resume=True, **QUIET)
        os.chmod(state, 0o644)
        os.chmod(td, 0o777)
        with pytest.raises(ConfigError, match=r"s-tune is writable by every user"):
            check_trusted(td)
        os.chmod(td, 0o755)
        check_trusted(td)  # only its owner can write it: trusted
    finally:
        os.chdir(old)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tune_runs_the_start_config_first_then_draws(workdir):
    """comp auto's measured defaults are the search's first trial (Optuna's enqueued point), so every draw is ranked
    against them; a key outside the space is not the search's to set."""
    make_folds(load_config(workdir / "comp.yaml"), n_splits=2, **QUIET)
    (workdir / "s.yaml").write_text("train.lr: {loguniform: [1e-4, 1e-2]}\naugment.preset: {choice: [none, light]}\n")
    script = ("import sys; from comp.orchestrate.tune import tune; "
              f"tune('comp.yaml', 's', 's.yaml', trials=2, overrides={[*TINY[:-1], 'train.epochs=1']!r}, "
              "start={'train.lr': 0.00123, 'augment.preset': 'none', 'model.name': 'resnet18'}, "
              "echo=lambda s: None)")
    p = subprocess.Popen([sys.executable, "-c", script], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True, env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"))
    out = finish(p, 240)
    assert p.returncode == 0, out[-3000:]
    df = pd.read_csv(workdir / "runs" / "s-tune" / "results.csv").set_index("trial")
    assert df.loc["trial_000", "train.lr"] == pytest.approx(0.00123, rel=1e-6), df
    assert df.loc["trial_000", "augment.preset"] == "none"
    assert df.loc["trial_001", "train.lr"] != pytest.approx(0.00123, rel=1e-3)  # the next one is drawn
    assert "model.name" not in df.columns
    assert load_config(workdir / "comp.yaml", exp="s-best").model.name == "test_resnet"


# ---------------------------------------------------------------- leaderboard


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(600)
def test_leaderboard_table_and_page(launched, browser):  # noqa: F811
    work, _ = launched
    old = os.getcwd()
    os.chdir(work)
    try:
        ledger.append("sub1", ["a", "b"], [0.5, 0.5], 0.5, {}, "submissions/ledger.csv")
        led = pd.read_csv("submissions/ledger.csv", dtype=str)
        led["hidden_macro_f1"] = "0.4321"
        led.to_csv("submissions/ledger.csv", index=False)
        lines = []
        df = leaderboard(echo=lines.append)
    finally:
        os.chdir(old)
    assert list(df["experiment"]) and set(df["experiment"]) == {"a", "b"}
    assert df["cv"].notna().all() and (df["metric"] == "macro_f1").all() and (df["cv"] == df["cv_macro_f1"]).all()
    assert df["fold_std"].notna().all() and (df["folds"] == "2/2").all()
    assert (df["model"] == "test_resnet").all() and (df["input"] == 32).all() and (df["params_m"] > 0).all()
    assert (df["images_per_s"] > 0).all() and (df["wall_s"] > 0).all()
    assert df.loc[df["experiment"] == "b", "augment"].item() == "none"
    assert "sub1" in df.loc[0, "submissions"] and "hidden_macro_f1 0.4321" in df.loc[0, "submissions"]
    text = "\n".join(lines)
    assert "cv_macro_f1" in text and "test_resnet" in text and "hidden_macro_f1 0.4321" in text
    page = work / "reports" / "leaderboard.html"
    widths = _check_page(browser, page.as_uri(), SECTIONS)
    assert widths["leaderboard_cv.png"] > 300


# ---------------------------------------------------------------- a cluster (ray start --head)


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_launch_joins_a_running_cluster_and_checks_the_shared_folder(workdir, tmp_path_factory):
    """`ray start --head` (own ports and temp folder, its own process group, killed after), then
    `comp launch --address`: the per-node probe passes and the job runs; a folder the nodes cannot see is an
    error naming the node. The head runs with token authentication: comp joins with the cluster's token, and
    without it the join is refused with a message saying where the token goes."""
    make_folds(load_config(workdir / "comp.yaml"), n_splits=2, **QUIET)
    head = tmp_path_factory.mktemp("head")
    token = head / "auth_token"
    token.write_text(os.urandom(32).hex())
    token.chmod(0o600)
    (head / "home").mkdir()
    bare = dict(_ray_env(), HOME=str(head / "home"))  # no ~/.ray/auth_token there
    with_token = dict(bare, RAY_AUTH_TOKEN_PATH=str(token))
    temp = Path(f"/tmp/comp-head-{os.getpid()}")  # Ray's socket paths must stay short
    port, client, agent, agent_grpc, env_agent, metrics, nm, om = _free_ports(8)
    ray_bin = str(Path(sys.executable).parent / "ray")
    h = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={port}", f"--temp-dir={temp}",
                          "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                          f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
                          f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
                          f"--metrics-export-port={metrics}", f"--node-manager-port={nm}",
                          f"--object-manager-port={om}"],
                         cwd=head, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                         env=dict(bare, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token)))
    try:
        address = f"127.0.0.1:{port}"
        out = ""
        for _ in range(60):  # until the head answers
            time.sleep(2)
            out = comp(["launch", "--exp", "e", "--fold", "0", "--address", address, *SETS, "--set",
                        "train.epochs=1"], workdir, timeout=300, ok=False, env=with_token)
            if "cannot join a Ray cluster" not in out:
                break
        assert "cluster: 1 nodes see" in out and "1 jobs, 0 failed" in out, out
        assert (workdir / "runs" / "e" / "fold_0" / "done.json").exists()
        out = comp(["launch", "--exp", "e", "--fold", "1", "--address", address, *SETS, "--set", "train.epochs=1"],
                   workdir, timeout=300, ok=False, env=bare)
        assert "cannot join a Ray cluster" in out and "auth_token" in out and "Traceback" not in out, out
        assert not (workdir / "runs" / "e" / "fold_1" / "metrics.csv").exists()
        probe = subprocess.run(
            [sys.executable, "-c", "from pathlib import Path\nfrom comp.orchestrate.cluster import ray_session, "
             "check_shared_folder\nwith ray_session(%r):\n    check_shared_folder(Path('/nonexistent/comp.yaml'))"
             % address], capture_output=True, text=True, timeout=120, cwd=head, env=with_token)
        assert probe.returncode != 0 and "/nonexistent/comp.yaml is not visible on node" in probe.stderr, probe.stderr
    finally:
        _kill_group(h.pid)
        h.communicate(timeout=60)
        import shutil

        shutil.rmtree(temp, ignore_errors=True)


# ---------------------------------------------------------------- chaos


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_chaos_killed_training_processes_end_as_a_sequential_run(tmp_path_factory, competition):
    """`comp launch` of 2 experiments x 3 folds while a killer SIGKILLs a random running training process 5
    times: every fold ends done exactly once, the OOF equals plain in-process training's, and no lock, claim or
    temp file is left."""
    import random

    def workdir(name: str) -> Path:
        work = tmp_path_factory.mktemp(name)
        write_config(work, competition)
        make_folds(load_config(work / "comp.yaml"), n_splits=3, **QUIET)
        return work

    work = workdir("chaos")
    t0 = time.time()
    p = start(["launch", "--exp", "a", "--exp", "b", "--all-folds", "--max-retries", "6", *SETS], work)
    rng = random.Random(0)
    kills: list[tuple[str, int]] = []
    try:
        last = set()
        while p.poll() is None and len(kills) < 5:
            time.sleep(rng.uniform(1.0, 4.0))
            running = []
            for lock in (work / "runs").glob("*/fold_*/lock"):
                rec = read_lock(lock)
                # A fold whose done.json is written is assembling runs/E/oof.csv: its end is not the test here.
                if rec and rec.get("train_pid") and rec["train_pid"] not in last and \
                        not (lock.parent / "done.json").exists():
                    running.append((f"{lock.parent.parent.name}/{lock.parent.name}", rec["train_pid"]))
            if running:
                name, pid = rng.choice(running)
                with __import__("contextlib").suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    kills.append((name, pid))
                    last.add(pid)
    finally:
        out = finish(p, 500)
    assert p.returncode == 0 and "6 jobs, 0 failed" in out, out
    assert len(kills) >= 3, f"only {len(kills)} kills landed: {kills}"
    retried = 0
    for exp in ("a", "b"):
        for k in range(3):
            fd = work / "runs" / exp / f"fold_{k}"
            log = (fd / "train.log").read_text()
            assert len(re.findall(rf"^fold {k}: best ", log, re.M)) == 1, log  # trained to the end once
            assert (fd / "done.json").exists() and json.loads((fd / "job.json").read_text())["state"] == "done"
            retried += log.count("retrying with --resume")
    assert retried >= len(kills) - 1, (retried, kills)  # a kill can land as its process exits on its own
    print(f"chaos: {len(kills)} kills ({', '.join(n for n, _ in kills)}), {retried} retries, launch "
          f"{time.time() - t0:.0f}s")
    left = [p for p in (work / "runs").rglob("*") if p.name == "lock" or p.name.startswith("lock.")
            or p.name.endswith(".tmp")]
    assert not left, left
    base = workdir("chaos_sequential")
    for exp in ("a", "b"):
        _sequential(base, exp)
        got, want = read_oof(work / "runs" / exp / "oof.csv"), read_oof(base / "runs" / exp / "oof.csv")
        assert list(got["image_id"]) == list(want["image_id"])
        np.testing.assert_allclose(_probs(got), _probs(want), atol=1e-6, rtol=0)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tune_asha_resume_after_a_kill_and_the_winner_reports_cv_on_the_folds_the_search_never_saw(
        tmp_path_factory, competition):
    """Six trials with ASHA, SIGKILLed after two results and resumed to six; then the leak suite's tune case.

    Random labels, so every trial is pure noise, and the winner is chosen on fold 0. Before issue 17
    configs/s-best.yaml did not say where it came from, and `comp train --exp s-best --all-folds` reported the CV
    over every fold, fold 0 included: the maximum of the trials' noisy fold-0 draws inside the figure. Now the CV
    that train, launch, leaderboard and the ledger report is the OOF over folds 1..K-1, with the all-folds figure
    beside it labelled optimistic. (One search serves both checks: a Ray search is the suite's costliest step.)"""
    import shutil

    from comp.runs import oof_cv

    data = tmp_path_factory.mktemp("noise") / "c"
    shutil.copytree(competition, data)
    train = pd.read_csv(data / "train.csv", dtype=str)
    train["label"] = np.random.default_rng(0).permutation(train["label"].to_numpy())  # pure noise
    train.to_csv(data / "train.csv", index=False)
    work = tmp_path_factory.mktemp("tune_noise")
    write_config(work, data)
    make_folds(load_config(work / "comp.yaml"), n_splits=3, **QUIET)
    (work / "configs").mkdir()
    (work / "configs" / "s.space.yaml").write_text(
        "train.lr: {loguniform: [1e-4, 3e-2]}\naugment.preset: {choice: [none, light]}\n", encoding="utf-8")
    args = ["tune", "--exp", "s", "--space", "configs/s.space.yaml", "--trials", "6", *SETS, "--set",
            "train.epochs=3"]
    p = start(args, work)
    results = work / "runs" / "s-tune" / "results.csv"
    try:
        deadline = time.time() + 400
        while time.time() < deadline:
            time.sleep(0.5)
            if results.exists() and len(pd.read_csv(results)) >= 2:
                break
        n_before = len(pd.read_csv(results))
    finally:
        _kill_group(p.pid)  # SIGKILL: the search, its local Ray and the running trials
        out = finish(p, 60)
    assert 2 <= n_before < 6, out
    out = comp([*args, "--resume"], work, timeout=600)
    df = pd.read_csv(results)
    assert len(df) == 6 and sorted(df["trial"]) == [f"trial_{i:03d}" for i in range(6)], out
    assert set(df["state"]) <= {"done", "stopped by ASHA"}, df
    assert df["stopped"].sum() >= 1 and (df.loc[df["stopped"], "epochs"] < 3).all(), df
    assert (df.loc[~df["stopped"], "epochs"] == 3).all()
    assert (work / "runs" / "s-tune" / "optimization.png").stat().st_size > 5000
    best = df.sort_values("val_macro_f1", ascending=False).iloc[0]
    cfg = load_config(work / "comp.yaml", exp="s-best", overrides=[])
    assert cfg.train.lr == pytest.approx(best["train.lr"], rel=1e-9) and cfg.augment.preset == best["augment.preset"]
    assert cfg.train.epochs == 3 and cfg.model.name == "test_resnet"  # --set values travel into the best config
    assert "next: comp launch --exp s-best --all-folds" in out
    winner = yaml.safe_load((work / "configs" / "s-best.yaml").read_text())
    assert winner["search"] == {"source": "s", "trials": 6, "folds": [0]}, out

    said = comp(["train", "--exp", "s-best", "--all-folds", "--set", "train.epochs=1"], work, timeout=600)
    assert yaml.safe_load((work / "runs" / "s-best" / "config.yaml").read_text())["search"]["folds"] == [0]
    oof = read_oof(work / "runs" / "s-best" / "oof.csv")
    classes = [c for c in oof.columns if c not in ("image_id", "label", "fold")]
    untouched = oof_cv(oof[oof["fold"].astype(int) != 0], "label", classes, "macro_f1").macro_f1
    everything = oof_cv(oof, "label", classes, "macro_f1").macro_f1
    assert f"CV macro F1 {untouched:.4f}" in said and f"all folds macro_f1 {everything:.4f} (optimistic" in said
    assert untouched < 1 / len(classes) + 0.08  # random labels: the honest figure stays near chance
    comp(["predict", "--exp", "s-best"], work, timeout=300)
    comp(["ensemble", "--exp", "s-best", "--name", "best"], work, timeout=300)
    row = ledger.read(work / "submissions" / "ledger.csv").iloc[-1]
    assert float(row["cv_macro_f1"]) == pytest.approx(untouched, abs=1e-5)  # done-when: the OOF over folds 1..K-1
    old = os.getcwd()
    os.chdir(work)
    try:
        lines = []
        lb = leaderboard(echo=lines.append).set_index("experiment")
    finally:
        os.chdir(old)
    assert lb.loc["s-best", "cv"] == pytest.approx(untouched) and lb.loc["s-best", "cv_optimistic"] == pytest.approx(
        everything)
    assert "s-best: cv over folds [1, 2]" in "\n".join(lines)
