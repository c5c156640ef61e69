"""Decoded-image cache: every image is decoded and resized once into a uint8 array (N, S, S, 3).

It lives in memory when it fits under the memory budget, else in a memory-mapped file, so later epochs (and
prediction) decode nothing and datasets larger than memory still work. A finished cache file is reused by any
later run with the same images, size and resize mode.

The memory budget is a quarter of the memory this process may use (the smaller of the machine's RAM and the
cgroup limit of a container or a cluster job, ``/sys/fs/cgroup/memory.max`` or v1's ``memory.limit_in_bytes``),
divided by the jobs sharing the node: ``COMP_JOBS_PER_NODE`` (set by ``comp launch``'s jobs, or by hand when
several comp runs share one machine), else 1.

Decoding prints a bar to a person at a terminal; in a log, a line about every ``LOG_EVERY`` seconds
(``decode (once): 1,234/5,000 images, 85 img/s, ~44 s left``), and a summary line at the end either way.

A disk cache is built once: under an exclusive ``fcntl.flock`` on ``<key>.build.lock`` (a second process waits,
then reuses the file), after checking the free space, and its temp file is removed when the build fails. A
process that builds or uses a cache file holds a shared lock on ``<key>.lock`` for as long as the array lives, so
``comp clean`` (which needs it exclusively) skips it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from comp.config import ConfigError
from comp.console import interactive, progress_bar, progress_lines, seconds_text
from comp.data.competition import DataError
from comp.data.images import load_rgb
from comp.data.preprocess import resize
from comp.files import locked, write_text

DEFAULT_CACHE_DIR = Path("runs/.cache")
JOBS_ENV = "COMP_JOBS_PER_NODE"
CGROUP_ROOT = Path("/sys/fs/cgroup")
SPARE_BYTES = 256 << 20  # free space left beside a new cache file
LOG_EVERY = 10.0  # seconds between progress lines when no person is watching (a log)


def cache_key(paths: Sequence[str], size: int, mode: str) -> str:
    # "draft": JPEGs decoded at reduced size (comp.data.images.draft); caches from the full decode are not reused.
    h = hashlib.sha1(f"{size}|{mode}|{len(paths)}|draft".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _decode(path: str, size: int, mode: str, max_pixels: int) -> np.ndarray:
    return resize(load_rgb(path, max_pixels, target=size), size, mode)


def cgroup_memory_limit(root: Path = CGROUP_ROOT) -> int | None:
    """The memory limit of this process's cgroup in bytes (v2 ``memory.max`` of its own cgroup or the root one,
    else v1 ``memory/memory.limit_in_bytes``); None when there is none."""
    root = Path(root)
    candidates = []
    try:  # cgroup v2: "0::/path/of/the/cgroup"
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                candidates.append(root / line[3:].lstrip("/") / "memory.max")
    except OSError:
        pass
    candidates += [root / "memory.max", root / "memory" / "memory.limit_in_bytes"]
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return value if value < 1 << 60 else None  # v1 writes "unlimited" as a page-rounded 2**63
    return None


def jobs_per_node(jobs: int | None = None) -> int:
    """Jobs sharing this node's memory: ``jobs``, else ``COMP_JOBS_PER_NODE``, else 1."""
    if jobs is None:
        raw = os.environ.get(JOBS_ENV, "").strip()
        if not raw:
            return 1
        try:
            jobs = int(raw)
        except ValueError:
            raise ConfigError(f"{JOBS_ENV}={raw!r}: expected a whole number of jobs sharing this node") from None
    if jobs < 1:
        raise ConfigError(f"{JOBS_ENV}/jobs={jobs}: expected at least 1 job per node")
    return jobs


