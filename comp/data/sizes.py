"""Image sizes from file headers (no pixels decoded), for the defaults fitted to the data (comp.train.defaults)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

MIN_SIZE, MAX_SIZE, MAX_SIZE_CPU = 32, 384, 224
FIT_MIN_SIDE = 64  # images fitted above this size get size and epochs from a probe of the machine (comp.train.fit)


def fitted_size(median_short: int, gpu: bool) -> int:
    """The median short side rounded to a multiple of 32, kept within [32, 384] ([32, 224] on CPU)."""
    top = MAX_SIZE if gpu else MAX_SIZE_CPU
    return int(min(top, max(MIN_SIZE, 32 * round(median_short / 32))))


@dataclass
class SizeSummary:
    n: int  # headers read
    median_w: int
    median_h: int
    median_short: int  # median of each image's shorter side

    def describe(self) -> str:
        return f"median image {self.median_w}x{self.median_h}"


def header_sizes(paths: Sequence[str], limit: int = 1000, seed: int = 0) -> np.ndarray:
    """(n, 2) widths and heights of up to ``limit`` of ``paths`` (an even random sample), read from the headers;
    unreadable files are skipped (``comp check`` names them)."""
    paths = list(paths)
    if len(paths) > limit:
        pick = np.random.default_rng(seed).choice(len(paths), size=limit, replace=False)
        paths = [paths[i] for i in sorted(pick)]
    out = []
    for p in paths:
        try:
            with Image.open(p) as im:  # lazy: the header only
                out.append(im.size)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def summarize_sizes(paths: Sequence[str], limit: int = 1000) -> SizeSummary | None:
    """Median width, height and short side of the images' headers; None when none could be read."""
    wh = header_sizes(paths, limit)
    if not len(wh):
        return None
    med = np.median(wh, axis=0)
    return SizeSummary(len(wh), int(round(med[0])), int(round(med[1])), int(round(np.median(wh.min(axis=1)))))
