"""``comp launch``: (experiment x fold) jobs on Ray, each a ``comp train --exp E --fold k`` subprocess.

A job is a Ray task that takes the fold's lock (runs/E/fold_k/lock), runs ``comp train`` in a clean process (its
own session, killed with the job) in the working folder with its output in runs/E/fold_k/train.log, and retries a
process that died (killed, out of memory) with ``--resume``; whether to retry is read from that attempt's part of
the log only. While it trains, the job beats the lock and checks its token: a job that finds another owner kills
its training process and stops, as it does past ``--job-timeout``. The GPU comes from Ray's ``num_gpus`` (Ray
sets CUDA_VISIBLE_DEVICES for the task and the subprocess inherits it). The launcher itself only schedules,
watches files and prints: it never trains.

Per-fold files besides comp train's (runs.RUNNER_FILES, kept when a fold restarts):
    runs/E/fold_k/train.log   every attempt's output, each after its own "=== comp launch ...: attempt N/M" header
    runs/E/fold_k/lock        token, host, boot id, pid and start time (and the training process's pid) of the job
    runs/E/fold_k/job.json    state, host, GPU, attempt of the job that holds the lock
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from comp import runs
from comp.config import ConfigError, load_config
from comp.data.cache import JOBS_ENV
from comp.files import write_text
from comp.orchestrate.locks import BEAT_EVERY, TOKEN_ENV, FoldLock, describe, read_lock

STATES_FINAL = ("done", "skipped", "failed")
LOG_TAIL = 15
CHECK_EVERY = 2.0  # seconds between a job's checks that it still holds its fold's lock


@dataclass
class Job:
    exp: str
    fold: int
    state: str = "queued"  # queued, waiting (locked by another launch), running, retrying, done, skipped, failed
    host: str = ""
    gpu: str = ""
    attempts: int = 0
    score: float | None = None
    seconds: float = 0.0
    note: str = ""
    log: str = ""

    @property
    def name(self) -> str:
        return f"{self.exp}/fold_{self.fold}"


# ---------------------------------------------------------------- the job (runs in a Ray worker)


# The training process is started through this stub: it asks Linux to SIGKILL it when the Ray worker that started
# it dies (PR_SET_PDEATHSIG survives exec), leaves if that worker is already gone, then becomes `comp train`. (A
# preexec_fn would do the same in the forked child, which Python documents as unsafe in a threaded process such as
# a Ray worker.)
DIE_WITH_PARENT = """import ctypes, os, signal, sys
try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit("comp launch: the job that started this process is gone")
os.execv(sys.argv[2], sys.argv[2:])
"""


def child_command(cmd: list[str]) -> list[str]:
    """``cmd`` (an absolute program first) run through DIE_WITH_PARENT."""
    return [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *cmd]


def start_child(cmd: list[str], cwd, log, env: dict) -> subprocess.Popen:
    """A job's process: its own session and process group (killed as a group), dies with the job."""
    return subprocess.Popen(child_command(cmd), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def comp_command() -> list[str]:
    """How to start comp in a subprocess: the ``comp`` script beside this Python (``python -m comp`` would import
    a competition folder named ``comp`` in the working folder instead of the package)."""
    exe = Path(sys.executable).parent / "comp"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("comp")
    return [found] if found else [sys.executable, "-m", "comp"]


def _has_state(fd: Path) -> bool:
    return any((fd / name / "trainer.json").exists() for name in ("state", "state.old"))


def log_tail(path: Path, n: int = LOG_TAIL, start: int = 0) -> str:
    """The last ``n`` lines of a log from byte ``start`` on (one attempt's part; progress bars' carriage-return
    updates reduced to their last one)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    lines = [ln.rsplit("\r", 1)[-1] for ln in text.splitlines()]
    return "\n".join([ln for ln in lines if ln.strip()][-n:])


def _user_error(tail: str) -> bool:
    """comp train exited with a message the user must act on (a config or data error): retrying cannot help."""
    return any(ln.startswith("Error: ") for ln in tail.splitlines())


def sweep_temp_files(fd: Path) -> None:
    """The half-written temp files (comp.files: ``.NAME.XXXX.tmp``) a killed training process left in its fold
    folder; only the job holding the fold's lock writes there, so none of them is still being written."""
    for p in fd.glob(".*.tmp"):
        if p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()


@dataclass
class Attempt:
    """How one training process ended: rc (None: stopped by the job), why it was stopped, its part of the log."""
    rc: int | None
    stopped: str = ""
    tail: str = ""


def run_attempt(cmd: list[str], fd: Path, workdir: Path, env: dict, lock: FoldLock, header: str,
                deadline: float | None) -> Attempt:
    """One `comp train` process, its output appended to fold_k/train.log after a header line; the job beats the
    lock while it runs and stops it (SIGKILL to its process group) when the lock is lost or ``deadline`` passes."""
    fd.mkdir(parents=True, exist_ok=True)
    with open(fd / "train.log", "a", encoding="utf-8") as log:
        start = log.tell()
        log.write(header + "\n")
        log.flush()
        proc = start_child(cmd, workdir, log, env)
        stopped = ""
        try:
            lock.update(train_pid=proc.pid)
            beat = checked = time.time()
            while proc.poll() is None:
                time.sleep(0.25)
                now = time.time()
                if now - checked > CHECK_EVERY:
                    checked = now
                    if now - beat > BEAT_EVERY:
                        beat, ok = now, lock.beat()
                    else:
                        ok = lock.holds()
                    if not ok:
                        stopped = f"lost its lock to {describe(lock.holder() or {'host': 'nobody'})}"
                if deadline is not None and now > deadline and not stopped:
                    stopped = "timeout"
                if stopped:
                    kill_group(proc)
                    break
        finally:
            if proc.poll() is None:  # an exception in the job: never leave the training process behind
                kill_group(proc)
    return Attempt(None if stopped else proc.returncode, stopped, log_tail(fd / "train.log", start=start))


def run_job(spec: dict) -> dict:
    """Train one fold as a subprocess, holding its lock; returns the Job as a dict. Runs inside a Ray task."""
    import ray

    workdir, exp, fold = Path(spec["workdir"]), spec["exp"], spec["fold"]
    fd = workdir / runs.fold_dir(exp, fold)
    job = Job(exp, fold, host=socket.gethostname(), log=str(fd / "train.log"))
    try:  # outside a Ray task (a direct call) ray.get_gpu_ids() would start a Ray of its own, never stopped
        job.gpu = ",".join(str(g) for g in ray.get_gpu_ids()) if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001
        job.gpu = ""
    t0 = time.time()
    if (fd / "done.json").exists():
        return asdict(Job(exp, fold, "skipped", job.host, job.gpu, note="already finished"))
    lock = FoldLock(fd / "lock", launch=spec["launch_id"], job=job.name)
    while not lock.try_acquire():
        time.sleep(1.0)
    try:
        if (fd / "done.json").exists():
            job.state, job.note = "skipped", "finished by another launch"
            return asdict(job)
        if lock.took_over:
            job.note = f"took over a stale lock of {lock.took_over.get('host')}:{lock.took_over.get('pid')}"
        _attempts(spec, job, fd, workdir, lock, t0)
        job.seconds = round(time.time() - t0, 2)
        if lock.holds():
            _write_job(fd, job, spec, t0)
        return asdict(job)
    finally:
        sweep_temp_files(fd)
        lock.release()


def _attempts(spec: dict, job: Job, fd: Path, workdir: Path, lock: FoldLock, t0: float) -> None:
    """Run `comp train` until the fold is done, retrying a process that died (with --resume); each decision reads
    the current attempt's part of train.log only."""
    exp, fold, max_retries = spec["exp"], spec["fold"], spec["max_retries"]
    timeout = spec.get("job_timeout")
    deadline = None if timeout is None else t0 + timeout
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_ALBUMENTATIONS_UPDATE="1", TQDM_MININTERVAL="10",
               OMP_NUM_THREADS=str(spec["cpus"]), MKL_NUM_THREADS=str(spec["cpus"]), **{TOKEN_ENV: lock.token},
               **{JOBS_ENV: str(spec.get("jobs_per_node", 1))})
    for attempt in range(max_retries + 1):
        job.attempts = attempt + 1
        resume = attempt > 0 or _has_state(fd)
        args = ["train", "-c", spec["config"], "--exp", exp, "--fold", str(fold)]
        args += [a for s in spec["overrides"] for a in ("--set", s)] + (["--resume"] if resume else [])
        job.state = "running" if attempt == 0 else "retrying"
        _write_job(fd, job, spec, t0)
        header = (f"=== comp launch {spec['launch_id']}: attempt {attempt + 1}/{max_retries + 1} on {job.host} "
                  f"(GPU {job.gpu or '-'}) at {time.strftime('%Y-%m-%d %H:%M:%S')}: comp {' '.join(args)}")
        lock.update(attempt=attempt + 1)
        run = run_attempt([*comp_command(), *args], fd, workdir, env, lock, header, deadline)
        sweep_temp_files(fd)
        if run.stopped == "timeout":
            job.state, job.note = "failed", f"timed out after {timeout:g}s (--job-timeout); stopped"
            _log(fd, f"=== comp launch: the job ran past --job-timeout {timeout:g}s; its training process was killed")
            return
        if run.stopped:
            job.state, job.note = "skipped", f"{run.stopped}; stopped without committing"
            _log(fd, f"=== comp launch: this job {run.stopped}; its training process was killed")
            return
        if run.rc == 0 and (fd / "done.json").exists():
            job.state = "done"
            job.score = json.loads((fd / "done.json").read_text(encoding="utf-8")).get("score")
            return
        how = f"killed by signal {-run.rc}" if run.rc < 0 else f"exit code {run.rc}"
        if _user_error(run.tail) or attempt == max_retries:
            job.state = "failed"
            job.note = how + ("" if _user_error(run.tail) else f" after {attempt + 1} attempts")
            return
        job.note = f"attempt {attempt + 1} {how}; retrying with --resume"
        _log(fd, f"=== comp launch: the training process ended ({how}); retrying with --resume")


