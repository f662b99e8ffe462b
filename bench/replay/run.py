"""``bench replay``: time a recorded pruning trajectory on this machine instead of training it again.

Which architectures PruneTrain passes through, after which epoch, on how many
images, does not depend on the card; only the time per step of each shape
does.  So the replay rebuilds every shape a run's modes trained with (from
run.json), decides its batch with the *target* profile's memory rule, times
training steps of all shapes in interleaved rounds (so a busy phase of a
shared machine hits them alike) until each median is stable or the time
budget runs out, times each reconfiguration as real surgery between the two
recorded shapes (a competing method's pruning by its own decision, and its
penalty before it: bench.training.methods), and writes a run folder of the ``bench run`` schema with
``source = replay``: ``epoch_time_s`` = the epoch's images / batch × the
median step time.  A shape the target card cannot train even at batch 1 is
recorded as such (``fits`` 0, its need and the limit, no time: bench.replay.fit),
and when all shapes together would not fit in this machine's memory they are
timed one at a time instead of interleaved (the records say which and why).
What it cannot know: how a different batch would have
changed the pruning itself (the trajectory is not re-trained), and accuracy
(left empty; the original run's is in its own records).
The reconfigurations' timing is :mod:`bench.replay.surgery`, the batch rule and timing plan
:mod:`bench.replay.fit`, the record format :mod:`bench.replay.records`.
"""
from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

import prunetrain_core as pc

from ..training.batching import memory_limit
from ..config import default
from ..machine.contention import ContentionProbe
from ..training.data import ImageData, Loader, load_data
from ..errors import BenchError, ConfigError, DataError
from ..training import methods
from ..training import trainable
from ..training.memory import MemoryEstimate, measure_training_memory, probe_batch
from ..machine.setup import prepare_device, select_device_name
from ..runfolder.atomic import atomic_write_json
from ..runfolder.folder import new_run_dir
from ..runfolder.records import write_epochs
from ..runfolder.runjson import run_record
from .records import arch_record, replay_row
from . import fit as replay_fit
from .fit import NoFit, decide_batch
from ..training.step import EpochMeter, channels_last_hazard, make_scaler
from ..machine.timing import Case, Stat, timed_rounds
from .surgery import example_batch as _example, time_method_pruning, time_reconfiguration
from .trajectory import Shape, Trajectory, load_trajectory

# Consecutive steps of one shape per timed sample.  Rounds still interleave the shapes (drift hits all
# alike), but one step at a time cost each step ~12 % on this CPU (another model's weights and buffers
# in the caches and the allocator: ResNet-20 dense, 0.157 s alone vs 0.176 s interleaved step by
# step); in blocks of 5 it was 0.159 s, and a training run takes its steps back to back.
STEPS_PER_SAMPLE = 5
SYNTHETIC_POOL_BATCHES = 2       # synthetic images kept: this many batches of the largest shape's batch
LIMITS = ("the trajectory (shapes, reconfiguration epochs) is the original run's and is replayed with the target "
          "profile's batch rule, but the pruning dynamics under a different batch are not re-trained; accuracy is "
          "the original run's (left empty here); emulating a GPU profile on another device models its memory "
          "capacity only, not its speed")


@dataclass
class ReplaySettings:
    profile: str = default("profile")   # as `bench run`: RunConfig holds these defaults
    device: str = default("device")
    emulate: bool = default("emulate")
    synthetic: bool = False          # synthetic images of the recorded shape even where the data set loads
    data_dir: str | None = None      # the run's image folder on this machine (records keep only its name)
    budget_s: float = 20.0           # timing budget per shape (all shapes share the rounds)
    spread: float = 0.05             # stop when every shape's IQR / median is at most this
    min_rounds: int = 5
    max_rounds: int = 200
    reconfig_repeats: int = 3


@dataclass
class TimedShape:
    shape: Shape
    batch: int
    batch_reason: str
    memory: MemoryEstimate
    step: Stat = field(default_factory=lambda: Stat.of([]))       # wall seconds per step
    step_cpu: Stat = field(default_factory=lambda: Stat.of([]))   # this process's CPU seconds per step
    reconfig_s: float | None = None      # surgery into the next shape (PruneTrain), median
    reconfig_exact: bool = True          # the surgery produced exactly the next recorded shape
    nofit: NoFit | None = None           # the target card cannot train it even at batch 1: not timed

    @property
    def label(self) -> str:
        return f"{self.shape.mode} after epoch {self.shape.epoch}"


