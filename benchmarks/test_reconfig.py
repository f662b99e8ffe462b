"""(b) Reconfiguration (real surgery, optimizer state sliced) against one training epoch.

The epoch is *estimated* as ceil(50000 / batch) × the measured dense step
(the full CIFAR-10 training set); it is not run.
"""
from __future__ import annotations

import pytest
import torch

import benchutil as bu
import prunetrain_core as pc
from bench.speed import harness, table
from bench.training import shapes
from bench.machine import timing

KEEP = 0.6  # 40% of every space's channels zeroed


@pytest.mark.parametrize("name", sorted({bu.MODEL, "resnet50"}))
def test_reconfigure_vs_epoch(benchmark, record, name):
    size = shapes.input_size(name)
    base = shapes.zeroed_model(name, KEEP).to(bu.DEVICE)
    opt = shapes.with_momentum(base)
    example = torch.zeros(2, 3, size, size, device=bu.DEVICE)
    x, y = shapes.random_batch(bu.BATCH, size, device=bu.DEVICE)
    torch.manual_seed(0)
    step = shapes.fixed_batch_step(pc.build_model(name, 10).to(bu.DEVICE), x, y)

    def reconfigure(model, optimizer):
        return pc.reconfigure(model, example, optimizer=optimizer)

    rec, ref = bu.paired(benchmark, reconfigure, step, target_setup=lambda: shapes.copy_with_optimizer(base, opt))
    if rec is None:
        return
    steps = timing.steps_per_epoch(bu.BATCH)
    frac = timing.ratio_stat(rec, [t * steps for t in ref])
    record(
        bu.stat_row("reconfig", f"{name}: step (batch {bu.BATCH})", ref),
        bu.stat_row("reconfig", f"{name}: reconfigure() with SGD state", rec, unit="s"),
        table.pct_row("reconfig", f"{name}: reconfigure() / epoch ({steps} × step, estimated)", frac,
                    target=f"≤ {100 * table.TARGET_RECONFIG:g}%", met=frac.median <= table.TARGET_RECONFIG),
    )
    assert frac.median > 0


def test_harness_reconfiguration_vs_epoch(benchmark, record):
    """ModeTrainer.reconfigure: plan + surgery + new lasso groups + FLOP count + memory model + batch decision."""
    from bench.training.train import ModeTrainer

    name = bu.MODEL
    size = shapes.input_size(name)
    base = shapes.zeroed_model(name, KEEP).to(bu.DEVICE)
    opt = shapes.with_momentum(base)
    ctx = harness.harness_context(name, bu.BATCH, steps=1, device=bu.DEVICE, mode="prunetrain")
    x, y = shapes.random_batch(bu.BATCH, size, device=bu.DEVICE)
    torch.manual_seed(0)
    step = shapes.fixed_batch_step(pc.build_model(name, 10).to(bu.DEVICE), x, y)

    def setup():
        m, o = shapes.copy_with_optimizer(base, opt)
        trainer = ModeTrainer(ctx, "prunetrain")
        trainer.state.batch = bu.BATCH
        trainer._install(m, o)
        pc.flops._CACHE.clear()   # every real reconfiguration meets a new shape
        return (trainer,)

    rec, ref = bu.paired(benchmark, lambda trainer: trainer.reconfigure(1), step, target_setup=setup)
    if rec is None:
        return
    steps = timing.steps_per_epoch(bu.BATCH)
    frac = timing.ratio_stat(rec, [t * steps for t in ref])
    record(
        bu.stat_row("reconfig", f"{name}: harness reconfiguration (+lasso, FLOPs, memory)", rec, unit="s"),
        table.pct_row("reconfig", f"{name}: harness reconfiguration / epoch (estimated)", frac,
                    target=f"≤ {100 * table.TARGET_RECONFIG:g}%", met=frac.median <= table.TARGET_RECONFIG),
    )
    assert frac.median > 0
