"""One error type for everything a user must fix. The CLI catches ``CompError`` in one place (``comp.cli``) and
prints its message as one line, ``Error: ...``, with ``exit_code``; every other exception is a bug and keeps its
traceback. Each kind also subclasses the builtin it used to be, so ``except ValueError`` and the like still hold.

    exit code   1  a CompError: bad input, config or state, named with what to do (ConfigError, DataError,
                   SubmissionError, TrainingError, ExportError, LockedError, OutputExists, MissingInput,
                   MissingExtra)
                2  a usage error: an unknown option or a missing argument (click's own)
"""

from __future__ import annotations


class CompError(Exception):
    """An error the user fixes: its message says what is wrong, where, and what to do."""

    exit_code = 1


class OutputExists(CompError, FileExistsError):
    """An output already there, made by something else; the message names --overwrite (or --resume)."""


class MissingInput(CompError, FileNotFoundError):
    """A file or folder a step needs is not there; the message names the step that makes it."""


class MissingExtra(CompError, ImportError):
    """An optional package is not installed; the message names the pip install that brings it."""


class ConfigError(CompError, ValueError):
    """A config key or value a user must fix; the message names the key."""


class DataError(CompError, ValueError):
    """A problem with the competition files a user must fix; the message names the file, column or row."""
