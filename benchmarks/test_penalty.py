"""(a) The group-lasso penalty's forward + backward as a fraction of a dense training step."""
from __future__ import annotations

import torch

import benchutil as bu
import prunetrain_core as pc
from bench.training import shapes
from bench.speed import table
from bench.machine import timing


def test_penalty_vs_dense_step(benchmark, record):
    torch.manual_seed(0)
    size = shapes.input_size(bu.MODEL)
    model = pc.build_model(bu.MODEL, 10).to(bu.DEVICE)
    x, y = shapes.random_batch(bu.BATCH, size, device=bu.DEVICE)
    lasso = pc.GroupLasso(model, x[:2])
    dense = shapes.fixed_batch_step(model, x, y)

    def penalty():
        lasso.penalty().backward()

    pen, ref = bu.paired(benchmark, penalty, dense, rounds=3 * bu.ROUNDS)
    if pen is None:
        return
    frac = timing.ratio_stat(pen, ref)
    record(
        bu.stat_row("penalty", f"dense step ({bu.MODEL}, batch {bu.BATCH}, fwd+CE+bwd+SGD)", ref),
        bu.stat_row("penalty", f"penalty fwd+bwd ({len(lasso.layers)} layers, {lasso.group_count} groups)", pen),
        table.pct_row("penalty", "penalty / dense step", frac, target=f"≤ {100 * table.TARGET_PENALTY:g}%",
                    met=frac.median <= table.TARGET_PENALTY),
    )
    assert frac.median > 0
