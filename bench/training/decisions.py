"""The two choices ``bench run`` makes from this device's behaviour: channels_last hazard, channel rounding.

Training imports this module alone; it needs the timing kit and the shape
builders, never the sections (which import training).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .step import channels_last_hazard
from .shapes import fixed_batch_step, input_size, pruned_models, random_batch, train_flops
from ..machine.timing import Case, Stat, interleaved, ratio_stat, resolve_device

ROUND_CANDIDATES = (1, 4, 8, 16)
ROUNDING_TOLERANCE = 0.03      # "as fast as the fastest": within 3% (the noise of a few rounds)


@dataclass
class RoundingProbe:
    """What :func:`probe_rounding` measured: step time and FLOPs per candidate multiple, and the choice."""

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
    flops = {n: train_flops(m, example) for n, m in models.items()}
    useful = flops[min(models)]   # the unrounded shape's: the work that is wanted
    if channels_last:   # a multiple that would crash is not a candidate
        candidates = [n for n in candidates if not channels_last_hazard(models[n], device)] or [max(candidates)]
    cases = {str(n): Case(fixed_batch_step(models[n], x, y, channels_last=channels_last)) for n in candidates}
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


def cached_probe(model_name: str, device, **probe_kw) -> RoundingProbe:
    """The probe :func:`auto_round_channels` made (or makes now) for ``model_name`` on a CPU device."""
    key = (str(device), model_name)
    probe = _PROBE_CACHE.get(key) or probe_rounding(model_name, device, **probe_kw)
    _PROBE_CACHE.setdefault(key, probe)
    _ROUND_CACHE.setdefault(key, probe.choice)
    return probe
