"""Decoded-image cache: every image is decoded and resized once into a uint8 array (N, S, S, 3).

It lives in memory when it fits under ``memory_limit``, else in a memory-mapped file, so later epochs (and
prediction) decode nothing and datasets larger than memory still work. A finished cache file is reused by any
later run with the same images, size and resize mode.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from comp.console import progress_bar
from comp.data.images import load_rgb
from comp.data.preprocess import resize

DEFAULT_CACHE_DIR = Path("runs/.cache")


def cache_key(paths: Sequence[str], size: int, mode: str) -> str:
    h = hashlib.sha1(f"{size}|{mode}|{len(paths)}".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _decode(path: str, size: int, mode: str, max_pixels: int) -> np.ndarray:
    return resize(load_rgb(path, max_pixels), size, mode)


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
) -> np.ndarray:
    """uint8 array (N, size, size, 3) of ``paths`` decoded and resized once.

    cache: ``memory`` (an in-memory array), ``disk`` (memory-mapped file under cache_dir, reused across runs),
    ``auto`` (memory when it fits under memory_limit, default a quarter of RAM, else disk), ``none`` (same as
    memory, never written to disk).
    """
    paths = [str(p) for p in paths]
    n = len(paths)
    nbytes = n * size * size * 3
    if memory_limit is None:
        try:
            memory_limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
        except (ValueError, OSError):
            memory_limit = 4 << 30
    if cache == "auto":
        cache = "memory" if nbytes <= memory_limit else "disk"
    out_file = None
    if cache == "disk":
        cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR)
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = cache_key(paths, size, mode)
        out_file = cache_dir / f"{key}.u8"
        done = cache_dir / f"{key}.json"
        if out_file.exists() and done.exists():
            return np.memmap(out_file, dtype=np.uint8, mode="r", shape=(n, size, size, 3))
        tmp = cache_dir / f"{key}.u8.{os.getpid()}.tmp"  # concurrent jobs (comp launch) each write their own
        arr = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(n, size, size, 3))
    else:
        arr = np.empty((n, size, size, 3), np.uint8)
    workers = workers or min(8, os.cpu_count() or 1)

    def work(i: int) -> None:
        arr[i] = _decode(paths[i], size, mode, max_pixels)

    # Threads: Pillow and OpenCV release the GIL while decoding and resizing.
    with ThreadPoolExecutor(workers) as pool:
        list(progress_bar(pool.map(work, range(n), chunksize=64), total=n, desc=desc, enabled=progress))
    if out_file is not None:
        arr.flush()
        del arr
        os.replace(tmp, out_file)
        done.write_text(json.dumps({"n": n, "size": size, "mode": mode}))
        return np.memmap(out_file, dtype=np.uint8, mode="r", shape=(n, size, size, 3))
    return arr
