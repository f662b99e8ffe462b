"""(d) Pruned shapes built by PruneTrain's reconfiguration: step-time ratio against FLOP ratio.

Each shape is compared with the dense model in the same memory format
(contiguous NCHW, and channels_last).  Plus (2): the same ragged shape at
channel multiples of 1, 4, 8 and 16, and what auto_round_channels picks.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch

import benchutil as bu
import prunetrain_core as pc
from bench.training import decisions, shapes, step
from bench.speed import sweep, table
from bench.machine import timing

SHAPES = [s for s in sweep.SWEEP_SHAPES[1:] if s[1] != "ragged"]


def _flops(model) -> float:
    size = shapes.input_size(bu.MODEL)
    return pc.count_flops(copy.deepcopy(model).cpu(), torch.zeros(2, 3, size, size)).train_per_image


@pytest.fixture(scope="module")
def dense():
    model = shapes.pruned_model(bu.MODEL, 1.0, device=bu.DEVICE)
    x, y = shapes.random_batch(bu.BATCH, shapes.input_size(bu.MODEL), device=bu.DEVICE)
    return model, x, y, _flops(model)


def _step(model, x, y, fmt):
    cl = fmt == "channels_last"
    return shapes.fixed_batch_step(copy.deepcopy(model) if cl else model, x, y, channels_last=cl)


def _prefix(fmt):
    return "" if fmt == "contiguous" else f"[{fmt}] "


@pytest.mark.parametrize("fmt", sweep.FORMATS)
@pytest.mark.parametrize("label,shape,round_to", SHAPES, ids=[s[0].split(" (")[0] for s in SHAPES])
def test_pruned_shape_step(benchmark, record, dense, label, shape, round_to, fmt):
    dmodel, x, y, dflops = dense
    twins = shapes.pruned_models(bu.MODEL, shape, sorted({round_to, 8}), device=bu.DEVICE)
    model = twins[round_to]
    hazard = fmt == "channels_last" and step.channels_last_hazard(model, bu.DEVICE)
    if hazard:
        pytest.skip(f"oneDNN crashes on this shape in channels_last: {hazard}")
    t, ref = bu.paired(benchmark, _step(model, x, y, fmt), _step(dmodel, x, y, fmt))
    if t is None:
        return
    res = sweep.ShapeResult(label, shapes.channel_summary(model), _flops(model) / dflops, timing.ratio_stat(t, ref), fmt,
                         _flops(twins[8]) / dflops)
    record(*sweep.shape_rows(res, _prefix(fmt)))


def test_channels_last_dense(benchmark, record, dense):
    """The memory format alone: the dense step in channels_last against contiguous."""
    dmodel, x, y, _ = dense
    t, ref = bu.paired(benchmark, _step(dmodel, x, y, "channels_last"), _step(dmodel, x, y, "contiguous"))
    if t is None:
        return
    r = timing.ratio_stat(t, ref)
    record(table.Row("sweep", "dense step: channels_last / contiguous", r.median, "x", r.iqr,
                  note="the memory format alone (bench run --channels-last)"))


@pytest.fixture(scope="module")
def ragged(dense):
    return shapes.pruned_models(bu.MODEL, "ragged", decisions.ROUND_CANDIDATES, device=bu.DEVICE)


@pytest.mark.parametrize("fmt", sweep.FORMATS)
@pytest.mark.parametrize("round_to", [n for n in decisions.ROUND_CANDIDATES if n != 1])
def test_rounding_of_a_ragged_shape(benchmark, record, dense, ragged, round_to, fmt):
    """time ÷ FLOP of the ragged (arbitrary channel counts) shape rounded up to multiples of N, vs unrounded."""
    _, x, y, dflops = dense
    base, model = ragged[1], ragged[round_to]
    hazard = fmt == "channels_last" and (step.channels_last_hazard(base, bu.DEVICE)
                                         or step.channels_last_hazard(model, bu.DEVICE))
    if hazard:
        pytest.skip(f"oneDNN crashes on this shape in channels_last: {hazard}")
    t, ref = bu.paired(benchmark, _step(model, x, y, fmt), _step(base, x, y, fmt))
    if t is None:
        return
    f_base, f_round = _flops(base), _flops(model)
    time_ratio = timing.ratio_stat(t, ref)
    p = _prefix(fmt)
    record(
        table.Row("rounding", f"{p}ragged → round_to {round_to}: time ratio (FLOPs ×{f_round / f_base:.3f})",
               time_ratio.median, "x", time_ratio.iqr,
               note=f"channels {shapes.channel_summary(base)} → {shapes.channel_summary(model)}"),
        table.Row("rounding", f"{p}ragged → round_to {round_to}: time÷FLOP ratio", time_ratio.median * f_base / f_round,
               "x", note=f"FLOP ratio vs dense {f_base / dflops:.3f} → {f_round / dflops:.3f}"),
    )


def test_auto_round_channels(benchmark, record):
    """What auto_round_channels measures here, and how long it takes."""
    probe = benchmark.pedantic(decisions.probe_rounding, args=(bu.MODEL, bu.DEVICE), rounds=1, warmup_rounds=0)
    if probe is None:
        return
    assert probe.choice in decisions.ROUND_CANDIDATES
    record(*probe.rows())


@pytest.mark.skipif(os.environ.get("BENCH_COMPILE") != "1", reason="set BENCH_COMPILE=1 (compiles take minutes)")
@pytest.mark.parametrize("label,shape", [("keep 0.75", 0.75), ("keep 0.5", 0.5)])
def test_compiled_pruned_shape_step(benchmark, record, dense, label, shape):
    """torch.compile (bench run --compile) on both sides: compiled shape against the compiled dense model."""
    dmodel, x, y, dflops = dense
    model = shapes.pruned_model(bu.MODEL, shape, device=bu.DEVICE)
    target = shapes.fixed_batch_step(torch.compile(model), x, y)
    reference = shapes.fixed_batch_step(torch.compile(copy.deepcopy(dmodel)), x, y)
    t, ref = bu.paired(benchmark, target, reference, warmup=2)
    if t is None:
        return
    res = sweep.ShapeResult(label, shapes.channel_summary(model), _flops(model) / dflops, timing.ratio_stat(t, ref), "contiguous")
    record(*sweep.shape_rows(res, "[compiled] "))
