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

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from comp.config import Config, resolve
from comp.data.check import clean_train
from comp.data.competition import DataError, read_csv_str
from comp.errors import OutputExists
from comp.files import write_csv, write_text
from comp.tasks.labels import fold_multilabel


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _rows_digest(df: pd.DataFrame) -> str:
    h = hashlib.sha1()
    for i, lab in zip(df["id"], df["label"]):
        h.update(f"{i}\x00{lab}\n".encode())
    return h.hexdigest()[:16]


def _check_counts(df: pd.DataFrame, n_splits: int, grouped: bool, echo: Callable[[str], None]) -> None:
    """Fail early, naming the class and the way out, when K folds can't hold every class."""
    counts = df["label"].value_counts()
    small = counts[counts < n_splits]
    if len(small):
        names = ", ".join(f"'{c}' ({n} rows)" for c, n in small.sort_values().items())
        way = ("Add images of that class, or drop its rows from train.csv: a class with a single row can't be "
               "split across folds at all" if small.min() < 2 else
               f"Use --n-splits {int(small.min())}{' or fewer' if small.min() > 2 else ''}, add images of that "
               f"class, or drop its rows from train.csv")
        raise DataError(f"class {names} has fewer rows than --n-splits {n_splits}, so some fold would have none to "
                        f"validate on. {way}.")
    if grouped:
        n_groups = df["group"].nunique()
        if n_groups < n_splits:
            raise DataError(
                f"data.group_col has only {n_groups} distinct groups, fewer than --n-splits {n_splits}: "
                f"use --n-splits {max(2, n_groups)} or fewer."
            )
        per_class = df.groupby("label")["group"].nunique()
        thin = per_class[per_class < n_splits]
        if len(thin):
            names = ", ".join(f"'{c}' ({n} groups)" for c, n in thin.items())
            echo(f"warning: class {names} spans fewer groups than folds; some folds will not validate it")


def assign_folds(labels, n_splits: int, seed: int, groups=None) -> np.ndarray:
    """Fold number (0..K-1) per row: StratifiedKFold, or StratifiedGroupKFold when groups are given."""
    y = np.asarray(labels)
    x = np.zeros(len(y))
    if groups is None:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        splits = splitter.split(x, y)
    else:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        splits = splitter.split(x, y, np.asarray(groups))
    fold = np.full(len(y), -1, dtype=np.int64)
    for k, (_, val) in enumerate(splits):
        fold[val] = k
    return fold


def count_table(df: pd.DataFrame) -> str:
    """Class x fold counts, with totals."""
    t = pd.crosstab(df["label"], df["fold"], margins=True, margins_name="total")
    t.index.name, t.columns.name = "class", "fold"
    return t.to_string()


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
    if d.task == "multilabel":
        df = df.assign(fold=fold_multilabel(df, d.label_sep, n_splits, seed, grouped, echo, d.label_cols))
    else:
        _check_counts(df, n_splits, grouped, echo)
        df = df.assign(fold=assign_folds(df["label"], n_splits, seed, df["group"] if grouped else None))
    cols = {"id": d.id_col, "label": d.label_col}
    if grouped:
        cols["group"] = d.group_col
    out = df[[*cols, "fold"]].rename(columns=cols)
    write_csv(path, out)
    write_text(meta_path, json.dumps({**wanted, "rows": len(out), "rows_sha1": _rows_digest(df)}, indent=1) + "\n")
    if d.task != "multilabel":
        kind = f"StratifiedGroupKFold by '{d.group_col}'" if grouped else "StratifiedKFold"
        echo(f"{kind}: {n_splits} folds, seed {seed}, {len(out)} rows, {df['label'].nunique()} classes")
        echo(count_table(df))
    echo(f"wrote {path}")
    return out
