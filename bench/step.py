"""One training step of one model: autocast, loss scaling, PruneTrain's penalty and its λ.

Kept apart from the loop (:mod:`bench.train`) so that the step can be timed on
its own for any model, and so that what happens after the optimizer step has
one place: ``post_step_hooks`` run after every applied update (e.g. a proximal
group-lasso step on the freshly updated weights).  The per-epoch sums the step
feeds live in an :class:`EpochMeter` owned by the caller, not in the step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import prunetrain_core as pc


@dataclass
class EpochMeter:
    """Sums over one epoch's steps, on the device (no host sync per step)."""

    device: torch.device
    loss_sum: torch.Tensor = field(init=False)
    correct: torch.Tensor = field(init=False)
    ratio_sum: torch.Tensor = field(init=False)
    samples: int = 0
    steps: int = 0

    def __post_init__(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        self.correct = torch.zeros((), device=self.device, dtype=torch.int64)
        self.ratio_sum = torch.zeros((), device=self.device, dtype=torch.float64)

    def totals(self, comm_wait: float, dist=None) -> list[float]:
        """Loss sum, correct count, penalty-ratio sum and comm wait, summed over processes (``dist``)."""
        t = torch.stack([self.loss_sum, self.correct.double(), self.ratio_sum,
                         torch.tensor(comm_wait, dtype=torch.float64, device=self.device)])
        return (dist.all_reduce_sum(t) if dist is not None else t).tolist()


def make_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler | None:
    """The fp16 loss scaler, or None where no scaling happens (bf16, off, or not CUDA)."""
    if amp != "fp16" or device.type != "cuda":
        return None
    return torch.amp.GradScaler("cuda")


class TrainStep:
    """forward → cross-entropy (+ λ·penalty) → backward → optimizer step, for one bound model.

    ``lam`` is λ; when None and a ``lasso`` is given, the first call sets it from
    the penalty ratio ``lpr`` at that batch (``reduce_mean`` averages the CE
    over processes first, so every rank gets the same λ).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, device: torch.device,
                 amp: str = "off", scaler: torch.amp.GradScaler | None = None,
                 lasso: pc.GroupLasso | None = None, lpr: float = 0.0, lam: float | None = None,
                 reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None = None, channels_last: bool = False,
                 penalty_in_loss: bool = True):
        self.model, self.optimizer, self.device = model, optimizer, device
        self.autocast = amp != "off" and device.type == "cuda"
        self.dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        self.scaler = scaler if self.autocast and amp == "fp16" else None
        self.lasso, self.lpr, self.lam, self.reduce_mean = lasso, lpr, lam, reduce_mean
        self.channels_last = channels_last
        self.penalty_in_loss = penalty_in_loss  # False: λ and the ratio only; a post-step hook applies the penalty
        self.nan_loss = False          # test hook (bench.faults): make the loss NaN
        self.post_step_hooks: list[Callable[[], None]] = []

    def __call__(self, x: torch.Tensor, y: torch.Tensor, meter: EpochMeter | None = None) -> None:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            out = self.model(x)
            ce = F.cross_entropy(out.float(), y)
        if self.nan_loss:
            ce = ce * float("nan")
        loss = ce
        if self.lasso is not None:
            # the penalty in fp32, added before any loss scaling, so scaling treats it like the CE
            with torch.set_grad_enabled(self.penalty_in_loss):
                penalty = self.lasso.penalty()
            if self.lam is None:
                self.lam = self.first_lambda(ce, penalty)
            if self.penalty_in_loss:
                loss = ce + self.lam * penalty
            if meter is not None:
                with torch.no_grad():
                    reg = self.lam * penalty
                    meter.ratio_sum += (reg / (ce + reg)).double()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        for hook in self.post_step_hooks:
            hook()
        if meter is not None:
            with torch.no_grad():
                meter.loss_sum += ce.detach().double() * len(y)
                meter.correct += (out.argmax(1) == y).sum()
            meter.samples += len(y)
            meter.steps += 1

    def first_lambda(self, ce: torch.Tensor, penalty: torch.Tensor) -> float:
        """λ from the first mini-batch at the initial weights (the whole global batch under DDP)."""
        ce0 = ce.detach().double()
        if self.reduce_mean is not None:
            ce0 = self.reduce_mean(ce0)
        return pc.lambda_from_ratio(self.lpr, float(ce0), float(penalty.detach()))
