"""``submissions/ledger.csv``: one row per submission written, so every file on the leaderboard can be traced
to its members, weights, options, CV estimate and code version."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from comp.files import append_csv_row

LEDGER = Path("submissions/ledger.csv")
COLUMNS = ("time", "name", "members", "weights", "cv_macro_f1", "options", "git_commit")


def git_commit(cwd: str | Path = ".") -> str:
    """The commit checked out in ``cwd`` (``-dirty`` when tracked files changed since), or '' outside git."""
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    head = git("rev-parse", "--short=12", "HEAD")
    if not head:
        return ""
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def append(
    name: str,
    members: Sequence[str],
    weights: Sequence[float],
    cv_macro_f1: float,
    options: dict,
    path: str | Path = LEDGER,
) -> dict:
    """Append one row to the ledger (created with its header when new) and return it."""
    row = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "name": name,
        "members": ",".join(members),
        "weights": ",".join(f"{w:.4f}" for w in weights),
        "cv_macro_f1": f"{cv_macro_f1:.5f}",
        "options": json.dumps(options, ensure_ascii=False, sort_keys=True),
        "git_commit": git_commit(),
    }
    append_csv_row(path, row)
    return row


def read(path: str | Path = LEDGER) -> pd.DataFrame:
    """The ledger, every cell a string (empty frame with the columns when there is none yet)."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.read_csv(path, dtype=str, keep_default_na=False)
