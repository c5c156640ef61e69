"""``comp folds``: stratified K folds (grouped when ``data.group_col`` is set) -> ``folds/folds.csv``.

The file lists the train rows in train.csv order with their fold; the same rows, K and seed give the same
bytes. A meta file beside it (``folds.json``) records how it was made, so a re-run with the same settings
keeps it and a re-run with others refuses unless ``--overwrite``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from comp.config import Config, resolve
from comp.data.check import clean_train
from comp.data.competition import DataError, read_csv_str
from comp.errors import OutputExists
from comp.files import write_csv, write_text
from comp.tasks import task_of


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _rows_digest(df: pd.DataFrame) -> str:
    h = hashlib.sha1()
    for i, lab in zip(df["id"], df["label"]):
        h.update(f"{i}\x00{lab}\n".encode())
    return h.hexdigest()[:16]


def make_folds(
    cfg: Config,
    n_splits: int | None = None,
    seed: int | None = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Write ``folds.file`` (columns <id>, <label>, [<group>], fold) and return it with those column names."""
    n_splits = cfg.folds.n_splits if n_splits is None else int(n_splits)
    seed = cfg.folds.seed if seed is None else int(seed)
    if n_splits < 2:
        raise DataError(f"--n-splits {n_splits}: need at least 2 folds")
    d = cfg.data
    path = resolve(cfg, cfg.folds.file)
    meta_path = _meta_path(path)
    wanted = {"n_splits": n_splits, "seed": seed, "group_col": d.group_col}
    if path.exists() and not overwrite:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        made = {k: meta.get(k) for k in wanted}
        if made == wanted:
            existing = read_csv_str(path)
            echo(f"kept existing {path} ({n_splits} folds, seed {seed}, {len(existing)} rows); "
                 "pass --overwrite to make it again")
            return existing
        how = ", ".join(f"{k}={v}" for k, v in made.items()) if meta else "unknown settings"
        raise OutputExists(
            f"{path} exists (made with {how}); asked for n_splits={n_splits}, seed={seed}, "
            f"group_col={d.group_col}. Pass --overwrite to replace it (runs trained on the old folds won't match)."
        )
    df = clean_train(cfg, skip_bad=skip_bad, echo=echo)
    grouped = bool(d.group_col)
    if grouped:
        empty = df[df["group"].astype(str).str.strip() == ""]
        if len(empty):
            rows = ", ".join(str(r) for r in empty["row"].head(5))
            raise DataError(f"data.group_col '{d.group_col}' is empty on train.csv row(s) {rows}; fill it in")
    df = df.assign(fold=task_of(cfg).split(df, d, n_splits, seed, grouped, echo))
    cols = {"id": d.id_col, "label": d.label_col}
    if grouped:
        cols["group"] = d.group_col
    out = df[[*cols, "fold"]].rename(columns=cols)
    write_csv(path, out)
    write_text(meta_path, json.dumps({**wanted, "rows": len(out), "rows_sha1": _rows_digest(df)}, indent=1) + "\n")
    echo(f"wrote {path}")
    return out
