"""``bench run`` as a library call: validate everything, then train dense and PruneTrain on one schedule.

All user input (profile, model, data, options) is checked before the run
folder exists, so a mistake never leaves a half-written results folder.  The
run folder is created exclusively with a unique id, so concurrent runs into
one results directory never collide.
"""
from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import torch

import prunetrain_core as pc

from . import __version__
from .config import RunConfig
from .data import load_data
from .errors import ConfigError, DivergenceError, OutOfMemoryBudget, RecordError
from .hardware import DeviceInfo, detect
from .profiles import Profile, resolve_profile
from .records import SCHEMA_VERSION, EpochLog, atomic_write_json
from .train import ModeTrainer, RunContext

Echo = Callable[[str], None]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, Any]:
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
            else None, "bench": __version__}


def new_run_dir(results_dir: Path, profile: str, model: str) -> tuple[str, Path]:
    """Create ``results_dir/<run-id>`` exclusively: two processes never get the same folder."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        run_id = f"{stamp}-{profile}-{model}-{secrets.token_hex(3)}"
        path = results_dir / run_id
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return run_id, path
    raise ConfigError(f"could not create a unique run folder in {results_dir}")


def select_device(cfg: RunConfig, info: DeviceInfo) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if info.kind == "cuda" else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no usable CUDA device (see `bench env`)")
    return torch.device(cfg.device)


class RunMeta:
    """run.json: rewritten atomically whenever something in it changes."""

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def mode(self, mode: str) -> dict:
        return self.data["modes"].setdefault(mode, {"status": "pending", "architectures": []})

    def add_architecture(self, mode: str, arch: dict) -> None:
        self.mode(mode)["architectures"].append(arch)
        self.save()


def read_run_json(run_dir: Path) -> dict:
    import json

    path = run_dir / "run.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{path}: not found; --resume needs a run folder made by `bench run`") from None
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict) or not isinstance(data.get("modes"), dict):
        raise RecordError(f"{path}: keys 'config' and 'modes' are required")
    return data


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        text = fh.read()
    complete = text[: text.rfind("\n") + 1]
    return list(csv.DictReader(complete.splitlines()))


def run_benchmark(cfg: RunConfig | None, *, results_dir: Path = Path("results"), resume: Path | None = None,
                  progress: bool = False, echo: Echo = lambda s: None, dist=None) -> Path:
    """Run (or resume) one benchmark; returns the run folder."""
    info = detect()
    if resume is not None:
        resume = Path(resume)
        old = read_run_json(resume)
        cfg = RunConfig.from_dict(old["config"])
        if old.get("status") == "finished":
            echo(f"{resume} is already finished")
            return resume
    assert cfg is not None
    cfg.validate()
    if cfg.model not in pc.available_models():
        raise ConfigError(f"unknown model '{cfg.model}': choose one of {', '.join(pc.available_models())}")
    profile: Profile = resolve_profile(cfg.profile, info)
    device = select_device(cfg, info)
    budget = profile.resolve_budget(info)
    emulated = False
    if device.type == "cuda":
        if cfg.emulate:
            fraction = profile.emulation_fraction(info)
            if fraction is not None:
                torch.cuda.set_per_process_memory_fraction(fraction, device)
                emulated = True
        torch.backends.cudnn.benchmark = True
    else:
        emulated = profile.device_kind == "cuda"  # a GPU profile's budget decisions, made on the CPU
    data = load_data(cfg.data, data_dir=cfg.data_dir, subset=cfg.subset, seed=cfg.seed)
    writer = dist is None or dist.rank == 0
    if resume is not None:
        run_dir, run_id = resume, old["run_id"]
        meta = RunMeta(run_dir / "run.json", old)
    else:
        if writer:
            run_id, run_dir = new_run_dir(Path(results_dir), profile.name, cfg.model)
        else:
            run_id, run_dir = None, None
        if dist is not None:
            run_id, run_dir = dist.broadcast_object((run_id, str(run_dir)))
            run_dir = Path(run_dir)
        meta = RunMeta(run_dir / "run.json", {
            "schema_version": SCHEMA_VERSION, "run_id": run_id, "status": "running",
            "created": _now(), "finished": None, "config": cfg.to_dict(),
            "hardware": info.to_dict(), "device": str(device), "profile": profile.to_dict(),
            "emulated": emulated, "memory_budget_bytes": budget, "data": data.to_dict(),
            "versions": versions(), "git_commit": git_commit(), "seed": cfg.seed,
            "command": " ".join(sys.argv), "modes": {m: {"status": "pending", "architectures": []} for m in cfg.modes},
        })
    if writer:
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        meta.data["status"] = "running"
        meta.save()
    echo(f"run {run_id}: {cfg.model} on {data.name} ({len(data.train)} train images), profile {profile.name}"
         f"{' (emulated)' if emulated else ''}, device {info.device_name}")
    log = EpochLog(run_dir / "epochs.csv") if writer else None
    ctx = RunContext(
        cfg=cfg, run_id=run_id, run_dir=run_dir, device=device, data=data, profile_name=profile.name,
        device_name=info.device_name if device.type == "cuda" else f"cpu: {info.cpu_model}",
        emulated=emulated, budget_bytes=budget, reserve_bytes=profile.reserve_bytes, headroom=profile.headroom,
        log=log, progress=progress, dist=dist,
        on_architecture=(lambda mode, arch: meta.add_architecture(mode, arch)) if writer else (lambda m, a: None),
    )
    try:
        for mode in cfg.modes:
            _run_mode(ctx, meta, mode, resume is not None, echo, writer)
    except OutOfMemoryBudget:
        if writer:
            meta.data["status"] = "failed"
            meta.save()
        raise
    if writer:
        failed = [m for m in cfg.modes if meta.mode(m)["status"] != "finished"]
        meta.data["status"] = "failed" if failed else "finished"
        meta.data["finished"] = _now()
        meta.save()
    return run_dir


def _run_mode(ctx: RunContext, meta: RunMeta, mode: str, resuming: bool, echo: Echo, writer: bool) -> None:
    state = meta.mode(mode)
    if state["status"] in ("finished", "failed"):
        echo(f"{mode}: already {state['status']}")
        return
    trainer = ModeTrainer(ctx, mode)
    resumed = resuming and trainer.resume()
    if writer and resuming:
        # rows written after the last checkpoint are redone: drop them so no epoch appears twice
        done = trainer.state.epoch if resumed else 0
        rows = [r for r in _rows(ctx.log.path) if not (r.get("mode") == mode and int(r["epoch"]) > done)]
        ctx.log.truncate_to(rows)
        state["architectures"] = [a for a in state["architectures"] if a["epoch"] <= done] if resumed else []
    if not resumed:
        trainer.start()
    echo(f"{mode}: {'resuming after epoch ' + str(trainer.state.epoch) if resumed else 'starting'}, "
         f"batch {trainer.state.batch}")
    if writer:
        state["status"] = "running"
        meta.save()
    try:
        trainer.run()
    except DivergenceError as exc:
        if writer:
            state.update(status="failed", error=str(exc))
            meta.save()
        echo(f"error: {exc}; its records are kept, continuing with the next mode")
        return
    if writer:
        final = ctx.run_dir / f"{mode}_final.pt"
        trainer.export(final)
        state.update(status="finished", final_model=final.name, lasso_lambda=trainer.state.lam,
                     batch_reasons=trainer.state.batch_reasons)
        meta.save()
    echo(f"{mode}: finished")


def load_exported(path: Path) -> torch.nn.Module:
    """Load a model saved by ``bench run`` for inference (no run history needed)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return pc.rebuild(blob["arch"], blob["model"]).eval()