def _log(fd: Path, line: str) -> None:
    with open(fd / "train.log", "a", encoding="utf-8") as log:
        log.write(line + "\n")


def _write_job(fd: Path, job: Job, spec: dict, t0: float) -> None:
    write_text(fd / "job.json", json.dumps(dict(asdict(job), launch=spec["launch_id"], started=t0,
                                                updated=time.time())))


def run_command(spec: dict) -> dict:
    """A non-training comp command (``comp predict``) as a subprocess, logged to spec["log"]; Ray task."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_ALBUMENTATIONS_UPDATE="1")
    log_path = Path(spec["log"])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"=== comp launch on {socket.gethostname()}: {' '.join(spec['cmd'])}\n")
        log.flush()
        proc = start_child([*comp_command(), *spec["cmd"]], spec["workdir"], log, env)
        try:
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                kill_group(proc)
    return {"rc": rc, "log": str(log_path), "tail": log_tail(log_path)}


# ---------------------------------------------------------------- the launcher


@dataclass
class LaunchResult:
    jobs: list[Job]
    cv: dict = field(default_factory=dict)  # exp -> cv_scores() (None while a fold is missing)
    failed: list[Job] = field(default_factory=list)
    predicted: dict = field(default_factory=dict)  # exp -> "ok" / error text (--then-predict)
    ray_start_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and all(v == "ok" for v in self.predicted.values())


def plan(config_path: str | Path, exps: list[str], folds: list[int] | None, overrides=()) -> list[Job]:
    """Check every experiment's config (keys, model, run folder) and list its jobs; raises before Ray starts."""
    from comp.data.competition import read_folds
    from comp.techniques import check_experiment as check_config

    if not exps:
        raise ConfigError("name at least one experiment: --exp NAME (repeatable)")
    jobs = []
    for exp in dict.fromkeys(exps):
        cfg = load_config(config_path, exp=exp, overrides=overrides)
        check_config(cfg)
        runs.check_run(cfg)  # a run folder made with another config: refused here, not in every job
        have = sorted(read_folds(cfg)["fold"].unique().tolist())
        want = have if folds is None else list(dict.fromkeys(folds))
        bad = [k for k in want if k not in have]
        if bad:
            raise ConfigError(f"--fold {bad[0]}: {cfg.folds.file} has folds {have}")
        jobs += [Job(exp, k) for k in want]
    return jobs


