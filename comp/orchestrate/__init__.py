"""Many experiments on Ray: ``comp launch`` (a job queue of experiment x fold over GPUs and machines),
``comp tune`` (Ray Tune with Optuna's sampler and ASHA) and ``comp leaderboard`` (every run in one table).

Ray and Optuna are the ``ray`` extra (``pip install "comp[ray]"``; ``make install`` includes it): the rest of comp
trains and predicts without them. :func:`require` turns a missing install into one clear message.
"""

from __future__ import annotations

from comp.config import ConfigError

INSTALL = 'pip install "comp[ray]"   (or: pip install "ray[tune]" optuna)'


def require(*modules: str) -> None:
    """Import ``modules`` (default ray) or raise ConfigError saying what to install."""
    import importlib

    for m in modules or ("ray",):
        try:
            importlib.import_module(m)
        except ImportError as e:
            raise ConfigError(f"this command needs {m.split('.')[0]}, which is not installed ({e}); run: {INSTALL}") \
                from None