class StepRunner:
    """One ``bench.training.step.TrainStep`` of a rebuilt shape on the real loader's batches: what ``bench run`` times."""

    def __init__(self, shape: Shape, data: ImageData, batch: int, device: torch.device, cfg, lam: float):
        torch.manual_seed(cfg.seed)
        model = pc.rebuild(shape.arch).to(device).train()
        channels_last = cfg.channels_last and not _channels_last_hazard(model, device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = trainable.optimizer(cfg, model.parameters())
        # Every reconfiguration is recorded and the last one closes the penalty window (--lasso-until), so a
        # PruneTrain shape trains wholly inside the window (with the penalty) or wholly after it (without);
        # a competing method penalises its first shape only (s·Σ|γ| until its single pruning).
        method = methods.for_mode(shape.mode, cfg)
        if method is not None and method.penalised:
            penalised, lam = shape.index == 0, cfg.sparsity
        else:
            penalised = shape.mode == "prunetrain" and cfg.penalised(shape.epoch + 1)  # the epochs after its own
        penalty = trainable.penalty_of(shape.mode, cfg, model, _example(data, device), method) if penalised else None
        # the step bench run trains (bench.training.trainable): the penalty in the loss, or PruneTrain's proximal step
        self.step = trainable.train_step(model, opt, cfg, shape.mode, device, penalty=penalty, lam=lam,
                                          scaler=make_scaler(cfg.amp, device), channels_last=channels_last)
        self.meter = EpochMeter(device)
        self.device, self.data, self.batch, self.seed = device, data, batch, cfg.seed
        self.batches = self._cycle()

    def _cycle(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = 0
        while True:
            epoch += 1
            loader = Loader(self.data, self.batch, train=True, device=self.device, generator_seed=self.seed,
                            drop_last=len(self.data) >= self.batch)
            loader.set_epoch(epoch)
            yield from loader

    def __call__(self) -> None:
        self.step(*next(self.batches), self.meter)


def _channels_last_hazard(model, device) -> bool:
    return bool(channels_last_hazard(model, device))


# ------------------------------------------------------------------------------------------ data
def replay_data(traj: Trajectory, synthetic: bool, pool: int,
                data_dir: str | Path | None = None) -> tuple[ImageData, str]:
    """The original data pipeline where the data set loads here, else random images of its recorded shape.

    A run on an image folder recorded only the folder's name: ``data_dir`` is
    where it lies on this machine (checked against the recorded sizes).
    """
    cfg, recorded = traj.cfg, traj.meta.get("data") or {}
    if data_dir is not None and cfg.data_dir is None:
        raise ConfigError(f"{traj.path}: the run did not read an image folder; drop --data-dir")
    if synthetic:
        why = "--synthetic"
    elif cfg.data_dir is not None and data_dir is None:
        why = f"the run's image folder '{Path(cfg.data_dir).name}' not given (--data-dir FOLDER)"
    else:
        try:
            # the run's training images: less its validation split (records from before the split held none out)
            data = load_data(cfg.data, data_dir=str(data_dir) if data_dir else None, subset=cfg.subset, seed=cfg.seed,
                             val=cfg.val if "val_size" in recorded else 0)
        except DataError as exc:
            if data_dir is not None:
                raise
            why = f"{cfg.data} not available here ({str(exc).split(':')[0]})"
        else:
            here = data.to_dict()
            differ = [f"{k} {recorded[k]} recorded, {here[k]} here"
                      for k in ("train_size", "num_classes") if k in recorded and recorded[k] != here[k]]
            if differ:
                raise ConfigError(f"{data_dir}: not the run's data ({'; '.join(differ)}); give the folder the run read")
            return data.train, f"real: {data.name} ({len(data.train)} images, the run's own pipeline)"
    size = int(recorded.get("image_size") or (224 if "imagenet" in cfg.model else 32))
    classes = int(recorded.get("num_classes") or 10)
    g = torch.Generator().manual_seed(cfg.seed)
    images = torch.randint(0, 256, (pool, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (pool,), generator=g)
    mean, std = tuple(recorded.get("mean") or (0.5,) * 3), tuple(recorded.get("std") or (0.25,) * 3)
    data = ImageData(images=images, labels=labels, num_classes=classes, mean=mean, std=std, name="synthetic")
    return data, f"synthetic: {pool} random {size}x{size} images, same loader and augmentation ({why})"


# ------------------------------------------------------------------------------------------ timing
def time_rounds(cases: dict, s: ReplaySettings, device,
                echo: Callable[[str], None]) -> tuple[dict, dict, int, str]:
    """Interleaved rounds (rotated order) until every case's IQR/median ≤ spread, or the budget is spent.

    Returns wall and CPU seconds per step (Stat per case), the rounds run and why they stopped.
    """
    budget = s.budget_s * len(cases)

    def stop(done: int, elapsed: float, samples: dict) -> str | None:
        if done < s.min_rounds:
            return None
        worst = max(_rel_iqr(v) for v in samples.values())
        if worst <= s.spread:
            return f"spread {worst:.1%} ≤ {s.spread:.0%}"
        if elapsed > budget:
            return f"budget {budget:.0f} s spent (largest spread {worst:.1%})"
        return None

    cpu: dict = {}
    wall, r, why = timed_rounds(cases, s.max_rounds, warmup=2, device=device, stop=stop, cpu=cpu)
    echo(f"timed {len(cases)} shape(s) in {r} interleaved rounds: {why}")
    return {n: Stat.of(v) for n, v in wall.items()}, {n: Stat.of(v) for n, v in cpu.items()}, r, why


def time_shapes(timed: dict, timing: str, data: ImageData, device, cfg, lam: float, s: ReplaySettings,
                echo: Callable[[str], None]) -> tuple[int, str]:
    """Time every shape in ``timed`` (sets its step and step_cpu): all in interleaved rounds, or one at a time.

    ``sequential``: each shape's steps are built, timed and freed before the next is built, so only one is
    held at once (bench.replay.fit.timing_plan chose it: together they do not fit here).
    Returns the rounds run (summed over the shapes one at a time) and why timing stopped.
    """
    def build(ts: TimedShape) -> Case:
        return Case(StepRunner(ts.shape, data, ts.batch, device, cfg, lam), inner=STEPS_PER_SAMPLE)

    if not timed:
        return 0, "no shape fits the target card: nothing timed"
    if timing == "interleaved":
        walls, cpus, rounds, stop = time_rounds({k: build(ts) for k, ts in timed.items()}, s, device, echo)
        for key in walls:
            timed[key].step, timed[key].step_cpu = walls[key], cpus[key]
        return rounds, stop
    total, stops = 0, []
    for key, ts in timed.items():
        cases = {key: build(ts)}
        walls, cpus, rounds, stop = time_rounds(cases, s, device, echo)
        ts.step, ts.step_cpu = walls[key], cpus[key]
        total += rounds
        stops.append(f"{ts.label}: {stop}")
        del cases                      # the runner's batch generator refers back to it: collect the cycle
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return total, "; ".join(stops)


def _rel_iqr(xs: list[float]) -> float:
    st = Stat.of(xs)
    return st.iqr / st.median if st.median > 0 else math.inf


# ------------------------------------------------------------------------------------------ the replay
def replay(run_dir: Path, results_dir: Path, settings: ReplaySettings | None = None,
           echo: Callable[[str], None] = lambda s: None) -> Path:
    """Replay ``run_dir``'s trajectory here under ``settings.profile``; returns the new run folder.

    Everything that can fail on user input (records, profile, device, data) is
    checked before the run folder is created; a shape too large for the target
    card is a result (``fits`` 0), not a failure.
    """
    s = settings or ReplaySettings()
    traj = load_trajectory(run_dir)
    setup = prepare_device(s)           # the card itself (indexed), its profile and the --emulate cap
    info, profile, device, budget, emulated = setup.info, setup.profile, setup.device, setup.budget_bytes, setup.emulated
    usable = max(0, budget - profile.reserve_bytes)
    cfg = traj.cfg
    largest = max(sh.batch_size for shapes in traj.shapes.values() for sh in shapes)
    data, data_note = replay_data(traj, s.synthetic, pool=SYNTHETIC_POOL_BATCHES * max(cfg.max_batch, largest),
                                  data_dir=s.data_dir)
    echo(f"replaying {traj.run_id} ({cfg.model}, {sum(len(v) for v in traj.shapes.values())} shapes) under "
         f"profile {profile.name}{' (emulated)' if emulated else ''} on {device}; data {data_note}")
    lam = next((r["lasso_lambda"] for r in traj.rows if r["mode"] == "prunetrain" and r.get("lasso_lambda")), 1e-4)
    timed: dict[tuple[str, int], TimedShape] = {}
    example = _example(data, device)
    for mode, shapes in traj.shapes.items():
        start_need = 0
        for sh in shapes:
            model = pc.rebuild(sh.arch)
            if pc.channels(model) != sh.channels:
                raise BenchError(f"{traj.path / 'run.json'}: {mode} shape after epoch {sh.epoch} does not rebuild "
                                 "to its recorded channels; the record is damaged")
            model = model.to(device)
            opt = trainable.optimizer(cfg, model.parameters())
            memory = measure_training_memory(model, probe_batch(example), optimizer=opt)
            del model, opt
            gc.collect()
            batch, reason, nofit = decide_batch(traj, sh, memory, usable, profile.headroom, profile.name, start_need)
            if nofit is None:
                start_need = start_need or memory.total_for_batch(batch)
            else:
                echo(f"{nofit.text(mode)}: shape after epoch {sh.epoch} recorded as not fitting, not timed")
            timed[(mode, sh.index)] = TimedShape(sh, batch, reason, memory, nofit=nofit)
    fitting = {key: ts for key, ts in timed.items() if ts.nofit is None}
    for key, ts in fitting.items():
        nxt = traj.next_shape(ts.shape)
        if nxt is not None and key[0] == "prunetrain":
            ts.reconfig_s, ts.reconfig_exact = time_reconfiguration(traj, ts.shape, nxt, data, device,
                                                                    s.reconfig_repeats, usable, profile.headroom)
        elif nxt is not None and methods.for_mode(key[0], cfg) is not None:
            ts.reconfig_s, ts.reconfig_exact = time_method_pruning(traj, ts.shape, nxt, data, device,
                                                                   s.reconfig_repeats, usable, profile.headroom)
    plan = replay_fit.timing_plan({ts.label: ts.memory.total_for_batch(ts.batch) for ts in fitting.values()}, device)
    echo(f"timing {plan['timing']}: {plan['why']}")
    probe = ContentionProbe(device if device.type == "cuda" else None)
    probe.start()
    rounds, stop = time_shapes(fitting, plan["timing"], data, device, cfg, lam, s, echo)
    contention = probe.stop()

    run_id, out = new_run_dir(Path(results_dir), f"{profile.name}-replay", cfg.model)
    device_name = select_device_name(info, device)
    limit = memory_limit(usable, profile.headroom)
    rows = [replay_row(traj, r, timed, run_id, profile.name, device_name, emulated, budget, limit) for r in traj.rows]
    write_epochs(out / "epochs.csv", rows)
    modes = {mode: {"status": "finished", "architectures": [arch_record(timed[(mode, sh.index)]) for sh in shapes]}
             for mode, shapes in traj.shapes.items()}
    config = {**traj.meta["config"], "profile": profile.name, "device": s.device, "emulate": s.emulate,
              "data_dir": Path(cfg.data_dir).name if cfg.data_dir else None}  # records hold no paths
    meta = run_record(run_id, "finished", config, setup, traj.meta.get("data"), cfg.seed, modes,
                      source="replay", replay_of=traj.run_id, replay={
        "of": {"run_id": traj.run_id, "path": traj.path.name, "profile": traj.meta.get("profile", {}).get("name")
               if isinstance(traj.meta.get("profile"), dict) else None,
               "device": traj.meta.get("hardware", {}).get("device_name")
               if isinstance(traj.meta.get("hardware"), dict) else None,
               "status": traj.meta.get("status"),
               "trajectory": traj.meta.get("trajectory_source") or _trajectory_source(traj)},
        "data": data_note, "rounds": rounds, "stopped": stop, "contention": contention.columns(), "spread_target": s.spread,
        "timing": plan["timing"], "order": plan["order"], "timing_why": plan["why"],
        "memory_here": {k: plan[k] for k in ("need_bytes", "total_need_bytes", "available_bytes", "share")},
        "not_fitting": [f"{ts.label}: {ts.nofit.text(ts.shape.mode)}" for ts in timed.values() if ts.nofit],
        "budget_s_per_shape": s.budget_s, "epoch_time": "images of the epoch / batch x median step time",
        "limits": LIMITS,
    })
    meta["finished"] = meta["created"]
    atomic_write_json(out / "run.json", meta)
    return out


def _trajectory_source(traj: Trajectory) -> str:
    """Where the replayed shapes came from, for a run that does not say (a run trained by `bench run`)."""
    data = traj.meta.get("data") if isinstance(traj.meta.get("data"), dict) else {}
    epochs = max((r["epoch"] for r in traj.rows), default=0)
    return (f"measured by bench run: {epochs} epoch(s) of {traj.cfg.model} on {data.get('train_size', '?')} "
            f"images of {data.get('name') or traj.cfg.data}")
