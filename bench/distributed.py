"""Data-parallel training under torchrun: DDP on NCCL (CUDA) or Gloo (CPU).

A model that changes shape cannot stay inside one DDP wrapper (DDP forbids
adding or removing parameters), so at every reconfiguration rank 0 computes
the keep-plan, broadcasts it as plain data, every rank applies the same
surgery to its unwrapped module and optimizer, and a new DDP wrapper is
built.  Batch decisions are deterministic functions of the shared model, so
all ranks take them alike.  Nothing assumes a single node.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as td
from torch import nn

import prunetrain_core as pc


@dataclass
class DistContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    def wrap(self, model: nn.Module) -> nn.Module:
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        td.all_reduce(t, op=td.ReduceOp.SUM)
        return t

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        td.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_plan(self, make_plan: Callable[[], pc.Plan]) -> pc.Plan:
        """Rank 0 decides; everyone applies the same plan (thresholds near the cut never diverge)."""
        data = make_plan().to_dict() if self.rank == 0 else None
        return pc.Plan.from_dict(self.broadcast_object(data))

    def barrier(self) -> None:
        td.barrier()

    def close(self) -> None:
        if td.is_initialized():
            td.destroy_process_group()


def maybe_init() -> DistContext | None:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1); else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not td.is_initialized():
        td.init_process_group(backend=backend)
    return DistContext(rank=rank, local_rank=local, world_size=world, device=device)


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """``bench run --nproc-per-node N ...`` → ``torchrun --standalone --nproc-per-node N -m bench run ...``."""
    args = []
    skip = False
    for i, a in enumerate(argv):
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
