"""The one seam through which the test suite injects faults into a run; by default it does nothing.

A run holds a :class:`Hooks` object (``RunContext.hooks``) and calls it at the
named points; the base class ignores every call.  :func:`from_environment`
returns :class:`FaultHooks` instead, so that the reliability tests
(tests/test_faults.py) can kill ``bench run`` at an exact point or make one
mode diverge instead of racing a timer, only when both

* a ``BENCH_FAULT_*`` variable asks for a fault, and
* ``BENCH_UNDER_TEST=1`` says the test suite started this process
  (tests/conftest.py sets it; nothing else should).

An active fault is announced on stderr and recorded in run.json
(``fault_injection``); a fault variable without the test-suite variable is
announced as ignored.

``BENCH_FAULT_KILL_AT=<point>[:<n>]``
    SIGKILL this process the ``n``-th time (default 1) it reaches ``point``:

    * ``mid-epoch``        halfway through a training epoch's steps
    * ``reconfigure``      after the model surgery of a reconfiguration, before the
                           epoch's row and checkpoint are written
    * ``checkpoint-write`` a checkpoint's temporary file written and fsync'ed, not yet renamed
    * ``run-json-write``   the same for run.json
    * ``record-append``    half of an epochs.csv row written and fsync'ed

``BENCH_DEBUG_DUMP_DIR=<dir>``
    After every reconfiguration, each rank saves ``<dir>/rank{r}-epoch{e}.pt`` (the module's state, the
    optimizer state by parameter name, the batch and λ), so that the distributed tests can check that all
    ranks hold the same model and optimizer (:meth:`Hooks.reconfigured`).

``BENCH_FAULT_NAN_AT=<mode>:<epoch>``
    Make the training loss of ``mode`` NaN from the first step of ``epoch`` on
    (the divergence path, without a huge learning rate for both modes): the
    model's outputs are NaN during the training steps (:meth:`Hooks.training`).
"""
from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..errors import ConfigError

KILL_POINTS = ("mid-epoch", "reconfigure", "checkpoint-write", "run-json-write", "record-append")
FAULT_VARIABLES = ("BENCH_FAULT_KILL_AT", "BENCH_FAULT_NAN_AT", "BENCH_DEBUG_DUMP_DIR")
UNDER_TEST = "BENCH_UNDER_TEST"


class Hooks:
    """The points a run reports to; none of them does anything here."""

    active: dict[str, str] = {}

    def kill_point(self, point: str, before: Callable[[], None] | None = None) -> None:
        """The run reached ``point`` (one of :data:`KILL_POINTS`)."""

    def nan_loss(self, mode: str, epoch: int) -> bool:
        """Whether the training loss of ``mode`` is to be NaN in ``epoch``."""
        return False

    def training(self, mode: str, epoch: int, model: Any) -> contextlib.AbstractContextManager:
        """Entered around the training steps of ``mode``'s ``epoch`` on ``model`` (the bare module)."""
        return contextlib.nullcontext()

    def reconfigured(self, rank: int, epoch: int, snapshot: Callable[[], dict]) -> None:
        """A reconfiguration finished on ``rank``; ``snapshot()`` gives its model, optimizer, batch and λ."""


NO_HOOKS = Hooks()


class FaultHooks(Hooks):
    """Faults asked for by ``BENCH_FAULT_*`` variables (see the module docstring)."""

    def __init__(self, active: Mapping[str, str]):
        self.active = dict(active)
        self._kill = _parse_kill(self.active.get("BENCH_FAULT_KILL_AT"))
        self._nan = _parse_nan(self.active.get("BENCH_FAULT_NAN_AT"))
        self._dump = self.active.get("BENCH_DEBUG_DUMP_DIR")
        self._seen: dict[str, int] = {}

    def kill_point(self, point: str, before: Callable[[], None] | None = None) -> None:
        """SIGKILL this process here if it is the asked point's n-th visit; ``before`` runs just before."""
        if self._kill is None or self._kill[0] != point:
            return
        self._seen[point] = self._seen.get(point, 0) + 1
        if self._seen[point] == self._kill[1]:
            if before is not None:
                before()
            os.kill(os.getpid(), signal.SIGKILL)

    def nan_loss(self, mode: str, epoch: int) -> bool:
        return self._nan is not None and self._nan[0] == mode and epoch >= self._nan[1]

    @contextlib.contextmanager
    def training(self, mode: str, epoch: int, model: Any) -> Iterator[None]:
        """Where :meth:`nan_loss` asks: the model's outputs, so its loss, are NaN for these steps."""
        if not self.nan_loss(mode, epoch):
            yield
            return
        handle = model.register_forward_hook(lambda module, inputs, output: output * float("nan"))
        try:
            yield
        finally:
            handle.remove()

    def reconfigured(self, rank: int, epoch: int, snapshot: Callable[[], dict]) -> None:
        if self._dump:
            import torch
            Path(self._dump).mkdir(parents=True, exist_ok=True)
            torch.save(snapshot(), Path(self._dump) / f"rank{rank}-epoch{epoch}.pt")


def _parse_kill(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    point, _, count = spec.partition(":")
    if point not in KILL_POINTS or not (count or "1").isdigit():
        raise ConfigError(f"BENCH_FAULT_KILL_AT={spec!r}: expected <point>[:<n>] with a point among "
                          f"{', '.join(KILL_POINTS)}")
    return point, int(count or 1)


def _parse_nan(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    mode, _, epoch = spec.partition(":")
    if mode not in ("dense", "prunetrain") or not (epoch or "1").isdigit():
        raise ConfigError(f"BENCH_FAULT_NAN_AT={spec!r}: expected <mode>:<epoch>, e.g. dense:2")
    return mode, int(epoch or 1)


def from_environment(environ: Mapping[str, str] = os.environ, warn: Callable[[str], None] = lambda s: None) -> Hooks:
    """The hooks this process's environment asks for: :data:`NO_HOOKS` unless under the test suite.

    ``warn`` hears one line about every fault variable set (active or ignored).
    """
    asked = {k: environ[k] for k in FAULT_VARIABLES if environ.get(k)}
    if not asked:
        return NO_HOOKS
    spec = ", ".join(f"{k}={v}" for k, v in asked.items())
    if environ.get(UNDER_TEST) != "1":
        warn(f"{spec} ignored: fault injection is honoured only under the test suite ({UNDER_TEST}=1)")
        return NO_HOOKS
    hooks = FaultHooks(asked)
    warn(f"fault injection active: {spec} (recorded in run.json)")
    return hooks