def launch(config_path: str | Path, exps: list[str], folds: list[int] | None = None, overrides=(),
           gpus_per_job: float | None = None, cpus_per_job: int | None = None, address: str | None = None,
           max_retries: int = 2, then_predict: bool = False, echo: Callable[[str], None] = print,
           live: bool | None = None, poll: float = 1.0, job_timeout: float | None = None) -> LaunchResult:
    """Run ``comp train --exp E --fold k`` for every (E, k) as Ray jobs; see the module docstring.

    ``folds`` None: every fold of folds.csv. ``gpus_per_job`` None: 1 when the cluster has GPUs, else 0.
    ``cpus_per_job`` None: the CPUs per GPU on a GPU cluster, else 1 (one job per core). ``live``: redraw one
    table in place (default: when stdout is a terminal), else print a line per change. ``job_timeout``: seconds a
    job may train (all its attempts); past it the training process is killed and the job reported as failed.
    """
    from comp.orchestrate import require
    from comp.orchestrate.cluster import check_shared_folder, ray_session

    require("ray")
    import ray

    t_start = time.perf_counter()
    config_path = Path(config_path).resolve()
    overrides = list(overrides)
    if job_timeout is not None and job_timeout <= 0:
        raise ConfigError(f"--job-timeout {job_timeout:g}: give the seconds a job may run (> 0)")
    jobs = plan(config_path, exps, folds, overrides)
    workdir = Path.cwd().resolve()
    launch_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    result = LaunchResult(jobs)
    for j in jobs:
        if runs.fold_done(j.exp, j.fold) is not None:
            j.state, j.note = "skipped", "already finished"
            j.score = runs.fold_done(j.exp, j.fold).get("score")
    todo = [j for j in jobs if j.state == "queued"]
    echo(f"comp launch: {len(jobs)} jobs ({len(todo)} to run, {len(jobs) - len(todo)} already finished) of "
         f"{', '.join(dict.fromkeys(j.exp for j in jobs))}")
    if todo:
        with ray_session(address, echo=echo) as info:
            result.ray_start_seconds = info["seconds"]
            res = info["resources"]
            n_gpu = res.get("GPU", 0)
            gpus = (1 if n_gpu else 0) if gpus_per_job is None else gpus_per_job
            if gpus > n_gpu:
                raise ConfigError(f"--gpus-per-job {gpus:g}: the cluster has {n_gpu:g} GPUs")
            cpus = cpus_per_job or (max(1, int(res.get("CPU", 1) // n_gpu)) if gpus and n_gpu else 1)
            if address is not None:
                nodes = check_shared_folder(config_path)
                echo(f"cluster: {len(nodes)} nodes see {config_path}")
            slots = int(res.get("CPU", 1) // cpus) if not gpus else int(n_gpu // gpus)
            echo(f"Ray {'local' if info['local'] else 'cluster ' + address} up in {info['seconds']:.1f}s: "
                 f"{res.get('CPU', 0):g} CPUs, {n_gpu:g} GPUs; {cpus} CPU{'s' if cpus > 1 else ''}"
                 f"{f' and {gpus:g} GPU' if gpus else ''} per job, {max(1, slots)} at a time")
            remote = ray.remote(run_job).options(num_cpus=cpus, num_gpus=gpus, max_retries=max_retries,
                                                 retry_exceptions=False)
            # Jobs that share one node's memory: each sizes its image cache for its share (comp.data.cache).
            nodes_alive = max(1, sum(1 for n in ray.nodes() if n.get("Alive")))
            per_node = max(1, min(len(todo), max(1, slots) // nodes_alive))
            refs = {}
            for j in todo:
                spec = dict(workdir=str(workdir), config=str(config_path), exp=j.exp, fold=j.fold,
                            overrides=overrides, max_retries=max_retries, cpus=cpus, launch_id=launch_id,
                            job_timeout=job_timeout, jobs_per_node=per_node)
                refs[remote.remote(spec)] = j
            _watch(refs, jobs, workdir, launch_id, echo, live, poll)
            if then_predict:
                _predict(result, workdir, config_path, overrides, cpus, gpus, echo)
    elif then_predict:
        with ray_session(address, echo=echo) as info:
            result.ray_start_seconds = info["seconds"]
            _predict(result, workdir, config_path, overrides, 1, 0, echo)
    result.failed = [j for j in jobs if j.state == "failed"]
    result.cv = {e: cv_scores(runs.run_dir(e)) for e in dict.fromkeys(j.exp for j in jobs)}
    result.seconds = time.perf_counter() - t_start
    echo(summary(result))
    return result


def _watch(refs: dict, jobs: list[Job], workdir: Path, launch_id: str, echo, live: bool | None, poll: float) -> None:
    import ray

    live = sys.stdout.isatty() if live is None else live
    t0 = time.time()
    pending = list(refs)
    shown: dict[str, tuple] = {}
    drawn = 0
    while True:
        if pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=poll)
            for r in ready:
                j = refs[r]
                try:
                    out = ray.get(r)
                    for k, v in out.items():
                        setattr(j, k, v)
                except Exception as e:  # noqa: BLE001 - a worker or node lost beyond Ray's retries
                    j.state, j.note = "failed", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                    j.log = str(workdir / runs.fold_dir(j.exp, j.fold) / "train.log")
        rows = [_progress(j, workdir, launch_id, t0) for j in jobs]
        if live:
            text = format_table(rows)
            sys.stdout.write((f"\x1b[{drawn}F\x1b[J" if drawn else "") + text + "\n")
            sys.stdout.flush()
            drawn = text.count("\n") + 1
        else:
            for r in rows:
                key = (r["state"], r["epoch"])
                if shown.get(r["job"]) != key:
                    shown[r["job"]] = key
                    echo(f"[{time.time() - t0:6.0f}s] {r['job']}: {r['state']}"
                         + (f" epoch {r['epoch']}" if r["epoch"] else "")
                         + (f" score {r['metric']}" if r["metric"] else "")
                         + (f" on {r['host']}" if r["host"] else "") + (f" GPU {r['gpu']}" if r["gpu"] else ""))
        if not pending:
            break


def _progress(j: Job, workdir: Path, launch_id: str, t0: float) -> dict:
    """One table row from the files a job leaves: job.json (its state), metrics.csv (epochs), lock (who holds)."""
    fd = workdir / runs.fold_dir(j.exp, j.fold)
    row = dict(job=j.name, host=j.host, gpu=j.gpu, epoch="", metric="", elapsed="", state=j.state)
    if j.state == "queued":
        lock = read_lock(fd / "lock")
        if lock is not None and lock.get("launch") != launch_id:
            row["state"] = f"waiting ({lock.get('host')}:{lock.get('pid')})"
        else:
            try:
                rec = json.loads((fd / "job.json").read_text(encoding="utf-8"))
                if rec.get("launch") == launch_id:
                    row.update(state=rec["state"], host=rec["host"], gpu=rec["gpu"])
                    row["elapsed"] = f"{time.time() - rec['started']:.0f}s"
            except (OSError, ValueError, KeyError):
                pass
    elif j.seconds:
        row["elapsed"] = f"{j.seconds:.0f}s"
    try:
        lines = (fd / "metrics.csv").read_text(encoding="utf-8").splitlines()
        if len(lines) > 1 and j.state != "skipped":
            row["epoch"] = str(len(lines) - 1)
            head = lines[0].split(",")
            col = head.index("val_score" if "val_score" in head else "val_macro_f1")
            row["metric"] = f"{float(lines[-1].split(',')[col]):.4f}"  # data.metric this epoch; the best when done
    except (OSError, ValueError, IndexError):
        pass
    if j.score is not None:
        row["metric"] = f"{j.score:.4f}"
    row["gpu"] = row["gpu"] or ("-" if row["host"] else "")
    return row


def format_table(rows: list[dict], columns=("job", "host", "gpu", "epoch", "metric", "elapsed", "state")) -> str:
    head = {"gpu": "GPU", "metric": "score"}
    widths = {c: max(len(head.get(c, c)), *(len(str(r[c])) for r in rows)) for c in columns}
    out = ["  ".join(head.get(c, c).ljust(widths[c]) for c in columns)]
    out += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(out)


def cv_scores(rd: Path) -> dict | None:
    """A run folder's CV from its oof.csv (written by the last fold to finish): {"metric": data.metric,
    "score": its value, "macro_f1"}; None when there is no oof.csv yet (runs.run_cv)."""
    cv = runs.run_cv(rd)
    if cv is None:
        return None
    from comp.train.epochs import fixed_epoch_cv

    # each fold at the epoch the other folds chose (val_epochs.npz)
    fixed = fixed_epoch_cv(rd, runs.run_task(rd).metric(cv.metric))
    return {"metric": cv.metric, "score": cv.score, "macro_f1": cv.macro_f1, "all_folds": cv.all_folds_score,
            "note": cv.note, "fixed_epoch": None if fixed is None else fixed.score,
            "own_epoch": None if fixed is None else fixed.own_score}


def _predict(result: LaunchResult, workdir: Path, config_path: Path, overrides, cpus, gpus, echo) -> None:
    """--then-predict: `comp predict` (a Ray job too) for each experiment whose folds are all finished."""
    import ray

    from comp.data.competition import read_folds

    remote = ray.remote(run_command).options(num_cpus=cpus, num_gpus=gpus)
    refs = {}
    for exp in dict.fromkeys(j.exp for j in result.jobs):
        cfg = load_config(config_path, exp=exp, overrides=overrides)
        all_folds = sorted(read_folds(cfg)["fold"].unique().tolist())
        if any(runs.fold_done(exp, k) is None for k in all_folds):
            result.predicted[exp] = "not all folds finished"
            echo(f"--then-predict: {exp} skipped, not all of its folds are finished")
            continue
        trained = any(j.exp == exp and j.state == "done" for j in result.jobs)
        if (workdir / runs.run_dir(exp) / "test.csv").exists() and not trained:
            result.predicted[exp] = "ok"
            echo(f"--then-predict: {exp} up to date (runs/{exp}/test.csv; no fold retrained)")
            continue
        cmd = ["predict", "-c", str(config_path), "--exp", exp, "--overwrite"]
        cmd += [a for s in overrides for a in ("--set", s)]
        spec = dict(cmd=cmd, workdir=str(workdir), log=str(workdir / runs.run_dir(exp) / "predict.log"))
        refs[remote.remote(spec)] = exp
        echo(f"--then-predict: comp predict --exp {exp} (log runs/{exp}/predict.log)")
    for ref, exp in refs.items():
        out = ray.get(ref)
        result.predicted[exp] = "ok" if out["rc"] == 0 else f"comp predict failed (exit {out['rc']}):\n{out['tail']}"


def summary(result: LaunchResult) -> str:
    rows = [dict(job=j.name, host=j.host, gpu=j.gpu or "-", attempts=str(j.attempts or ""),
                 score="" if j.score is None else f"{j.score:.4f}", seconds=f"{j.seconds:.0f}" if j.seconds else "",
                 state=j.state + (f" ({j.note})" if j.note else "")) for j in result.jobs]
    out = [format_table(rows, ("job", "host", "gpu", "attempts", "score", "seconds", "state")), ""]
    for exp, cv in result.cv.items():
        folds = [j for j in result.jobs if j.exp == exp]
        done = sum(j.state in ("done", "skipped") for j in folds)
        out.append((f"{exp}: CV macro F1 {cv['macro_f1']:.4f}" if cv["metric"] == "macro_f1" else
                    f"{exp}: CV {cv['metric']} {cv['score']:.4f} (macro F1 {cv['macro_f1']:.4f})") if cv is not None
                   else f"{exp}: {done}/{len(folds)} folds finished, no CV yet (runs/{exp}/oof.csv needs every fold)")
        if cv is not None and cv.get("note"):
            out.append(f"  CV over {cv['note']}; all folds {cv['all_folds']:.4f} (optimistic)")
    for exp, what in result.predicted.items():
        if what != "ok":
            out.append(f"{exp}: --then-predict: {what}")
    for j in result.failed:
        out.append(f"\nFAILED {j.name}: {j.note} (log {j.log}); last lines:\n{log_tail(Path(j.log))}")
    out.append(f"{len(result.jobs)} jobs, {len(result.failed)} failed, {result.seconds:.0f}s"
               + (f" (Ray start {result.ray_start_seconds:.1f}s)" if result.ray_start_seconds else ""))
    return "\n".join(out)
