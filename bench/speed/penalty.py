"""Section ``penalty``: the group-lasso penalty's forward + backward against one dense training step."""
from __future__ import annotations

import torch

import prunetrain_core as pc

from ..training.shapes import fixed_batch_step, input_size, random_batch
from .table import TARGET_PENALTY, Row, pct_row
from ..machine.timing import Case, Stat, calibrate_inner, interleaved, ratio_stat, resolve_device


def measure_penalty(model_name: str = "resnet32", batch: int = 128, device=None, rounds: int = 15,
                    warmup: int = 1) -> list[Row]:
    """Penalty forward+backward vs one dense step; and a step with the penalty vs without (noisier)."""
    device = resolve_device(device)
    size = input_size(model_name)
    torch.manual_seed(0)
    model = pc.build_model(model_name, 10).to(device)
    x, y = random_batch(batch, size, device=device)
    lasso = pc.GroupLasso(model, x[:2])
    dense = fixed_batch_step(model, x, y)
    with_penalty = fixed_batch_step(model, x, y, lasso=lasso)

    def penalty() -> None:
        lasso.penalty().backward()

    inner = calibrate_inner(penalty, device=device)
    model.zero_grad(set_to_none=True)
    s = interleaved({"dense": Case(dense), "penalty": Case(penalty, inner=inner), "step+penalty": Case(with_penalty)},
                    rounds, warmup=warmup, device=device)
    dense_t = Stat.of(s["dense"])
    pen_t = Stat.of(s["penalty"])
    frac = ratio_stat(s["penalty"], s["dense"])
    diff = Stat.of([(b - a) / a for a, b in zip(s["dense"], s["step+penalty"])])
    groups = lasso.group_count
    return [
        Row("penalty", f"dense step ({model_name}, fwd+CE+bwd+SGD)", dense_t.median * 1e3, "ms", dense_t.iqr * 1e3),
        Row("penalty", f"penalty fwd+bwd ({len(lasso.layers)} layers, {groups} groups)", pen_t.median * 1e3, "ms",
            pen_t.iqr * 1e3),
        pct_row("penalty", "penalty / dense step", frac, target=f"≤ {100 * TARGET_PENALTY:g}%",
                met=frac.median <= TARGET_PENALTY),
        pct_row("penalty", "(step with penalty − step) / step", diff,
                note="same thing inside the real step; noisier (difference of two steps)"),
    ]
