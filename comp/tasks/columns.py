"""Label columns (``data.label_cols``: one column per class) read into one label string per row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from comp.errors import DataError


def wide_labels(raw: pd.DataFrame, cols: list[str], csv: Path, sep: str) -> pd.Series:
    """Multi-label strings of the 0/1 columns ``cols`` (data.label_cols with data.task multilabel): the names of
    the columns holding 1, joined by ``sep``; a cell that is not 0 or 1 is a DataError naming the row."""
    v = raw[list(cols)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~(np.isin(v, (0.0, 1.0))).all(1))
    if len(bad):
        raise DataError(f"{csv}: row {bad[0] + 2} of the label columns (data.label_cols) is "
                        f"{raw[list(cols)].iloc[bad[0]].tolist()}; a multi-label target needs 0 or 1 in every cell "
                        f"({len(bad)} such rows)")
    names = np.asarray(cols, dtype=object)
    return pd.Series([sep.join(names[row > 0.5]) for row in v], index=raw.index)


def onehot_labels(raw: pd.DataFrame, cols: list[str], csv: Path) -> pd.Series:
    """The label of each row of one-hot / probability columns ``cols``: the name of its largest column.

    Every cell must be a number in [0, 1] and every row must sum to 1 (within 1e-3); the error names the row.
    """
    try:
        v = raw[cols].apply(pd.to_numeric, errors="raise").to_numpy(np.float64)
    except (ValueError, TypeError):
        bad = next(i for i in range(len(raw)) if pd.to_numeric(raw[cols].iloc[i], errors="coerce").isna().any())
        raise DataError(f"{csv}: row {bad + 2} has a non-number in the label columns {', '.join(cols)} "
                        f"(data.label_cols): {raw[cols].iloc[bad].tolist()}") from None
    sums = v.sum(1)
    bad = np.flatnonzero((np.abs(sums - 1) > 1e-3) | (v < 0).any(1) | (v > 1).any(1))
    if len(bad):
        raise DataError(f"{csv}: row {bad[0] + 2} of the label columns {', '.join(cols)} (data.label_cols) is "
                        f"{v[bad[0]].tolist()}, not one-hot / probabilities summing to 1 ({len(bad)} such rows); "
                        "fix the rows or set data.label_col to a single label column")
    return pd.Series(np.asarray(cols, dtype=object)[v.argmax(1)], index=raw.index)
