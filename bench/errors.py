"""User-facing errors of the harness.

Every mistake a user can make (a wrong name, a missing folder, a damaged file)
raises a subclass of :class:`BenchError` with a one-line message that names
the thing that is wrong and what to do.  The CLI prints that line and exits
with code 2; it never shows a traceback for these.
"""
from __future__ import annotations


class BenchError(Exception):
    """A user-facing error: one line, names the culprit, says what to do."""

    exit_code = 2


class ProfileError(BenchError):
    """Unknown or malformed hardware profile."""


class DataError(BenchError):
    """Unknown data set, missing or malformed data folder."""


class RecordError(BenchError):
    """Malformed, truncated or foreign run records (epochs.csv / run.json)."""


class CheckpointError(BenchError):
    """A checkpoint that is missing, damaged or does not match the run."""


class ConfigError(BenchError):
    """Inconsistent command-line options or run configuration."""


class OutOfMemoryBudget(BenchError):
    """Even the smallest batch does not fit the memory budget.

    Where the batch rule knows them: ``batch`` tried, ``need_bytes`` at it and the ``limit_bytes`` it missed.
    """

    def __init__(self, message: str, *, batch: int | None = None, need_bytes: int | None = None,
                 limit_bytes: int | None = None):
        super().__init__(message)
        self.batch, self.need_bytes, self.limit_bytes = batch, need_bytes, limit_bytes


class DivergenceError(BenchError):
    """The loss became NaN or infinite."""
