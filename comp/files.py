"""Atomic, durable writes: a reader never sees a half-written file, a kill mid-write leaves the old one, and a
finished write survives a power cut (the file and its folder are fsynced around the rename).

Files and folders get the modes a plain ``open``/``mkdir`` would give under the process's umask (mkstemp's 0600
would hide every output from the other users of a shared folder).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd


def umask() -> int:
    """The process's umask (read from /proc where it can be, else set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def fsync_path(path: str | Path) -> None:
    """fsync a file or a folder (a folder's fsync makes a rename inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path, mode: int) -> None:
    os.chmod(tmp, mode & ~umask())
    os.replace(tmp, path)
    fsync_path(path.parent)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        fsync_path(tmp)
        _commit(Path(tmp), path, 0o666)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_csv(path: str | Path, df: pd.DataFrame, **kwargs) -> Path:
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, lineterminator="\n", **kwargs)
    return Path(path)


@contextmanager
def locked(path: str | Path, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
    """Hold ``fcntl.flock`` on the lock file ``path`` (created when missing) for the block; yields whether it is
    held (always True when ``blocking``). The kernel drops the lock when the process dies: nothing goes stale."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def append_csv_row(path: str | Path, row: dict) -> Path:
    """Append one row (header written when the file is new); rewritten atomically under a lock on ``path.lock``,
    so concurrent appenders (two ``comp ensemble``) each keep their row."""
    path = Path(path)
    with locked(path.with_name(path.name + ".lock")):
        new = pd.DataFrame([row])
        if path.exists():
            old = pd.read_csv(path, dtype=str, keep_default_na=False)
            new = pd.concat([old, new.astype(str)], ignore_index=True)
        return write_csv(path, new)


def fsync_tree(root: str | Path) -> None:
    """fsync every file and folder under ``root`` (before a folder is renamed into place)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_path(dirpath)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path``. The old folder stays until the new is whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    _commit(tmp, path, 0o777)
    shutil.rmtree(old, ignore_errors=True)


def digest_file(path: str | Path) -> str | None:
    """sha256 of a file's bytes (None when it is missing)."""
    import hashlib

    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        return None
    return h.hexdigest()[:20]


def recipe_path(out: str | Path) -> Path:
    """Where ``record_recipe`` keeps what made ``out``: a hidden file beside it."""
    out = Path(out)
    return out.parent / f".{out.name}.recipe.json"


def _canonical(recipe: dict) -> str:
    import json

    return json.dumps(recipe, sort_keys=True, default=str, indent=1)


def same_recipe(out: str | Path, recipe: dict) -> bool:
    """True when ``out`` exists and ``record_recipe`` recorded this very recipe for it: a second run of the command
    that made it, with the same arguments and inputs, has nothing to do."""
    try:
        return Path(out).exists() and recipe_path(out).read_text(encoding="utf-8") == _canonical(recipe)
    except OSError:
        return False


def record_recipe(out: str | Path, recipe: dict) -> None:
    """Record what made ``out`` (the arguments that matter and a digest of each input file), after writing it."""
    write_text(recipe_path(out), _canonical(recipe))


@contextmanager
def working_dir(path: str | Path) -> Iterator[None]:
    """Run the block with ``path`` as the working folder, and return to the old one however it ends."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)
