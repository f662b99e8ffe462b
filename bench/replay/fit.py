"""What fits, for `bench replay`: each shape on the target card, and all shapes at once on this machine.

The target card: the profile's batch rule (bench.training.batching), exactly as ``bench run``
applies it.  A shape that does not fit even at batch 1 is a result, not a refusal:
its epochs are recorded with ``fits = 0``, the need at batch 1 and the limit it
missed, and no time (:class:`NoFit`).

This machine: the interleaved rounds hold every shape at once (model, gradients,
momentum, a batch's activations).  :func:`timing_plan` compares the memory model's
sum (bench.training.memory, at each shape's chosen batch) with the memory available where
the shapes live (``MemAvailable`` of /proc/meminfo on the CPU, the CUDA driver's
free memory on a GPU); when it does not fit, the shapes are timed one at a time
(build, time, free), and the records say so: drift between them is then not
cancelled.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..training.batching import BatchPolicy
from ..errors import OutOfMemoryBudget
from ..training.memory import MemoryEstimate

#: share of the available memory the timed shapes may take together: the memory model leaves out backward's
#: transient buffers and the allocator's rounding, and the synthetic or real image pool lives there too
HOST_SHARE = 0.7
MiB = 2**20


@dataclass(frozen=True)
class NoFit:
    """A shape the target card cannot train even at ``batch`` (1): ``need_bytes`` there > ``limit_bytes``."""

    batch: int
    need_bytes: int
    limit_bytes: int
    profile: str

    def text(self, mode: str) -> str:
        return (f"{mode} does not fit {self.profile} (needs {self.need_bytes / MiB:,.0f} MiB at batch {self.batch}, "
                f"limit {self.limit_bytes / MiB:,.0f} MiB)")

    def to_dict(self) -> dict:
        return {"fits": False, "batch": self.batch, "need_bytes": self.need_bytes, "limit_bytes": self.limit_bytes}


def decide_batch(traj, shape, memory: MemoryEstimate, usable: int, headroom: float, profile: str,
                 start_need: int = 0) -> tuple[int, str, NoFit | None]:
    """The target profile's rule for this shape, as ``bench run`` applies it, or why it does not fit.

    ``start_need``: bytes the mode's first shape needed at its batch (the "freed" policy's cap; 0 when that
    shape did not fit, so a later one gets the whole budget).
    """
    cfg = traj.cfg
    if not cfg.adjust_batch:
        return cfg.batch_size, "--no-adjust-batch: the base batch", None
    policy = BatchPolicy(f"{shape.mode} shape after epoch {shape.epoch}", cfg.batch_size, cfg.max_batch, 1,
                         usable, headroom, profile, cfg.batch_policy)
    try:
        batch, reason = policy.after_reshape(memory.fixed, memory.per_sample_activations, at_start=shape.index == 0,
                                             start_need=start_need)
    except OutOfMemoryBudget as err:
        if err.need_bytes is None:
            raise
        nofit = NoFit(err.batch, err.need_bytes, err.limit_bytes, profile)
        return err.batch, f"does not fit: {nofit.text(shape.mode)}", nofit
    return batch, reason, None


# ------------------------------------------------------------------------------------------ this machine
def available_memory(device: torch.device) -> int | None:
    """Bytes free for new allocations where the shapes live, or None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def timing_plan(needs: dict[str, int], device: torch.device) -> dict:
    """Interleaved rounds when the shapes fit here together, else one at a time; the record of which and why.

    ``needs``: predicted bytes of each timed shape at its batch (params + grads + momentum + activations).
    """
    total, avail = sum(needs.values()), available_memory(device)
    where = "GPU free memory" if device.type == "cuda" else "MemAvailable"
    record = {"need_bytes": needs, "total_need_bytes": total, "available_bytes": avail, "share": HOST_SHARE}
    if not needs:
        return {"timing": "interleaved", "order": [], **record, "why": "no shape fits the target card: nothing to time"}
    if avail is None:
        return {"timing": "interleaved", "order": list(needs), **record,
                "why": f"{where} unknown: all shapes held at once, as without a check"}
    if total <= HOST_SHARE * avail or len(needs) <= 1:
        return {"timing": "interleaved", "order": list(needs), **record,
                "why": f"all shapes together need {total / MiB:,.0f} MiB, within {HOST_SHARE:.0%} of the "
                       f"{avail / MiB:,.0f} MiB {where}"}
    return {"timing": "sequential", "order": list(needs), **record,
            "why": f"all shapes together would need {total / MiB:,.0f} MiB, more than {HOST_SHARE:.0%} of the "
                   f"{avail / MiB:,.0f} MiB {where}: timed one at a time in this order (build, time, free), so "
                   "drift of the machine between shapes is not cancelled"}
