"""Fake-but-realistic run folders for the report tests, written with the real writers.

A run trains ResNet-32 on CIFAR-10 in two modes over a short schedule.  Dense
epochs cost the same every time; PruneTrain reconfigures every ``interval``
epochs, keeping a shrinking fraction of the FLOPs, so its epochs get cheaper
and its batch grows (128→256→384).  Times are multiplied by ``speed`` so that
repeated runs differ a little, as real ones do.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.runfolder.records import SCHEMA_VERSION, EpochLog, atomic_write_json

GIB = 1 << 30
DENSE_TRAIN_FLOPS = 2.05e13          # one epoch of ResNet-32 on 50k images, fwd+loss+bwd
DENSE_INFERENCE_FLOPS = 1.38e8       # per image
DENSE_PARAMS = 464154


def resnet32_channels(keep: float = 1.0) -> dict[str, int]:
    """Layer name -> output channels, network order, like run.json's architectures."""
    chans: dict[str, int] = {"conv1": 16}
    for stage, width in ((1, 16), (2, 32), (3, 64)):
        for block in range(5):
            inner = max(1, round(width * keep * (1.0 - 0.04 * block)))
            chans[f"layer{stage}.{block}.conv1"] = inner
            chans[f"layer{stage}.{block}.conv2"] = width
            if stage > 1 and block == 0:
                chans[f"layer{stage}.{block}.shortcut.0"] = width
    chans["fc"] = 10
    return chans


