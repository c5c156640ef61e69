"""``comp check``: validate every row and image before anything trains.  (STUB — being written.)"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from comp.config import Config
from comp.data import load_train


def clean_train(cfg: Config, skip_bad: bool = False, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """The train table (id, label, [group], path, row) with no problem rows.

    Raises DataError naming --skip-bad when problems exist and skip_bad is False; with skip_bad the bad rows
    are left out and listed through ``echo``.
    """
    df = load_train(cfg)
    return df[df["path"].notna()].reset_index(drop=True)
