"""``comp clean``: remove what a run can rebuild or no longer needs, saying what and how large.

Removed: the ``state/`` folders (and ``state.old``/``.state.tmp`` leftovers) of experiment E's finished folds
(and finished ``full_s*`` runs of ``comp train --full``),
and the decoded-image and check caches under ``runs/.cache`` (shared by every experiment; rebuilt on the next
run that needs them); a decoded-image cache that a running process uses (it holds the cache's lock) is kept.
An unfinished fold's state is what ``--resume`` continues from: it is kept unless
``unfinished`` is asked for. Models, metrics, OOF and predictions are never touched.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from comp import runs
from comp.config import ConfigError, check_exp_name
from comp.data.cache import cache_files, in_use, remove_cache
from comp.train.state import STATE_DIRS, dir_bytes, human_bytes


@dataclass
class Item:
    path: Path
    bytes: int
    why: str
    remove: bool
    cache_key: str | None = None  # a decoded-image cache: removed under its lock, never while in use


def plan(exp: str, cache: bool = True, unfinished: bool = False) -> list[Item]:
    rd = runs.run_dir(check_exp_name(exp))
    if not rd.is_dir():
        raise ConfigError(f"--exp {exp}: {rd} does not exist (nothing to clean)")
    items = []
    # folds, full-data runs (--full) and data.relabel's pair models (relabel_pairs/pair_j_k)
    units = sorted(rd.glob("fold_*")) + sorted(rd.glob("full_s*")) + sorted(rd.glob("relabel_pairs/pair_*"))
    for fd in (u for u in units if u.is_dir()):
        done = (fd / "done.json").exists()
        what = {"fold_": "fold", "full_": "full-data run"}.get(fd.name[:5], "relabel pair model")
        for name in STATE_DIRS:
            p = fd / name
            if p.exists():
                why = f"finished {what}'s state" if done else f"unfinished {what}'s state (--resume needs it)"
                items.append(Item(p, dir_bytes(p), why, done or unfinished))
    c = runs.RUNS_DIR / ".cache"
    if cache and c.exists():
        items += _cache_items(c)
    return items


def _cache_items(c: Path) -> list[Item]:
    """runs/.cache: each decoded-image cache (kept while a process uses it: it holds the cache's lock), then
    the rest (comp check's caches)."""
    items, caches = [], cache_files(c)
    for key, files in caches.items():
        size = sum(p.stat().st_size for p in files if p.exists())
        if in_use(c, key):
            items.append(Item(files[0], size, "decoded-image cache in use by a running process", False, key))
        else:
            items.append(Item(files[0], size, "decoded-image cache (all experiments; rebuilt when needed)", True, key))
    taken = {p for files in caches.values() for p in files}
    rest = [p for p in sorted(c.iterdir()) if p not in taken and p.suffix != ".lock"]
    for p in rest:
        items.append(Item(p, dir_bytes(p) if p.is_dir() else p.stat().st_size, "check cache (rebuilt when needed)",
                          True))
    return items


def clean(exp: str, dry_run: bool = False, cache: bool = True, unfinished: bool = False,
          echo: Callable[[str], None] = print) -> int:
    """Remove (or with ``dry_run`` only list) what ``plan`` finds; returns the bytes freed (or that would be)."""
    items = plan(exp, cache, unfinished)
    total = 0
    for it in items:
        if it.remove and not dry_run and it.cache_key is not None:
            if not remove_cache(it.path.parent, it.cache_key):  # taken by a process since the plan was made
                it.remove, it.why = False, "decoded-image cache in use by a running process"
        elif it.remove and not dry_run:
            shutil.rmtree(it.path) if it.path.is_dir() else it.path.unlink()
        verb = ("would remove" if dry_run else "removed") if it.remove else "kept"
        echo(f"{verb} {it.path} ({human_bytes(it.bytes)}): {it.why}")
        total += it.bytes if it.remove else 0
    echo(f"{'would free' if dry_run else 'freed'} {human_bytes(total)}" + ("" if items else " (nothing to clean)"))
    return total
