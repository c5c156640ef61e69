"""Progress for people, lines for logs: tqdm bars only when both stdout and stderr are a terminal.

Under `comp launch`, CI, `nohup` or `> train.log` a bar would write thousands of carriage-return updates into the
log; there, long work prints its one-line summaries only (training: one line per epoch).
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def interactive() -> bool:
    """True when stdout and stderr are both a terminal (a person is watching)."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def progress_bar(iterable=None, enabled: bool = True, **kwargs) -> tqdm:
    """tqdm over ``iterable`` (leave=False), shown only when ``enabled`` and a person is watching."""
    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=not (enabled and interactive()), **kwargs)
