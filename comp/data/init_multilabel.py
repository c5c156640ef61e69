"""``comp init``'s multi-label detection: a column of separated labels, or 0/1 columns with any number of ones.

    wide      every class column of a wide sample submission is a 0/1 column of train.csv and some row has
              other than exactly one 1 (RANZCR, CheXpert): the target is those columns
    column    the label column's cells (whitespace around them stripped) split on spaces into names that combine
              freely, evidence single-label data cannot give: (nearly) every cell of several names is made of names
              that each appear in other cells too, and either there are more distinct cells than names or some
              name stands alone in one cell and in a combination in another (HPA's "0 5 25", Planet's "haze
              primary"). A cell with a word found in no other cell is a name that holds a space ("Ankle boot",
              "앵클 부츠"): when every cell of several words is one, each is one class. Anything in between
              stops and names ``--task``.

``--task multiclass`` turns both off, ``--task multilabel`` forces them.
"""

from __future__ import annotations

from collections import defaultdict

import pandas as pd

from comp.data.competition import DataError
from comp.tasks.labels import split_labels, zero_one

TASK_FLAG = "--task multiclass|multilabel"


def wide_target(train: pd.DataFrame, id_col: str, group_col: str | None, sample: pd.DataFrame | None,
                sample_name: str, label_cols: list[str] | None, several: bool | None) -> tuple[list[str], str] | None:
    """(the 0/1 class columns, why) when train.csv's target is wide and multi-label, else None (``several``: what
    --task says of several labels per image; None: detect)."""
    if several is False:
        return None
    if label_cols:
        v = zero_one(train, label_cols)
        if several:
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
    if n_other == 0 and not several:
        return None  # one-hot: one class per row
    why = (f"{len(cols)} 0/1 columns listed by {sample_name} and {n_other} of {len(v)} rows have other than exactly "
           f"one 1 (up to {int(sums.max())}): a multi-label target" if n_other else
           f"{len(cols)} 0/1 columns listed by {sample_name} (--task multilabel)")
    return cols, why


def column_task(labels: pd.Series, col: str, several: bool | None, sep: str = " ") -> tuple[bool, str]:
    """(multi-label?, the evidence) for a label column (``several``: what --task says; None: detect from the
    cells); a DataError naming --task when the cells can't tell."""
    if several is not None:
        return several, (f"--task multilabel: {col}'s cells are class names separated by {sep!r}" if several else "")
    values = [str(v) for v in pd.unique(labels.astype(str).str.strip())]
    split = [split_labels(v, sep) for v in values]
    several = [(v, s) for v, s in zip(values, split) if len(s) > 1]
    if not several:
        return False, ""
    where = defaultdict(set)
    for v, names in zip(values, split):
        for n in names:
            where[n].add(v)
    free = [v for v, s in several if all(len(where[n]) > 1 for n in s)]
    whole = [v for v, s in several if v not in free]
    alone = {s[0] for s in split if len(s) == 1} & {n for _, s in several for n in s}
    if not free:
        many = len(several) > 1
        return False, (f"{len(several)} distinct cell{'s' if many else ''} hold{'' if many else 's'} a space, and "
                       f"{'each has' if many else 'it has'} a word found in no other cell (e.g. {whole[0]!r}): "
                       f"{'one class each' if many else 'one class'}")
    per_row = max(len(s) for s in split)
    evidence = (f"{len(where)} distinct names in {len(values)} distinct cells, up to {per_row} per image; "
                f"{len(free)} of {len(several)} cells of several names are made of names found in other cells too"
                + (f", and {sorted(alone)[0]!r} stands alone in one cell and in a combination in another" if alone
                   else ""))
    if len(free) >= 0.9 * len(several) and (len(values) > len(where) or alone):
        return True, f"its cells are space-separated names: {evidence}"
    raise DataError(
        f"could not tell whether '{col}' holds one class per row or several separated by spaces: {evidence}"
        + (f"; yet {whole[0]!r} has a word found in no other cell" if whole else "") + f". Pass {TASK_FLAG}")
