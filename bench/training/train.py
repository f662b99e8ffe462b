"""The training loop of one mode (dense, PruneTrain, a control or a competing method), epoch by epoch.

Both modes run the identical schedule and seed; PruneTrain adds the
group-lasso term from the first step and, every ``interval`` epochs, asks the
engine to reconfigure the model into a smaller dense one, then re-decides the
mini-batch for the memory that freed up.  Everything a row of epochs.csv
holds is measured here; the row is appended when its epoch ends and the
checkpoint written right after it.  The step itself and an epoch's figures are
:mod:`bench.training.step`, a shape's penalty, FLOPs, memory model and step
:mod:`bench.training.trainable` (which ``bench replay`` builds its steps with too),
evaluation :mod:`bench.training.evaluate`, the batch rule and the out-of-memory
retry :mod:`bench.training.batching`, the reconfiguration (plan, surgery,
function change) :mod:`bench.training.reconfigure`, the row, architecture
record and epoch line :mod:`bench.training.rows`, the checkpoint and the
exported model :mod:`bench.training.checkpoint`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import prunetrain_core as pc

from . import checkpoint, methods, trainable
from .batching import BatchPolicy, run_with_oom_retry
from .checkpoint import ModeState, optimizer_to_named
from ..config import RunConfig
from ..machine.timing import sync
from .data import DataSplit, ImageData, Loader
from ..errors import DivergenceError
from .evaluate import Evaluator
from ..runfolder.hooks import NO_HOOKS, Hooks
from ..runfolder.records import EpochLog
from .reconfigure import Reconfiguration
from .rows import architecture, epoch_line, epoch_row, grad_bytes_per_step
from .step import EpochClock, EpochMeter, EpochStats, TrainStep, epoch_stats, make_scaler, new_scaler

@dataclass
class RunContext:
    """What every mode of a run shares; built by :mod:`bench.run`."""

    cfg: RunConfig
    run_id: str
    run_dir: Path
    device: torch.device
    data: DataSplit
    profile_name: str
    device_name: str
    emulated: bool
    budget_bytes: int
    reserve_bytes: int
    headroom: float
    log: EpochLog | None                 # None on ranks other than 0
    on_architecture: Callable[[str, dict], None] = lambda mode, arch: None
    progress: bool = False
    dist: Any = None                     # bench.training.distributed.DistContext when world_size > 1
    hooks: Hooks = NO_HOOKS              # the test suite's fault seam (bench.runfolder.hooks): inert by default
    echo: Callable[[str], None] = lambda line: None  # one line per epoch (epoch_line), on any stream

    @property
    def usable_budget(self) -> int:
        return max(0, self.budget_bytes - self.reserve_bytes)

    @property
    def is_writer(self) -> bool:
        return self.dist is None or self.dist.rank == 0


class ModeTrainer:
    def __init__(self, ctx: RunContext, mode: str):
        self.ctx, self.mode, self.cfg = ctx, mode, ctx.cfg
        self.prune = mode == "prunetrain"
        self.method = methods.for_mode(mode, self.cfg)  # a competing method (bench.training.methods), or None
        self.example = ctx.data.train.normalised(ctx.data.train.images[:2], ctx.device)
        self.state = ModeState()
        # plan, surgery and function change (bench.training.reconfigure), measured on validation images
        self.reconfiguration = Reconfiguration.of_run(self.cfg, mode, self.method, ctx.data, ctx.device, self.example,
                                                      note=lambda text: self.state.note(text), dist=ctx.dist) \
            if self.prune or self.method else None
        self.ckpt_path = ctx.run_dir / "checkpoints" / f"{mode}.pt"
        self.last_change: dict[str, Any] | None = None  # function change measured at this epoch's reconfiguration
        self.scaler = make_scaler(self.cfg.amp, ctx.device)  # one for the whole mode: its scale carries over
        self.emulating = ctx.device.type != "cuda" and bool(ctx.budget_bytes)
        self.policy = BatchPolicy(mode, self.cfg.batch_size, self.cfg.max_batch, self.cfg.world_size,
                                  ctx.usable_budget, ctx.headroom, ctx.profile_name, self.cfg.batch_policy)
        self.evaluator = Evaluator(ctx.device, self.cfg.test_batch, self.policy,
                                   note=lambda text: self.state.note(text, in_training=True))
        self.module: nn.Module
        self.optimizer: torch.optim.Optimizer
        self.step: TrainStep

    # ------------------------------------------------------------------ setup
    def _make_optimizer(self, params) -> torch.optim.Optimizer:
        return trainable.optimizer(self.cfg, params)

    def start(self, model: nn.Module | None = None) -> None:
        """A fresh mode: the same initial weights for both modes (seeded), batch checked against the budget.

        ``model``: a control's initial network (bench.training.controls), already initialised by dense's rule.
        """
        if model is None:
            torch.manual_seed(self.cfg.seed)
            model = pc.build_model(self.cfg.model, self.ctx.data.num_classes)
        model = model.to(self.ctx.device)
        if self.method is not None and self.method.penalised:
            self.state.lam = self.cfg.sparsity  # the method's fixed weight (PruneTrain's λ comes from its ratio)
        self._install(model, self._make_optimizer(model.parameters()))
        self.state.batch = self.cfg.batch_size
        self._decide_batch(at_start=True)
        self._record_architecture(0)

    def resume(self) -> bool:
        """Continue from the last complete epoch's checkpoint; False when there is none yet."""
        blob = checkpoint.read(self.ckpt_path, self.ctx.dist)
        if blob is None:
            return False
        self.state, model, optimizer = checkpoint.restore_mode(blob, self.ckpt_path, self.mode, self.cfg,
                                                               self.ctx.data.num_classes, self.ctx.device,
                                                               self._make_optimizer)
        if self.scaler is not None:  # fp16 continues with the loss scale it had reached
            self.scaler = new_scaler(self.ctx.device.type, checkpoint.scaler_state(blob, self.ckpt_path))
        if self.method is not None:
            self.method.load(blob.get("method"), str(self.ckpt_path))
        self._install(model, optimizer)
        checkpoint.set_rng_state(blob["rng"], self.ckpt_path)
        return True

    def _install(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Adopt a (new) model shape (bench.training.trainable.install)."""
        self.forward_model = None  # drop the old DDP wrapper (and its reducer) before building a new one
        self.installed = trainable.install(model, optimizer, cfg=self.cfg, mode=self.mode, method=self.method,
                                           device=self.ctx.device, example=self.example, lam=self.state.lam,
                                           scaler=self.scaler, dist=self.ctx.dist)
        i = self.installed
        self.module, self.optimizer, self.forward_model, self.step = i.module, optimizer, i.forward_model, i.step
        self.lasso, self.flops, self.memory, self.channels_last = i.penalty, i.flops, i.memory, i.channels_last

    # ------------------------------------------------------------------ batch decisions
    def _decide_batch(self, at_start: bool) -> None:
        """PruneTrain's dynamic mini-batch: largest multiple of the base batch that fits (bench.training.batching)."""
        if not self.cfg.adjust_batch:
            return
        batch, reason = self.policy.after_reshape(self.memory.fixed, self.memory.per_sample_activations,
                                                  at_start=at_start, start_need=self.state.start_need)
        if self.ctx.dist is not None:
            batch = self.ctx.dist.broadcast_object(batch)  # deterministic anyway; rank 0's decision is shared
        self.state.batch = batch
        if at_start:
            self.state.start_need = self.memory.total_for_batch(max(1, batch // self.cfg.world_size))
        self.state.note(f"{batch} ({reason})")

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, epoch: int) -> EpochStats:
        cfg, ctx = self.cfg, self.ctx
        lr = cfg.lr_at(epoch, self.state.batch)  # step schedule × linear scaling with the batch
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.step.penalty_on = cfg.penalised(epoch) if self.method is None else self.method.penalty_on
        rank, world = (ctx.dist.rank, ctx.dist.world_size) if ctx.dist else (0, 1)
        loader = Loader(ctx.data.train, max(1, self.state.batch // world), train=True, device=ctx.device,
                        generator_seed=cfg.seed, rank=rank, world_size=world)
        loader.set_epoch(epoch)
        self.forward_model.train()
        meter = EpochMeter(ctx.device)
        if ctx.dist is not None:
            ctx.dist.take_comm_wait()  # reset the comm hook's timer
        bar = _progress(len(loader), f"{self.mode} epoch {epoch}", ctx.progress)
        half = len(loader) // 2
        # nothing from the hooks unless the test suite asks
        with EpochClock(ctx.device, meter) as clock, ctx.hooks.training(self.mode, epoch, self.module):
            for i, (x, y) in enumerate(loader):
                self._step_with_retry(x, y, meter)
                if i == half:
                    ctx.hooks.kill_point("mid-epoch")
                bar.update(1)
        bar.close()
        self.state.lam = self.step.lam

        def diverged(loss: float) -> None:
            raise DivergenceError(f"{self.mode}: the training loss became {loss} in epoch {epoch} "
                                  f"(lr {lr:g}); lower --lr or --lpr")
        return epoch_stats(meter, clock.elapsed, clock.contention, dist=ctx.dist, device=ctx.device,
                           penalised=self.lasso is not None, predicted_peak=self.memory.total_for_batch,
                           batch=self.state.batch, diverged=diverged)

    def _step_with_retry(self, x: torch.Tensor, y: torch.Tensor, meter: EpochMeter) -> None:
        """One loader batch in optimizer steps of the current batch; lowered and redone after out-of-memory."""
        world = self.ctx.dist.world_size if self.ctx.dist else 1

        def step(xs: torch.Tensor, ys: torch.Tensor) -> None:
            if self.emulating:  # on CUDA the allocator's own cap (set_per_process_memory_fraction) decides
                self.policy.check_emulated(len(xs), self.memory.total_for_batch(len(xs)))
            self.step.warm_up(xs, ys, meter)  # a new shape: cuDNN tunes here, untimed (meter.warmup_s)
            self.step(xs, ys, meter)

        run_with_oom_retry(step, x, y, chunk=lambda: max(1, self.state.batch // world), lower=self._lower_after_oom)

    def _lower_after_oom(self, why: str) -> None:
        """Free what the failed step left, then lower the batch; raise where nothing smaller is possible."""
        self.step.recover()
        self.scaler = self.step.scaler
        lower = self.policy.after_oom(self.state.batch, self.memory.total_for_batch(self.state.batch), why,
                                      distributed=self.ctx.dist is not None)
        self.state.oom_retries += 1
        self.state.note(f"out of memory at {self.state.batch}, retried at {lower}", in_training=True)
        self.state.batch = lower

    def evaluate(self, split: ImageData | None = None) -> tuple[float, float, float]:
        """Loss, accuracy (%) and seconds on ``split`` (default: the test split)."""
        return self.evaluator(self.module, self.ctx.data.test if split is None else split)

    # ------------------------------------------------------------------ reconfiguration
    def reconfigure(self, epoch: int) -> float:
        """Shrink the model (plan on rank 0, same surgery everywhere), then re-decide the batch."""
        sync(self.ctx.device)
        start = time.perf_counter()
        model, self.last_change, proof_time = self.reconfiguration.run(self.module, self.optimizer)
        self._install(model, self.optimizer)
        self.ctx.hooks.kill_point("reconfigure")
        self._decide_batch(at_start=False)
        sync(self.ctx.device)
        elapsed = time.perf_counter() - start - proof_time
        self._record_architecture(epoch)
        self.ctx.hooks.reconfigured(self.ctx.dist.rank if self.ctx.dist is not None else 0, epoch, lambda: {
            "model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
            "optimizer": optimizer_to_named(self.module, self.optimizer),
            "batch": self.state.batch, "lam": self.state.lam})  # the distributed tests compare the ranks
        return elapsed

    def _record_architecture(self, epoch: int) -> None:
        arch = architecture(epoch, self.module, self.flops, self.state.batch, self.channels_last, self.memory,
                            self.last_change)
        self.state.architectures.append(arch)
        self.ctx.on_architecture(self.mode, arch)

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        for _ in self.epochs():
            pass

    def epochs(self):
        """The remaining epochs one at a time (yields after each is recorded): `bench run --interleave`
        alternates the modes epoch by epoch through this."""
        cfg, ctx = self.cfg, self.ctx
        for epoch in range(self.state.epoch + 1, cfg.epochs + 1):
            stats = self.train_epoch(epoch)
            test = self.evaluate()
            val = self.evaluate(ctx.data.val) if ctx.data.val is not None else (None, None, 0)
            # the LR the epoch ran with (set at its start): after an OOM retry lowered the batch mid-epoch,
            # cfg.lr_at() would give a rate that was never used
            batch_used, lr_used = self.state.batch, self.optimizer.param_groups[0]["lr"]
            flops_now = self.flops  # the shape this epoch trained with
            params_now = sum(p.numel() for p in self.module.parameters())
            grad_bytes = grad_bytes_per_step(self.module, ctx.dist)
            self.state.epoch = epoch  # before reconfigure: its batch_reasons entry names this epoch
            self.last_change = None
            reconfig_time = self.reconfigure(epoch) if (cfg.is_reconfiguration_epoch(epoch) if self.prune else (
                self.method is not None and self.method.due(epoch, self.module, self.example))) else 0.0
            row = epoch_row(ctx, self.mode, epoch, stats, test=test, val=val, batch=batch_used, lr=lr_used,
                            reconfig_time=reconfig_time, flops=flops_now, params=params_now,
                            limit_bytes=self.policy.limit_bytes, lam=self.state.lam, grad_bytes=grad_bytes,
                            oom_retries=self.state.oom_retries, change=self.last_change or {})
            if ctx.is_writer:
                ctx.log.append(row)
                self.save_checkpoint()
                dense = self.state.architectures[0]["train_flops_per_image"] if self.state.architectures else None
                ctx.echo(epoch_line(row, cfg.epochs, dense, flops_now.train_per_image,
                                    self.flops.train_per_image if self.last_change is not None else None))
            if ctx.dist is not None:
                ctx.dist.barrier()
            yield epoch

    def save_checkpoint(self) -> None:
        scaler = {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}
        checkpoint.save(self.ckpt_path, model=self.module, optimizer=self.optimizer,
                        extra={"mode": self.mode, **self.state.to_blob(), **scaler,
                               **({"method": self.method.state()} if self.method is not None else {})},
                        before_replace=lambda: self.ctx.hooks.kill_point("checkpoint-write"))


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, unit="step", mininterval=0.5, disable=not enabled)

