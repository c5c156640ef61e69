"""``comp init``'s multi-label detection: a column of separated labels, or 0/1 columns with any number of ones.

    wide      every class column of a wide sample submission is a 0/1 column of train.csv and some row has
              other than exactly one 1 (RANZCR, CheXpert): the target is those columns
    column    the label column's cells split on spaces into names that combine freely: some name appears in
              several distinct cells and there are more distinct cells than names (HPA's "0 5 25", Planet's
              "haze primary"). Names that merely hold a space ("Ankle boot": its words never appear apart) stay
              one class; anything in between stops and names ``--task``.

``--task multiclass`` turns both off, ``--task multilabel`` forces them.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from comp.data.competition import DataError
from comp.data.multilabel import split_labels, zero_one

TASK_FLAG = "--task multiclass|multilabel"


def wide_target(train: pd.DataFrame, id_col: str, group_col: str | None, sample: pd.DataFrame | None,
                sample_name: str, label_cols: list[str] | None, task: str | None) -> tuple[list[str], str] | None:
    """(the 0/1 class columns, why) when train.csv's target is wide and multi-label, else None."""
    if label_cols:
        v = zero_one(train, label_cols)
        if task == "multilabel":
            return list(label_cols), "--label-cols with --task multilabel"
        if v is not None and (v.sum(1) != 1).any():
            return list(label_cols), "--label-cols are 0/1 columns and some row has other than exactly one 1"
        return None
    if sample is None or len(sample.columns) < 3:
        return None
    cols = [c for c in sample.columns[1:] if c in train.columns and c not in (id_col, group_col)]
    if len(cols) != len(sample.columns) - 1:
        return None
    v = zero_one(train, cols)
    if v is None:
        return None
    sums = v.sum(1)
    n_other = int((sums != 1).sum())
    if n_other == 0 and task != "multilabel":
        return None  # one-hot: one class per row
    why = (f"{len(cols)} 0/1 columns listed by {sample_name} and {n_other} of {len(v)} rows have other than exactly "
           f"one 1 (up to {int(sums.max())}): a multi-label target" if n_other else
           f"{len(cols)} 0/1 columns listed by {sample_name} (--task multilabel)")
    return cols, why


def column_task(labels: pd.Series, col: str, task: str | None, sep: str = " ") -> tuple[bool, str]:
    """(multi-label?, why) for a label column; a DataError naming --task when the cells can't tell."""
    if task == "multilabel":
        return True, f"--task multilabel: {col}'s cells are class names separated by {sep!r}"
    if task == "multiclass":
        return False, ""
    values = pd.unique(labels.astype(str))
    split = [split_labels(v, sep) for v in values]
    if all(len(s) <= 1 for s in split):
        return False, ""
    where = defaultdict(set)
    for v, names in zip(values, split):
        for n in names:
            where[n].add(v)
    shared = [n for n, vs in where.items() if len(vs) > 1]
    if not shared:
        return False, ""  # names with spaces in them ("Ankle boot"): one class each
    per_row = np.array([len(s) for s in split])
    if len(values) > len(where):
        return True, (f"its cells are space-separated names ({len(where)} distinct, up to {per_row.max()} per "
                      f"image, {len(values)} combinations): a multi-label target")
    raise DataError(
        f"could not tell whether '{col}' holds one class per row or several separated by spaces: "
        f"{len(values)} distinct cells, and the word {shared[0]!r} appears in several of them (e.g. "
        f"{sorted(where[shared[0]])[:3]}). Pass {TASK_FLAG}"
    )
