"""A fold lock: ``runs/E/fold_k/lock`` holds the host, pid and start time of the job that trains the fold.

Created with O_EXCL, so of two jobs only one gets it. A lock is stale when its process is gone (same host: the pid
no longer runs; another host: its heartbeat, the file's mtime refreshed by :meth:`FoldLock.beat`, is older than
``stale_after`` seconds); a stale lock is taken over under a small mkdir mutex, so two jobs never both take it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

STALE_AFTER = 90.0  # seconds without a heartbeat before another host may take a lock over
BEAT_EVERY = 10.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) holds nothing.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_lock(path: Path) -> dict | None:
    """The lock's record, or None when there is no lock (or it was removed while being read)."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
        rec["beat"] = Path(path).stat().st_mtime
        return rec
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, OSError):
        # Being written (create then write): a fresh, unreadable lock counts as held.
        return {"host": "?", "pid": -1, "started": time.time(), "beat": time.time()}


def is_stale(rec: dict, stale_after: float = STALE_AFTER) -> bool:
    if rec.get("host") == socket.gethostname() and rec.get("pid", -1) > 0:
        return not _alive(int(rec["pid"]))
    return time.time() - rec.get("beat", 0) > stale_after


class FoldLock:
    """``with FoldLock(path) as lock:`` (or :meth:`acquire`/:meth:`release`) around one fold's training."""

    def __init__(self, path: str | Path, stale_after: float = STALE_AFTER, **extra):
        self.path = Path(path)
        self.stale_after = stale_after
        self.extra = extra
        self.held = False
        self.took_over: dict | None = None  # the stale record this lock replaced

    def _record(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **self.extra}

    def _create(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._record(), f)
        self.held = True
        return True

    def try_acquire(self) -> bool:
        """Take the lock if it is free or stale; False while another live job holds it."""
        if self._create():
            return True
        rec = read_lock(self.path)
        if rec is None:
            return self._create()
        if not is_stale(rec, self.stale_after):
            return False
        mutex = self.path.with_name(self.path.name + ".takeover")
        try:
            os.mkdir(mutex)
        except FileExistsError:
            # Another job is taking it over; a mutex left by a job killed mid-takeover expires.
            try:
                if time.time() - mutex.stat().st_mtime > 30:
                    os.rmdir(mutex)
            except OSError:
                pass
            return False
        try:
            rec = read_lock(self.path)  # re-check under the mutex: it may have been taken over already
            if rec is not None and not is_stale(rec, self.stale_after):
                return False
            self.path.unlink(missing_ok=True)
            if self._create():
                self.took_over = rec
                return True
            return False
        finally:
            os.rmdir(mutex)

    def holder(self) -> dict | None:
        return read_lock(self.path)

    def update(self, **fields) -> None:
        """Add fields (e.g. the training process's pid) to a held lock; refreshes its heartbeat."""
        if not self.held:
            return
        rec = read_lock(self.path) or self._record()
        rec.pop("beat", None)
        rec.update(fields)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rec), encoding="utf-8")
        os.replace(tmp, self.path)

    def beat(self) -> None:
        if self.held:
            os.utime(self.path)

    def release(self) -> None:
        if self.held:
            rec = read_lock(self.path)
            if rec is not None and rec.get("pid") == os.getpid() and rec.get("host") == socket.gethostname():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self):
        while not self.try_acquire():
            time.sleep(1.0)
        return self

    def __exit__(self, *exc):
        self.release()
