"""The device's measured peak rate: a timed dense matmul at the precision the run trained in.

Why: the suite's question is how PruneTrain's time saving changes with the hardware.  A card that runs
the dense network at a small fraction of its peak (launch-bound, narrow layers) turns fewer FLOPs into
little less time; one that runs near its peak turns them into proportionally less.  The report divides
each mode's achieved training rate (Σ train_flops ÷ training time) by this figure.

It is a measurement, not a datasheet number: the best of a few timed square matmuls, large enough to
fill the device (1,024 on a CPU, 8,192 on CUDA), in the dtype a training step computes in (fp32 under
the run's fp32 precision, or the autocast dtype).  A CPU run measures with the threads it trained with.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from .timing import sync as _sync

#: square matmul side per device kind: large enough to reach the rate a large GEMM gets
SIDE = {"cpu": 1024, "cuda": 8192}
REPEATS = 5


def measure_peak(device: torch.device, dtype: torch.dtype | None = None, *, side: int | None = None,
                 repeats: int = REPEATS) -> dict[str, Any]:
    """``{"flops_per_s", "dtype", "side", "repeats", "source": "measured"}``: the best of ``repeats`` timed
    ``side × side`` matmuls (2·side³ FLOPs each) after one untimed warm-up."""
    dtype = dtype or torch.float32
    side = side or SIDE.get(device.type, SIDE["cpu"])
    a = torch.randn(side, side, device=device, dtype=dtype)
    b = torch.randn(side, side, device=device, dtype=dtype)
    torch.mm(a, b)  # untimed: library initialisation, kernel choice
    _sync(device)
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return {"flops_per_s": 2.0 * side ** 3 / best, "dtype": str(dtype).removeprefix("torch."), "side": side,
            "repeats": repeats, "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "source": "measured"}
