"""``comp clean``: remove what a run can rebuild or no longer needs, saying what and how large.

Removed: the ``state/`` folders (and ``state.old``/``.state.tmp`` leftovers) of experiment E's finished folds
(and finished ``full_s*`` runs of ``comp train --full``),
and the decoded-image and check caches under ``runs/.cache`` (shared by every experiment; rebuilt on the next
run that needs them). An unfinished fold's state is what ``--resume`` continues from: it is kept unless
``unfinished`` is asked for. Models, metrics, OOF and predictions are never touched.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from comp import runs
from comp.config import ConfigError, check_exp_name
from comp.train.state import STATE_DIRS, dir_bytes, human_bytes


@dataclass
class Item:
    path: Path
    bytes: int
    why: str
    remove: bool


def plan(exp: str, cache: bool = True, unfinished: bool = False) -> list[Item]:
    rd = runs.run_dir(check_exp_name(exp))
    if not rd.is_dir():
        raise ConfigError(f"--exp {exp}: {rd} does not exist (nothing to clean)")
    items = []
    for fd in sorted(rd.glob("fold_*")) + sorted(rd.glob("full_s*")):  # folds and full-data runs (--full)
        done = (fd / "done.json").exists()
        what = "fold" if fd.name.startswith("fold_") else "full-data run"
        for name in STATE_DIRS:
            p = fd / name
            if p.exists():
                why = f"finished {what}'s state" if done else f"unfinished {what}'s state (--resume needs it)"
                items.append(Item(p, dir_bytes(p), why, done or unfinished))
    c = runs.RUNS_DIR / ".cache"
    if cache and c.exists():
        items.append(Item(c, dir_bytes(c), "decoded-image and check caches (all experiments; rebuilt when needed)",
                          True))
    return items


def clean(exp: str, dry_run: bool = False, cache: bool = True, unfinished: bool = False,
          echo: Callable[[str], None] = print) -> int:
    """Remove (or with ``dry_run`` only list) what ``plan`` finds; returns the bytes freed (or that would be)."""
    items = plan(exp, cache, unfinished)
    total = 0
    for it in items:
        verb = ("would remove" if dry_run else "removed") if it.remove else "kept"
        echo(f"{verb} {it.path} ({human_bytes(it.bytes)}): {it.why}")
        if it.remove:
            total += it.bytes
            if not dry_run:
                shutil.rmtree(it.path)
    echo(f"{'would free' if dry_run else 'freed'} {human_bytes(total)}" + ("" if items else " (nothing to clean)"))
    return total
