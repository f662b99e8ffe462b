"""The timing kit: samples of interleaved cases, their statistics, and device synchronisation."""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

CIFAR_TRAIN_IMAGES = 50_000


def steps_per_epoch(batch: int, images: int = CIFAR_TRAIN_IMAGES) -> int:
    return math.ceil(images / batch)


@dataclass(frozen=True)
class Stat:
    """Median and quartiles of samples (seconds, or a ratio)."""

    median: float
    q1: float
    q3: float
    n: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @classmethod
    def of(cls, samples: Sequence[float]) -> "Stat":
        xs = sorted(float(s) for s in samples)
        if not xs:
            return cls(math.nan, math.nan, math.nan, 0)
        if len(xs) == 1:
            return cls(xs[0], xs[0], xs[0], 1)
        q1, med, q3 = statistics.quantiles(xs, n=4, method="inclusive")
        return cls(med, q1, q3, len(xs))

    def scaled(self, k: float) -> "Stat":
        return Stat(self.median * k, self.q1 * k, self.q3 * k, self.n)


@dataclass
class Case:
    """One thing to time.  ``setup`` (untimed) returns the arguments of ``fn``; ``inner`` calls per sample."""

    fn: Callable[..., Any]
    setup: Callable[[], tuple] | None = None
    inner: int = 1


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def sync(device: torch.device | str | None) -> None:
    """Wait for queued kernels: a CUDA time read before this would measure the launch, not the work."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


def time_case(case: Case, device: torch.device | None = None) -> float:
    """Seconds per call of one sample of ``case``."""
    args = case.setup() if case.setup is not None else ()
    inner = 1 if case.setup is not None else max(1, case.inner)
    sync(device)
    start = time.perf_counter()
    for _ in range(inner):
        case.fn(*args)
    sync(device)
    return (time.perf_counter() - start) / inner


def calibrate_inner(fn: Callable[[], Any], target_s: float = 0.02, device=None, limit: int = 1000) -> int:
    """Calls per sample so that a sample lasts about ``target_s`` (for sub-millisecond functions)."""
    fn()
    t = time_case(Case(fn), device)
    return int(max(1, min(limit, math.ceil(target_s / max(t, 1e-7)))))


#: asked after every round with the rounds run and the seconds since the first: why to stop now, or None
StopRule = Callable[[int, float, Mapping[str, list[float]]], "str | None"]


def budget_rule(budget_s: float | None, min_rounds: int = 2) -> StopRule:
    """Stop after the round in which ``budget_s`` ran out (never before ``min_rounds``)."""
    def stop(done: int, elapsed: float, samples: Mapping[str, list[float]]) -> str | None:
        return "budget spent" if budget_s is not None and done >= min_rounds and elapsed > budget_s else None
    return stop


def timed_rounds(cases: Mapping[str, Case], rounds: int, *, warmup: int = 1, device=None,
                 stop: StopRule | None = None, cpu: dict[str, list[float]] | None = None
                 ) -> tuple[dict[str, list[float]], int, str]:
    """The one timing mechanism: every case once per round, rotating the order, until ``stop`` says why.

    Returns seconds per call, per case, the rounds run and why they stopped (``"max rounds"`` when all
    ``rounds`` ran).  ``cpu``: filled with this process's CPU seconds per call of each sample too.
    """
    names = list(cases)
    for _ in range(warmup):            # allocator, oneDNN/cuDNN kernel choice
        for name in names:
            time_case(cases[name], device)
    samples: dict[str, list[float]] = {n: [] for n in names}
    if cpu is not None:
        cpu.update({n: [] for n in names})
    start, why, done = time.perf_counter(), "max rounds", 0
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            c0 = time.process_time()
            samples[name].append(time_case(cases[name], device))
            if cpu is not None:
                cpu[name].append((time.process_time() - c0) / max(1, cases[name].inner))
        done = r + 1
        reason = stop(done, time.perf_counter() - start, samples) if stop is not None else None
        if reason is not None:
            why = reason
            break
    return samples, done, why


def interleaved(cases: Mapping[str, Case], rounds: int, *, warmup: int = 1, device=None,
                budget_s: float | None = None, min_rounds: int = 2) -> dict[str, list[float]]:
    """:func:`timed_rounds` under a time budget; returns seconds per call, per case.

    ``budget_s`` stops after the round in which it ran out (never before ``min_rounds``).
    """
    return timed_rounds(cases, rounds, warmup=warmup, device=device, stop=budget_rule(budget_s, min_rounds))[0]


def ratio_stat(num: Sequence[float], den: Sequence[float]) -> Stat:
    """Median and IQR of the per-round ratios num[i] / den[i]."""
    return Stat.of([a / b for a, b in zip(num, den)])


def loadavg() -> float | None:
    """1-minute load average: above the core count, the machine was shared while measuring."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # pragma: no cover - not on every platform
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    try:
        from .hardware import _cpu_model

        name = _cpu_model()
    except Exception:  # pragma: no cover - best effort
        name = "cpu"
    return f"cpu: {name} ({os.cpu_count()} cores)"
