"""Benchmarks of issue #7: what the FLOP savings are worth in wall-clock time on this device.

Not part of the default test run (``testpaths = ["tests"]``).  Run them all with::

    .venv/bin/python -m pytest benchmarks/ --benchmark-only

Every benchmark times one thing with pytest-benchmark (``benchmark.pedantic``)
and, interleaved with it round by round (alternately before and after), the
reference it is compared with; the ratio's median and IQR over the rounds are
stored in ``extra_info`` (so in ``--benchmark-json``) and printed as one table
against the targets at the end.  Settings (environment variables):

``BENCH_THREADS``  torch threads (default: torch's choice, the core count)
``BENCH_ROUNDS``   rounds per benchmark (default 5; the penalty takes 3x)
``BENCH_BATCH``    mini-batch (default 128)
``BENCH_MODEL``    model (default resnet32)
``BENCH_DEVICE``   cpu / cuda (default: cuda when available)
``BENCH_ENFORCE_TARGETS=1``  fail a benchmark whose figure misses its target
``BENCH_COMPILE=1``  also the torch.compile sweep (minutes per compile on a CPU)
``CIFAR10_DIR``    an unpacked cifar10-jpeg copy for the data-path benchmark
"""
from __future__ import annotations

import pytest
import torch

import benchutil as bu
from bench.speed import table
from bench.machine import timing


@pytest.fixture
def record(benchmark):
    """record(*rows): keep rows for the summary and in extra_info; with BENCH_ENFORCE_TARGETS=1, check targets."""

    def add(*rows: table.Row) -> None:
        for r in rows:
            bu.ROWS.append(r)
            benchmark.extra_info[r.name] = {"value": r.value, "unit": r.unit, "iqr": r.iqr, "target": r.target,
                                            "met": r.met, "note": r.note}
        missed = [f"{r.name}: {r.formatted_value()} (target {r.target})" for r in rows if r.met is False]
        if bu.ENFORCE and missed:
            pytest.fail("; ".join(missed))

    benchmark.extra_info.update({"device": str(bu.DEVICE), "threads": bu.THREADS, "batch": bu.BATCH, "model": bu.MODEL})
    return add


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not bu.ROWS:
        return
    rep = table.SpeedReport(device=timing.device_name(bu.DEVICE), threads=bu.THREADS, torch_version=torch.__version__,
                         batch=bu.BATCH, model=bu.MODEL, rounds=bu.ROUNDS, rows=list(bu.ROWS),
                         load_before=bu.LOAD_BEFORE, load_after=timing.loadavg())
    terminalreporter.write_sep("=", "issue #7 figures (ratios measured in this run)")
    terminalreporter.write_line(rep.format_table())
