"""Section ``harness``: ``ModeTrainer.train_epoch`` against a bare PyTorch loop, and the per-epoch checkpoint."""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import prunetrain_core as pc

from ..config import RunConfig
from ..training import trainable
from ..training.data import Loader, load_data
from ..training.train import ModeTrainer, RunContext
from .table import TARGET_HARNESS, Row, pct_row
from ..machine.timing import Case, Stat, interleaved, resolve_device, steps_per_epoch, sync


#: validation images held out of the synthetic set (the held-out batch of a reconfiguration)
VAL = 256


def harness_context(model_name: str, batch: int, steps: int, device=None, mode: str = "dense",
                    progress: bool = True, run_dir: Path | None = None) -> RunContext:
    """A RunContext over ``batch × steps`` synthetic images, as ``bench run`` builds it (no records file)."""
    device = resolve_device(device)
    # a validation split as `bench run` holds out: PruneTrain measures its reconfigurations there
    data = load_data("synthetic", subset=batch * steps if batch * steps < 4000 else 0, val=VAL)
    cfg = RunConfig(model=model_name, data="synthetic", subset=len(data.train), modes=[mode], epochs=1,
                    batch_size=batch, max_batch=batch, adjust_batch=False, device=str(device), val=VAL, held_out=VAL)
    run_dir = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="bench-speed-"))
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return RunContext(cfg=cfg, run_id="speed", run_dir=run_dir, device=device, data=data, profile_name="speed",
                      device_name=str(device), emulated=False, budget_bytes=1 << 50, reserve_bytes=0, headroom=1.0,
                      log=None, progress=progress)


class BareLoop:
    """The minimal loop: the same Loader, model, optimizer settings; forward/CE/backward/SGD and nothing else."""

    def __init__(self, ctx: RunContext, model: nn.Module | None = None):
        cfg = ctx.cfg
        torch.manual_seed(cfg.seed)
        self.model = model if model is not None else pc.build_model(cfg.model, ctx.data.num_classes).to(ctx.device)
        self.opt = trainable.optimizer(cfg, self.model.parameters())
        self.loader = Loader(ctx.data.train, cfg.batch_size, train=True, device=ctx.device,
                             generator_seed=cfg.seed)
        self.device = ctx.device

    def epoch(self, epoch: int) -> None:
        self.model.train()
        self.loader.set_epoch(epoch)
        for x, y in self.loader:
            loss = F.cross_entropy(self.model(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        sync(self.device)


def tiny_model(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, num_classes))


def measure_harness(model_name: str = "resnet32", batch: int = 128, steps: int = 8, device=None, rounds: int = 5,
                    tiny_rounds: int = 15, warmup: int = 1) -> list[Row]:
    """ModeTrainer.train_epoch (dense) vs a bare loop: end to end, and the absolute per-step cost."""
    device = resolve_device(device)
    ctx = harness_context(model_name, batch, steps, device=device, mode="dense", progress=True)
    trainer = ModeTrainer(ctx, "dense")
    trainer.start()
    bare = BareLoop(ctx)
    n_steps = len(bare.loader)
    sink = io.StringIO()
    counter = {"h": 0, "b": 0}

    def harness_epoch() -> None:
        counter["h"] += 1
        with contextlib.redirect_stderr(sink):   # the progress bar is drawn, into a buffer
            trainer.train_epoch(counter["h"])

    def bare_epoch() -> None:
        counter["b"] += 1
        bare.epoch(counter["b"])

    s = interleaved({"harness": Case(harness_epoch), "bare": Case(bare_epoch)}, rounds, warmup=warmup,
                    device=device)
    over = Stat.of([h / b - 1 for h, b in zip(s["harness"], s["bare"])])
    bare_step = Stat.of(s["bare"]).scaled(1 / n_steps)
    harness_step = Stat.of(s["harness"]).scaled(1 / n_steps)

    # per epoch: the checkpoint written after every epoch (of the real model), against the estimated full epoch
    ckpt = Stat.of(interleaved({"ckpt": Case(trainer.save_checkpoint)}, max(3, rounds), warmup=warmup,
                               device=device)["ckpt"])

    # the harness's own per-step cost, free of the model's noise: the same two loops around a tiny model
    tiny = tiny_model().to(device)
    trainer._install(tiny, trainer._make_optimizer(tiny.parameters()))
    tiny_bare = BareLoop(ctx, model=tiny_model().to(device))
    t = interleaved({"harness": Case(harness_epoch), "bare": Case(lambda: tiny_bare.epoch(0))},
                    tiny_rounds, warmup=warmup, device=device)
    per_step = Stat.of([(h - b) / n_steps for h, b in zip(t["harness"], t["bare"])])
    abs_frac = per_step.median / bare_step.median

    epoch_s = bare_step.median * steps_per_epoch(batch)
    return [
        Row("harness", f"bare loop step ({model_name}, same Loader)", bare_step.median * 1e3, "ms", bare_step.iqr * 1e3),
        Row("harness", "ModeTrainer.train_epoch step (dense)", harness_step.median * 1e3, "ms", harness_step.iqr * 1e3),
        pct_row("harness", f"harness overhead, end to end ({n_steps} steps × {rounds} rounds)", over,
                target=f"≤ {100 * TARGET_HARNESS:g}%", met=over.median <= TARGET_HARNESS,
                note="noise of two full-model epochs"),
        Row("harness", "harness cost per step, absolute (tiny model)", per_step.median * 1e3, "ms", per_step.iqr * 1e3),
        Row("harness", "harness cost per step / bare step", 100 * abs_frac, "%", 100 * per_step.iqr / bare_step.median,
            target=f"≤ {100 * TARGET_HARNESS:g}%", met=abs_frac <= TARGET_HARNESS,
            note="precise estimate: tiny-model difference ÷ real step"),
        Row("harness", "checkpoint per epoch / epoch estimate", 100 * ckpt.median / epoch_s, "%",
            100 * ckpt.iqr / epoch_s, note=f"{ckpt.median * 1e3:.0f} ms per checkpoint, once per epoch"),
    ]
