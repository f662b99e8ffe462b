"""Does a FLOP saved become a second saved?  Speed measurements behind ``bench speed`` and the benchmarks.

Every figure is a *ratio measured in one process on the current device*, from
interleaved samples: each round times every case once, in a rotated order,
so slow phases of a shared machine hit all cases alike; results are the
median and the interquartile range (IQR) over the rounds (for a ratio, over
the per-round ratios).  Sections (:data:`SECTIONS`):

``penalty``   the group-lasso penalty's forward + backward against one dense
              training step (forward, cross-entropy, backward, SGD step).
``reconfig``  ``prunetrain_core.reconfigure`` with an optimizer, on a model
              whose channels were ~40% zeroed (real surgery), against one
              epoch **estimated** as ``ceil(50000 / batch)`` × the measured
              step time (the full CIFAR-10 training set); also the harness's
              whole reconfiguration (``ModeTrainer.reconfigure``: plan,
              surgery, lasso groups, FLOP count, memory model, batch decision).
``harness``   ``bench.train.ModeTrainer.train_epoch`` (dense mode) against a
              bare PyTorch loop over the same :class:`bench.data.Loader`;
              plus the harness's absolute per-step cost, measured precisely
              with a tiny model, as a fraction of the real step; plus the
              per-epoch checkpoint.
``sweep``     pruned shapes (uniform channel keep-fractions, a taper towards
              the later layers, and a ragged shape with and without rounding
              to multiples of 8): step-time ratio against FLOP ratio, each
              against the dense model in the same memory format (contiguous
              and channels_last; shapes that crash oneDNN in channels_last,
              see :func:`channels_last_hazard`, are listed, not run).
``rounding``  what :func:`auto_round_channels` measures and picks.
``data``      the in-memory uint8 :class:`~bench.data.Loader` against
              torchvision ``ImageFolder`` + ``DataLoader`` decoding JPEGs.

Pruned shapes are *built the way PruneTrain builds them*: channels of a
freshly initialised model are zeroed in every layer that uses them and the
engine's ``reconfigure`` removes them.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import prunetrain_core as pc
from prunetrain_core.plan import channel_strength, make_plan
from prunetrain_core.surgery import apply_plan

SECTIONS = ("penalty", "reconfig", "harness", "sweep", "rounding", "data")
ROUND_CANDIDATES = (1, 4, 8, 16)
CIFAR_TRAIN_IMAGES = 50_000

#: the issue's targets (fractions), checked in the report
TARGET_PENALTY = 0.03          # penalty ≤ 3% of a dense step
TARGET_RECONFIG = 0.01         # reconfiguration ≤ 1% of an epoch
TARGET_HARNESS = 0.02          # harness overhead ≤ 2% per step
TARGET_TIME_PER_FLOP = 0.8     # time saved ≥ 0.8 × FLOPs saved ...
TARGET_MIN_FLOPS_SAVED = 0.4   # ... for shapes that remove ≥ 40% of training FLOPs
ROUNDING_TOLERANCE = 0.03      # "as fast as the fastest": within 3% (the noise of a few rounds)


def steps_per_epoch(batch: int, images: int = CIFAR_TRAIN_IMAGES) -> int:
    return math.ceil(images / batch)


# =========================================================================== timing
@dataclass(frozen=True)
class Stat:
    """Median and quartiles of samples (seconds, or a ratio)."""

    median: float
    q1: float
    q3: float
    n: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @classmethod
    def of(cls, samples: Sequence[float]) -> "Stat":
        xs = sorted(float(s) for s in samples)
        if not xs:
            return cls(math.nan, math.nan, math.nan, 0)
        if len(xs) == 1:
            return cls(xs[0], xs[0], xs[0], 1)
        q1, med, q3 = statistics.quantiles(xs, n=4, method="inclusive")
        return cls(med, q1, q3, len(xs))

    def scaled(self, k: float) -> "Stat":
        return Stat(self.median * k, self.q1 * k, self.q3 * k, self.n)


@dataclass
class Case:
    """One thing to time.  ``setup`` (untimed) returns the arguments of ``fn``; ``inner`` calls per sample."""

    fn: Callable[..., Any]
    setup: Callable[[], tuple] | None = None
    inner: int = 1


def sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


def time_case(case: Case, device: torch.device | None = None) -> float:
    """Seconds per call of one sample of ``case``."""
    args = case.setup() if case.setup is not None else ()
    inner = 1 if case.setup is not None else max(1, case.inner)
    sync(device)
    start = time.perf_counter()
    for _ in range(inner):
        case.fn(*args)
    sync(device)
    return (time.perf_counter() - start) / inner


def calibrate_inner(fn: Callable[[], Any], target_s: float = 0.02, device=None, limit: int = 1000) -> int:
    """Calls per sample so that a sample lasts about ``target_s`` (for sub-millisecond functions)."""
    fn()
    t = time_case(Case(fn), device)
    return int(max(1, min(limit, math.ceil(target_s / max(t, 1e-7)))))


def interleaved(cases: Mapping[str, Case], rounds: int, *, warmup: int = 1, device=None,
                budget_s: float | None = None, min_rounds: int = 2) -> dict[str, list[float]]:
    """Time every case once per round, rotating the order; returns seconds per call, per case.

    ``budget_s`` stops after the round in which it ran out (never before ``min_rounds``).
    """
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            time_case(cases[name], device)
    samples: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(time_case(cases[name], device))
        if budget_s is not None and r + 1 >= min_rounds and time.perf_counter() - start > budget_s:
            break
    return samples


def ratio_stat(num: Sequence[float], den: Sequence[float]) -> Stat:
    """Median and IQR of the per-round ratios num[i] / den[i]."""
    return Stat.of([a / b for a, b in zip(num, den)])


# =========================================================================== models and shapes
def input_size(model_name: str) -> int:
    return 224 if "imagenet" in model_name else 32


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def random_batch(batch: int, size: int = 32, num_classes: int = 10, device="cpu", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = torch.randint(0, num_classes, (batch,), generator=g)
    return x.to(device), y.to(device)


def _ordered_spaces(graph) -> list:
    """Prunable spaces in depth order (by the first layer that writes them)."""
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    pos = {}
    for s in graph.prunable_spaces():
        writers = [m.module for m in s.members if m.role in ("conv_out", "linear_out")]
        pos[s.id] = min((order.get(w.replace(".", "_"), order.get(w, 10**9)) for w in writers), default=10**9)
    return sorted(graph.prunable_spaces(), key=lambda s: (pos[s.id], s.id))


def keep_counts(graph, shape: float | str) -> dict[int, int]:
    """Channels to keep per prunable space for a named shape.

    a float f: ``max(1, round(f · size))`` everywhere; ``"taper"``: keep
    fraction falling linearly with depth from 1.0 (first space) to 0.3 (last);
    ``"ragged"``: a fixed pseudo-random fraction in [0.4, 0.8] per space, so the
    counts are arbitrary (often odd), like those a real run ends with.
    """
    spaces = _ordered_spaces(graph)
    n = len(spaces)
    out = {}
    g = torch.Generator().manual_seed(1234)
    for i, s in enumerate(spaces):
        if isinstance(shape, (int, float)):
            f = float(shape)
        elif shape == "taper":
            f = 1.0 - 0.7 * (i / max(1, n - 1))
        elif shape == "ragged":
            f = 0.4 + 0.4 * float(torch.rand((), generator=g))
        else:
            raise ValueError(f"unknown shape {shape!r}: a keep fraction, 'taper' or 'ragged'")
        out[s.id] = max(1, min(s.size, round(f * s.size)))
    return out


@torch.no_grad()
def zero_channels(model: nn.Module, graph, keep: Mapping[int, int], seed: int = 0) -> nn.Module:
    """Zero all but ``keep[space]`` random channels of every space, in every layer that uses them."""
    g = torch.Generator().manual_seed(seed)
    for s in graph.prunable_spaces():
        k = keep.get(s.id, s.size)
        if k >= s.size:
            continue
        dead = torch.randperm(s.size, generator=g)[: s.size - k].tolist()
        for m in s.members:
            if m.role not in ("conv_out", "conv_in", "linear_out", "linear_in"):
                continue
            w = model.get_submodule(m.module).weight
            for c in dead:
                if m.role in ("conv_out", "linear_out"):
                    w[c] = 0
                elif m.role == "conv_in":
                    w[:, c] = 0
                else:
                    w[:, c * m.positions:(c + 1) * m.positions] = 0
    return model


def _zeroed(model_name: str, shape: float | str, num_classes: int, seed: int):
    torch.manual_seed(seed)
    model = pc.build_model(model_name, num_classes)
    size = input_size(model_name)
    example = torch.zeros(2, 3, size, size)
    graph = pc.analyse(model, example)   # the traced module shares the model's parameters
    zero_channels(model, graph, keep_counts(graph, shape), seed=seed)
    return model, graph, example


def zeroed_model(model_name: str, shape: float | str, *, num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A freshly initialised model (seeded) whose channels outside ``shape`` are zero (CPU)."""
    return _zeroed(model_name, shape, num_classes, seed)[0]


