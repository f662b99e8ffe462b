"""Number and table formatting shared by the report (tables, plots) and `bench speed` (units chosen for humans)."""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

DASH = "–"


def missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def duration_unit(seconds: float) -> tuple[float, str]:
    """(divisor, unit) so that a duration reads naturally: s below 2 min, min below 2 h, else h."""
    if missing(seconds) or seconds < 120:
        return 1.0, "s"
    if seconds < 7200:
        return 60.0, "min"
    return 3600.0, "h"


def bytes_unit(n: float) -> tuple[float, str]:
    if missing(n) or n < 1 << 30:
        return float(1 << 20), "MiB"
    return float(1 << 30), "GiB"


def flops_unit(n: float) -> tuple[float, str]:
    for div, unit in ((1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP")):
        if not missing(n) and n >= div:
            return div, unit
    return 1e6, "MFLOP"


def _num(x: float, decimals: int) -> str:
    return DASH if missing(x) else f"{x:.{decimals}f}"


def sig(x: float) -> str:
    """3 significant digits, no exponent for everyday magnitudes."""
    if missing(x):
        return DASH
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def with_range(mean: float, lo: float, hi: float, n: int, fmt: Callable[[float], str]) -> str:
    """'12.3 (11.9–12.8)': a mean over repeated runs with its 95 % confidence interval, else the one value."""
    text = fmt(mean)
    if n > 1 and not missing(lo) and not missing(hi):
        lo_t, hi_t = fmt(lo), fmt(hi)
        if lo_t != hi_t:
            text += f" ({lo_t}–{hi_t})"
    return text


def cell(row: Mapping[str, Any], metric: str, kind: str, unit_of_value: float | None = None) -> str:
    """One table cell for ``metric`` of an aggregated row: mean (95 % CI), with unit.

    kind: 'pct' / 'acc' (1 decimal), 'ratio' (2 decimals), 'time', 'bytes', 'flops'.
    ``unit_of_value`` picks the unit (default: the mean's), so that cells that
    are compared side by side (dense vs PruneTrain time) share one unit.
    """
    mean, lo, hi = row[metric], row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    n = int(row.get(f"{metric}_n", row.get("n", 1)) or 0)
    if kind in ("pct", "acc"):
        return with_range(mean, lo, hi, n, lambda v: _num(v, 1))
    if kind == "ratio":
        return with_range(mean, lo, hi, n, lambda v: _num(v, 2))
    if missing(mean):
        return DASH
    unit_of = {"time": duration_unit, "bytes": bytes_unit, "flops": flops_unit}[kind]
    div, unit = unit_of(mean if unit_of_value is None or missing(unit_of_value) else unit_of_value)
    return with_range(mean, lo, hi, n, lambda v: sig(v / div)) + f" {unit}"


def interval_text(row: Mapping[str, Any], metric: str, decimals: int = 1, unit: str = " %") -> str:
    """A figure in a sentence: '31.2–42.0 % (mean 36.6 %, 95 % CI over 3 seeds)', or '36.6 %' for one run
    (the sentence that cites it says once that it is a single run)."""
    mean, lo, hi = row[metric], row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    n = int(row.get(f"{metric}_n", row.get("n", 1)) or 0)
    if missing(mean):
        return DASH
    if n > 1 and not missing(lo) and not missing(hi):
        return (f"{lo:.{decimals}f}–{hi:.{decimals}f}{unit} (mean {mean:.{decimals}f}{unit}, "
                f"95 % CI over {n} seeds)")
    return f"{mean:.{decimals}f}{unit}"


#: below this many percent of training FLOPs saved, time ÷ FLOPs is timing noise over a tiny divisor
MIN_FLOPS_SAVED_FOR_RATIO = 5.0


def no_ratio_reason(row: Mapping[str, Any]) -> str | None:
    """Why "time saved ÷ FLOPs saved" means nothing for ``row`` (None: it means something).

    Both savings must be meaningful: a FLOP saving of a few percent makes any timing noise a huge ratio, and
    when PruneTrain took longer the quotient is a negative number that no hardware "converts".
    """
    flops, time_saved = row.get("train_flops_saved_pct"), row.get("time_saved_pct")
    if missing(flops) or flops < MIN_FLOPS_SAVED_FOR_RATIO:
        return f"too few FLOPs saved (under {MIN_FLOPS_SAVED_FOR_RATIO:g} %)"
    if missing(time_saved):
        return "time saved unknown"
    if time_saved <= 0:
        return "no time saved"
    return None


def ratio_cell(row: Mapping[str, Any]) -> str:
    """The time ÷ FLOPs cell: the ratio, or why there is none."""
    why = no_ratio_reason(row)
    return cell(row, "time_per_flops_saved", "ratio") if why is None else f"{DASH} ({why})"


def duration(seconds: float) -> str:
    if missing(seconds):
        return DASH
    div, unit = duration_unit(seconds)
    return f"{sig(seconds / div)} {unit}"


def size(n: float) -> str:
    if missing(n):
        return DASH
    div, unit = bytes_unit(n)
    return f"{sig(n / div)} {unit}"


_MEASURE: dict[str, Callable[[float], str]] = {
    "int": lambda v: f"{int(v)}", "%": lambda v: f"{v:.2f}%", "x": lambda v: f"{v:.3f}",
    "img/s": lambda v: f"{v:,.0f} img/s", "ms": lambda v: f"{v:.2f} ms", "s": lambda v: f"{v:.3f} s",
}


def measure(v: float | None, unit: str) -> str:
    """A measurement of ``bench speed`` in its unit: ms, s, %, x (a ratio), img/s or int."""
    if missing(v):
        return DASH
    return _MEASURE[unit](v) if unit in _MEASURE else f"{v:g} {unit}"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned with spaces under a dashed rule, for a terminal."""
    cells = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    lines = []
    for j, c in enumerate(cells):
        lines.append("  ".join(v.ljust(widths[i]) for i, v in enumerate(c)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
