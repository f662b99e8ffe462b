"""Shared settings and helpers of the benchmarks (imported by conftest.py and the benchmark files)."""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch

from bench.speed import table
from bench.machine import timing

THREADS = int(os.environ.get("BENCH_THREADS") or 0) or torch.get_num_threads()
torch.set_num_threads(THREADS)
ROUNDS = int(os.environ.get("BENCH_ROUNDS") or 5)
BATCH = int(os.environ.get("BENCH_BATCH") or 128)
MODEL = os.environ.get("BENCH_MODEL") or "resnet32"
DEVICE = timing.resolve_device(os.environ.get("BENCH_DEVICE") or None)
ENFORCE = os.environ.get("BENCH_ENFORCE_TARGETS") == "1"

ROWS: list[table.Row] = []
LOAD_BEFORE = timing.loadavg()


def paired(benchmark, target: Callable[..., Any], reference: Callable[[], Any], *, rounds: int = ROUNDS,
           warmup: int = 1, target_setup: Callable[[], tuple] | None = None
           ) -> tuple[list[float] | None, list[float] | None]:
    """Time ``target`` with pytest-benchmark and ``reference`` once per round, alternately before and after it.

    Returns (target seconds, reference seconds) per round, or (None, None)
    under ``--benchmark-disable``.
    """
    ref: list[float] = []
    k = {"round": 0}

    def setup():
        if k["round"] % 2 == 0:
            ref.append(timing.time_case(timing.Case(reference), DEVICE))
        args = target_setup() if target_setup is not None else ()
        timing.sync(DEVICE)
        return tuple(args), {}

    def teardown(*args, **kwargs):
        if k["round"] % 2 == 1:
            ref.append(timing.time_case(timing.Case(reference), DEVICE))
        k["round"] += 1

    def timed(*args):
        out = target(*args)
        timing.sync(DEVICE)
        return out

    benchmark.pedantic(timed, setup=setup, teardown=teardown, rounds=rounds, warmup_rounds=warmup)
    if getattr(benchmark, "disabled", False) or benchmark.stats is None:
        return None, None
    return list(benchmark.stats.stats.data), ref[warmup:]


def stat_row(section: str, label: str, seconds: Sequence[float], unit: str = "ms") -> table.Row:
    st = timing.Stat.of(seconds)
    k = 1e3 if unit == "ms" else 1.0
    return table.Row(section, label, st.median * k, unit, st.iqr * k)