def pruned_models(model_name: str, shape: float | str, round_to: Sequence[int] = (1,), *, num_classes: int = 10,
                  seed: int = 0, device="cpu") -> dict[int, nn.Module]:
    """The physically smaller models PruneTrain's reconfiguration makes of :func:`zeroed_model`, per multiple."""
    model, graph, example = _zeroed(model_name, shape, num_classes, seed)
    strength = channel_strength(graph, model)
    return {r: apply_plan(graph, make_plan(graph, strength, round_to=r), (example,)).to(device) for r in round_to}


def pruned_model(model_name: str, shape: float | str, *, round_to: int = 1, num_classes: int = 10,
                 seed: int = 0, device="cpu") -> nn.Module:
    """:func:`pruned_models` for one multiple (``reconfigure(zeroed_model(...), round_to=...)``)."""
    return pruned_models(model_name, shape, (round_to,), num_classes=num_classes, seed=seed, device=device)[round_to]


def channel_summary(model: nn.Module) -> str:
    """Output channels of every conv, compressed (for tables)."""
    outs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    return ",".join(str(c) for c in outs[:4]) + (f",…({len(outs)} convs)" if len(outs) > 4 else "")


class TrainStep:
    """forward, cross-entropy, backward and an SGD step (momentum 0.9, wd 5e-4) on one fixed batch."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lr: float = 0.01,
                 lasso: "pc.GroupLasso | None" = None, lam: float = 1e-4, channels_last: bool = False):
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        self.model, self.x, self.y = model.train(), x, y
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        self.lasso, self.lam = lasso, lam

    def __call__(self) -> None:
        out = self.model(self.x)
        loss = F.cross_entropy(out, self.y)
        if self.lasso is not None:
            loss = loss + self.lam * self.lasso.penalty()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


# =========================================================================== report rows
@dataclass
class Row:
    section: str
    name: str
    value: float
    unit: str                  # ms, s, %, x, img/s, int
    iqr: float | None = None   # q3 - q1, same unit
    target: str | None = None
    met: bool | None = None
    note: str = ""

    def formatted_value(self) -> str:
        return _fmt(self.value, self.unit)


def _fmt(v: float | None, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if unit == "int":
        return f"{int(v)}"
    if unit == "%":
        return f"{v:.2f}%"
    if unit == "x":
        return f"{v:.3f}"
    if unit == "img/s":
        return f"{v:,.0f} img/s"
    if unit == "ms":
        return f"{v:.2f} ms"
    if unit == "s":
        return f"{v:.3f} s"
    return f"{v:g} {unit}"


@dataclass
class SpeedReport:
    device: str
    threads: int
    torch_version: str
    batch: int
    model: str
    rounds: int
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0
    load_before: float | None = None   # 1-minute load average: > cores means the machine was shared
    load_after: float | None = None

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)

    def to_dict(self) -> dict:
        return {
            "device": self.device, "threads": self.threads, "torch": self.torch_version, "batch": self.batch,
            "model": self.model, "rounds": self.rounds, "seconds": self.seconds,
            "load_before": self.load_before, "load_after": self.load_after,
            "rows": [asdict(r) for r in self.rows],
        }

    def write_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def write_csv(self, path: Path) -> None:
        cols = ["section", "name", "value", "unit", "iqr", "target", "met", "note"]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["device", "threads", "batch", *cols])
            w.writeheader()
            for r in self.rows:
                w.writerow({"device": self.device, "threads": self.threads, "batch": self.batch,
                            **{c: getattr(r, c) for c in cols}})

    def format_table(self) -> str:
        head = (f"bench speed: {self.model}, batch {self.batch}, device {self.device}, {self.threads} threads, "
                f"torch {self.torch_version}; medians (IQR) over ≤{self.rounds} interleaved rounds"
                + (f", {self.seconds:.0f} s" if self.seconds else ""))
        if self.load_before is not None and self.load_after is not None:
            busy = max(self.load_before, self.load_after) > (os.cpu_count() or 1)
            head += (f"\nload average {self.load_before:.1f} → {self.load_after:.1f} on {os.cpu_count()} cores"
                     + (": the machine was shared, absolute times are inflated (ratios less so)" if busy else ""))
        cells = [("section", "measure", "median", "IQR", "target", "met", "note")]
        for r in self.rows:
            cells.append((r.section, r.name, r.formatted_value(),
                          "" if r.iqr is None else _fmt(r.iqr, r.unit).replace(" img/s", ""),
                          r.target or "", "" if r.met is None else ("yes" if r.met else "NO"), r.note))
        widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
        lines = [head]
        for j, c in enumerate(cells):
            lines.append("  ".join(v.ljust(widths[i]) for i, v in enumerate(c)).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _pct_row(section: str, name: str, stat: Stat, **kw: Any) -> Row:
    """A row in percent from a ratio statistic."""
    return Row(section, name, 100 * stat.median, "%", 100 * stat.iqr, **kw)


# =========================================================================== (a) penalty
def measure_penalty(model_name: str = "resnet32", batch: int = 128, device=None, rounds: int = 15,
                    warmup: int = 1) -> list[Row]:
    """Penalty forward+backward vs one dense step; and a step with the penalty vs without (noisier)."""
    device = resolve_device(device)
    size = input_size(model_name)
    torch.manual_seed(0)
    model = pc.build_model(model_name, 10).to(device)
    x, y = random_batch(batch, size, device=device)
    lasso = pc.GroupLasso(model, x[:2])
    dense = TrainStep(model, x, y)
    with_penalty = TrainStep(model, x, y, lasso=lasso)

    def penalty() -> None:
        lasso.penalty().backward()

    inner = calibrate_inner(penalty, device=device)
    model.zero_grad(set_to_none=True)
    s = interleaved({"dense": Case(dense), "penalty": Case(penalty, inner=inner), "step+penalty": Case(with_penalty)},
                    rounds, warmup=warmup, device=device)
    dense_t = Stat.of(s["dense"])
    pen_t = Stat.of(s["penalty"])
    frac = ratio_stat(s["penalty"], s["dense"])
    diff = Stat.of([(b - a) / a for a, b in zip(s["dense"], s["step+penalty"])])
    groups = lasso.group_count
    return [
        Row("penalty", f"dense step ({model_name}, fwd+CE+bwd+SGD)", dense_t.median * 1e3, "ms", dense_t.iqr * 1e3),
        Row("penalty", f"penalty fwd+bwd ({len(lasso.layers)} layers, {groups} groups)", pen_t.median * 1e3, "ms",
            pen_t.iqr * 1e3),
        _pct_row("penalty", "penalty / dense step", frac, target=f"≤ {100 * TARGET_PENALTY:g}%",
                 met=frac.median <= TARGET_PENALTY),
        _pct_row("penalty", "(step with penalty − step) / step", diff,
                 note="same thing inside the real step; noisier (difference of two steps)"),
    ]


# =========================================================================== (b) reconfiguration
def with_momentum(model: nn.Module, lr: float = 0.1, seed: int = 0) -> torch.optim.Optimizer:
    """SGD whose momentum buffers are populated (no step: the zeroed channels must stay zero)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        opt.state[p]["momentum_buffer"] = (torch.randn(p.shape, generator=g) * 1e-3).to(p.device)
    return opt


