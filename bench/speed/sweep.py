"""Section ``sweep``: step time of pruned shapes against their FLOPs, in both memory formats."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ..training.step import channels_last_hazard
from ..training.shapes import fixed_batch_step, channel_summary, input_size, pruned_models, random_batch, train_flops
from .table import TARGET_MIN_FLOPS_SAVED, TARGET_TIME_PER_FLOP, Row
from ..machine.timing import Case, Stat, interleaved, ratio_stat, resolve_device

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
    flops = {label: train_flops(m, example) for label, m in models.items()}
    flops8 = {label: train_flops(built[shape][8], example) for label, shape, _ in shapes}
    cases, skipped = {}, []
    for fmt in formats:
        cl = fmt == "channels_last"
        for label, m in models.items():
            hazard = channels_last_hazard(m, device) if cl else None
            if hazard:
                skipped.append(f"{label} ({hazard})")
                continue
            cases[f"{fmt}|{label}"] = Case(fixed_batch_step(copy.deepcopy(m) if cl else m, x, y, channels_last=cl))
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
