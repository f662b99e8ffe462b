"""What a mode records per epoch: the row of epochs.csv, the architecture of run.json, the line a user reads.

The trainer (bench.training.train) measures; these functions only lay the
measurements out, so that every column is named in one place.
"""
from __future__ import annotations

from typing import Any

from torch import nn

import prunetrain_core as pc

from ..machine.contention import Contention
from ..runfolder.records import SCHEMA_VERSION
from .step import EpochStats


def epoch_row(ctx: Any, mode: str, epoch: int, stats: EpochStats, *, test: tuple, val: tuple, batch: int,
              lr: float, reconfig_time: float, flops: Any, params: int, limit_bytes: int, lam: float | None,
              grad_bytes: int, oom_retries: int, change: dict[str, Any]) -> dict[str, Any]:
    """One row of epochs.csv (bench.runfolder.records.EpochRow).  ``ctx``: the run's RunContext; ``test``,
    ``val``: (loss, accuracy %, seconds) on those splits, as the trainer's ``evaluate`` returns them;
    ``batch``, ``lr``, ``flops``, ``params``: what the epoch trained with; ``change``: the function-change
    record of the reconfiguration after it ({} when none ran)."""
    cfg = ctx.cfg
    test_loss, test_acc, eval_time = test
    val_loss, val_acc, _ = val
    return {
        "schema_version": SCHEMA_VERSION, "run_id": ctx.run_id, "mode": mode,
        "model": cfg.model, "dataset": ctx.data.name, "profile": ctx.profile_name,
        "device": ctx.device_name, "emulated": int(ctx.emulated), "world_size": cfg.world_size,
        "epoch": epoch, "batch_size": batch, "lr": lr,
        "train_loss": stats.train_loss, "train_acc": stats.train_acc,
        "test_loss": test_loss, "test_acc": test_acc, "val_loss": val_loss, "val_acc": val_acc,
        "epoch_time_s": stats.epoch_time_s, "eval_time_s": eval_time,
        "reconfig_time_s": reconfig_time, "compile_time_s": stats.compile_time_s,
        "warmup_time_s": stats.warmup_time_s, "peak_memory_reserved_bytes": stats.peak_reserved_bytes,
        "train_flops": flops.train_per_image * stats.samples,
        "inference_flops": flops.inference_per_image,
        "params": params,
        "peak_memory_bytes": stats.peak_memory_bytes, "memory_budget_bytes": ctx.budget_bytes,
        "peak_memory_source": "measured" if ctx.device.type == "cuda" else "predicted",
        "fits": 1, "memory_limit_bytes": limit_bytes,
        "lasso_lambda": lam or 0.0, "lasso_ratio": stats.lasso_ratio,
        "grad_bytes_per_step": grad_bytes, "comm_wait_s": stats.comm_wait_s,
        "oom_retries": oom_retries, "steps": stats.steps, "source": "measured", "replay_of": None,
        **(stats.contention or Contention.unknown()).columns(),
        "prune_threshold": change.get("threshold"),
        "func_change_eval": change.get("eval_rel"), "func_change_train": change.get("train_rel"),
        "func_acc_delta_eval": change.get("eval_acc_delta"),
        "func_acc_delta_train": change.get("train_acc_delta"),
    }


def architecture(epoch: int, module: nn.Module, flops: Any, batch: int, channels_last: bool, memory: Any,
                 change: dict[str, Any] | None) -> dict[str, Any]:
    """One entry of a mode's architectures in run.json: the shape it trains with from ``epoch`` on."""
    return {
        "epoch": epoch,
        "channels": list(pc.channels(module).items()),
        "params": sum(p.numel() for p in module.parameters()),
        "inference_flops": flops.inference_per_image,
        "train_flops_per_image": flops.train_per_image,
        "batch_size": batch,
        "channels_last": channels_last,  # as trained: --channels-last is turned off for unsafe shapes
        "memory": memory.to_dict(),
        "function_change": change if epoch else None,
        "arch": pc.describe(module),  # the exact graph (removed branches too): `bench replay` rebuilds it
    }


def epoch_line(row: dict, epochs: int, dense: float | None, trained: float, after: float | None) -> str:
    """One epoch as one line, for any stream (a log, CI, a pipe) where no bar is drawn: what a user watches for.

    ``dense``: the unpruned model's training FLOPs per image (both modes start from it); ``trained``: this
    epoch's; ``after``: those after the reconfiguration that followed the epoch (None: none ran).
    """
    def share(flops: float) -> str:
        return f"{100 * flops / dense:.0f} % of dense" if dense else "? % of dense"

    text = (f"{row['mode']} epoch {row['epoch']}/{epochs}: {row['epoch_time_s']:.1f} s, "
            f"train acc {row['train_acc']:.1f} %, test acc {row['test_acc']:.1f} %, "
            f"training FLOPs {share(trained)}, batch {row['batch_size']}")
    if after is not None:
        change = row.get("func_change_eval")
        text += (f"; reconfigured in {row['reconfig_time_s']:.2f} s to {share(after)}"
                 + (f" (threshold {row['prune_threshold']:.2g})" if row.get("prune_threshold") else "")
                 + (f", function change {change:.1e}" if change is not None else ""))
    return text


def grad_bytes_per_step(module: nn.Module, dist: Any) -> int:
    """Bytes all-reduced per step under DDP (``dist``): every trainable parameter's gradient; 0 alone."""
    if dist is None:
        return 0
    return sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
