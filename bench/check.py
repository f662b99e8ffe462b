"""``bench check``: every path a long run takes, on the selected device, for a few steps each.

A two-day run should not be the first time a card meets the memory cap, the
out-of-memory retry or a resume.  Each row below runs the harness's own code
(:class:`bench.training.train.ModeTrainer` on synthetic images) and checks what it must
guarantee; the result is one table (path, result, figure) and a non-zero exit
when a row fails.  Rows that only mean something on CUDA (the card's identity,
the torch build, AMP, data-parallel) say "not applicable" on a CPU; the
others run everywhere.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

import prunetrain_core as pc

from .training.batching import EmulatedOutOfMemory
from .config import partial_from, resolve
from .training.data import load_data
from .errors import BenchError
from .training.train import ModeTrainer, RunContext

PASS, FAIL, NOT_APPLICABLE, NOT_REQUESTED = "pass", "FAIL", "not applicable", "not requested"
IMAGES, BATCH = 64, 16                     # four steps an epoch
VAL = 256                                  # validation images: each reconfiguration is measured on them


@dataclass(frozen=True)
class Row:
    path: str
    result: str
    figure: str = ""


class CheckFailed(Exception):
    """A check's guarantee did not hold (the row's figure says how)."""


@dataclass
class Checker:
    """The rows of one ``bench check`` on ``device``, for ``model`` at 32×32 (``amp``/``channels_last`` if asked).

    (Over 200 lines on purpose: one method per row of the table, each a few lines over the shared trainer
    factory and row runner; splitting them across classes would hide the table's order.)
    """

    device: torch.device
    model: str = "resnet20"
    amp: str = "off"
    channels_last: bool = False
    echo: Callable[[str], None] = lambda s: None

    def __post_init__(self) -> None:
        self.rows: list[Row] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-check-"))
        self.data = load_data("synthetic", subset=128, val=VAL)  # PruneTrain measures on a validation split
        self.cuda = self.device.type == "cuda"

    # ------------------------------------------------------------------ plumbing
    def trainer(self, mode: str, *, budget: int = 0, reserve: int = 0, headroom: float = 1.0, name: str = "check",
                **cfg: Any) -> ModeTrainer:
        """A trainer as `bench run` builds it, on ``IMAGES`` synthetic images, checkpointing under a fresh folder;
        its settings checked and merged as bench run's command line is (bench.config.resolve)."""
        options = dict(model=self.model, data="synthetic", subset=IMAGES, modes=[mode], epochs=4,
                       batch_size=BATCH, max_batch=BATCH, adjust_batch=False, device=str(self.device),
                       amp=self.amp, channels_last=self.channels_last, lr_milestones=[], threshold=1e-4,
                       val=VAL, held_out=VAL)
        options.update(cfg)
        run_dir = Path(tempfile.mkdtemp(dir=self.tmp))
        (run_dir / "checkpoints").mkdir()
        data = dataclasses.replace(self.data, train=_first(self.data.train, options["subset"] or IMAGES))
        ctx = RunContext(cfg=resolve(given=partial_from(options)), run_id="check", run_dir=run_dir, device=self.device, data=data,
                         profile_name=name, device_name=str(self.device), emulated=bool(budget),
                         budget_bytes=budget, reserve_bytes=reserve, headroom=headroom, log=None)
        return ModeTrainer(ctx, mode)

    def run(self, path: str, fn: Callable[[], str], applies: str | None = None) -> None:
        """One row: ``fn`` returns the figure, raises :class:`CheckFailed` (or anything) on failure."""
        if applies is not None:
            self.rows.append(Row(path, applies))
            return
        start = time.perf_counter()
        try:
            figure, result = fn(), PASS
        except CheckFailed as exc:
            figure, result = str(exc), FAIL
        except Exception as exc:  # noqa: BLE001 - any crash of a path is what this command is for
            figure, result = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}", FAIL
        self.rows.append(Row(path, result, figure))
        self.echo(f"{path}: {result} ({time.perf_counter() - start:.1f} s)")

    # ------------------------------------------------------------------ the rows
    def check_all(self) -> list[Row]:
        cuda_only = None if self.cuda else NOT_APPLICABLE
        self.run("device identity (CUDA vs NVML)", self.identity, cuda_only)
        self.run("torch build supports the card", self.build, cuda_only)
        self.run("dense step", lambda: self.steps("dense"))
        self.run("PruneTrain step (penalty, λ)", lambda: self.steps("prunetrain"))
        self.run("reconfiguration keeps the function", self.reconfiguration)
        self.run("checkpoint → resume = uninterrupted", self.resume)
        from .machine.profiles import builtin_profiles

        for profile in builtin_profiles().values():
            if profile.device_kind == "cuda" and profile.budget_bytes is not None:
                self.run(f"--emulate {profile.name}", lambda p=profile: self.emulate(p), self.emulation_applies(profile))
        self.run("out of memory → lower batch, go on", self.forced_oom)
        amp_applies = NOT_REQUESTED if self.amp == "off" else None if self.cuda else "not applicable (CUDA only)"
        self.run(f"AMP ({self.amp})", self.amp_steps, amp_applies)
        self.run("channels_last", self.channels_last_step, None if self.channels_last else NOT_REQUESTED)
        two = self.cuda and torch.cuda.device_count() >= 2
        self.run("data-parallel, 2 ranks", self.data_parallel, None if two else "not applicable (< 2 GPUs)")
        return self.rows

    def identity(self) -> str:
        from .machine.gpu import identify

        card, note = identify(self.device)
        if note and "disagree" in note:
            raise CheckFailed(note)
        cc = card.compute_capability
        return (f"{self.device}: {card.name}, sm_{cc[0]}{cc[1]}, {card.total_memory_bytes / 2**30:.1f} GiB"
                + (f", driver {card.driver}" if card.driver else f" ({note})" if note else ""))

    def build(self) -> str:
        from .machine.hardware import arch_support

        cc = torch.cuda.get_device_capability(self.device)
        problem = arch_support(cc, tuple(torch.cuda.get_arch_list()))
        if problem:
            raise CheckFailed(problem)
        x = torch.randn(64, 64, device=self.device)
        torch.cuda.synchronize(self.device)
        return f"sm_{cc[0]}{cc[1]} in {' '.join(torch.cuda.get_arch_list())}; a kernel ran ({float((x @ x).sum()):.1f})"

    def steps(self, mode: str) -> str:
        trainer = self.trainer(mode)
        trainer.start()
        stats = trainer.train_epoch(1)
        if not math.isfinite(stats.train_loss):
            raise CheckFailed(f"training loss {stats.train_loss}")
        extra = ""
        if mode == "prunetrain":
            if not (trainer.state.lam and 0 < stats.lasso_ratio < 1):
                raise CheckFailed(f"λ {trainer.state.lam}, penalty ratio {stats.lasso_ratio}")
            extra = f", λ {trainer.state.lam:.3g}, penalty ratio {stats.lasso_ratio:.3f}"
        return (f"{stats.steps} steps, {1e3 * stats.epoch_time_s / stats.steps:.0f} ms/step, loss "
                f"{stats.train_loss:.3f}{extra}; warm-up {stats.warmup_time_s:.2f} s untimed")

    def amp_steps(self) -> str:
        trainer = self.trainer("prunetrain")
        trainer.start()
        stats = trainer.train_epoch(1)
        scale = f", loss scale {trainer.scaler.get_scale():g}" if trainer.scaler is not None else ""
        if not (trainer.step.autocast and math.isfinite(stats.train_loss)):
            raise CheckFailed(f"autocast {trainer.step.autocast}, loss {stats.train_loss}")
        return f"{stats.steps} steps in {trainer.step.dtype}, {1e3 * stats.epoch_time_s / stats.steps:.0f} ms/step{scale}"

    def reconfiguration(self) -> str:
        trainer = self.trainer("prunetrain")
        trainer.start()
        trainer.train_epoch(1)
        killed = zero_half_the_channels(trainer.module, trainer.example)
        x, y = next(iter(_loader(trainer)))
        before, params = pc.outputs(trainer.module, x), sum(p.numel() for p in trainer.module.parameters())
        trainer.reconfigure(1)
        change = pc.compare(before, pc.outputs(trainer.module, x), y)
        after = sum(p.numel() for p in trainer.module.parameters())
        tolerance, why = reconfiguration_tolerance(trainer.step.autocast is not False, self.device)
        figure = (f"{killed} channels zeroed: params {params:,} → {after:,}; max |Δlogit| / max |logit| "
                  f"{change.eval_rel:.1e} (eval), {change.train_rel:.1e} (train); tolerance {tolerance:g} ({why})")
        if after >= params or change.max_rel > tolerance:
            raise CheckFailed(figure)
        trainer.train_epoch(2)
        return figure

    def resume(self) -> str:
        first = self.trainer("prunetrain")
        first.start()
        first.train_epoch(1)
        first.state.epoch = 1
        first.save_checkpoint()
        first.train_epoch(2)
        again = ModeTrainer(first.ctx, "prunetrain")
        if not again.resume():
            raise CheckFailed("no checkpoint to resume from")
        again.train_epoch(2)
        resumed = again.module.state_dict()   # a rebuilt graph module: same names, maybe another order
        if set(resumed) != set(first.module.state_dict()):
            raise CheckFailed("the resumed model has other parameters than the uninterrupted one")
        diff = max(float((v.double() - resumed[k].double()).abs().max())
                   for k, v in first.module.state_dict().items())
        exact = self.device.type == "cpu"   # cuDNN's autotuned kernels need not sum in the same order
        figure = f"max |Δweight| after the next epoch {diff:.1e} ({'exact' if exact else 'cuDNN tolerance 1e-4'})"
        if diff > (0.0 if exact else 1e-4):
            raise CheckFailed(figure)
        return figure

    def emulation_applies(self, profile) -> str | None:
        if self.cuda and torch.cuda.get_device_properties(self.device).total_memory <= profile.budget_bytes:
            return "not applicable (card not larger than the budget)"
        return None

    def emulate(self, profile) -> str:
        d = profile.defaults
        trainer = self.trainer("dense", budget=profile.budget_bytes, reserve=profile.reserve_bytes,
                               headroom=profile.headroom, name=profile.name, subset=128,
                               batch_size=d.batch_size, max_batch=d.max_batch, adjust_batch=True)
        fraction = None
        if self.cuda:
            from .machine.gpu import cap_memory
            from .machine.hardware import detect

            fraction = profile.emulation_fraction(detect().with_selected(_card(self.device)))
            cap_memory(fraction, self.device)
        try:
            trainer.start()
            stats = trainer.train_epoch(1)
        finally:
            if fraction is not None:
                torch.cuda.set_per_process_memory_fraction(1.0, self.device)
        usable = trainer.ctx.usable_budget
        need = trainer.memory.total_for_batch(trainer.state.batch)
        figure = (f"budget {usable / 2**20:.0f} MiB usable, batch {trainer.state.batch}, "
                  f"{'measured' if self.cuda else 'predicted'} peak {stats.peak_memory_bytes / 2**20:.0f} MiB"
                  + (f" (cap {fraction:.3f} of the card)" if fraction else ""))
        if need > usable * profile.headroom or stats.peak_memory_bytes > usable:
            raise CheckFailed(figure)
        return figure

    def forced_oom(self) -> str:
        trainer = self.trainer("prunetrain", batch_size=32, max_batch=32)
        trainer.start()
        error = torch.cuda.OutOfMemoryError if self.cuda else EmulatedOutOfMemory
        trainer.step = _FailsOnce(trainer.step, above=16, error=error)
        stats = trainer.train_epoch(1)
        figure = (f"batch 32 → {trainer.state.batch} after {trainer.state.oom_retries} out-of-memory error(s) "
                  f"({error.__name__}); {stats.steps} steps, {stats.samples} images")
        if trainer.state.oom_retries != 1 or trainer.state.batch != 16 or stats.samples != IMAGES:
            raise CheckFailed(figure)
        return figure

    def channels_last_step(self) -> str:
        trainer = self.trainer("dense", channels_last=True)
        trainer.start()
        if not trainer.channels_last:
            return "turned off for this shape (see the warning); trained contiguous"
        stats = trainer.train_epoch(1)
        layout = trainer.module.conv1.weight.is_contiguous(memory_format=torch.channels_last) \
            if hasattr(trainer.module, "conv1") else True
        if not (math.isfinite(stats.train_loss) and layout):
            raise CheckFailed(f"loss {stats.train_loss}, weights channels_last: {layout}")
        return f"{stats.steps} steps, {1e3 * stats.epoch_time_s / stats.steps:.0f} ms/step, loss {stats.train_loss:.3f}"

    def data_parallel(self) -> str:
        out = self.tmp / "ddp"
        cmd = [sys.executable, "-m", "bench", "run", "--nproc-per-node", "2", "--profile", "smoke", "--data",
               "synthetic", "--subset", "256", "--epochs", "2", "--interval", "1", "--device", "cuda",
               "--results-dir", str(out), "--quiet"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise CheckFailed(f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1][:160]}")
        return "torchrun, 2 ranks, 2 epochs with a reconfiguration: finished"