@dataclass
class FakeRun:
    """Parameters of one fake run; ``rows`` are filled by :func:`write_run`."""

    run_id: str
    device: str = "NVIDIA GeForce GTX 1070"
    kind: str = "cuda"
    profile: str = "gtx1070"
    emulated: bool = False
    model: str = "resnet32"
    dataset: str = "cifar10"
    epochs: int = 6
    interval: int = 2
    dense_epoch_s: float = 20.0
    speed: float = 1.0               # multiplies all times (run-to-run noise)
    status: str = "finished"
    dense_done: int | None = None    # epochs of dense recorded (default: all)
    pt_done: int | None = None       # epochs of PruneTrain recorded (default: all)
    pt_status: str | None = None     # "failed" to mark PruneTrain diverged
    peak_dense: int = int(3.1 * GIB)
    budget: int = 8 * GIB
    acc_offset: float = 0.0
    other_cores: float | None = None  # cores other processes used in every epoch (None: not recorded)
    config: dict[str, Any] = field(default_factory=dict)  # run.json config keys over the ones below
    rows: list[dict[str, Any]] = field(default_factory=list)

    def keep(self, epoch: int) -> float:
        """Fraction of dense FLOPs PruneTrain still spends in ``epoch`` (1-based)."""
        return 1.0 - 0.2 * ((epoch - 1) // self.interval)

    def batch(self, epoch: int) -> int:
        return 128 * (1 + (epoch - 1) // self.interval)


def _row(fr: FakeRun, mode: str, epoch: int) -> dict[str, Any]:
    pt = mode == "prunetrain"
    keep = fr.keep(epoch) if pt else 1.0
    reconfig = 0.5 * fr.speed if pt and epoch % fr.interval == 0 and epoch < fr.epochs else 0.0
    batch = fr.batch(epoch) if pt else 128
    acc = 40.0 + 8.0 * epoch - (0.5 if pt else 0.0) + fr.acc_offset
    if epoch == fr.epochs:
        acc -= 9.0  # last epoch slightly below the best (previous) one
    return {
        "schema_version": SCHEMA_VERSION, "run_id": fr.run_id, "mode": mode,
        "model": fr.model, "dataset": fr.dataset, "profile": fr.profile, "device": fr.device,
        "emulated": int(fr.emulated), "world_size": 1, "epoch": epoch, "batch_size": batch,
        "lr": 0.1 * batch / 128, "train_loss": 2.0 / epoch, "train_acc": acc + 5,
        "test_loss": 2.2 / epoch, "test_acc": acc, "val_loss": 2.1 / epoch, "val_acc": acc + 0.5,
        "epoch_time_s": fr.dense_epoch_s * fr.speed * (0.35 + 0.65 * keep),
        "eval_time_s": 1.5 * fr.speed, "reconfig_time_s": reconfig,
        "compile_time_s": 0.0, "warmup_time_s": 0.0,
        "train_flops": DENSE_TRAIN_FLOPS * keep,
        "inference_flops": DENSE_INFERENCE_FLOPS * keep,
        "params": int(DENSE_PARAMS * keep),
        "peak_memory_bytes": int(fr.peak_dense * keep * batch / 128),
        "peak_memory_reserved_bytes": int(fr.peak_dense * keep * batch / 128 * 1.1),
        "memory_budget_bytes": fr.budget,
        "peak_memory_source": "predicted" if fr.device.startswith("cpu") else "measured",
        "fits": 1, "memory_limit_bytes": int(0.9 * fr.budget),
        "lasso_lambda": 1e-4 if pt else 0.0, "lasso_ratio": 0.2 if pt else 0.0,
        "grad_bytes_per_step": 0, "comm_wait_s": 0.0, "oom_retries": 0, "steps": 391,
        "source": "measured", "replay_of": "",
        "cpu_time_s": None, "load_avg": None, "other_cpu_cores": fr.other_cores,
        "busy_processes": None if fr.other_cores is None else "",
        # a reconfiguration measured on the held-out batch: float rounding only
        "prune_threshold": 1e-4 if reconfig else None,
        "func_change_eval": 2e-6 if reconfig else None, "func_change_train": 3e-6 if reconfig else None,
        "func_acc_delta_eval": 0.0 if reconfig else None, "func_acc_delta_train": 0.0 if reconfig else None,
    }


def run_json(fr: FakeRun) -> dict[str, Any]:
    pt_archs = [{"epoch": 0, "channels": resnet32_channels(), "params": DENSE_PARAMS,
                 "inference_flops": DENSE_INFERENCE_FLOPS,
                 "train_flops_per_image": 3 * DENSE_INFERENCE_FLOPS}]
    for e in range(fr.interval, (fr.pt_done or fr.epochs), fr.interval):
        k = fr.keep(e + 1)
        pt_archs.append({"epoch": e, "channels": resnet32_channels(k),
                         "params": int(DENSE_PARAMS * k), "inference_flops": DENSE_INFERENCE_FLOPS * k,
                         "train_flops_per_image": 3 * DENSE_INFERENCE_FLOPS * k})
    gpus = ([{"index": 0, "name": fr.device, "total_memory_bytes": 8 * GIB,
              "compute_capability": [6, 1], "driver": "535.183.01"}] if fr.kind == "cuda" else [])
    dense_status = "finished" if (fr.dense_done or fr.epochs) == fr.epochs else "running"
    pt_status = fr.pt_status or ("finished" if (fr.pt_done or fr.epochs) == fr.epochs else "running")
    return {
        "schema_version": SCHEMA_VERSION, "run_id": fr.run_id, "status": fr.status,
        "created": "2026-11-29T10:15:00+00:00",
        "finished": None if fr.status == "running" else "2026-11-29T11:15:00+00:00",
        "config": {"model": fr.model, "dataset": fr.dataset, "profile": fr.profile,
                   "modes": ["dense", "prunetrain"], "epochs": fr.epochs, "batch_size": 128,
                   "max_batch": 1024, "lr": 0.1, "interval": fr.interval, "lpr": 0.2,
                   "threshold": 0.0001, "seed": 0, "subset": 0, "adjust_batch": True,
                   "world_size": 1, **fr.config},
        "hardware": {"kind": fr.kind, "device_name": fr.device, "gpus": gpus,
                     "cpu_model": "AMD EPYC 7B13" if fr.kind == "cpu" else "Intel Core i7-7700K",
                     "cpu_cores": 2 if fr.kind == "cpu" else 8, "torch_version": "2.14.1",
                     "cuda_version": "12.6" if fr.kind == "cuda" else None},
        "emulated": fr.emulated, "memory_budget_bytes": fr.budget,
        "versions": {"python": "3.11.7", "torch": "2.14.1", "torchvision": "0.29.1",
                     "bench": "0.1.0"},
        "git_commit": "abc123",
        "modes": {
            "dense": {"status": dense_status, "architectures": [copy.deepcopy(pt_archs[0])]},
            "prunetrain": {"status": pt_status, "lasso_lambda": 1e-4, "architectures": pt_archs,
                           "final_model": "prunetrain_final.pt"},
        },
    }


def write_run(root: Path, fr: FakeRun) -> Path:
    """Write ``root/<run_id>/{epochs.csv,run.json}`` the way ``bench run`` does."""
    folder = Path(root) / fr.run_id
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "run.json", run_json(fr))
    log = EpochLog(folder / "epochs.csv")
    fr.rows = []
    for mode, done in (("dense", fr.dense_done), ("prunetrain", fr.pt_done)):
        for epoch in range(1, (fr.epochs if done is None else done) + 1):
            row = _row(fr, mode, epoch)
            log.append(row)
            fr.rows.append(row)
    return folder


def standard_runs() -> list[FakeRun]:
    """Three repeated GTX 1070 runs and one CPU run emulating a GTX 750 Ti."""
    return [
        FakeRun("20261129-101500-gtx1070-resnet32-aa01", speed=1.0),
        FakeRun("20261129-121500-gtx1070-resnet32-aa02", speed=0.95, acc_offset=0.4),
        FakeRun("20261129-141500-gtx1070-resnet32-aa03", speed=1.10, acc_offset=-0.3),
        FakeRun("20261130-090000-cpu-resnet32-bb01", device="cpu: AMD EPYC 7B13", kind="cpu",
                profile="gtx750ti", emulated=True, dense_epoch_s=300.0,
                peak_dense=int(1.0 * GIB), budget=2 * GIB),
    ]
