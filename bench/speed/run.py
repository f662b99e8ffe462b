"""``bench speed``: every section (or some) in :data:`~bench.speed.SECTIONS` order, into one table."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from . import SECTIONS
from .datapath import measure_data
from .gating import measure_gating
from .harness import measure_harness
from .penalty import measure_penalty
from .reconfig import measure_reconfig
from .rounding import rounding_rows
from .sweep import FORMATS, measure_sweep
from .table import Row, SpeedReport
from ..machine.timing import device_name, loadavg, resolve_device


@dataclass
class Settings:
    """What every section is measured with (``quick`` already applied)."""

    model: str
    batch: int
    device: torch.device
    rounds: int
    warmup: int
    reconfig_models: Sequence[str]
    harness_steps: int
    tiny_rounds: int
    data_images: int
    workers: int | None
    probe_budget: float
    quick: bool
    formats: Sequence[str]
    step_s: float | None = None   # the dense step of the penalty section, for the data section's epoch estimate


def _penalty(s: Settings) -> list[Row]:
    rows = measure_penalty(s.model, s.batch, s.device, rounds=s.rounds * 3, warmup=s.warmup)
    s.step_s = rows[0].value / 1e3
    return rows


MEASURE: dict[str, Callable[[Settings], list[Row]]] = {
    "penalty": _penalty,
    "reconfig": lambda s: measure_reconfig(s.reconfig_models, s.batch, s.device, rounds=s.rounds, warmup=s.warmup),
    "harness": lambda s: measure_harness(s.model, s.batch, s.harness_steps, s.device, rounds=s.rounds,
                                         tiny_rounds=s.tiny_rounds, warmup=s.warmup),
    "sweep": lambda s: measure_sweep(s.model, s.batch, s.device, rounds=s.rounds, warmup=s.warmup,
                                     formats=s.formats)[1],
    "rounding": lambda s: rounding_rows(s.model, s.device, budget_s=s.probe_budget,
                                        batch=s.batch if s.quick else None, warmup=s.warmup),
    "data": lambda s: measure_data(s.data_images, s.batch, s.device, rounds=max(1, min(s.rounds, 3)),
                                   workers=s.workers, step_s=s.step_s, warmup=s.warmup),
    "gating": lambda s: measure_gating(s.model, s.batch, s.device, rounds=s.rounds, warmup=s.warmup),
}
assert tuple(MEASURE) == SECTIONS


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
    if reconfig_models is None:
        reconfig_models = [model] + (["resnet50"] if model != "resnet50" and "imagenet" not in model and not quick
                                     else [])
    s = Settings(model, batch, device, rounds, warmup=1, reconfig_models=reconfig_models, harness_steps=harness_steps,
                 tiny_rounds=15, data_images=data_images, workers=None, probe_budget=6.0, quick=quick,
                 formats=formats)
    if quick:
        s.rounds, s.warmup, s.probe_budget, s.workers, s.tiny_rounds = 1, 0, 0.0, 0, 1
        s.batch, s.harness_steps, s.data_images = min(batch, 8), min(harness_steps, 2), min(data_images, 32)
    report = SpeedReport(device=device_name(device), threads=torch.get_num_threads(), torch_version=torch.__version__,
                         batch=s.batch, model=model, rounds=s.rounds, load_before=loadavg())
    start = time.perf_counter()
    for sec in SECTIONS:
        if sec in sections:
            echo(f"bench speed: {sec} …")
            report.add(*MEASURE[sec](s))
    report.seconds = time.perf_counter() - start
    report.load_after = loadavg()
    return report