class _FailsOnce:
    """The step, except that the first step above ``above`` images fails as an out-of-memory error would."""

    def __init__(self, step, above: int, error: type[Exception]):
        self.inner, self.above, self.error, self.fired = step, above, error, False

    def __call__(self, x, y, meter=None):
        if len(x) > self.above and not self.fired:
            self.fired = True
            raise self.error("forced by bench check")
        return self.inner(x, y, meter)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def zero_half_the_channels(model: torch.nn.Module, example: torch.Tensor) -> int:
    """Zero every other channel of each prunable channel space in every layer that uses it, as group lasso
    leaves a dead channel: the function does not depend on them, and reconfiguration removes them."""
    graph = pc.analyse(model, (example,))
    killed = 0
    with torch.no_grad():
        for space in graph.prunable_spaces():
            dead = list(range(1, space.size, 2))
            killed += len(dead)
            for m in space.members:
                module = model.get_submodule(m.module)
                if m.role in ("conv_out", "linear_out"):
                    module.weight[dead] = 0
                    if module.bias is not None:
                        module.bias[dead] = 0
                elif m.role == "conv_in":
                    module.weight[:, dead] = 0
                elif m.role == "linear_in":
                    for c in dead:
                        module.weight[:, c * m.positions:(c + 1) * m.positions] = 0
                elif getattr(module, "weight", None) is not None and module.weight.dim() == 1:  # BatchNorm
                    module.weight[dead] = 0
                    module.bias[dead] = 0
    return killed


