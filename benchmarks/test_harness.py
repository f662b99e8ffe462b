"""(c) The harness's overhead per step: ModeTrainer.train_epoch (dense) against a bare loop on the same Loader."""
from __future__ import annotations

import contextlib
import io

import torch

import benchutil as bu
import prunetrain_core as pc
from bench.speed import harness, table
from bench.training import shapes
from bench.machine import timing
from bench.training.train import ModeTrainer

STEPS = 4


def _trainer(model=None):
    ctx = harness.harness_context(bu.MODEL, bu.BATCH, STEPS, device=bu.DEVICE, mode="dense", progress=True)
    trainer = ModeTrainer(ctx, "dense")
    trainer.start()
    if model is not None:
        trainer._install(model, trainer._make_optimizer(model.parameters()))
    return ctx, trainer


def _epoch_fn(trainer):
    sink, n = io.StringIO(), {"epoch": 0}

    def epoch():
        n["epoch"] += 1
        with contextlib.redirect_stderr(sink):   # the progress bar is drawn, into a buffer
            trainer.train_epoch(n["epoch"])

    return epoch


def test_harness_epoch_vs_bare_loop(benchmark, record):
    ctx, trainer = _trainer()
    bare = harness.BareLoop(ctx)
    steps = len(bare.loader)
    h, b = bu.paired(benchmark, _epoch_fn(trainer), lambda: bare.epoch(0))
    if h is None:
        return
    over = timing.Stat.of([x / y - 1 for x, y in zip(h, b)])
    record(
        bu.stat_row("harness", f"bare loop step ({bu.MODEL}, same Loader)", [t / steps for t in b]),
        bu.stat_row("harness", "ModeTrainer.train_epoch step (dense)", [t / steps for t in h]),
        table.pct_row("harness", f"harness overhead, end to end ({steps} steps/epoch)", over,
                    target=f"≤ {100 * table.TARGET_HARNESS:g}%", met=over.median <= table.TARGET_HARNESS,
                    note="noise of two full-model epochs"),
    )


def test_harness_cost_per_step_tiny_model(benchmark, record):
    """The harness's own per-step work, measured around a model that costs almost nothing."""
    ctx, trainer = _trainer(harness.tiny_model().to(bu.DEVICE))
    bare = harness.BareLoop(ctx, model=harness.tiny_model().to(bu.DEVICE))
    steps = len(bare.loader)
    torch.manual_seed(0)
    x, y = shapes.random_batch(bu.BATCH, shapes.input_size(bu.MODEL), device=bu.DEVICE)
    real = shapes.fixed_batch_step(pc.build_model(bu.MODEL, 10).to(bu.DEVICE), x, y)
    real_s = timing.interleaved({"step": timing.Case(real)}, 3, device=bu.DEVICE)["step"]
    h, b = bu.paired(benchmark, _epoch_fn(trainer), lambda: bare.epoch(0), rounds=3 * bu.ROUNDS)
    if h is None:
        return
    per_step = timing.Stat.of([(x - y) / steps for x, y in zip(h, b)])
    step = timing.Stat.of(real_s).median
    frac = per_step.median / step
    record(
        table.Row("harness", "harness cost per step, absolute (tiny model)", per_step.median * 1e3, "ms",
               per_step.iqr * 1e3),
        table.Row("harness", f"harness cost per step / {bu.MODEL} step", 100 * frac, "%", 100 * per_step.iqr / step,
               target=f"≤ {100 * table.TARGET_HARNESS:g}%", met=frac <= table.TARGET_HARNESS),
    )


def test_checkpoint_per_epoch(benchmark, record):
    """The checkpoint written after every epoch, against the estimated full epoch (ceil(50000/batch) steps)."""
    ctx, trainer = _trainer()
    x, y = shapes.random_batch(bu.BATCH, shapes.input_size(bu.MODEL), device=bu.DEVICE)
    torch.manual_seed(0)
    step = shapes.fixed_batch_step(pc.build_model(bu.MODEL, 10).to(bu.DEVICE), x, y)
    ck, ref = bu.paired(benchmark, trainer.save_checkpoint, step, rounds=3)
    if ck is None:
        return
    frac = timing.ratio_stat(ck, [t * timing.steps_per_epoch(bu.BATCH) for t in ref])
    sp_ck = timing.Stat.of(ck)
    record(table.pct_row("harness", "checkpoint per epoch / epoch estimate", frac,
                       note=f"{sp_ck.median * 1e3:.0f} ms per checkpoint, once per epoch"))
