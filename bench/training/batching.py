"""PruneTrain's dynamic mini-batch rule (pure functions, no torch).

PruneTrain's third technique: as pruning removes channels, one training
iteration needs less memory, so the mini-batch can grow and the epoch needs
fewer, better-utilised steps.  The original code never shipped it; this is
the rule the benchmark uses.

Memory model: ``need(b) = fixed + per_sample * b`` bytes (parameters, grads
and optimizer state are fixed; activations grow linearly with the batch), from
:func:`bench.training.memory.measure_training_memory` (a forward pass at one batch: its activations
scale linearly with the batch).  Only ``headroom * budget`` bytes are
usable; the rest absorbs what the model leaves out (allocator rounding,
fragmentation, cuDNN workspaces, transient gradient buffers).

Rule (:func:`choose_batch`), with ``B0`` the base batch of the profile/CLI:

1. Grow: the largest multiple ``b = k * B0`` (``k >= 1``) with
   ``need(b) <= headroom * budget`` and ``b <= max_batch``.
2. Lower: when ``B0`` itself does not fit (or exceeds ``max_batch``), halve:
   the largest ``b = B0 // 2**j`` (integer halving, at least ``min_batch``)
   that fits.  Halving keeps batch sizes few and regular (a cleaner learning
   rate schedule, and no odd sizes that GPUs run slowly) and matches what
   :func:`lower_after_oom` does after an out-of-memory error.
3. Nothing fits even at ``min_batch``: ``fits=False`` with the predicted need;
   the caller stops with :class:`bench.errors.OutOfMemoryBudget`
   (:meth:`BatchPolicy.after_reshape`).

The learning rate follows the linear scaling rule: ``lr = lr0 * b / B0``
(``BatchDecision.lr_scale``).

Out of memory (:func:`run_with_oom_retry`): a step that runs out of memory is
redone in smaller slices at the batch :func:`lower_after_oom` gives, until it
fits or nothing smaller is left.  Everything here but that routine is pure.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Optional, TypeVar

from bench.errors import OutOfMemoryBudget

T = TypeVar("T")

__all__ = [
    "BatchDecision",
    "BatchPolicy",
    "choose_batch",
    "lower_after_oom",
    "predicted_need",
    "EmulatedOutOfMemory",
    "is_out_of_memory",
    "run_with_oom_retry",
    "halve_on_oom",
    "elsewhere_on_oom",
]


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class BatchDecision:
    """The chosen batch, its LR multiplier, why, whether it fits, and its predicted bytes."""

    batch: int
    lr_scale: float
    reason: str
    fits: bool
    predicted_bytes: int
    usable_bytes: int
    base_batch: int

    def to_dict(self) -> dict:
        return asdict(self)


def predicted_need(batch: int, need_fixed: float, need_per_sample: float) -> int:
    """``need(b) = fixed + per_sample * b`` in whole bytes (rounded up)."""
    return int(math.ceil(need_fixed + need_per_sample * batch))


def memory_limit(budget: float, headroom: float) -> int:
    """Bytes a step may need under the rule: ``headroom`` × the usable budget (a budget of 0, unset, counts as 1)."""
    return int(headroom * (budget or 1))


def choose_batch(
    base_batch: int,
    need_fixed: float,
    need_per_sample: float,
    budget: float,
    headroom: float = 0.9,
    max_batch: Optional[int] = None,
    min_batch: int = 1,
) -> BatchDecision:
    """Apply the rule of the module docstring; ``max_batch=None`` means memory is the only cap."""
    if base_batch < 1 or min_batch < 1:
        raise ValueError(f"base_batch and min_batch must be >= 1, got {base_batch}, {min_batch}")
    if budget <= 0 or not 0 < headroom <= 1:
        raise ValueError(f"need budget > 0 and 0 < headroom <= 1, got {budget}, {headroom}")
    if need_fixed < 0 or need_per_sample < 0:
        raise ValueError("memory needs must be >= 0")
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    usable = memory_limit(budget, headroom)

    def decision(b: int, reason: str, fits: bool = True) -> BatchDecision:
        return BatchDecision(
            batch=b,
            lr_scale=b / base_batch,
            reason=reason,
            fits=fits,
            predicted_bytes=predicted_need(b, need_fixed, need_per_sample),
            usable_bytes=usable,
            base_batch=base_batch,
        )

    def fits(b: int) -> bool:
        return predicted_need(b, need_fixed, need_per_sample) <= usable and (max_batch is None or b <= max_batch)

    if fits(base_batch):
        # Largest k allowed by memory and by the cap.
        room = usable - need_fixed
        k_mem = math.inf if need_per_sample == 0 else math.floor(room / (need_per_sample * base_batch))
        k_cap = math.inf if max_batch is None else max_batch // base_batch
        k = min(k_mem, k_cap)
        if k == math.inf:                         # nothing grows with the batch and no cap: keep the base
            return decision(base_batch, f"base batch {base_batch}: memory does not grow with the batch")
        k = max(1, int(k))
        while k > 1 and not fits(k * base_batch):  # guard against rounding at the boundary
            k -= 1
        b = k * base_batch
        if k == 1:
            why = "no room for 2x" if k_cap >= 2 else f"max_batch {max_batch}"
            return decision(b, f"base batch {b} ({why})")
        limit = "max_batch" if k_cap <= k_mem else "memory"
        return decision(b, f"grown to {k}x base = {b}, limited by {limit} "
                           f"({_mib(predicted_need(b, need_fixed, need_per_sample))} of {_mib(usable)} usable)")

    why = (f"base batch {base_batch} exceeds max_batch {max_batch}" if max_batch is not None and base_batch > max_batch
           else f"base batch {base_batch} needs {_mib(predicted_need(base_batch, need_fixed, need_per_sample))} "
                f"> {_mib(usable)} usable")
    b = base_batch
    floor = min(min_batch, base_batch)
    while b > floor:
        b = max(b // 2, floor)
        if fits(b):
            return decision(b, f"lowered to {b}: {why}")
    return decision(b, f"nothing fits: batch {b} needs "
                       f"{_mib(predicted_need(b, need_fixed, need_per_sample))} > {_mib(usable)} usable", fits=False)


def lower_after_oom(batch: int, base_batch: int, min_batch: int = 1) -> Optional[int]:
    """The batch to retry with after an out-of-memory error, or None at the minimum.

    Above the base batch: the largest multiple of ``base_batch`` not above
    ``batch // 2`` (at least ``base_batch``), so grown batches stay multiples
    of the base; at or below it: halve, down to ``min_batch``.
    """
    if batch <= max(min_batch, 1):
        return None
    if batch > base_batch:
        return max(base_batch, (batch // 2) // base_batch * base_batch)
    return max(batch // 2, min_batch, 1)


@dataclass(frozen=True)
class BatchPolicy:
    """One mode's batch decisions in global batches (all processes together), as a run applies the rule.

    ``after_reshape`` at the start and after each reconfiguration, ``after_oom``
    after an out-of-memory error; each returns the new batch and the reason to
    record, or raises :class:`OutOfMemoryBudget` with one line naming the budget.
    """

    mode: str
    base_batch: int
    max_batch: int
    world_size: int
    usable_bytes: int
    headroom: float
    budget_name: str
    policy: str = "freed"   # freed: grow only into memory pruning freed | fill: every mode fills the budget

    @property
    def limit_bytes(self) -> int:
        """What the rule allows a step before the freed policy's cap: the record's ``memory_limit_bytes``."""
        return memory_limit(self.usable_bytes, self.headroom)

    def after_reshape(self, need_fixed: float, need_per_sample: float, *, at_start: bool,
                      start_need: int = 0) -> tuple[int, str]:
        """``start_need``: bytes one process needed at the starting batch (the "freed" policy's cap)."""
        world = self.world_size
        base = self.base_batch // world  # per process
        budget = self.usable_bytes or 1
        if self.policy == "freed" and not at_start and start_need:
            budget = min(budget, start_need / self.headroom + 1)  # never more than the dense model needed
        decision = choose_batch(base, need_fixed, need_per_sample, budget, self.headroom,
                                max_batch=max(self.max_batch // world, base))
        if not decision.fits:
            raise OutOfMemoryBudget(
                f"{self.mode}: even batch {decision.batch} needs {decision.predicted_bytes / 2**20:.0f} MiB, "
                f"more than the {decision.usable_bytes / 2**20:.0f} MiB the budget allows ({budget / 2**20:.0f} MiB "
                f"usable × headroom {self.headroom:g}, {self.budget_name}); choose a smaller model or a larger profile",
                batch=decision.batch, need_bytes=decision.predicted_bytes, limit_bytes=decision.usable_bytes)
        batch = decision.batch * world
        reason = decision.reason
        if at_start and self.policy == "freed" and batch > self.base_batch:
            batch, reason = self.base_batch, f"the base batch; the budget would allow {batch}"
        return batch, f"{self.policy} policy: {reason}"

    def after_oom(self, batch: int, need_bytes: int, why: str, *, distributed: bool) -> int:
        lower = lower_after_oom(batch, self.base_batch)
        if distributed:
            raise OutOfMemoryBudget(f"{self.mode}: out of memory at batch {batch} under "
                                    f"torchrun; restart with --batch-size {lower or 1} ({why})")
        if lower is None:
            raise OutOfMemoryBudget(
                f"{self.mode}: out of memory even at batch {batch}: budget "
                f"{self.usable_bytes / 2**20:.0f} MiB, measured need {need_bytes / 2**20:.0f} MiB")
        return lower


    def after_eval_oom(self, test_batch: int, why: str) -> int:
        """The evaluation batch after an out-of-memory error: half, down to 1."""
        if test_batch <= 1:
            raise OutOfMemoryBudget(f"{self.mode}: out of memory evaluating even one test image ({why})")
        return max(1, test_batch // 2)

    def check_emulated(self, batch: int, need_bytes: int) -> None:
        """On a CPU emulating a GPU's budget: a step that would not fit fails as it would on the card."""
        if need_bytes > self.usable_bytes:
            raise EmulatedOutOfMemory(f"batch {batch} needs {need_bytes} bytes > budget {self.usable_bytes}")


class EmulatedOutOfMemory(RuntimeError):
    """A step whose measured memory exceeds the emulated budget (the CPU stand-in for a CUDA OOM)."""


#: how allocation failures read when they arrive as plain RuntimeErrors: cuDNN and cuBLAS
#: workspaces, and CUDA errors raised outside the caching allocator.  torch raises
#: "cuDNN error: " + cudnnGetErrorString(status) (ATen/cudnn/Exceptions.h); every supported torch
#: ships cuDNN 9, whose cudnn_graph.h names a device allocation failure (4004) as below -- cuDNN 8's
#: CUDNN_STATUS_ALLOC_FAILED no longer exists, and 4003 (HOST_ALLOCATION_FAILED) is host memory,
#: which a smaller batch on the card does not free.
OOM_MESSAGES = ("CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED", "CUBLAS_STATUS_ALLOC_FAILED",
                "CUDA out of memory", "CUDA error: out of memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure that a smaller batch can avoid."""
    import torch

    if isinstance(exc, (torch.cuda.OutOfMemoryError, EmulatedOutOfMemory)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in OOM_MESSAGES)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def release_cached_memory() -> None:
    """Give the CUDA caching allocator's free blocks back, so a retry finds them (no-op without CUDA)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def run_with_oom_retry(step: Callable, x, y, *, chunk: Callable[[], int], lower: Callable[[str], None]) -> None:
    """Run ``step`` over ``(x, y)`` in slices of ``chunk()`` samples, redoing a slice that ran out of memory.

    After an out-of-memory error ``lower(why)`` lowers the batch (or raises when
    nothing smaller is left) and the failed slice is redone at the new size.  The
    retry runs after the ``except`` block has been left and without keeping the
    exception: its traceback would hold the failed step's activations and
    autograd graph alive while the smaller batch is tried.
    """
    start = 0
    while start < len(x):
        n = max(1, chunk())
        why = None
        try:
            step(x[start:start + n], y[start:start + n])
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            why = _describe(exc)
        if why is None:
            start += n
        else:
            release_cached_memory()
            lower(why)


def halve_on_oom(run: Callable[[int], T], size: int) -> T:
    """``run(size)``, halving ``size`` after each out-of-memory error down to 1 (retried outside the except block)."""
    while True:
        try:
            return run(size)
        except Exception as exc:
            if not is_out_of_memory(exc) or size <= 1:
                raise
        release_cached_memory()
        size = max(1, size // 2)


def elsewhere_on_oom(here: Callable[[], T], elsewhere: Callable[[str], T]) -> T:
    """``here()``, or after an out-of-memory error ``elsewhere(why)`` (e.g. the same work on the CPU)."""
    why = None
    try:
        return here()
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        why = _describe(exc)
    release_cached_memory()
    return elsewhere(why)
