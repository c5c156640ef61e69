"""The decoded-image cache on a shared node: the memory budget honours the cgroup limit and the jobs sharing the
node (and a training run over it reads a disk cache); a disk cache is built once under a lock (real processes), checks
the free space first, leaves no temp file when its build fails; `comp clean` skips a cache that a running process
uses; a decode in a log prints a progress line every few seconds and a summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from comp.config import ConfigError
from comp.data import cache
from comp.data.cache import cgroup_memory_limit, jobs_per_node, load_images, memory_budget
from comp.data.competition import DataError
from comp.data.images import ImageProblem


def _paths(competition, n=60):
    return [str(p) for p in sorted((competition / "train_images").glob("*.png"))[:n]]


def test_cgroup_limits_v2_and_v1_are_read(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(v2) is None
    (v2 / "memory.max").write_text("1073741824\n")
    assert cgroup_memory_limit(v2) == 1 << 30
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert cgroup_memory_limit(tmp_path / "v1") is None
    (v1 / "memory.limit_in_bytes").write_text("536870912\n")
    assert cgroup_memory_limit(tmp_path / "v1") == 512 << 20
    assert cgroup_memory_limit(tmp_path / "none") is None
    # The budget: a quarter of the cgroup limit (it is below this machine's RAM), shared by the node's jobs.
    assert memory_budget(jobs=1, cgroup_root=tmp_path / "v1") == (512 << 20) // 4
    assert memory_budget(jobs=4, cgroup_root=tmp_path / "v1") == (512 << 20) // 16


def test_jobs_per_node_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("COMP_JOBS_PER_NODE", raising=False)
    assert jobs_per_node() == 1
    monkeypatch.setenv("COMP_JOBS_PER_NODE", "8")
    assert jobs_per_node() == 8 and jobs_per_node(2) == 2
    ram_budget = memory_budget(jobs=1)
    assert memory_budget() == ram_budget // 8
    monkeypatch.setenv("COMP_JOBS_PER_NODE", "many")
    with pytest.raises(ConfigError, match="COMP_JOBS_PER_NODE='many'"):
        jobs_per_node()


def test_auto_goes_to_disk_when_the_nodes_jobs_leave_too_little_memory(competition, tmp_path, monkeypatch):
    paths = _paths(competition, 20)
    monkeypatch.setenv("COMP_JOBS_PER_NODE", str(1 << 40))  # each job's share of memory is a few bytes
    arr = load_images(paths, 16, cache="auto", cache_dir=tmp_path, progress=False)
    assert isinstance(arr, np.memmap) and len(list(tmp_path.glob("*.u8"))) == 1
    monkeypatch.setenv("COMP_JOBS_PER_NODE", "1")
    mem = load_images(paths, 16, cache="auto", cache_dir=tmp_path / "m", progress=False)
    assert not isinstance(mem, np.memmap) and np.array_equal(mem, arr)


@pytest.mark.slow
def test_training_over_the_memory_budget_trains_from_a_disk_cache(workdir, monkeypatch):
    """train.cache: auto with each job's share of memory a few bytes: one real epoch reads a runs/.cache file."""
    from train_utils import make_folds_file, quiet, tiny_cfg

    from comp.train.session import train_folds

    make_folds_file(workdir)
    monkeypatch.setenv("COMP_JOBS_PER_NODE", str(1 << 40))
    cfg = tiny_cfg(workdir, "disk", "train.epochs=1")
    assert cfg.train.cache == "auto"
    res = train_folds(cfg, [0], echo=quiet)
    files = list((workdir / "runs" / ".cache").glob("*.u8"))
    assert len(files) == 1 and files[0].stat().st_size == 600 * 32 * 32 * 3  # every train row, decoded once
    fold = workdir / "runs" / "disk" / "fold_0"
    assert (fold / "model.safetensors").exists() and len(pd.read_csv(fold / "metrics.csv")) == 1
    assert res["folds"][0]["score"] > 0


