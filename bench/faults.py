"""Fault-injection hooks for the test suite (tests/test_faults.py); inert unless a BENCH_FAULT_* variable is set.

These exist so that the reliability tests can kill ``bench run`` at an exact
point, or make one mode diverge, instead of racing a timer.  They are read
once at import; when the variables are unset every hook is a single ``None``
check.  Never set them outside tests.

``BENCH_FAULT_KILL_AT=<point>[:<n>]``
    SIGKILL this process the ``n``-th time (default 1) it reaches ``point``:

    * ``mid-epoch``        halfway through a training epoch's steps
    * ``reconfigure``      after the model surgery of a reconfiguration, before the
                           epoch's row and checkpoint are written
    * ``checkpoint-write`` a checkpoint's temporary file written and fsync'ed, not yet renamed
    * ``run-json-write``   the same for run.json
    * ``record-append``    half of an epochs.csv row written and fsync'ed

``BENCH_FAULT_NAN_AT=<mode>:<epoch>``
    Make the training loss of ``mode`` NaN from the first step of ``epoch`` on
    (the divergence path, without a huge learning rate for both modes).
"""
from __future__ import annotations

import os
import signal
from typing import Callable, Optional

KILL_POINTS = ("mid-epoch", "reconfigure", "checkpoint-write", "run-json-write", "record-append")


def _parse_kill(spec: Optional[str]) -> Optional[tuple[str, int]]:
    if not spec:
        return None
    point, _, count = spec.partition(":")
    if point not in KILL_POINTS:
        raise SystemExit(f"BENCH_FAULT_KILL_AT: unknown point {point!r}; one of {', '.join(KILL_POINTS)}")
    return point, int(count or 1)


def _parse_nan(spec: Optional[str]) -> Optional[tuple[str, int]]:
    if not spec:
        return None
    mode, _, epoch = spec.partition(":")
    return mode, int(epoch or 1)


_KILL = _parse_kill(os.environ.get("BENCH_FAULT_KILL_AT"))
_NAN = _parse_nan(os.environ.get("BENCH_FAULT_NAN_AT"))
_seen: dict[str, int] = {}


def maybe_kill(point: str, before: Optional[Callable[[], None]] = None) -> None:
    """SIGKILL this process here if BENCH_FAULT_KILL_AT names ``point`` (and this is its n-th visit).

    ``before`` runs just before the kill (e.g. to leave half a row on disk).
    """
    if _KILL is None or _KILL[0] != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] == _KILL[1]:
        if before is not None:
            before()
        os.kill(os.getpid(), signal.SIGKILL)


def nan_at(mode: str, epoch: int) -> bool:
    """True if BENCH_FAULT_NAN_AT asks for a NaN loss in ``mode`` from ``epoch`` on."""
    return _NAN is not None and _NAN[0] == mode and epoch >= _NAN[1]
