"""Data-parallel training under torchrun: DDP on NCCL (CUDA) or Gloo (CPU).

Launch::

    torchrun --standalone --nproc-per-node N -m bench run ...            # one node
    bench run --nproc-per-node N ...                                     # the same, torchrun started for you
    torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d \\
             --rdzv-endpoint HOST:PORT --rdzv-id RUN -m bench run ...     # M nodes

Every process reads ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` from torchrun;
nothing assumes a single node.  ``--batch-size`` is the *global* batch
(per rank: batch / world size) and the learning rate scales with it.

A model that changes shape cannot stay inside one DDP wrapper (DDP forbids
adding or removing parameters), so at every reconfiguration rank 0 computes
the keep-plan and broadcasts it as plain data, every rank applies the same
surgery to its unwrapped module and optimizer, and a new DDP wrapper is built
(whose constructor also re-broadcasts rank 0's parameters and buffers).  The
batch decision after it is a deterministic function of the shared model
shape; rank 0's decision is broadcast anyway.  Only rank 0 writes records,
checkpoints and exports; on resume rank 0 reads run.json and the checkpoint
and broadcasts them, so the other ranks need no shared file system.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as td
from torch import nn

import prunetrain_core as pc

class CommTimer:
    """A DDP comm hook that all-reduces like DDP's default and times the *exposed* communication.

    DDP launches one all-reduce per gradient bucket while the backward pass is
    still computing, and at the end of the backward pass waits for all of
    them.  The last bucket is launched when the last gradient has been
    computed, so ``(completion of all all-reduces) - (launch of the last
    bucket)`` is the time the step spends waiting on communication that was
    not hidden behind backward computation (it includes the averaging of the
    bucket).  ``comm_wait_s`` in epochs.csv is the sum of this over the
    epoch's steps, averaged over the ranks.

    Only used on CPU (Gloo), where an all-reduce future completes when the
    data has arrived.  NCCL futures complete on the CUDA stream, not on the
    host, so on CUDA the default C++ hook is kept and ``comm_wait_s`` is left
    empty.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self._pending = 0
        self._last_launch: float | None = None
        self._lock = threading.Lock()

    def take(self) -> float:
        """Seconds accumulated since the last call."""
        with self._lock:
            total, self.total = self.total, 0.0
        return total

    def hook(self, process_group, bucket):  # no annotations: DDP checks them and this file defers them
        group = process_group if process_group is not None else td.group.WORLD
        tensor = bucket.buffer()
        tensor.div_(group.size())  # as DDP's default: the mean of the ranks' gradients
        with self._lock:
            self._pending += 1
            if bucket.is_last():
                self._last_launch = time.perf_counter()
        fut = td.all_reduce(tensor, group=group, async_op=True).get_future()

        def done(f: torch.futures.Future) -> torch.Tensor:
            now = time.perf_counter()
            with self._lock:
                self._pending -= 1
                if self._pending == 0 and self._last_launch is not None:
                    self.total += max(0.0, now - self._last_launch)
                    self._last_launch = None
            return f.value()[0]

        return fut.then(done)


@dataclass
class DistContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    comm_timer: CommTimer = field(default_factory=CommTimer)
    timed: bool = False   # whether the current wrapper carries the timing hook

    def wrap(self, model: nn.Module) -> nn.Module:
        """A new DDP wrapper around the (new) module; its constructor broadcasts rank 0's weights and buffers."""
        dev = next(model.parameters()).device
        ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.timed = dev.type == "cpu"
        if self.timed:
            ddp.register_comm_hook(None, self.comm_timer.hook)
        return ddp

    def take_comm_wait(self) -> float | None:
        """Exposed communication seconds since the last call (None where not separable, i.e. CUDA)."""
        total = self.comm_timer.take()
        return total if self.timed else None

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        td.all_reduce(t, op=td.ReduceOp.SUM)
        return t

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def from_rank0(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 only and return its result on every rank; its exception is raised on every rank."""
        payload = None
        if self.rank == 0:
            try:
                payload = (True, fn())
            except Exception as exc:  # re-raised everywhere, so no rank waits for the others forever
                payload = (False, exc)
        ok, value = self.broadcast_object(payload)
        if not ok:
            raise value
        return value

    def broadcast_plan(self, make_plan: Callable[[], pc.Plan]) -> pc.Plan:
        """Rank 0 decides; everyone applies the same plan (thresholds near the cut never diverge)."""
        return pc.Plan.from_dict(self.from_rank0(lambda: make_plan().to_dict()))

    def barrier(self) -> None:
        td.barrier()

    def close(self) -> None:
        if td.is_initialized():
            td.destroy_process_group()


def maybe_init() -> DistContext | None:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1); else None.

    Backend: Gloo on a CPU-only machine; with CUDA, NCCL for CUDA tensors and
    Gloo for CPU tensors (so ``--device cpu`` still works on a GPU machine).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            from ..errors import ConfigError
            raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) here: use at most one "
                              "process per GPU (--nproc-per-node), or CUDA_VISIBLE_DEVICES= to train on the CPU")
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "cpu:gloo,cuda:nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not td.is_initialized():
        td.init_process_group(backend=backend)
    return DistContext(rank=rank, local_rank=local, world_size=world, device=device)


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """``bench run --nproc-per-node N ...`` → ``torchrun --standalone --nproc-per-node N -m bench run ...``.

    One node only; for several nodes start ``torchrun`` yourself (module docstring).
    """
    args = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc-per-node":
            skip = True
            continue
        if a.startswith("--nproc-per-node="):
            continue
        args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "bench", *args]
    return subprocess.call(cmd)
