"""``submissions/ledger.csv``: one row per submission written, so every file on the leaderboard can be traced
to its members, weights, options, CV estimate and code version."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from comp.data.competition import DataError
from comp.files import append_csv_row
from comp.runs import git_commit

LEDGER = Path("submissions/ledger.csv")
# metric/cv_score: data.metric and the submission's CV estimate in it; shape: label or wide (the sample's shape).
# Appended after the first columns, so a ledger started before them gains them at its end.
# cv_in_sample/cv_nested (issue 17): data.metric of the blend's whole rule (weights, decision, apply/skip) fit and
# scored on every OOF row (optimistic), and the same rule cross-validated in one nested loop (= cv_score).
COLUMNS = ("time", "name", "members", "weights", "cv_macro_f1", "options", "git_commit", "metric", "cv_score",
           "shape", "cv_in_sample", "cv_nested")


def append(
    name: str,
    members: Sequence[str],
    weights: Sequence[float],
    cv_macro_f1: float,
    options: dict,
    path: str | Path = LEDGER,
    metric: str = "macro_f1",
    cv_score: float | None = None,
    shape: str = "label",
    cv_in_sample: float | None = None,
    cv_nested: float | None = None,
) -> dict:
    """Append one row to the ledger (created with its header when new) and return it."""
    row = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "name": name,
        "members": ",".join(members),
        "weights": ",".join(f"{w:.4f}" for w in weights),
        "cv_macro_f1": f"{cv_macro_f1:.5f}",
        "options": json.dumps(options, ensure_ascii=False, sort_keys=True),
        "git_commit": git_commit() or "",
        "metric": metric,
        "cv_score": f"{cv_macro_f1 if cv_score is None else cv_score:.5f}",
        "shape": shape,
        "cv_in_sample": "" if cv_in_sample is None else f"{cv_in_sample:.5f}",
        "cv_nested": "" if cv_nested is None else f"{cv_nested:.5f}",
    }
    append_csv_row(path, row)
    return row


def members(row) -> tuple[list[str], list[float]]:
    """A ledger row's members and their weights, in the order ``append`` wrote them."""
    return row["members"].split(","), [float(w) for w in row["weights"].split(",")]


def read(path: str | Path = LEDGER) -> pd.DataFrame:
    """The ledger, every cell a string (empty frame with the columns when there is none yet)."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.read_csv(path, dtype=str, keep_default_na=False)


LB = Path("submissions/lb.csv")
LB_COLUMNS = ("time", "name", "public", "private")


def read_lb(path: str | Path = LB) -> pd.DataFrame:
    """What Kaggle reported per submission (``comp ledger lb``): the latest row of each name wins."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=list(LB_COLUMNS))
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return df.drop_duplicates("name", keep="last").reset_index(drop=True)


def record_lb(name: str, public: float, private: float | None = None, ledger_path: str | Path = LEDGER,
              path: str | Path | None = None) -> tuple[dict, str]:
    """Record NAME's public (and private) leaderboard score; returns the row and what changed. The same scores
    again change nothing; new scores are appended (the latest wins) and the message names the old ones."""
    path = Path(path) if path else Path(ledger_path).with_name("lb.csv")  # beside the ledger
    led = read(ledger_path)
    if name not in set(led["name"]):
        have = ", ".join(dict.fromkeys(led["name"][::-1])) or "none yet"
        raise DataError(f"no submission {name!r} in {ledger_path} (have: {have}); comp ledger lb takes a NAME that "
                        f"comp ensemble logged")
    for what, v in (("SCORE", public), ("--private", private)):
        if v is not None and not np.isfinite(v):
            raise DataError(f"{what} {v}: give the number Kaggle shows")
    row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "name": name, "public": f"{public:.6g}",
           "private": "" if private is None else f"{private:.6g}"}
    old = read_lb(path)
    old = old[old["name"] == name]
    if len(old) and (old.iloc[0]["public"], old.iloc[0]["private"]) == (row["public"], row["private"]):
        return row, f"{name}: public {row['public']} already recorded; nothing to do"
    append_csv_row(path, row)
    was = f" (was public {old.iloc[0]['public'] or '-'}, private {old.iloc[0]['private'] or '-'})" if len(old) else ""
    return row, f"{name}: public {row['public']}" + (f", private {row['private']}" if row["private"] else "") \
        + f" recorded in {path}{was}"