def test_a_decode_in_a_log_prints_progress_lines_and_a_summary(competition, monkeypatch, capsys):
    paths = _paths(competition, 40)
    load_images(paths, 16, cache="memory", workers=2, progress=True, desc="decode (once)")
    out = capsys.readouterr().out.splitlines()  # not a terminal: no bar, and at the default 10 s no line either
    assert len(out) == 1 and re.fullmatch(r"decode \(once\): decoded 40 images at 16px in \d+ s \(\d+ img/s\)",
                                          out[0]), out
    monkeypatch.setattr(cache, "LOG_EVERY", 0.0)  # a line after every image
    load_images(paths, 16, cache="memory", workers=2, progress=True, desc="decode (once)")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 40, out  # 39 progress lines, then the summary
    for k, line in enumerate(out[:-1], 1):
        assert re.fullmatch(rf"decode \(once\): {k}/40 images, \d+ img/s, ~\d+ s left", line), line
    assert out[-1].startswith("decode (once): decoded 40 images at 16px")
    load_images(paths, 16, cache="memory", progress=False)
    assert capsys.readouterr().out == ""


def test_no_free_space_is_a_clear_error_before_any_decoding(competition, tmp_path):
    with pytest.raises(DataError, match=r"GB free, but the decoded-image cache of 20 images at 200000px needs .*"
                                        r"train.cache: memory"):
        load_images(_paths(competition, 20), 200_000, cache="disk", cache_dir=tmp_path, progress=False)
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".lock"]


def test_a_failed_build_removes_its_temp_file(competition, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png" * 100)  # decoding fails after 20 good images
    paths = _paths(competition, 20) + [str(tmp_path / "bad.png")]
    with pytest.raises(ImageProblem):
        load_images(paths, 16, cache="disk", cache_dir=tmp_path / "c", workers=1, progress=False)
    assert not [p for p in (tmp_path / "c").iterdir() if p.suffix != ".lock"], list((tmp_path / "c").iterdir())


CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from comp.data.cache import load_images
    go, cache_dir, hold = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    paths = sys.argv[4:]
    while not go.exists():
        time.sleep(0.01)
    arr = load_images(paths, 48, cache="disk", cache_dir=cache_dir, workers=1, progress=False)
    print(os.stat(arr.filename).st_ino, int(arr.sum()), flush=True)
    time.sleep(hold)
""")


def _child(tmp_path, hold, paths):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "go"), str(tmp_path / "cache"), str(hold),
                             *paths], stdout=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_two_processes_build_one_disk_cache_and_clean_skips_it_while_in_use(competition, tmp_path, monkeypatch):
    from comp.train.clean import clean

    paths = _paths(competition, 600)
    procs = [_child(tmp_path, 0, paths), _child(tmp_path, 60, paths)]
    try:
        time.sleep(1.5)  # both imported and waiting
        (tmp_path / "go").touch()
        outs = [procs[0].stdout.readline().split(), procs[1].stdout.readline().split()]
        assert procs[0].wait(timeout=120) == 0
        assert outs[0] == outs[1], "two processes built the cache each (different files) or read different data"
        assert not list((tmp_path / "cache").glob("*.tmp"))

        # runs/.cache with the second process still holding its array: clean keeps it.
        monkeypatch.chdir(tmp_path)
        (tmp_path / "runs" / "e").mkdir(parents=True)
        os.symlink(tmp_path / "cache", tmp_path / "runs" / ".cache")
        lines = []
        clean("e", echo=lines.append)
        assert any("kept runs/.cache/" in m and "in use by a running process" in m for m in lines), lines
        assert list((tmp_path / "cache").glob("*.u8"))
    finally:
        for p in procs:
            p.kill()
            p.wait()
    lines = []
    clean("e", echo=lines.append)  # the holder is gone: the kernel dropped its lock
    assert any(m.startswith("removed runs/.cache/") for m in lines), lines
    assert not list((tmp_path / "cache").glob("*.u8"))
