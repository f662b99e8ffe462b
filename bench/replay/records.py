"""The records of a replayed run: one epochs.csv row per original epoch, one run.json entry per shape.

Split from bench.replay.run (which times the shapes) so that the replay's record format sits in one place:
a shape the target card cannot train even at batch 1 is recorded here as ``fits`` 0 with its need and
the limit it missed, and no time.
"""
from __future__ import annotations

import math
from typing import Any

from ..runfolder.records import SCHEMA_VERSION
from .trajectory import Trajectory


def replay_row(traj: Trajectory, row: dict, timed: dict, run_id: str, profile: str, device: str,
               emulated: bool, budget: int, limit: int) -> dict:
    """One original epoch, timed here: the trajectory's FLOPs and shape, this machine's step time.

    A shape that does not fit the target card: ``fits`` 0, the need at batch 1 and the limit it missed, no
    time (nothing is made up) and no steps.
    """
    mode, epoch = row["mode"], row["epoch"]
    ts = timed[(mode, traj.shape_for(mode, epoch).index)]
    samples = traj.samples(row)
    cfg = traj.cfg
    reconfigured = bool(row.get("reconfig_time_s")) and ts.reconfig_s is not None
    fit = ts.nofit
    return {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "mode": mode, "model": row.get("model") or cfg.model,
        "dataset": row.get("dataset"), "profile": profile, "device": device, "emulated": int(emulated),
        "world_size": 1, "epoch": epoch, "batch_size": ts.batch,
        "lr": cfg.lr_at(epoch, ts.batch),
        "epoch_time_s": None if fit else samples / ts.batch * ts.step.median,
        "reconfig_time_s": ts.reconfig_s if reconfigured else 0.0, "compile_time_s": 0.0, "warmup_time_s": None,
        "peak_memory_reserved_bytes": None,
        "train_flops": ts.shape.train_flops_per_image * samples, "inference_flops": ts.shape.inference_flops,
        "params": ts.shape.params,
        "peak_memory_bytes": fit.need_bytes if fit else ts.memory.total_for_batch(ts.batch),
        "peak_memory_source": "predicted", "fits": 0 if fit else 1,
        "memory_limit_bytes": fit.limit_bytes if fit else limit,
        "memory_budget_bytes": budget, "lasso_lambda": row.get("lasso_lambda"), "grad_bytes_per_step": 0,
        "oom_retries": 0, "steps": 0 if fit else math.ceil(samples / ts.batch),
        "source": "replay", "replay_of": traj.run_id,
        "cpu_time_s": None if fit else samples / ts.batch * ts.step_cpu.median,
        # not trained here: the original run's are in its own records
        "train_loss": None, "train_acc": None, "test_loss": None, "test_acc": None, "val_loss": None, "val_acc": None,
        "eval_time_s": None,
        # the machine's load while timing is one figure for the whole replay: run.json replay.contention
        "load_avg": None, "other_cpu_cores": None, "busy_processes": None,
        "lasso_ratio": None, "comm_wait_s": None, "prune_threshold": None, "func_change_eval": None,
        "func_change_train": None, "func_acc_delta_eval": None, "func_acc_delta_train": None,
    }


def arch_record(ts: Any) -> dict:
    """One shape's run.json entry; ``ts`` a bench.replay.run.TimedShape (not imported: bench.replay.run imports this)."""
    sh = ts.shape
    return {"epoch": sh.epoch, "channels": list(sh.channels.items()), "params": sh.params,
            "inference_flops": sh.inference_flops, "train_flops_per_image": sh.train_flops_per_image,
            "batch_size": ts.batch, "original_batch_size": sh.batch_size, "batch_reason": ts.batch_reason,
            "memory": ts.memory.to_dict(),
            "fit": ts.nofit.to_dict() if ts.nofit else {"fits": True},
            "step_time_s": None if ts.nofit else {"median": ts.step.median, "q1": ts.step.q1, "q3": ts.step.q3,
                                                  "rounds": ts.step.n},
            "step_cpu_s": None if ts.nofit else {"median": ts.step_cpu.median, "q1": ts.step_cpu.q1,
                                                 "q3": ts.step_cpu.q3},
            "reconfig_time_s": ts.reconfig_s, "reconfig_exact": ts.reconfig_exact, "arch": sh.arch}