def copy_with_optimizer(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
    new = copy.deepcopy(model)
    new_opt = torch.optim.SGD(new.parameters(), **{k: v for k, v in opt.defaults.items()})
    for p_old, p_new in zip(model.parameters(), new.parameters()):
        new_opt.state[p_new] = {k: v.clone() for k, v in opt.state[p_old].items()}
    return new, new_opt


def measure_reconfig(model_names: Sequence[str] = ("resnet32", "resnet50"), batch: int = 128, device=None,
                     rounds: int = 5, keep: float = 0.6, harness: bool = True, warmup: int = 1) -> list[Row]:
    """reconfigure() with an optimizer on a ~40%-zeroed model, vs an epoch estimated from the step time."""
    device = resolve_device(device)
    rows: list[Row] = []
    for name in model_names:
        with_harness = harness and name == model_names[0]
        size = input_size(name)
        base = zeroed_model(name, keep).to(device)
        example = torch.zeros(2, 3, size, size, device=device)
        opt = with_momentum(base)
        before = sum(p.numel() for p in base.parameters())
        x, y = random_batch(batch, size, device=device)
        torch.manual_seed(0)
        step = TrainStep(pc.build_model(name, 10).to(device), x, y)

        def engine_setup():
            return copy_with_optimizer(base, opt)

        def engine(model, optimizer):
            return pc.reconfigure(model, example, optimizer=optimizer)

        cases = {"step": Case(step), "engine": Case(engine, setup=engine_setup)}
        trainer_holder: dict[str, Any] = {}
        if with_harness:
            trainer_holder["ctx"] = harness_context(name, batch, steps=1, device=device, mode="prunetrain")

            def harness_setup():
                from .train import ModeTrainer

                m, o = copy_with_optimizer(base, opt)
                trainer = ModeTrainer(trainer_holder["ctx"], "prunetrain")
                trainer.state.batch = batch
                trainer._install(m, o)
                pc.flops._CACHE.clear()   # a real reconfiguration meets a new shape: count afresh
                return (trainer,)

            cases["harness"] = Case(lambda trainer: trainer.reconfigure(1), setup=harness_setup)
        s = interleaved(cases, rounds, warmup=warmup, device=device)
        after = sum(p.numel() for p in engine(*engine_setup()).parameters())
        steps = steps_per_epoch(batch)
        epoch = [t * steps for t in s["step"]]
        st = Stat.of(s["step"])
        rows.append(Row("reconfig", f"{name}: step (batch {batch})", st.median * 1e3, "ms", st.iqr * 1e3))
        rows.append(Row("reconfig", f"{name}: epoch estimate ({steps} × step)", st.median * steps, "s",
                        st.iqr * steps, note="estimated from the step time, full CIFAR-10 (50k)"))
        e = Stat.of(s["engine"])
        rows.append(Row("reconfig", f"{name}: reconfigure() with SGD state", e.median, "s", e.iqr,
                        note=f"params {before:,} → {after:,} ({100 * (1 - keep):.0f}% of channels zeroed)"))
        frac = ratio_stat(s["engine"], epoch)
        rows.append(_pct_row("reconfig", f"{name}: reconfigure() / epoch", frac,
                        target=f"≤ {100 * TARGET_RECONFIG:g}%", met=frac.median <= TARGET_RECONFIG))
        if with_harness:
            h = Stat.of(s["harness"])
            frac_h = ratio_stat(s["harness"], epoch)
            rows.append(Row("reconfig", f"{name}: harness reconfiguration (+lasso, FLOPs, memory)", h.median, "s",
                            h.iqr))
            rows.append(_pct_row("reconfig", f"{name}: harness reconfiguration / epoch", frac_h,
                            target=f"≤ {100 * TARGET_RECONFIG:g}%", met=frac_h.median <= TARGET_RECONFIG))
    return rows


# =========================================================================== (c) harness overhead
def harness_context(model_name: str, batch: int, steps: int, device=None, mode: str = "dense",
                    progress: bool = True, run_dir: Path | None = None):
    """A RunContext over ``batch × steps`` synthetic images, as ``bench run`` builds it (no records file)."""
    from .config import RunConfig
    from .data import load_data
    from .train import RunContext

    device = resolve_device(device)
    data = load_data("synthetic", subset=batch * steps if batch * steps < 5000 else 0)
    cfg = RunConfig(model=model_name, data="synthetic", subset=len(data.train), modes=[mode], epochs=1,
                    batch_size=batch, max_batch=batch, adjust_batch=False, device=str(device))
    run_dir = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="bench-speed-"))
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return RunContext(cfg=cfg, run_id="speed", run_dir=run_dir, device=device, data=data, profile_name="speed",
                      device_name=str(device), emulated=False, budget_bytes=1 << 50, reserve_bytes=0, headroom=1.0,
                      log=None, progress=progress)


