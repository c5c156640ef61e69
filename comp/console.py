"""Progress for people, lines for logs: tqdm bars only when both stdout and stderr are a terminal.

Under `comp launch`, CI, `nohup` or `> train.log` a bar would write thousands of carriage-return updates into the
log; there, long work prints its one-line summaries only (training: one line per epoch), and work with no
natural step (decoding every image once) a line every few seconds (:func:`progress_lines`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator

from tqdm.auto import tqdm


def interactive() -> bool:
    """True when stdout and stderr are both a terminal (a person is watching)."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def progress_bar(iterable=None, enabled: bool = True, **kwargs) -> tqdm:
    """tqdm over ``iterable`` (leave=False), shown only when ``enabled`` and a person is watching."""
    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=not (enabled and interactive()), **kwargs)


def seconds_text(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def progress_lines(iterable: Iterable, total: int, desc: str, every: float = 10.0, unit: str = "images",
                   rate_unit: str = "img/s", echo: Callable[[str], None] | None = None) -> Iterator:
    """``iterable``'s items, with a line such as ``decode (once): 1,234/5,000 images, 85 img/s, ~44 s left``
    printed (flushed) about every ``every`` seconds, for a log where no person watches a bar."""
    echo = echo or (lambda line: print(line, flush=True))
    start = last = time.monotonic()
    for k, item in enumerate(iterable, 1):
        yield item
        now = time.monotonic()
        if now - last >= every and k < total:
            rate = k / (now - start)
            echo(f"{desc}: {k:,}/{total:,} {unit}, {rate:.0f} {rate_unit}, ~{seconds_text((total - k) / rate)} left")
            last = now
