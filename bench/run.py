"""``bench run`` as a library call: validate everything, then train dense and PruneTrain on one schedule.

All user input (profile, model, data, options) is checked before the run
folder exists, so a mistake never leaves a half-written results folder.  The
run folder (bench.runfolder) is created exclusively with a unique id, so
concurrent runs into one results directory never collide.  The flow: the
command's configuration and device setup (bench.machine.setup), the data, the
run folder and its run.json (bench.runfolder.runjson), then each mode's
trainer (bench.training), epoch by epoch.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

import prunetrain_core as pc

from .config import AFTER_PRUNETRAIN, CONTROLS, PAIR, RunConfig, method_differences, method_name, partial_from, \
    resolve, run_method
from .errors import ConfigError, DivergenceError, OutOfMemoryBudget
from .machine.contention import busy_now
from .machine.peak import measure_peak
from .machine.setup import Machine, choose, prepare_device, select_device_name
from .runfolder.folder import lock_run_dir, locked, new_run_dir, now, portable_config, remove_stale_temp_files, \
    resumed_data_dir
from .runfolder.hooks import from_environment
from .runfolder.records import EpochLog, read_epochs
from .runfolder.runjson import RunJson, config_from_record, read_run_json, recorded_profile, recorded_settings, \
    run_record
from .training import checkpoint, controls
from .training.checkpoint import load_exported  # noqa: F401  (the documented bench.run.load_exported)
from .training.data import DataSplit, load_data
from .training.step import autocast_dtype
from .training.train import ModeTrainer, RunContext

Echo = Callable[[str], None]


def load_run_data(cfg: RunConfig) -> DataSplit:
    """The data of a run: its training images less the validation split, and its test split (bench.training.data)."""
    return load_data(cfg.data, data_dir=cfg.data_dir, subset=cfg.subset, seed=cfg.seed, val=cfg.val,
                     test_size=cfg.test_size)


def _check_same_data(path: Path, recorded: Any, data) -> None:
    """A resumed run continues on the data it started with (same name and sizes)."""
    if not isinstance(recorded, dict):
        return
    now = data.to_dict()
    differ = [k for k in ("name", "train_size", "val_size", "test_size", "num_classes")
              if k in recorded and recorded[k] != now[k]]
    if differ:
        raise ConfigError(f"{path}: the data differ from the run's ({', '.join(f'{k} {recorded[k]} now {now[k]}' for k in differ)}); "
                          "give the folder the run started with")


def _read_resumed(run_dir: Path) -> dict:
    """run.json of a run folder to resume, read strictly (one RecordError line naming the key otherwise)."""
    return read_run_json(run_dir / "run.json", strict=True)


def run_benchmark(cfg: RunConfig | None, *, results_dir: Path = Path("results"), resume: Path | None = None,
                  progress: bool = False, echo: Echo = lambda s: None, dist=None, data_dir: Path | None = None,
                  machine: Machine | None = None) -> Path:
    """Run (or resume) one benchmark; returns the run folder.

    ``data_dir`` gives a resumed run its image folder again (records keep only the folder's name).
    ``machine``: the device and profile the command chose for ``cfg`` (bench.machine.setup.choose); a
    resumed run brings the profile it recorded.
    """
    hooks = from_environment(warn=lambda line: print(f"warning: {line}", file=sys.stderr))
    threads = None
    if resume is not None:
        resume = Path(resume)
        # under torchrun rank 0 reads run.json and broadcasts it: every rank resumes the same record
        old = dist.from_rank0(lambda: _read_resumed(resume)) if dist is not None else _read_resumed(resume)
        recorded = recorded_settings(resume / "run.json", old["config"])
        cfg = resolve(resumed=recorded, given=partial_from({  # batch is global: any process count resumes
            "data_dir": resumed_data_dir(resume / "run.json", recorded.get("data_dir"), data_dir),
            "world_size": dist.world_size if dist is not None else 1}))
        profile = recorded_profile(resume / "run.json", old)
        if old.get("status") == "finished":
            echo(f"{resume} is already finished")
            return resume
        recorded_threads = old.get("torch_threads")
        if type(recorded_threads) is int and recorded_threads > 0:
            threads = recorded_threads  # CPU kernels sum in another order with another thread count
        machine = choose(cfg.device, profile, dist)
    assert cfg is not None
    cfg.validate()
    if cfg.model not in pc.available_models():
        raise ConfigError(f"unknown model '{cfg.model}': choose one of {', '.join(pc.available_models())}")
    if cfg.threads and resume is None:
        threads = cfg.threads  # set before torch_threads is recorded (a resume uses the recorded count)
    setup = prepare_device(cfg, dist, machine, threads)
    info, device, profile, emulated = setup.info, setup.device, setup.profile, setup.emulated
    data = load_run_data(cfg)
    if resume is not None:
        _check_same_data(resume / "run.json", old.get("data"), data)
    writer = dist is None or dist.rank == 0
    busy = busy_now(torch.get_num_threads(), (device.index or 0) if device.type == "cuda" else None) if writer else None
    if busy:
        echo(f"warning: {busy}")
    if resume is not None:
        run_dir, run_id = resume, old["run_id"]
        meta = RunJson(run_dir / "run.json", old, hooks)
    else:
        if dist is not None:  # rank 0 creates the one run folder; every rank learns its name
            run_id, run_dir = dist.from_rank0(lambda: new_run_dir(Path(results_dir), profile.name, cfg.model))
        else:
            run_id, run_dir = new_run_dir(Path(results_dir), profile.name, cfg.model)
        meta = RunJson(run_dir / "run.json", run_record(
            run_id, "running", portable_config(cfg, profile), setup, data.to_dict(), cfg.seed,
            {m: {"status": "pending", "architectures": [], "method": method_name(cfg, m)} for m in cfg.modes},
            busy_at_start=busy, method=run_method(cfg), method_differs=method_differences(cfg)), hooks)
    if hooks.active:  # a record says what it is: this run had faults injected
        meta.data.setdefault("fault_injection", []).append({"at": now(), "variables": hooks.active})
    lock = None
    if writer:
        lock = lock_run_dir(run_dir)
        if resume is not None:
            remove_stale_temp_files(run_dir)
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        meta.data["status"] = "running"
        meta.save()
    echo(f"run {run_id}: {cfg.model} on {data.name} ({len(data.train)} train images), profile {profile.name}"
         f"{' (emulated)' if emulated else ''}, device {info.device_name}")
    log = EpochLog(run_dir / "epochs.csv", hooks) if writer else None
    ctx = RunContext(
        cfg=cfg, run_id=run_id, run_dir=run_dir, device=device, data=data, profile_name=profile.name,
        device_name=select_device_name(info, device),
        emulated=emulated, budget_bytes=setup.budget_bytes, reserve_bytes=profile.reserve_bytes, headroom=profile.headroom,
        log=log, progress=progress, dist=dist, hooks=hooks, echo=echo,
        on_architecture=(lambda mode, arch: meta.add_architecture(mode, arch)) if writer else (lambda m, a: None),
    )
    errors: list[str] = []
    try:
        pair = [_run_mode(ctx, meta, mode, resume is not None, echo, writer) for mode in cfg.modes
                if mode not in AFTER_PRUNETRAIN]
        if not cfg.interleave:
            pair = [_chain(pair)]  # one mode after the other
        errors += _round_robin(pair)
        # the controls and random pruning are built from PruneTrain's finished records, so they run after it
        # (never interleaved)
        errors += _round_robin([_chain([_run_mode(ctx, meta, mode, resume is not None, echo, writer)
                                        for mode in cfg.modes if mode in AFTER_PRUNETRAIN])])
        if writer:
            failed = [m for m in cfg.modes if meta.mode(m)["status"] != "finished"]
            meta.data["status"] = "failed" if failed else "finished"
            meta.data["finished"] = now()
            # where the run ends: the device's measured peak rate at the precision it trained in (bench.machine.peak)
            meta.data["device_peak"] = measure_peak(device, autocast_dtype(cfg.amp, device))
            meta.save()
    except OutOfMemoryBudget:
        if writer:
            meta.data["status"] = "failed"
            meta.save()
        raise
    except KeyboardInterrupt as exc:  # the caller prints how to go on
        exc.resume_command = resume_command(run_dir, cfg, dist)  # type: ignore[attr-defined]
        raise
    finally:
        if lock is not None:
            lock.close()
    if dist is not None:
        dist.barrier()  # no rank leaves (and tears the process group down) before rank 0's records are final
    if errors:  # a diverged mode: the others ran to the end; the caller (and exit code) still learns of it
        done = [m for m in cfg.modes if meta.mode(m)["status"] == "finished"]
        raise DivergenceError("; ".join(errors) + f" ({' and '.join(done) + ' finished; ' if done else ''}"
                              f"records up to the last complete epoch kept in {run_dir}, status failed)")
    return run_dir


def _control_model(ctx: RunContext, meta: RunJson, mode: str, writer: bool):
    """A control's initial network from PruneTrain's finished records (rank 0 reads them; run.json records how)."""
    def read() -> controls.PruneTrainResult:
        rows = [r for _, r in read_epochs(ctx.log.path, strict=True)]
        return controls.prunetrain_result(meta.mode("prunetrain"), rows, str(ctx.run_dir / "run.json"))
    result = ctx.dist.from_rank0(read) if ctx.dist is not None else read()
    model, record = controls.control_model(mode, ctx.cfg, result, ctx.data.num_classes,
                                           ctx.data.train.images[:2].float(), len(ctx.data.train))
    if writer:
        meta.mode(mode)["control"] = record
        meta.save()
    return model


def _prunetrain_architectures(ctx: RunContext, meta: RunJson) -> list[dict]:
    """PruneTrain's finished architecture records in this folder (rank 0 reads them), for random pruning."""
    def read() -> list[dict]:
        controls.prunetrain_result(meta.mode("prunetrain"), [r for _, r in read_epochs(ctx.log.path, strict=True)],
                                   str(ctx.run_dir / "run.json"))  # ConfigError unless PruneTrain finished
        return meta.mode("prunetrain")["architectures"]
    return ctx.dist.from_rank0(read) if ctx.dist is not None else read()


def run_repeats(cfg: RunConfig, repeat: int, **kwargs: Any) -> list[Path]:
    """``bench run --repeat N``: the configuration N times with seeds seed … seed+N−1, one run folder each.

    A study without a varied setting: every folder pairs its modes on one seed, and the report groups
    folders that differ only in their seed as repeats (means and 95 % confidence intervals over seeds).
    """
    if repeat < 1:
        raise ConfigError("--repeat must be >= 1")
    echo = kwargs.get("echo", lambda s: None)
    folders = []
    for i in range(repeat):
        echo(f"repeat {i + 1}/{repeat}: seed {cfg.seed + i}")
        folders.append(run_benchmark(dataclasses.replace(cfg, seed=cfg.seed + i), **kwargs))
    return folders


def add_modes(run_dir: Path, modes: tuple[str, ...], *, data_dir: Path | None = None, **kwargs: Any) -> Path:
    """``bench run --controls-of RUN`` (the controls) and ``--methods-of RUN`` (the competing methods): modes added
    to a run folder whose PruneTrain finished, then run there as a resume does (the recorded configuration, its
    data, its seed and initialisation).  The controls and random pruning are built from PruneTrain's records;
    slimming and Early-Bird train from the same initial weights beside them."""
    run_dir = Path(run_dir)
    flag = "--controls-of" if set(modes) <= set(CONTROLS) else "--methods-of"
    with locked(run_dir):
        old = _read_resumed(run_dir)
        if not isinstance(old.get("modes"), dict) or old["modes"].get("prunetrain", {}).get("status") != "finished":
            raise ConfigError(f"{run_dir}: its PruneTrain mode has not finished; {flag} builds on it")
        recorded = recorded_settings(run_dir / "run.json", old["config"])
        cfg = old["config"]
        new = [m for m in modes if m not in old["modes"]]
        if not new:
            raise ConfigError(f"{run_dir}: already holds {', '.join(modes)}; continue them with --resume")
        cfg["modes"] = list(recorded.get("modes", PAIR)) + new
        resolved = config_from_record(run_dir / "run.json", cfg)
        for m in new:
            old["modes"][m] = {"status": "pending", "architectures": [], "method": method_name(resolved, m)}
        old["status"] = "running"
        RunJson(run_dir / "run.json", old).save()
    return run_benchmark(None, resume=run_dir, data_dir=data_dir, **kwargs)


def resume_command(run_dir: Path, cfg: RunConfig, dist=None) -> str:
    """The exact command that continues ``run_dir`` (its image folder and process count given again)."""
    words = ["bench", "run", "--resume", str(run_dir)]
    if cfg.data_dir:
        words += ["--data-dir", str(cfg.data_dir)]
    if dist is not None and dist.world_size > 1:
        words += ["--nproc-per-node", str(dist.world_size)]
    return " ".join(words)


def _chain(runners: list) -> Iterator[None]:
    """The runners one after the other, as one runner; returns the errors of all."""
    errors = []
    for runner in runners:
        errors += yield from _drain_one(runner)
    return errors


def _drain_one(runner) -> Iterator[None]:
    error = yield from runner
    return [error] if isinstance(error, str) else list(error or [])


def _round_robin(runners: list) -> list[str]:
    """One epoch of each runner in turn until all are done (``--interleave``: dense, PruneTrain, dense, ...),
    so a busy phase of a shared machine hits both modes alike; returns the errors."""
    errors: list[str] = []
    active = list(runners)
    while active:
        for runner in list(active):
            try:
                next(runner)
            except StopIteration as done:
                active.remove(runner)
                value = done.value
                errors += [value] if isinstance(value, str) else list(value or [])
    return errors


def _run_mode(ctx: RunContext, meta: RunJson, mode: str, resuming: bool, echo: Echo,
              writer: bool) -> Iterator[None]:
    """Train one mode to its end, yielding after every epoch; returns (StopIteration value) why it failed
    (divergence, now or in an earlier try) or None.  Nothing runs before the first ``next()``."""
    state = meta.mode(mode)
    if state["status"] in ("finished", "failed"):
        echo(f"{mode}: already {state['status']}")
        return str(state.get("error") or f"{mode}: failed") if state["status"] == "failed" else None
    trainer = ModeTrainer(ctx, mode)
    if mode == "random":
        trainer.method.follow(_prunetrain_architectures(ctx, meta), str(ctx.run_dir / "run.json"))
    resumed = resuming and trainer.resume()
    if writer and resuming:
        # rows written after the last checkpoint are redone: drop them so no epoch appears twice
        done = trainer.state.epoch if resumed else 0
        rows = [r for _, r in read_epochs(ctx.log.path, strict=True) if not (r.mode == mode and r.epoch > done)]
        ctx.log.truncate_to(rows)
        state["architectures"] = [a for a in state["architectures"] if a["epoch"] <= done] if resumed else []
    try:
        if not resumed:
            trainer.start(_control_model(ctx, meta, mode, writer) if mode in CONTROLS else None)
        echo(f"{mode}: {'resuming after epoch ' + str(trainer.state.epoch) if resumed else 'starting'}, "
             f"batch {trainer.state.batch}")
        if writer:
            state["status"] = "running"
            meta.save()
        yield from trainer.epochs()
    except DivergenceError as exc:
        if writer:
            state.update(status="failed", error=str(exc), batch_reasons=trainer.state.batch_reasons)
            meta.save()
        echo(f"stopped: {exc}; its records are kept")  # the error line itself comes at the end of the run
        return str(exc)
    except OutOfMemoryBudget as exc:
        if writer:
            state.update(status="failed", error=str(exc), batch_reasons=trainer.state.batch_reasons)
            meta.save()
        raise
    if writer:
        final = ctx.run_dir / f"{mode}_final.pt"
        checkpoint.export(final, trainer.module, ctx.data)
        state.update(status="finished", final_model=final.name, lasso_lambda=trainer.state.lam,
                     batch_reasons=trainer.state.batch_reasons,
                     **({"pruning": trainer.method.record()} if trainer.method is not None else {}))
        meta.save()
    echo(f"{mode}: finished")
    return None
