"""A fold lock: ``runs/E/fold_k/lock`` names the job that trains the fold (host, boot id, pid namespace, pid and
the process's start time) and carries a random token that only that job knows.

- **Taking a free lock**: the record is written to a temp file first and hard-linked to ``lock`` (``link`` fails
  when ``lock`` exists), so of two jobs only one gets it and nobody ever reads a half-written lock.
- **Stale**: on the same host (same boot id and pid namespace) the holder is gone when its pid no longer runs, or
  runs with another start time (a reused pid), or is a zombie; on another host, when its heartbeat (the file's
  mtime, refreshed by :meth:`FoldLock.beat`) is older than ``stale_after`` seconds.
- **Taking over a stale lock** is a compare-and-swap: the taker first claims that very record (identified by its
  token) by hard-linking its own record to ``lock.take-<token>``, which only one taker can create, checks that
  ``lock`` still holds that token, then renames its fresh record over ``lock`` in one step. The lock file is
  never removed and re-created, so there is no moment in which a second taker can slip in.
- **Holding**: :meth:`FoldLock.holds` re-reads the token; :meth:`FoldLock.beat` refreshes the heartbeat of its own
  lock only (it checks the token on the open file and touches that file); both return False when another job has
  taken the lock over, and the holder then stops the fold.

Every file of the protocol is named ``lock.*`` beside the lock and removed by whoever made it, also on error.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import socket
import time
from pathlib import Path

from comp.config import ConfigError

STALE_AFTER = 90.0  # seconds without a heartbeat before another host may take a lock over
BEAT_EVERY = 10.0
TAKEOVER_STALE = 30.0  # seconds after which a takeover claim of another host counts as abandoned
TOKEN_ENV = "COMP_FOLD_LOCK_TOKEN"  # set by comp launch for its `comp train`: the lock its parent holds


class LockedError(ConfigError):
    """The fold is held by another live job (or this job lost its lock)."""


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks after boot, /proc/PID/stat field 22), None when it is gone or a
    zombie, -1 when there is no /proc to tell (then only whether the pid runs is known)."""
    if not os.path.isdir("/proc"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return -1
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return -1
    if fields[0] in ("Z", "X"):  # exited, not yet reaped: holds nothing
        return None
    return int(fields[19])  # the fields after "(name)" start at field 3, the state


def process_identity(pid: int | None = None) -> dict:
    """What tells this process apart from any other, also after a reboot or once its pid is reused."""
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "boot_id": boot_id(), "pid_ns": pid_namespace(), "pid": pid,
            "pid_start": start_ticks(pid)}


def liveness(rec: dict) -> bool | None:
    """Whether the process a record names still runs: True or False when this machine can tell (same host, boot
    and pid namespace: by pid and start time; an earlier boot: gone), None when it cannot (another host or pid
    namespace, or no pid in the record)."""
    if rec.get("host") != socket.gethostname():
        return None
    if "boot_id" in rec and rec["boot_id"] != boot_id():
        return False
    if "pid_ns" in rec and rec["pid_ns"] != pid_namespace():
        return None
    try:
        pid = int(rec.get("pid", -1))
    except (TypeError, ValueError):
        return None
    if pid <= 0:
        return None
    ticks = start_ticks(pid)
    if ticks is None:
        return False
    want = rec.get("pid_start")
    return ticks == -1 or want in (None, -1) or ticks == int(want)


def identity_alive(rec: dict) -> bool:
    """False only when this machine can tell that the process a record names is gone."""
    return liveness(rec) is not False


