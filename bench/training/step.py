"""One training step of one model: autocast, loss scaling, PruneTrain's penalty and its λ.

Kept apart from the loop (:mod:`bench.training.train`) so that the step can be timed on
its own for any model, and so that what happens after the optimizer step has
one place: ``post_step_hooks`` run after every applied update (e.g. a proximal
group-lasso step on the freshly updated weights).  The per-epoch sums the step
feeds live in an :class:`EpochMeter` owned by the caller, not in the step.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

import prunetrain_core as pc

from ..machine.contention import ContentionProbe
from ..machine.timing import resolve_device, sync as _sync
from .memory import reset_cuda_peak, restore_buffers, snapshot_buffers


def compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process so far (dynamo's ``unique_graphs`` counter, bumped
    once per compiled graph: a first compilation and every recompilation alike); 0 where dynamo never ran."""
    import sys

    dynamo = sys.modules.get("torch._dynamo.utils")
    return int(dynamo.counters["stats"]["unique_graphs"]) if dynamo is not None else 0


@dataclass
class EpochMeter:
    """Sums over one epoch's steps, on the device (no host sync per step)."""

    device: torch.device
    loss_sum: torch.Tensor = field(init=False)
    correct: torch.Tensor = field(init=False)
    ratio_sum: torch.Tensor = field(init=False)
    samples: int = 0
    steps: int = 0
    warmup_s: float = 0.0         # untimed warm-ups of new shapes (TrainStep.warm_up): wall clock
    warmup_cpu_s: float = 0.0     # ... and this process's CPU time in them
    compile_s: float = 0.0        # wall clock of warm-ups and steps in which torch.compile compiled a graph
    compile_cpu_s: float = 0.0    # ... and this process's CPU time in them
    compiled_steps: int = 0       # training steps among those (their training part is estimated by the caller)

    def __post_init__(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        self.correct = torch.zeros((), device=self.device, dtype=torch.int64)
        self.ratio_sum = torch.zeros((), device=self.device, dtype=torch.float64)

    def totals(self, comm_wait: float, dist=None) -> list[float]:
        """Loss sum, correct count, penalty-ratio sum and comm wait, summed over processes (``dist``)."""
        t = torch.stack([self.loss_sum, self.correct.double(), self.ratio_sum,
                         torch.tensor(comm_wait, dtype=torch.float64, device=self.device)])
        return (dist.all_reduce_sum(t) if dist is not None else t).tolist()



class EpochClock:
    """The timed part of a training epoch, as a ``with`` block around its steps: the wall clock from the
    first step to the last, synchronised with the device, less the meter's warm-ups and compilations (no
    training, bench.training.step books both), and what the contention probe saw meanwhile.  The CUDA peak
    memory counter restarts with it."""

    def __init__(self, device: torch.device, meter: EpochMeter):
        self.device, self.meter = device, meter
        self.probe = ContentionProbe(device if device.type == "cuda" else None)
        self.elapsed, self.contention, self._start = 0.0, None, 0.0

    def __enter__(self) -> "EpochClock":
        if self.device.type == "cuda":
            reset_cuda_peak(self.device)
        _sync(self.device)
        self.probe.start()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> bool:
        _sync(self.device)
        self.elapsed = time.perf_counter() - self._start - self.meter.warmup_s - self.meter.compile_s
        self.contention = self.probe.stop()
        return False

@dataclass
class EpochStats:
    train_loss: float
    train_acc: float
    lasso_ratio: float
    samples: int
    steps: int
    epoch_time_s: float
    compile_time_s: float
    warmup_time_s: float
    peak_memory_bytes: int
    peak_reserved_bytes: int | None     # CUDA only: what the allocator held (the emulation cap limits this)
    comm_wait_s: float | None = 0.0   # None where not separable (DDP on CUDA)
    contention: Any = None            # bench.machine.contention.Contention: the machine's load during the epoch


def epoch_stats(meter: EpochMeter, elapsed: float, contention: Any, *, dist: Any, device: torch.device,
                penalised: bool, predicted_peak: Callable[[int], int], batch: int,
                diverged: Callable[[float], None]) -> EpochStats:
    """An epoch's figures from its meter: ``elapsed`` is the timed loop's wall clock less the warm-ups and
    compilations, ``contention`` what the probe saw over it; sums over the ranks of ``dist``.  ``diverged``
    hears a loss that is not finite (and raises); ``predicted_peak(per-rank batch)``: the memory model's
    peak, the figure where the device does not measure one (``batch``: the global batch)."""
    world = dist.world_size if dist else 1
    if contention.cpu_time_s is not None:  # the warm-ups' and compilations' CPU time was no training either
        contention = dataclasses.replace(contention, cpu_time_s=contention.cpu_time_s - meter.warmup_cpu_s
                                         - meter.compile_cpu_s)
    # a step that compiled also trained: its training part is a typical step's time, the rest compilation
    trained = meter.steps - meter.compiled_steps
    typical = elapsed / trained if trained > 0 else 0.0
    compile_time = max(0.0, meter.compile_s - meter.compiled_steps * typical)
    elapsed += meter.compile_s - compile_time
    comm_wait = dist.take_comm_wait() if dist is not None else 0.0
    loss_sum, correct, ratio_sum, comm_sum = meter.totals(comm_wait or 0.0, dist)
    comm_wait = None if comm_wait is None else comm_sum / world  # mean over ranks; None: not separable
    samples = meter.samples * world
    if not math.isfinite(loss_sum):
        diverged(loss_sum / max(samples, 1))
    cuda = device.type == "cuda"  # measured there; on the CPU the memory model's prediction
    peak = (torch.cuda.max_memory_allocated(device) if cuda
            else predicted_peak(max(1, batch // world)))
    return EpochStats(
        train_loss=loss_sum / samples, train_acc=100.0 * correct / samples,
        lasso_ratio=ratio_sum / max(meter.steps * world, 1) if penalised else 0.0,
        samples=samples, steps=meter.steps, epoch_time_s=elapsed,
        compile_time_s=compile_time, warmup_time_s=meter.warmup_s, peak_memory_bytes=int(peak),
        peak_reserved_bytes=int(torch.cuda.max_memory_reserved(device)) if cuda else None,
        comm_wait_s=comm_wait, contention=contention)


def channels_last_hazard(model: nn.Module, device=None) -> str | None:
    """Why this model must not train in channels_last on this device, or None.

    torch 2.14's CPU oneDNN kernels crash (segmentation fault, bus error or
    abort) in the backward of a channels_last 1×1 stride-2 convolution with
    2-7 input channels: the projection shortcut of a ResNet whose earlier
    stage was pruned below 8 channels (found by the pruned-shape sweep;
    contiguous tensors are fine).  Rounding channels to multiples of 8 avoids it.
    """
    if resolve_device(device).type != "cpu":
        return None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1) and 1 < m.in_channels < 8:
            return f"{name} is a 1×1 stride-{m.stride[0]} conv with {m.in_channels} input channels"
    return None


def memory_format(model: nn.Module, device: torch.device, channels_last: bool, mode: str) -> tuple[nn.Module, bool]:
    """``model`` in the memory format it trains in, and whether that is channels_last (as asked, where safe)."""
    if not channels_last:
        return model, False
    hazard = channels_last_hazard(model, device)
    if hazard:  # torch 2.14's CPU oneDNN crashes in this backward: train contiguous instead
        warnings.warn(f"{mode}: channels_last turned off for this shape ({hazard}); "
                      "--round-channels 8 avoids such shapes", stacklevel=3)
        return model.to(memory_format=torch.contiguous_format), False
    return model.to(memory_format=torch.channels_last), True


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The dtype a step computes in under ``--amp`` (None: fp32; mixed precision is CUDA only)."""
    if amp == "off" or device.type != "cuda":
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def make_scaler(amp: str, device: torch.device):
    """The fp16 loss scaler, or None where no scaling happens (bf16, off, or not CUDA)."""
    if amp != "fp16" or device.type != "cuda":
        return None
    return new_scaler("cuda")


def new_scaler(device_type: str, state: dict | None = None):
    """A GradScaler (``torch.amp.GradScaler`` from torch 2.3, ``torch.cuda.amp`` before), with ``state`` loaded."""
    if hasattr(torch.amp, "GradScaler"):
        scaler = torch.amp.GradScaler(device_type)
    else:  # torch 2.1/2.2: CUDA only
        scaler = torch.cuda.amp.GradScaler()
    if state:
        scaler.load_state_dict(state)
    return scaler


class TrainStep:
    """forward → cross-entropy (+ λ·penalty) → backward → optimizer step, for one bound model.

    ``lam`` is λ; when None and a ``lasso`` is given, the first step sets it from
    the penalty ratio ``lpr`` at that batch (``reduce_mean`` averages the CE
    over processes first, so every rank gets the same λ).  A step that raises
    (e.g. out of memory) leaves no trace in λ or the meter; :meth:`recover`
    clears what it left in the gradients and the scaler before a retry.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, device: torch.device,
                 amp: str = "off", scaler: torch.amp.GradScaler | None = None,
                 lasso: pc.GroupLasso | None = None, lpr: float = 0.0, lam: float | None = None,
                 reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None = None, channels_last: bool = False,
                 penalty_in_loss: bool = True, module: nn.Module | None = None, warm_compiled: bool = False):
        self.model, self.optimizer, self.device = model, optimizer, device
        self.module = module if module is not None else model  # the bare model under DDP / compile wrappers
        # torch.compile without DDP: warm-ups run the compiled model, so each shape compiles there, untimed
        self.warm_model = self.model if warm_compiled else self.module
        self._buffers = list(self.module.buffers())
        self._buffer_copy = [b.detach().clone() for b in self._buffers]   # as before the step being run
        self.warmed: set[tuple[int, ...]] = set()
        dtype = autocast_dtype(amp, device)
        self.autocast, self.dtype = dtype is not None, dtype or torch.float16
        self.scaler = scaler
        self.lasso, self.lpr, self.lam, self.reduce_mean = lasso, lpr, lam, reduce_mean
        self.channels_last = channels_last
        self.penalty_in_loss = penalty_in_loss  # False: λ and the ratio only; a post-step hook applies the penalty
        self.penalty_on = True         # False after the penalty window (--lasso-until): CE alone
        self.post_step_hooks: list[Callable[[], None]] = []

    def __call__(self, x: torch.Tensor, y: torch.Tensor, meter: EpochMeter | None = None) -> None:
        graphs, start, cpu = compiled_graphs(), time.perf_counter(), time.process_time()
        if self._buffers:   # one multi-tensor copy: what :meth:`recover` puts back after a failed step
            with torch.no_grad():
                torch._foreach_copy_(self._buffer_copy, self._buffers)
        self._step(x, y, meter)
        if meter is not None and compiled_graphs() != graphs:   # torch.compile (re)compiled inside this step
            _sync(self.device)
            meter.compile_s += time.perf_counter() - start
            meter.compile_cpu_s += time.process_time() - cpu
            meter.compiled_steps += 1

    def _step(self, x: torch.Tensor, y: torch.Tensor, meter: EpochMeter | None) -> None:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            out = self.model(x)
            ce = F.cross_entropy(out.float(), y)
        loss, lam, ratio = ce, self.lam, None
        if self.lasso is not None and self.penalty_on:
            # the penalty in fp32, added before any loss scaling, so scaling treats it like the CE
            with torch.set_grad_enabled(self.penalty_in_loss):
                penalty = self.lasso.penalty()
            if lam is None:
                lam = self.first_lambda(ce, penalty)
            if self.penalty_in_loss:
                loss = ce + lam * penalty
            with torch.no_grad():
                ratio = lam * penalty / (ce + lam * penalty)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.lam = lam  # the update is done: only now does it count (a post-step hook may use it)
        for hook in self.post_step_hooks:
            hook()
        if meter is not None:
            with torch.no_grad():
                if ratio is not None:
                    meter.ratio_sum += ratio.double()
                meter.loss_sum += ce.detach().double() * len(y)
                meter.correct += (out.argmax(1) == y).sum()
            meter.samples += len(y)
            meter.steps += 1

    def warm_up(self, x: torch.Tensor, y: torch.Tensor, meter: EpochMeter | None = None) -> float:
        """Seconds spent on a forward + backward of a shape this step has not run yet (0.0 when it has).

        The wall and CPU seconds are also added to ``meter`` (``warmup_s``, ``warmup_cpu_s``).

        cuDNN autotunes each new shape in benchmark mode, and the first calls pay
        CUDA's start-up costs: here, so that the timed step does not.  The bare
        module runs (no collectives), or the compiled one (``warm_compiled``): then
        torch.compile compiles each shape here -- the short last batch too -- and
        a warm-up that compiled is booked as compile time (``meter.compile_s``),
        not warm-up.  BatchNorm statistics are restored and the gradients
        dropped, so training is exactly as without it.
        """
        key = tuple(x.shape)
        if key in self.warmed:
            return 0.0
        _sync(self.device)
        start, cpu, graphs = time.perf_counter(), time.process_time(), compiled_graphs()
        buffers, modes = snapshot_buffers(self.module)
        try:
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
                loss = F.cross_entropy(self.warm_model(x).float(), y)
            loss.backward()
            del loss
        finally:
            restore_buffers(self.module, buffers, modes)
            self.optimizer.zero_grad(set_to_none=True)
        _sync(self.device)
        self.warmed.add(key)
        seconds = time.perf_counter() - start
        if meter is not None and compiled_graphs() != graphs:
            meter.compile_s += seconds
            meter.compile_cpu_s += time.process_time() - cpu
        elif meter is not None:
            meter.warmup_s += seconds
            meter.warmup_cpu_s += time.process_time() - cpu
        return seconds

    def recover(self) -> None:
        """Undo what a step that failed half-way left behind, so the retry starts clean.

        The gradients go; a GradScaler that failed between ``unscale_`` and
        ``update`` would refuse the next step ("unscale_() has already been
        called"), so it is replaced by a fresh one with the same scale and growth
        tracker (the public state_dict, not its private per-optimizer stage).
        BatchNorm's running statistics (and batch counters) go back to what they
        were before the step: its forward pass had already updated them, and the
        retry would count the same images twice.
        """
        if self._buffers:
            with torch.no_grad():
                torch._foreach_copy_(self._buffers, self._buffer_copy)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None and self.scaler.is_enabled():
            self.scaler = new_scaler(self.device.type, self.scaler.state_dict())

    def first_lambda(self, ce: torch.Tensor, penalty: torch.Tensor) -> float:
        """λ from the first mini-batch at the initial weights (the whole global batch under DDP)."""
        ce0 = ce.detach().double()
        if self.reduce_mean is not None:
            ce0 = self.reduce_mean(ce0)
        return pc.lambda_from_ratio(self.lpr, float(ce0), float(penalty.detach()))
