"""Section ``rounding``: what automatic channel rounding measures on this device, and what it picks."""
from __future__ import annotations

from ..training import decisions
from ..training.decisions import RoundingProbe
from .table import Row
from ..machine.timing import resolve_device


def probe_rows(probe: RoundingProbe) -> list[Row]:
    first = min(probe.candidates)
    base = probe.time_per_flop(first)
    rows = []
    for n in probe.candidates:
        rel = probe.relative.get(n)
        rows.append(Row("rounding", f"round_to {n}: step (batch {probe.batch}, ragged {probe.model})",
                        probe.times[n].median * 1e3, "ms", probe.times[n].iqr * 1e3,
                        note=f"FLOPs ×{probe.flops[n] / probe.useful_flops:.3f}; time÷FLOP "
                             f"×{probe.time_per_flop(n) / base:.3f}, time÷useful FLOP "
                             f"×{probe.time_per_useful_flop(n) / base:.3f} (vs round_to {first})"
                             + ("" if rel is None else f"; paired time ratio {rel.median:.3f}")))
    rows.append(Row("rounding", f"auto_round_channels({probe.model!r}) on {probe.device}", probe.choice, "int",
                    note=f"measured in {probe.seconds:.1f} s"))
    return rows


def rounding_rows(model: str, device=None, *, budget_s: float = 6.0, batch: int | None = None,
                  warmup: int = 1) -> list[Row]:
    """What auto_round_channels measures for ``model`` here, and its choice (fills its cache on the CPU)."""
    device = resolve_device(device)
    if device.type == "cuda":
        return [Row("rounding", f"auto_round_channels({model!r}) on {device}",
                    decisions.auto_round_channels(model, device), "int",
                    note="CUDA: multiples of 8 for tensor cores, not measured")]
    return probe_rows(decisions.cached_probe(model, device, budget_s=budget_s, batch=batch, warmup=warmup))