def read_lock(path: Path) -> dict | None:
    """The lock's record with its heartbeat ``beat`` (the file's mtime), or None when there is no lock. A record
    without a token (an older comp, or a damaged file) gets one from its bytes, so it can still be taken over."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
            beat = os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        return {"host": "?", "pid": -1, "token": "unreadable", "beat": time.time()}
    try:
        rec = json.loads(raw.decode("utf-8"))
        if not isinstance(rec, dict):
            raise ValueError("not a record")
    except ValueError:
        rec = {"host": "?", "pid": -1, "damaged": True}
    rec.setdefault("token", "bytes-" + hashlib.sha256(raw).hexdigest()[:32])
    rec["beat"] = beat
    return rec


def is_stale(rec: dict, stale_after: float = STALE_AFTER) -> bool:
    """Its process is gone (this machine can tell), or else its heartbeat is older than ``stale_after``."""
    alive = liveness(rec)
    if alive is not None:
        return not alive
    return time.time() - rec.get("beat", 0) > stale_after


def describe(rec: dict) -> str:
    """The holder in words: ``host:pid`` (launch L, since T)."""
    out = f"{rec.get('host')}:{rec.get('pid')}"
    if rec.get("launch"):
        out += f" (comp launch {rec['launch']})"
    if rec.get("started_at"):
        out += f" since {rec['started_at']}"
    return out


def _link(src: Path, dst: Path) -> bool:
    """Create ``dst`` with ``src``'s content unless it exists (atomically: a hard link); False when it exists."""
    try:
        os.link(src, dst)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
    # A filesystem without hard links: an exclusive create (a reader may see it half-written: a fresh, unreadable
    # lock counts as held).
    data = Path(src).read_bytes()
    try:
        fd = os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


