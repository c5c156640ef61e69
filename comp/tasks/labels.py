"""Multi-label targets (``data.task: multilabel``): label strings, multi-hot matrices, stratified folds.

A row's labels are one string everywhere comp writes them (train.csv's own column, folds.csv, oof.csv): class
names joined by ``data.label_sep`` (``"0 5 25"`` as Human Protein Atlas writes indices, ``"haze primary"`` as
Planet writes names). A wide train.csv (one 0/1 column per class, RANZCR / CheXpert) is read into the same
string, joined by ``data.label_sep`` (``|`` when a class name holds a space). An image with no label is ``""``.

The classes are the sorted names (numeric order when every name is an integer): the order of probability
columns in OOF and test files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from comp.errors import DataError


def split_labels(value: str, sep: str) -> list[str]:
    """The class names of one label string (empty parts dropped: ``"a  b"`` is a and b, ``""`` is none)."""
    parts = str(value).split(sep) if sep.strip() else str(value).split()
    return [p.strip() for p in parts if p.strip()]


def sort_classes(names: Iterable[str]) -> list[str]:
    """Sorted class names: by number when every name is an integer (HPA's 0..27), else as strings."""
    names = sorted({str(n) for n in names})
    if names and all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return names


def label_classes(labels: Iterable[str], sep: str) -> list[str]:
    """Every class named in ``labels``."""
    return sort_classes(c for v in labels for c in split_labels(v, sep))


def join_labels(names: Sequence[str], sep: str) -> str:
    return sep.join(names)


def multi_hot(labels: Sequence[str], classes: Sequence[str], sep: str, where: str = "labels") -> np.ndarray:
    """(N, C) float32 0/1 of the label strings; a name that is not a class is a DataError naming the row."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(labels), len(classes)), np.float32)
    for r, v in enumerate(labels):
        for name in split_labels(v, sep):
            if name not in index:
                raise DataError(f"{where}: row {r + 1} has label {name!r}, which is not one of the {len(classes)} "
                                f"classes ({', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''})")
            out[r, index[name]] = 1.0
    return out


def hot_strings(bits: np.ndarray, classes: Sequence[str], sep: str) -> list[str]:
    """Label strings of a (N, C) 0/1 matrix, classes in ``classes`` order."""
    names = np.asarray(classes, dtype=object)
    return [join_labels(list(names[np.flatnonzero(row > 0.5)]), sep) for row in np.asarray(bits)]


def wide_sep(cols: Sequence[str]) -> str:
    """The separator of a wide target's label strings: a space, or ``|`` when a class name holds a space."""
    if not any(" " in c for c in cols):
        return " "
    if not any("|" in c for c in cols):
        return "|"
    raise DataError(f"class columns {list(cols)[:6]} hold both spaces and '|'; rename them or set data.label_sep")


def zero_one(raw: pd.DataFrame, cols: Sequence[str]) -> np.ndarray | None:
    """The 0/1 matrix of ``cols``, or None when some cell is not 0 or 1."""
    v = raw[list(cols)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    if not np.isfinite(v).all() or not np.isin(v, (0.0, 1.0)).all():
        return None
    return v


def check_label_cells(labels: pd.Series, sep: str, csv: Path, col: str) -> None:
    """A label cell must not name a class twice (``"1 1"``: a typo for ``"1 11"``?)."""
    for r, v in enumerate(labels):
        names = split_labels(v, sep)
        if len(set(names)) != len(names):
            raise DataError(f"{csv}: row {r + 2} of {col} ({v!r}) names a class twice; fix the row")


# ---------------------------------------------------------------- folds


def grouped_hot(y: np.ndarray, groups: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(per-group label sums, each row's group position): groups are split as units, stratified by their sums."""
    codes, uniq = pd.factorize(pd.Series(list(groups)).astype(str), sort=True)
    sums = np.zeros((len(uniq), y.shape[1]), np.float64)
    np.add.at(sums, codes, y)
    return sums, codes


def multilabel_folds(y: np.ndarray, n_splits: int, seed: int, groups=None) -> np.ndarray:
    """Fold (0..K-1) of each row by iterative stratification (Sechidis et al. 2011, ``iterative-stratification``'s
    MultilabelStratifiedKFold). With ``groups``, whole groups are assigned, stratified by their label counts
    (a group counts as having a label when any of its images has it; its size breaks ties)."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    y = np.asarray(y)
    splitter = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    if groups is None:
        fold = np.full(len(y), -1, np.int64)
        for k, (_, val) in enumerate(splitter.split(np.zeros(len(y)), y)):
            fold[val] = k
        return fold
    sums, codes = grouped_hot(y, groups)
    gfold = np.full(len(sums), -1, np.int64)
    for k, (_, val) in enumerate(splitter.split(np.zeros(len(sums)), (sums > 0).astype(int))):
        gfold[val] = k
    return gfold[codes]


def label_count_table(y: np.ndarray, fold: np.ndarray, classes: Sequence[str]) -> str:
    """Images carrying each label, per fold, with totals and the labels-per-image mean."""
    k = int(fold.max()) + 1
    t = pd.DataFrame({f: y[fold == f].sum(0).astype(int) for f in range(k)}, index=list(classes))
    t["total"] = t.sum(1)
    t.loc["images"] = [int((fold == f).sum()) for f in range(k)] + [len(fold)]
    t.index.name, t.columns.name = "class", "fold"
    per = [f"{y[fold == f].sum(1).mean():.2f}" for f in range(k)] + [f"{y.sum(1).mean():.2f}"]
    return t.to_string() + "\nlabels per image: " + " ".join(per)


def check_label_counts(y: np.ndarray, classes: Sequence[str], n_splits: int) -> None:
    """Every class needs at least ``n_splits`` images, or some fold validates it on none."""
    counts = y.sum(0).astype(int)
    small = [(c, n) for c, n in zip(classes, counts) if n < n_splits]
    if small:
        names = ", ".join(f"'{c}' ({n} images)" for c, n in small[:8])
        least = min(n for _, n in small)
        way = (f"Use fewer folds (--n-splits {least}), add" if least >= 2 else
               "A label on a single image can't be split across folds at all: add")
        raise DataError(f"label {names} is on fewer images than --n-splits {n_splits}, so some fold would have none "
                        f"to validate on. {way} images with that label, or drop it from train.csv.")


def task_classes(label_cols: Sequence[str] | None, labels: Iterable[str], sep: str) -> list[str]:
    """The classes of a multi-label target: its 0/1 columns (data.label_cols), else the names its cells hold."""
    return sort_classes(label_cols) if label_cols else label_classes(labels, sep)


def fold_multilabel(df: pd.DataFrame, sep: str, n_splits: int, seed: int, grouped: bool, echo,
                    label_cols: Sequence[str] | None = None) -> np.ndarray:
    """``comp folds`` of a multi-label table (clean_train's: label strings, [group]): checked, split, counted."""
    classes = task_classes(label_cols, df["label"], sep)
    y = multi_hot(df["label"].tolist(), classes, sep, "train.csv")
    check_label_counts(y, classes, n_splits)
    if grouped and df["group"].nunique() < n_splits:
        raise DataError(f"data.group_col has only {df['group'].nunique()} distinct groups, fewer than --n-splits "
                        f"{n_splits}: use --n-splits {max(2, df['group'].nunique())} or fewer.")
    fold = multilabel_folds(y, n_splits, seed, df["group"].tolist() if grouped else None)
    kind = "MultilabelStratifiedKFold" + (" of whole groups" if grouped else "")
    echo(f"{kind}: {n_splits} folds, seed {seed}, {len(df)} rows, {len(classes)} labels "
         f"({y.sum(1).mean():.2f} per image)")
    echo(label_count_table(y, fold, classes))
    return fold