def memory_budget(jobs: int | None = None, cgroup_root: Path = CGROUP_ROOT) -> int:
    """Bytes an in-memory cache may take: a quarter of min(RAM, cgroup limit), shared by the node's jobs."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = 16 << 30
    limit = cgroup_memory_limit(cgroup_root)
    usable = min(ram, limit) if limit else ram
    return usable // 4 // jobs_per_node(jobs)


def load_images(
    paths: Sequence[str],
    size: int,
    mode: str = "stretch",
    max_pixels: int = 89_478_485,
    cache: str = "auto",
    cache_dir: Optional[str | Path] = None,
    memory_limit: Optional[int] = None,
    workers: Optional[int] = None,
    progress: bool = True,
    desc: str = "decode",
    jobs: Optional[int] = None,
) -> np.ndarray:
    """uint8 array (N, size, size, 3) of ``paths`` decoded and resized once.

    cache: ``memory`` (an in-memory array), ``disk`` (memory-mapped file under cache_dir, reused across runs),
    ``auto`` (memory when it fits under memory_limit, default ``memory_budget(jobs)``, else disk), ``none`` (same
    as memory, never written to disk).
    """
    paths = [str(p) for p in paths]
    n = len(paths)
    nbytes = n * size * size * 3
    if cache == "auto":
        cache = "memory" if nbytes <= (memory_limit if memory_limit is not None else memory_budget(jobs)) else "disk"
    workers = workers or min(8, os.cpu_count() or 1)
    if cache == "disk":
        return _disk_cache(paths, size, mode, max_pixels, Path(cache_dir or DEFAULT_CACHE_DIR), workers, progress,
                           desc)
    arr = np.empty((n, size, size, 3), np.uint8)
    _fill(arr, paths, size, mode, max_pixels, workers, progress, desc)
    return arr


def _fill(arr: np.ndarray, paths: list[str], size: int, mode: str, max_pixels: int, workers: int, progress: bool,
          desc: str) -> None:
    """Decode ``paths`` into ``arr``; with ``progress``, a bar for a person, a line every LOG_EVERY s for a log, and
    a summary line at the end."""
    def work(i: int) -> None:
        arr[i] = _decode(paths[i], size, mode, max_pixels)

    n, start = len(paths), time.monotonic()
    # Threads: Pillow and OpenCV release the GIL while decoding and resizing.
    with ThreadPoolExecutor(workers) as pool:
        done = pool.map(work, range(n))
        if progress and interactive():
            done = progress_bar(done, total=n, desc=desc)
        elif progress:
            done = progress_lines(done, n, desc, every=LOG_EVERY)
        for _ in done:
            pass
    took = time.monotonic() - start
    if progress and n:
        print(f"{desc}: decoded {n:,} images at {size}px in {seconds_text(took)} ({n / max(took, 1e-6):.0f} img/s)",
              flush=True)


def _disk_cache(paths: list[str], size: int, mode: str, max_pixels: int, cache_dir: Path, workers: int,
                progress: bool, desc: str) -> np.ndarray:
    """The memory-mapped cache file of ``paths``, built once under ``<key>.build.lock``; the returned array holds
    a shared lock on ``<key>.lock`` while it lives (``comp clean`` skips a cache in use)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(paths, size, mode)
    out_file, done = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    shape = (len(paths), size, size, 3)
    fd = os.open(cache_dir / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # "in use" (users never block each other; comp clean can't take it)
        if not (out_file.exists() and done.exists()):
            with locked(cache_dir / f"{key}.build.lock"):  # one builder; the others wait, then find it done
                if not (out_file.exists() and done.exists()):
                    _build(out_file, done, shape, paths, mode, max_pixels, workers, progress, desc)
        arr = np.memmap(out_file, dtype=np.uint8, mode="r", shape=shape)
    except BaseException:
        os.close(fd)
        raise
    weakref.finalize(arr, os.close, fd)  # views keep ``arr`` alive, and with it the shared lock
    return arr


def _build(out_file: Path, done: Path, shape: tuple, paths: list[str], mode: str, max_pixels: int, workers: int,
           progress: bool, desc: str) -> None:
    nbytes = int(np.prod(shape))
    free = shutil.disk_usage(out_file.parent).free
    if free < nbytes + SPARE_BYTES:
        raise DataError(f"{out_file.parent}: {free / 2**30:.2f} GB free, but the decoded-image cache of {shape[0]} "
                        f"images at {shape[1]}px needs {nbytes / 2**30:.2f} GB (+{SPARE_BYTES >> 20} MB spare); free "
                        f"space there (comp clean), lower input.size, or set train.cache: memory")
    tmp = out_file.with_name(f"{out_file.name}.{os.getpid()}.tmp")
    try:
        arr = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
        _fill(arr, paths, shape[1], mode, max_pixels, workers, progress, desc)
        arr.flush()
        del arr
        os.replace(tmp, out_file)
        write_text(done, json.dumps({"n": shape[0], "size": shape[1], "mode": mode}))
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed or interrupted decode leaves no GBs behind
        raise


def cache_files(cache_dir: Path) -> dict[str, list[Path]]:
    """The decoded-image caches in ``cache_dir``: key -> its files (data, done record, temp files; not the lock)."""
    out: dict[str, list[Path]] = {}
    for p in sorted(Path(cache_dir).glob("*.u8*")) + sorted(Path(cache_dir).glob("*.json")):
        key = p.name.split(".", 1)[0]
        if p.suffix == ".json" and not (p.with_suffix(".lock").exists() or p.with_suffix(".u8").exists()):
            continue  # not a decoded-image cache (comp check's check-*.json)
        out.setdefault(key, []).append(p)
    return out


def in_use(cache_dir: Path, key: str) -> bool:
    """Whether a process holds (builds or reads) the cache ``key``: its lock can't be taken."""
    lock = Path(cache_dir) / f"{key}.lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def remove_cache(cache_dir: Path, key: str) -> bool:
    """Remove cache ``key``'s files under its exclusive lock (the lock file stays: another process may wait on it);
    False, removing nothing, when a process uses it."""
    fd = os.open(Path(cache_dir) / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        for p in cache_files(cache_dir).get(key, []):
            p.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)
