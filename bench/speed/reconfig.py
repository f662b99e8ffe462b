"""Section ``reconfig``: ``reconfigure()`` (and the harness's whole reconfiguration) against an epoch estimate."""
from __future__ import annotations

from typing import Any, Sequence

import torch

import prunetrain_core as pc

from ..training.train import ModeTrainer
from .harness import harness_context
from ..training.shapes import fixed_batch_step, copy_with_optimizer, input_size, random_batch, with_momentum, zeroed_model
from .table import TARGET_RECONFIG, Row, pct_row
from ..machine.timing import Case, Stat, interleaved, ratio_stat, resolve_device, steps_per_epoch


def measure_reconfig(model_names: Sequence[str] = ("resnet32", "resnet50"), batch: int = 128, device=None,
                     rounds: int = 5, keep: float = 0.6, harness: bool = True, warmup: int = 1) -> list[Row]:
    """reconfigure() with an optimizer on a ~40%-zeroed model, vs an epoch estimated from the step time."""
    device = resolve_device(device)
    rows: list[Row] = []
    for name in model_names:
        with_harness = harness and name == model_names[0]
        size = input_size(name)
        base = zeroed_model(name, keep).to(device)
        example = torch.zeros(2, 3, size, size, device=device)
        opt = with_momentum(base)
        before = sum(p.numel() for p in base.parameters())
        x, y = random_batch(batch, size, device=device)
        torch.manual_seed(0)
        step = fixed_batch_step(pc.build_model(name, 10).to(device), x, y)

        def engine_setup():
            return copy_with_optimizer(base, opt)

        def engine(model, optimizer):
            return pc.reconfigure(model, example, optimizer=optimizer)

        cases = {"step": Case(step), "engine": Case(engine, setup=engine_setup)}
        trainer_holder: dict[str, Any] = {}
        if with_harness:
            trainer_holder["ctx"] = harness_context(name, batch, steps=1, device=device, mode="prunetrain")

            def harness_setup():
                m, o = copy_with_optimizer(base, opt)
                trainer = ModeTrainer(trainer_holder["ctx"], "prunetrain")
                trainer.state.batch = batch
                trainer._install(m, o)
                pc.flops._CACHE.clear()   # a real reconfiguration meets a new shape: count afresh
                return (trainer,)

            cases["harness"] = Case(lambda trainer: trainer.reconfigure(1), setup=harness_setup)
        s = interleaved(cases, rounds, warmup=warmup, device=device)
        after = sum(p.numel() for p in engine(*engine_setup()).parameters())
        steps = steps_per_epoch(batch)
        epoch = [t * steps for t in s["step"]]
        st = Stat.of(s["step"])
        rows.append(Row("reconfig", f"{name}: step (batch {batch})", st.median * 1e3, "ms", st.iqr * 1e3))
        rows.append(Row("reconfig", f"{name}: epoch estimate ({steps} × step)", st.median * steps, "s",
                        st.iqr * steps, note="estimated from the step time, full CIFAR-10 (50k)"))
        e = Stat.of(s["engine"])
        rows.append(Row("reconfig", f"{name}: reconfigure() with SGD state", e.median, "s", e.iqr,
                        note=f"params {before:,} → {after:,} ({100 * (1 - keep):.0f}% of channels zeroed)"))
        frac = ratio_stat(s["engine"], epoch)
        rows.append(pct_row("reconfig", f"{name}: reconfigure() / epoch", frac,
                            target=f"≤ {100 * TARGET_RECONFIG:g}%", met=frac.median <= TARGET_RECONFIG))
        if with_harness:
            h = Stat.of(s["harness"])
            frac_h = ratio_stat(s["harness"], epoch)
            rows.append(Row("reconfig", f"{name}: harness reconfiguration (+lasso, FLOPs, memory)", h.median, "s",
                            h.iqr))
            rows.append(pct_row("reconfig", f"{name}: harness reconfiguration / epoch", frac_h,
                                target=f"≤ {100 * TARGET_RECONFIG:g}%", met=frac_h.median <= TARGET_RECONFIG))
    return rows