class FoldLock:
    """``with FoldLock(path) as lock:`` (or :meth:`try_acquire`/:meth:`release`) around one fold's training."""

    def __init__(self, path: str | Path, stale_after: float = STALE_AFTER, **extra):
        self.path = Path(path)
        self.stale_after = stale_after
        self.extra = extra
        self.held = False
        self.token = secrets.token_hex(16)
        self.took_over: dict | None = None  # the stale record this lock replaced

    def _aside(self, what: str) -> Path:
        return self.path.with_name(f"{self.path.name}.{self.token}.{what}")

    def _record(self) -> dict:
        return {**process_identity(), "token": self.token, "started": time.time(),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **self.extra}

    def _write_fresh(self, rec: dict | None = None) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._aside("new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(rec or self._record(), f)
        return tmp

    def try_acquire(self) -> bool:
        """Take the lock if it is free or stale; False while another live job holds it."""
        if self.held:
            return True
        fresh = self._write_fresh()
        try:
            for _ in range(2):  # a lock released between the link and the read: once more
                if _link(fresh, self.path):
                    self.held = True
                    self._sweep_orphans()
                    return True
                rec = read_lock(self.path)
                if rec is not None:
                    break
            else:
                return False
            if not is_stale(rec, self.stale_after):
                return False
            return self._take_over(rec, fresh)
        finally:
            _remove(fresh)

    def _take_over(self, rec: dict, fresh: Path) -> bool:
        """Replace the stale record ``rec`` by ours, unless another taker claimed it first (module docstring)."""
        claim = self.path.with_name(f"{self.path.name}.take-{rec['token']}")
        if not _link(fresh, claim):
            self._drop_abandoned_claim(claim)
            return False
        try:
            now = read_lock(self.path)
            if now is None or now.get("token") != rec["token"]:
                return False  # released or taken over meanwhile: the next try sees the new state
            os.rename(fresh, self.path)
            self.held = True
            self.took_over = rec
            self._sweep_orphans()
            return True
        finally:
            _remove(claim)

    def _sweep_orphans(self) -> None:
        """Temp and aside files (``lock.TOKEN.new`` ...) of jobs killed in the middle of a lock operation."""
        for p in self.path.parent.glob(f"{self.path.name}.*.*"):
            if p.suffix in (".new", ".release", ".drop") and not p.name.startswith(f"{self.path.name}.{self.token}."):
                rec = read_lock(p)
                if rec is not None and liveness(rec) is False:
                    _remove(p)

    def _drop_abandoned_claim(self, claim: Path) -> None:
        """A claim left by a taker that died mid-takeover would block the lock for good: remove it once its
        maker is gone (same machine) or it is older than TAKEOVER_STALE, by moving it aside and checking it is
        the one judged abandoned (else it goes back)."""
        rec = read_lock(claim)
        if rec is None or not is_stale(rec, TAKEOVER_STALE):
            return
        aside = self._aside("drop")
        try:
            os.rename(claim, aside)
        except OSError:
            return
        try:
            got = read_lock(aside)
            if got is not None and got.get("token") != rec["token"]:
                _link(aside, claim)  # a new claim: put it back
        finally:
            _remove(aside)

    def holder(self) -> dict | None:
        return read_lock(self.path)

    def holds(self) -> bool:
        """Whether the lock file still carries this lock's token."""
        rec = read_lock(self.path) if self.held else None
        return rec is not None and rec.get("token") == self.token

    def update(self, **fields) -> bool:
        """Add fields (e.g. the training process's pid) to a held lock; False (and nothing written) when the lock
        is no longer ours."""
        if not self.holds():
            return False
        rec = {**self._record(), **{k: v for k, v in (read_lock(self.path) or {}).items() if k != "beat"},
               **fields, "token": self.token}
        tmp = self._write_fresh(rec)
        try:
            os.replace(tmp, self.path)
        finally:
            _remove(tmp)
        return True

    def beat(self) -> bool:
        """Refresh the heartbeat of this lock (only if the file still carries our token); False when it is lost."""
        if not self.held:
            return False
        try:
            with open(self.path, "rb") as f:
                rec = json.loads(f.read().decode("utf-8"))
                if not isinstance(rec, dict) or rec.get("token") != self.token:
                    return False
                os.utime(f.fileno())
            return True
        except (OSError, ValueError):
            return False

    def release(self) -> None:
        """Remove the lock if it is still ours: moved aside first, and put back if it turns out to be another
        job's (taken over meanwhile)."""
        if not self.held:
            return
        self.held = False
        aside = self._aside("release")
        try:
            os.rename(self.path, aside)
        except OSError:
            return
        try:
            rec = read_lock(aside)
            if rec is not None and rec.get("token") != self.token:
                _link(aside, self.path)
        finally:
            _remove(aside)

    def __enter__(self):
        while not self.try_acquire():
            time.sleep(1.0)
        return self

    def __exit__(self, *exc):
        self.release()


def refuse_if_locked(lock_path: Path, what: str) -> None:
    """For `comp train`: raise LockedError naming the holder when another live job holds ``lock_path`` (the
    launch's own `comp train` passes, by the token its parent gave it in COMP_FOLD_LOCK_TOKEN)."""
    rec = read_lock(Path(lock_path))
    if rec is None or is_stale(rec) or rec.get("token") == os.environ.get(TOKEN_ENV):
        return
    raise LockedError(f"{what} is being trained by {describe(rec)}: its lock {lock_path} is held (heartbeat "
                      f"{time.time() - rec['beat']:.0f}s ago). Wait for it to finish, or stop that job; a lock "
                      f"whose job is gone is taken over by the next run")


def check_lock_token(lock_path: Path, what: str) -> None:
    """In a launch's `comp train`: raise LockedError when the fold's lock no longer carries the token of the job
    that started this process (another job took the fold over): the fold must not be committed twice."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        return
    rec = read_lock(Path(lock_path))
    if rec is None or rec.get("token") != token:
        holder = "nobody" if rec is None else describe(rec)
        raise LockedError(f"{what}: this job lost its lock {lock_path} (now held by {holder}); stopped without "
                          f"committing")



def train_guard(exp: str, folds: list[int] | None):
    """`comp train --exp E`: refuse (LockedError) a fold held by another live job, and return the ``on_epoch``
    hook that, in a launch's `comp train`, checks after each committed epoch (so before the next commit and before
    done.json) that the job still holds the fold's lock; None outside a launch."""
    from comp import runs

    rd = runs.run_dir(exp)
    paths = ({k: runs.fold_dir(exp, k) / "lock" for k in folds} if folds is not None else
             {p.parent.name.removeprefix("fold_"): p for p in sorted(rd.glob("fold_*/lock"))})
    for k, path in paths.items():
        refuse_if_locked(path, f"{exp} fold {k}")
    if not os.environ.get(TOKEN_ENV):
        return None

    def on_epoch(fold, row) -> None:
        check_lock_token(runs.fold_dir(exp, fold) / "lock", f"{exp} fold {fold}")

    return on_epoch