class BareLoop:
    """The minimal loop: the same Loader, model, optimizer settings; forward/CE/backward/SGD and nothing else."""

    def __init__(self, ctx, model: nn.Module | None = None):
        from .data import Loader

        cfg = ctx.cfg
        torch.manual_seed(cfg.seed)
        self.model = model if model is not None else pc.build_model(cfg.model, ctx.data.num_classes).to(ctx.device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
        self.loader = Loader(ctx.data.train, cfg.batch_size, train=True, device=ctx.device,
                             generator_seed=cfg.seed)
        self.device = ctx.device

    def epoch(self, epoch: int) -> None:
        self.model.train()
        self.loader.set_epoch(epoch)
        for x, y in self.loader:
            loss = F.cross_entropy(self.model(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        sync(self.device)


def tiny_model(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, num_classes))


def measure_harness(model_name: str = "resnet32", batch: int = 128, steps: int = 8, device=None, rounds: int = 5,
                    tiny_rounds: int = 15, warmup: int = 1) -> list[Row]:
    """ModeTrainer.train_epoch (dense) vs a bare loop: end to end, and the absolute per-step cost."""
    from .train import ModeTrainer

    device = resolve_device(device)
    ctx = harness_context(model_name, batch, steps, device=device, mode="dense", progress=True)
    trainer = ModeTrainer(ctx, "dense")
    trainer.start()
    bare = BareLoop(ctx)
    n_steps = len(bare.loader)
    sink = io.StringIO()
    counter = {"h": 0, "b": 0}

    def harness_epoch() -> None:
        counter["h"] += 1
        with contextlib.redirect_stderr(sink):   # the progress bar is drawn, into a buffer
            trainer.train_epoch(counter["h"])

    def bare_epoch() -> None:
        counter["b"] += 1
        bare.epoch(counter["b"])

    s = interleaved({"harness": Case(harness_epoch), "bare": Case(bare_epoch)}, rounds, warmup=warmup,
                    device=device)
    over = Stat.of([h / b - 1 for h, b in zip(s["harness"], s["bare"])])
    bare_step = Stat.of(s["bare"]).scaled(1 / n_steps)
    harness_step = Stat.of(s["harness"]).scaled(1 / n_steps)

    # per epoch: the checkpoint written after every epoch (of the real model), against the estimated full epoch
    ckpt = Stat.of(interleaved({"ckpt": Case(trainer.save_checkpoint)}, max(3, rounds), warmup=warmup,
                               device=device)["ckpt"])

    # the harness's own per-step cost, free of the model's noise: the same two loops around a tiny model
    tiny = tiny_model().to(device)
    trainer._install(tiny, trainer._make_optimizer(tiny.parameters()))
    tiny_bare = BareLoop(ctx, model=tiny_model().to(device))
    t = interleaved({"harness": Case(harness_epoch), "bare": Case(lambda: tiny_bare.epoch(0))},
                    tiny_rounds, warmup=warmup, device=device)
    per_step = Stat.of([(h - b) / n_steps for h, b in zip(t["harness"], t["bare"])])
    abs_frac = per_step.median / bare_step.median

    epoch_s = bare_step.median * steps_per_epoch(batch)
    return [
        Row("harness", f"bare loop step ({model_name}, same Loader)", bare_step.median * 1e3, "ms", bare_step.iqr * 1e3),
        Row("harness", "ModeTrainer.train_epoch step (dense)", harness_step.median * 1e3, "ms", harness_step.iqr * 1e3),
        _pct_row("harness", f"harness overhead, end to end ({n_steps} steps × {rounds} rounds)", over,
            target=f"≤ {100 * TARGET_HARNESS:g}%", met=over.median <= TARGET_HARNESS,
            note="noise of two full-model epochs"),
        Row("harness", "harness cost per step, absolute (tiny model)", per_step.median * 1e3, "ms", per_step.iqr * 1e3),
        Row("harness", "harness cost per step / bare step", 100 * abs_frac, "%", 100 * per_step.iqr / bare_step.median,
            target=f"≤ {100 * TARGET_HARNESS:g}%", met=abs_frac <= TARGET_HARNESS,
            note="precise estimate: tiny-model difference ÷ real step"),
        Row("harness", "checkpoint per epoch / epoch estimate", 100 * ckpt.median / epoch_s, "%",
            100 * ckpt.iqr / epoch_s, note=f"{ckpt.median * 1e3:.0f} ms per checkpoint, once per epoch"),
    ]


# =========================================================================== (d) sweep + rounding report
SWEEP_SHAPES: tuple[tuple[str, float | str, int], ...] = (
    ("dense (reconfigured, keep 1.0)", 1.0, 1),
    ("keep 0.75", 0.75, 1),
    ("keep 0.5", 0.5, 1),
    ("keep 0.25", 0.25, 1),
    ("taper 1.0→0.3 (later layers pruned)", "taper", 1),
    ("ragged (random 0.4–0.8)", "ragged", 1),
    ("ragged, rounded to 8", "ragged", 8),
)


FORMATS = ("contiguous", "channels_last")


@dataclass
class ShapeResult:
    label: str
    channels: str
    flop_ratio: float
    time_ratio: Stat
    memory_format: str = "contiguous"
    flop_ratio_8: float | None = None   # FLOPs of the same shape with channels rounded up to multiples of 8

    @property
    def efficiency_8(self) -> float | None:
        """time saved ÷ FLOPs saved, counting FLOPs at the 8-channel granularity of AVX2/oneDNN kernels."""
        if self.flop_ratio_8 is None or 1 - self.flop_ratio_8 <= 1e-9:
            return None
        return self.time_saved / (1 - self.flop_ratio_8)

    @property
    def flops_saved(self) -> float:
        return 1 - self.flop_ratio

    @property
    def time_saved(self) -> float:
        return 1 - self.time_ratio.median

    @property
    def efficiency(self) -> float:
        """time saved ÷ FLOPs saved (1 = proportional)."""
        return self.time_saved / self.flops_saved if self.flops_saved > 1e-9 else math.nan


def shape_rows(res: ShapeResult, prefix: str = "") -> list[Row]:
    """The two rows of one pruned shape: time ratio, and time saved ÷ FLOPs saved against the target."""
    big = res.flops_saved >= TARGET_MIN_FLOPS_SAVED
    return [
        Row("sweep", f"{prefix}{res.label}: time ratio (FLOP ratio {res.flop_ratio:.3f})", res.time_ratio.median, "x",
            res.time_ratio.iqr, note=f"channels {res.channels}"),
        Row("sweep", f"{prefix}{res.label}: time saved / FLOPs saved", res.efficiency, "x",
            res.time_ratio.iqr / res.flops_saved if res.flops_saved > 1e-9 else None,
            target=f"≥ {TARGET_TIME_PER_FLOP:g}" if big else None,
            met=(res.efficiency >= TARGET_TIME_PER_FLOP) if big else None,
            note=("" if big else f"removes < {100 * TARGET_MIN_FLOPS_SAVED:.0f}% of FLOPs: no target")
            + ("" if res.efficiency_8 is None else
               f"{'; ' if not big else ''}{res.efficiency_8:.2f} against the FLOPs of the shape rounded up to "
               f"multiples of 8 (ratio {res.flop_ratio_8:.3f})")),
    ]


def _train_flops(model: nn.Module, example: torch.Tensor) -> float:
    return pc.count_flops(copy.deepcopy(model).cpu(), example).train_per_image


def channels_last_hazard(model: nn.Module, device=None) -> str | None:
    """Why this model must not train in channels_last on this device, or None.

    torch 2.14's CPU oneDNN kernels crash (segmentation fault, bus error or
    abort) in the backward of a channels_last 1×1 stride-2 convolution with
    2-7 input channels: the projection shortcut of a ResNet whose earlier
    stage was pruned below 8 channels (found by this sweep; contiguous
    tensors are fine).  Rounding channels to multiples of 8 avoids it.
    """
    if resolve_device(device).type != "cpu":
        return None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1) and 1 < m.in_channels < 8:
            return f"{name} is a 1×1 stride-{m.stride[0]} conv with {m.in_channels} input channels"
    return None


def measure_sweep(model_name: str = "resnet32", batch: int = 128, device=None, rounds: int = 5,
                  shapes: Sequence[tuple[str, float | str, int]] = SWEEP_SHAPES, warmup: int = 1,
                  formats: Sequence[str] = FORMATS) -> tuple[list[ShapeResult], list[Row]]:
    """Step time of every shape (and memory format) against the dense model in the same format, interleaved."""
    device = resolve_device(device)
    size = input_size(model_name)
    x, y = random_batch(batch, size, device=device)
    example = torch.zeros(2, 3, size, size)
    models: dict[str, nn.Module] = {}
    wanted: dict[Any, set[int]] = {}
    for _, shape, r in shapes:
        wanted.setdefault(shape, {8}).add(r)   # the multiple-of-8 twin of every shape, for its FLOPs
    built = {shape: pruned_models(model_name, shape, sorted(rs), device=device) for shape, rs in wanted.items()}
    for label, shape, r in shapes:
        models[label] = built[shape][r]
    ref = shapes[0][0]
    flops = {label: _train_flops(m, example) for label, m in models.items()}
    flops8 = {label: _train_flops(built[shape][8], example) for label, shape, _ in shapes}
    cases, skipped = {}, []
    for fmt in formats:
        cl = fmt == "channels_last"
        for label, m in models.items():
            hazard = channels_last_hazard(m, device) if cl else None
            if hazard:
                skipped.append(f"{label} ({hazard})")
                continue
            cases[f"{fmt}|{label}"] = Case(TrainStep(copy.deepcopy(m) if cl else m, x, y, channels_last=cl))
    s = interleaved(cases, rounds, warmup=warmup, device=device)
    results, rows = [], []
    for fmt in formats:
        prefix = "" if fmt == "contiguous" else f"[{fmt}] "
        dense = s[f"{fmt}|{ref}"]
        st = Stat.of(dense)
        rows.append(Row("sweep", f"{prefix}{ref}: step", st.median * 1e3, "ms", st.iqr * 1e3,
                        note=f"{flops[ref] * batch / 1e9:.1f} GFLOP/step"))
        by = {}
        for label, _, _ in shapes[1:]:
            if f"{fmt}|{label}" not in s:
                continue
            res = ShapeResult(label, channel_summary(models[label]), flops[label] / flops[ref],
                              ratio_stat(s[f"{fmt}|{label}"], dense), fmt, flops8[label] / flops[ref])
            results.append(res)
            by[label] = res
            rows.extend(shape_rows(res, prefix))
        if "ragged (random 0.4–0.8)" in by and "ragged, rounded to 8" in by:
            a, b = by["ragged (random 0.4–0.8)"], by["ragged, rounded to 8"]
            rows.append(Row("sweep", f"{prefix}time÷FLOP vs dense: ragged → rounded to 8",
                            a.time_ratio.median / a.flop_ratio, "x",
                            note=f"→ {b.time_ratio.median / b.flop_ratio:.3f}; time {a.time_ratio.median:.3f} → "
                                 f"{b.time_ratio.median:.3f} for FLOPs {a.flop_ratio:.3f} → {b.flop_ratio:.3f}"))
    if skipped:
        rows.append(Row("sweep", "[channels_last] shapes not run (oneDNN crash)", len(skipped), "int",
                        note="; ".join(skipped)))
    if len(formats) > 1 and "contiguous" in formats and "channels_last" in formats:
        cl = ratio_stat(s[f"channels_last|{ref}"], s[f"contiguous|{ref}"])
        rows.append(Row("sweep", "dense step: channels_last / contiguous", cl.median, "x", cl.iqr,
                        note="the memory format alone (bench run --channels-last)"))
    return results, rows


# =========================================================================== (2) automatic rounding
@dataclass
class RoundingProbe:
    device: str
    model: str
    batch: int
    candidates: tuple[int, ...]
    times: dict[int, Stat]
    flops: dict[int, float]          # training FLOPs per image of the rounded shape
    useful_flops: float              # of the unrounded (ragged) shape: the work that is wanted
    choice: int
    seconds: float
    relative: dict[int, Stat] = field(default_factory=dict)  # per-round time ratio to the smallest multiple

    def time_per_flop(self, n: int) -> float:
        return self.times[n].median / (self.flops[n] * self.batch)

    def time_per_useful_flop(self, n: int) -> float:
        return self.times[n].median / (self.useful_flops * self.batch)

    def rows(self) -> list[Row]:
        first = min(self.candidates)
        base = self.time_per_flop(first)
        rows = []
        for n in self.candidates:
            rel = self.relative.get(n)
            rows.append(Row("rounding", f"round_to {n}: step (batch {self.batch}, ragged {self.model})",
                            self.times[n].median * 1e3, "ms", self.times[n].iqr * 1e3,
                            note=f"FLOPs ×{self.flops[n] / self.useful_flops:.3f}; time÷FLOP "
                                 f"×{self.time_per_flop(n) / base:.3f}, time÷useful FLOP "
                                 f"×{self.time_per_useful_flop(n) / base:.3f} (vs round_to {first})"
                                 + ("" if rel is None else f"; paired time ratio {rel.median:.3f}")))
        rows.append(Row("rounding", f"auto_round_channels({self.model!r}) on {self.device}", self.choice, "int",
                        note=f"measured in {self.seconds:.1f} s"))
        return rows


_ROUND_CACHE: dict[tuple[str, str], int] = {}
_PROBE_CACHE: dict[tuple[str, str], RoundingProbe] = {}


def probe_rounding(model_name: str, device=None, *, candidates: Sequence[int] = ROUND_CANDIDATES,
                   batch: int | None = None, budget_s: float = 6.0, tolerance: float = ROUNDING_TOLERANCE,
                   warmup: int = 1, channels_last: bool = False) -> RoundingProbe:
    """Time the model at a ragged pruned width, rounded up to each multiple in ``candidates``.

    Rounding up adds channels (and FLOPs) to the same useful work, so it must
    never make a step slower: the candidates within ``tolerance`` of the
    fastest step qualify, and of those the largest multiple, which has the
    best time per FLOP, is chosen.  On a device whose kernels pad channels to
    a multiple anyway (oneDNN on AVX2 works in blocks of 8), rounding to it
    costs no time and keeps more of the network.
    """
    start = time.perf_counter()
    device = resolve_device(device)
    size = input_size(model_name)
    if batch is None:
        batch = 64 if size <= 64 else 4
    example = torch.zeros(2, 3, size, size)
    x, y = random_batch(batch, size, device=device)
    models = pruned_models(model_name, "ragged", candidates, device=device)   # one analysis, a plan per multiple
    flops = {n: pc.count_flops(copy.deepcopy(m).cpu(), example).train_per_image for n, m in models.items()}
    useful = flops[min(models)]   # the unrounded shape's: the work that is wanted
    if channels_last:   # a multiple that would crash is not a candidate
        candidates = [n for n in candidates if not channels_last_hazard(models[n], device)] or [max(candidates)]
    cases = {str(n): Case(TrainStep(models[n], x, y, channels_last=channels_last)) for n in candidates}
    left = max(0.0, budget_s - (time.perf_counter() - start))
    s = interleaved(cases, 50, warmup=warmup, device=device, budget_s=left, min_rounds=3 if budget_s > 0 else 1)
    times = {n: Stat.of(s[str(n)]) for n in candidates}
    ordered = sorted(candidates)
    # compared round by round (a slow phase of a shared machine hits a whole round), against the smallest multiple
    relative = {n: ratio_stat(s[str(n)], s[str(ordered[0])]) for n in ordered}
    best = min(relative[n].median for n in ordered)
    # as fast as the fastest (within the tolerance), then the best time per FLOP: the largest such multiple
    choice = max(n for n in ordered if relative[n].median <= best * (1 + tolerance))
    return RoundingProbe(str(device), model_name, batch, tuple(ordered), times, flops, useful, choice,
                         time.perf_counter() - start, relative)


def auto_round_channels(model_name: str, device=None, *, candidates: Sequence[int] = ROUND_CANDIDATES,
                        budget_s: float = 6.0) -> int:
    """The channel multiple this device prefers for ``model_name`` (cached per device and model).

    CUDA: 8 (tensor cores work on multiples of 8) without measuring.  CPU:
    :func:`probe_rounding` measures it (about ``budget_s`` seconds plus the
    time to build the shapes, once per process): the largest multiple whose
    rounded shape trains as fast as the fastest, i.e. the best time per FLOP
    without a slower step.
    """
    device = resolve_device(device)
    key = (str(device), model_name)
    if key not in _ROUND_CACHE:
        if device.type == "cuda":
            _ROUND_CACHE[key] = 8 if 8 in candidates else max(candidates)
        else:
            probe = probe_rounding(model_name, device, candidates=candidates, budget_s=budget_s)
            _PROBE_CACHE[key] = probe
            _ROUND_CACHE[key] = probe.choice
    return _ROUND_CACHE[key]


# =========================================================================== (3) data path
def write_jpeg_folder(root: Path, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> Path:
    """An ImageFolder tree ``root/train/<class>/NNNNN.jpg`` of uint8 (N,3,H,W) images (PIL, quality 75)."""
    from PIL import Image

    train = Path(root) / "train"
    for c in classes:
        (train / c).mkdir(parents=True, exist_ok=True)
    for i, (img, lab) in enumerate(zip(images, labels.tolist())):
        Image.fromarray(img.permute(1, 2, 0).contiguous().numpy()).save(train / classes[lab] / f"{i:05d}.jpg",
                                                                        quality=75)
    return train


@dataclass
class DataPaths:
    """One epoch over the same JPEGs two ways; ``close()`` removes generated files."""

    fast_epoch: Callable[[], None]      # bench Loader over the uint8 tensor decoded once
    folder_epoch: Callable[[], None]    # ImageFolder + DataLoader, decoding every epoch
    images: int
    decode_once_s: float
    workers: int
    source: str
    close: Callable[[], None]


def data_paths(images: int = 2048, batch: int = 128, device=None, workers: int | None = None) -> DataPaths:
    """JPEGs from ``$CIFAR10_DIR/train`` when set (the first ``images`` files in sorted order),
    otherwise the synthetic set written as JPEG into a temporary folder."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    from .data import CIFAR10_MEAN, CIFAR10_STD, ImageData, Loader, _decode_all, _list_split, load_data

    device = resolve_device(device)
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    tmp = None
    if os.environ.get("CIFAR10_DIR"):
        folder = Path(os.environ["CIFAR10_DIR"]) / "train"
        source = f"CIFAR10_DIR ({folder})"
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-speed-jpeg-")
        syn = load_data("synthetic").train
        n = min(images, len(syn))
        folder = write_jpeg_folder(Path(tmp.name), syn.images[:n], syn.labels[:n],
                                   [f"c{i}" for i in range(syn.num_classes)])
        source = "synthetic images written as JPEG (quality 75)"
    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    ds = datasets.ImageFolder(str(folder), transform=tf)
    if len(ds) > images:
        ds = Subset(ds, range(images))
    n_img = len(ds)
    dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers)
    # the fast path: decode once (timed apart, as bench.data does), then every epoch reuses the uint8 tensor
    t0 = time.perf_counter()
    entries, _ = _list_split(Path(folder), None)
    imgs, labels = _decode_all(entries[:n_img])
    decode_once = time.perf_counter() - t0
    data = ImageData(imgs, labels, num_classes=int(labels.max()) + 1, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                     name="speed")
    loader = Loader(data, batch, train=True, device=device)
    epoch = {"n": 0}

    def fast() -> None:
        epoch["n"] += 1
        loader.set_epoch(epoch["n"])
        for _ in loader:
            pass
        sync(device)

    def folder_epoch() -> None:
        for xb, yb in dl:
            xb.to(device), yb.to(device)
        sync(device)

    return DataPaths(fast, folder_epoch, n_img, decode_once, workers, source,
                     tmp.cleanup if tmp is not None else (lambda: None))


def data_rows(paths: DataPaths, fast_s: Sequence[float], folder_s: Sequence[float], batch: int,
              step_s: float | None = None) -> list[Row]:
    fast_ips = Stat.of([paths.images / t for t in fast_s])
    slow_ips = Stat.of([paths.images / t for t in folder_s])
    rows = [
        Row("data", "bench Loader (uint8 in memory, crop+flip+normalise)", fast_ips.median, "img/s", fast_ips.iqr,
            note=f"{paths.images} images, batch {batch}; one-time decode {paths.images / paths.decode_once_s:,.0f} img/s"),
        Row("data", f"ImageFolder + DataLoader ({paths.workers} workers, PIL decode each epoch)", slow_ips.median,
            "img/s", slow_ips.iqr, note=paths.source),
        Row("data", "Loader speed-up", fast_ips.median / slow_ips.median, "x"),
    ]
    if step_s:
        epoch_s = step_s * steps_per_epoch(batch)
        rows.append(Row("data", "data time per epoch / epoch estimate: Loader",
                        100 * CIFAR_TRAIN_IMAGES / fast_ips.median / epoch_s, "%",
                        note=f"{CIFAR_TRAIN_IMAGES / fast_ips.median:.1f} s per 50k images"))
        rows.append(Row("data", "data time per epoch / epoch estimate: ImageFolder",
                        100 * CIFAR_TRAIN_IMAGES / slow_ips.median / epoch_s, "%",
                        note=f"{CIFAR_TRAIN_IMAGES / slow_ips.median:.1f} s per 50k images; workers overlap it "
                             f"with compute only on spare cores"))
    return rows


def measure_data(images: int = 2048, batch: int = 128, device=None, rounds: int = 3, workers: int | None = None,
                 step_s: float | None = None, warmup: int = 1) -> list[Row]:
    """images/s: the in-memory uint8 Loader (augment + normalise) vs ImageFolder + DataLoader (decode each epoch)."""
    paths = data_paths(images, batch, device, workers)
    try:
        s = interleaved({"loader": Case(paths.fast_epoch), "imagefolder": Case(paths.folder_epoch)}, rounds,
                        warmup=warmup, device=resolve_device(device))
    finally:
        paths.close()
    return data_rows(paths, s["loader"], s["imagefolder"], batch, step_s)


# =========================================================================== everything
def run_speed(model: str = "resnet32", *, batch: int = 128, device=None, rounds: int = 5,
              sections: Iterable[str] = SECTIONS, reconfig_models: Sequence[str] | None = None,
              harness_steps: int = 8, data_images: int = 2048, threads: int | None = None, quick: bool = False,
              formats: Sequence[str] = FORMATS, echo: Callable[[str], None] = lambda s: None) -> SpeedReport:
    """All sections (or some), in :data:`SECTIONS` order; ``echo`` reports progress.

    ``quick``: one round, no warm-up, batch ≤ 8, tiny data and a short
    rounding probe: it checks that everything runs, its numbers mean little.
    """
    sections = list(sections)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}: choose from {', '.join(SECTIONS)}")
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device)
    warmup, probe_budget, workers, tiny_rounds = 1, 6.0, None, 15
    if quick:
        rounds, warmup, probe_budget, workers, tiny_rounds = 1, 0, 0.0, 0, 1
        batch, harness_steps, data_images = min(batch, 8), min(harness_steps, 2), min(data_images, 32)
    report = SpeedReport(device=_device_name(device), threads=torch.get_num_threads(), torch_version=torch.__version__,
                         batch=batch, model=model, rounds=rounds, load_before=_loadavg())
    start = time.perf_counter()
    step_s = None
    if reconfig_models is None:
        reconfig_models = [model] + (["resnet50"] if model != "resnet50" and "imagenet" not in model and not quick
                                     else [])
    for sec in SECTIONS:
        if sec not in sections:
            continue
        echo(f"bench speed: {sec} …")
        if sec == "penalty":
            rows = measure_penalty(model, batch, device, rounds=rounds * 3, warmup=warmup)
            step_s = rows[0].value / 1e3
        elif sec == "reconfig":
            rows = measure_reconfig(reconfig_models, batch, device, rounds=rounds, warmup=warmup)
        elif sec == "harness":
            rows = measure_harness(model, batch, harness_steps, device, rounds=rounds, tiny_rounds=tiny_rounds,
                                   warmup=warmup)
        elif sec == "sweep":
            _, rows = measure_sweep(model, batch, device, rounds=rounds, warmup=warmup, formats=formats)
        elif sec == "rounding":
            rows = rounding_rows(model, device, budget_s=probe_budget, batch=batch if quick else None, warmup=warmup)
        else:
            rows = measure_data(data_images, batch, device, rounds=max(1, min(rounds, 3)), workers=workers,
                                step_s=step_s, warmup=warmup)
        report.add(*rows)
    report.seconds = time.perf_counter() - start
    report.load_after = _loadavg()
    return report


def rounding_rows(model: str, device=None, *, budget_s: float = 6.0, batch: int | None = None,
                  warmup: int = 1) -> list[Row]:
    """What auto_round_channels measures for ``model`` here, and its choice (fills its cache on the CPU)."""
    device = resolve_device(device)
    key = (str(device), model)
    if device.type == "cuda":
        return [Row("rounding", f"auto_round_channels({model!r}) on {device}", auto_round_channels(model, device),
                    "int", note="CUDA: multiples of 8 for tensor cores, not measured")]
    probe = _PROBE_CACHE.get(key) or probe_rounding(model, device, budget_s=budget_s, batch=batch, warmup=warmup)
    _PROBE_CACHE.setdefault(key, probe)
    _ROUND_CACHE.setdefault(key, probe.choice)
    return probe.rows()


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # pragma: no cover - not on every platform
        return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    try:
        from .hardware import _cpu_model

        name = _cpu_model()
    except Exception:  # pragma: no cover - best effort
        name = "cpu"
    return f"cpu: {name} ({os.cpu_count()} cores)"
