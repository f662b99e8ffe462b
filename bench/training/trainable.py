"""A model shape made trainable: the penalty its mode trains with, and the step that trains it.

``bench run`` (:class:`bench.training.train.ModeTrainer`, at the start and after every reconfiguration)
and ``bench replay`` (``StepRunner``, one recorded shape at a time) both build a shape's step here, so the
two cannot drift apart on what a mode's step is: which penalty it carries (PruneTrain's group lasso, a
competing method's s·Σ|γ|, or none), whether that penalty is a subgradient in the loss or a proximal step
after it, and which optimizer settings it steps with.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

import prunetrain_core as pc

from ..config import RunConfig
from .batching import halve_on_oom
from .memory import PROBE_BATCH, MemoryEstimate, measure_training_memory, probe_batch
from .step import TrainStep, autocast_dtype, memory_format

Penalty = Any  # pc.GroupLasso or pc.methods.BNScaleL1: both give penalty() and, the lasso, proximal_step()


def optimizer(cfg: RunConfig, params) -> torch.optim.Optimizer:
    """The run's SGD: every mode and every replayed shape steps with these settings."""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def penalty_of(mode: str, cfg: RunConfig, model: nn.Module, example: torch.Tensor, method) -> Penalty | None:
    """PruneTrain's group lasso; a competing method's L1 on the BatchNorm scales (``method.penalised``,
    slimming and Early-Bird); None for dense, the controls and random pruning.  Whether it applies in a
    given epoch is the step's ``penalty_on`` (the penalty window, or the method's single pruning)."""
    if mode == "prunetrain":
        return pc.GroupLasso(model, example, groups=cfg.penalise, weighting=cfg.group_weight)
    if method is not None and method.penalised:
        return pc.methods.BNScaleL1(model)
    return None


def is_proximal(mode: str, cfg: RunConfig) -> bool:
    """PruneTrain's ``--lasso proximal`` soft-thresholds after the step; every other penalty (a competing
    method's L1 on γ, as its paper applies it) is a subgradient in the loss, whatever PruneTrain's setting."""
    return mode == "prunetrain" and cfg.lasso == "proximal"


def train_step(model: nn.Module, opt: torch.optim.Optimizer, cfg: RunConfig, mode: str, device: torch.device, *,
               penalty: Penalty | None, lam: float | None, scaler=None, channels_last: bool = False,
               module: nn.Module | None = None, reduce_mean: Callable | None = None,
               warm_compiled: bool = False) -> TrainStep:
    """The step of ``mode`` on ``model`` (``module``: the bare model under DDP / compile wrappers)."""
    proximal = penalty is not None and is_proximal(mode, cfg)
    step = TrainStep(model, opt, device=device, amp=cfg.amp, scaler=scaler, lasso=penalty, lpr=cfg.lpr, lam=lam,
                     reduce_mean=reduce_mean, channels_last=channels_last, penalty_in_loss=not proximal,
                     module=module, warm_compiled=warm_compiled)
    if proximal:
        def soft_threshold() -> None:
            """Block soft-thresholding with the subgradient's step under momentum, lr·λ/(1−momentum)."""
            if step.penalty_on:
                lr = opt.param_groups[0]["lr"]
                penalty.proximal_step(pc.proximal_step_size(lr, step.lam, cfg.momentum),
                                      keep_bn_scale=cfg.keep_bn_scale)
        step.post_step_hooks.append(soft_threshold)
    return step


@dataclass
class Installed:
    """One shape as ``ModeTrainer`` trains it: the bare model, its wrappers, penalty, FLOPs, memory, step."""

    module: nn.Module
    forward_model: nn.Module      # under DDP and/or torch.compile; the bare module otherwise
    channels_last: bool
    penalty: Penalty | None
    flops: pc.FlopCount
    memory: MemoryEstimate
    step: TrainStep


def install(model: nn.Module, opt: torch.optim.Optimizer, *, cfg: RunConfig, mode: str, method,
            device: torch.device, example: torch.Tensor, lam: float | None, scaler, dist=None) -> Installed:
    """Adopt a (new) model shape: memory format, penalty groups, FLOPs, memory model, wrappers and step."""
    model, channels_last = memory_format(model, device, cfg.channels_last, mode)
    pc.align_optimizer_state(opt)  # the format change moved the parameters, not their momentum
    penalty = penalty_of(mode, cfg, model, example, method)
    flops = pc.count_flops(model, example)
    amp = autocast_dtype(cfg.amp, device)  # the memory model sees the activations the step keeps
    memory = halve_on_oom(lambda n: measure_training_memory(
        model, probe_batch(example, n), optimizer=opt, autocast_dtype=amp), PROBE_BATCH)
    forward_model = _wrap(model, cfg, dist)
    reduce_mean = None
    if dist is not None:
        def reduce_mean(t: torch.Tensor) -> torch.Tensor:
            return dist.all_reduce_sum(t.reshape(1))[0] / dist.world_size
    step = train_step(forward_model, opt, cfg, mode, device, penalty=penalty, lam=lam, scaler=scaler,
                      channels_last=channels_last, module=model, reduce_mean=reduce_mean,
                      warm_compiled=cfg.compile and dist is None)
    return Installed(model, forward_model, channels_last, penalty, flops, memory, step)


def _wrap(model: nn.Module, cfg: RunConfig, dist) -> nn.Module:
    if dist is not None:
        model = dist.wrap(model)
    if cfg.compile:
        model = torch.compile(model, dynamic=False)
        _room_for_recompiles(cfg)
    return model


def _room_for_recompiles(cfg: RunConfig) -> None:
    """Let dynamo keep a compiled graph per model shape and batch size for the whole run.

    Each mode's model shares its classes' ``forward`` code with the other mode's
    and with every earlier shape; dynamo keeps at most ``recompile_limit`` (8)
    graphs per code object and then silently runs it eagerly.  Compiled with
    static shapes, a shape needs two (the full and the short last batch): dense
    one shape, PruneTrain one per reconfiguration and the first.  Clearing the
    cache instead (``torch._dynamo.reset()``) would throw away the other mode's
    graphs under ``--interleave`` and recompile them inside its timed epoch.
    """
    import torch._dynamo.config as dynamo_config

    shapes = 2 + (cfg.epochs // max(1, cfg.interval)) + 1
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 2 * shapes + 2)