def _first(split, n: int):
    return dataclasses.replace(split, images=split.images[:n], labels=split.labels[:n])


def reconfiguration_tolerance(autocast: bool, device: torch.device) -> tuple[float, str]:
    """How far the logits may move when dead channels are cut, by the precision the forward passes compute in.

    The cut itself changes nothing exactly; what moves is rounding, as the sums run
    over fewer terms in another order.  ieee fp32 (unit roundoff 2^-24): measured
    1.8e-7, allowed 1e-4.  TF32 rounds each operand to 10 mantissa bits (2^-11 ≈ 4.9e-4):
    measured 7.5e-5 on a train-mode change, allowed 1e-3.  fp16/bf16 autocast: 1e-2.
    """
    from .machine.gpu import precision_in_force

    if autocast:
        return 1e-2, "autocast"
    force = precision_in_force(device)
    if "tf32" in (force["matmul"], force["conv"]):
        return 1e-3, "TF32 in force"
    return 1e-4, "ieee fp32"


def _loader(trainer: ModeTrainer):
    from .training.data import Loader

    return Loader(trainer.ctx.data.test, 64, train=False, device=trainer.ctx.device)


def _card(device: torch.device):
    from .machine.gpu import identify

    return identify(device)[0]


def format_table(rows: list[Row]) -> str:
    """The rows as an aligned text table."""
    header = Row("path", "result", "figure")
    w1 = max(len(r.path) for r in [header, *rows])
    w2 = max(len(r.result) for r in [header, *rows])
    lines = [f"{r.path:<{w1}}  {r.result:<{w2}}  {r.figure}".rstrip() for r in [header, *rows]]
    lines.insert(1, "-" * w1 + "  " + "-" * w2 + "  " + "-" * 6)
    return "\n".join(lines)


def run_check(device: str = "auto", *, model: str = "resnet20", amp: str = "off", channels_last: bool = False,
              fp32_precision: str = "ieee", echo: Callable[[str], None] = lambda s: None) -> list[Row]:
    """Select and check the device, and set its options (cuDNN autotuning, fp32 precision), as `bench run` does;
    then run every row."""
    from .machine.gpu import configure, select
    from .machine.hardware import detect

    if model not in pc.available_models():
        raise BenchError(f"unknown model '{model}': choose one of {', '.join(pc.available_models())}")
    try:
        selected, _ = select(device, detect())
    except BenchError as exc:           # the card this torch cannot drive: the table says so, exit non-zero
        return [Row("torch build supports the card", FAIL, str(exc))]
    configure(selected, fp32_precision)
    checker = Checker(selected, model=model, amp=amp, channels_last=channels_last, echo=echo)
    try:
        return checker.check_all()
    finally:
        shutil.rmtree(checker.tmp, ignore_errors=True)
