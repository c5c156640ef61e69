"""Folds of one class per image: StratifiedKFold, or StratifiedGroupKFold by data.group_col (``comp folds``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from comp.errors import DataError


def check_counts(df: pd.DataFrame, n_splits: int, grouped: bool, echo: Callable[[str], None]) -> None:
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


def fold_single(df: pd.DataFrame, n_splits: int, seed: int, group_col: str | None,
                echo: Callable[[str], None]) -> np.ndarray:
    """``comp folds`` of clean_train's table (label, [group], grouped by data.group_col ``group_col``): checked,
    split, counted."""
    grouped = group_col is not None
    check_counts(df, n_splits, grouped, echo)
    fold = assign_folds(df["label"], n_splits, seed, df["group"] if grouped else None)
    kind = f"StratifiedGroupKFold by '{group_col}'" if grouped else "StratifiedKFold"
    echo(f"{kind}: {n_splits} folds, seed {seed}, {len(df)} rows, {df['label'].nunique()} classes")
    echo(count_table(df.assign(fold=fold)))
    return fold
