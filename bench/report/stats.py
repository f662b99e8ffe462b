"""Means with 95 % confidence intervals over repeated runs (seeds), the report's only summary of repeats.

Why a t-interval: a handful of seeds (3–5) is what a study affords, and over so few a normal interval
would be too narrow.  A difference between modes (time saved, an accuracy gap) is computed per run,
where both modes trained on the same seed, data order and initial weights, and its interval is taken
over those per-run differences: the paired interval, narrower than two independent ones and the one
that answers "does PruneTrain differ from dense on the same seed?".
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterable

#: two-sided 95 % quantiles of Student's t for 1–30 degrees of freedom (any statistics table; scipy.stats.t.ppf)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
_Z975 = 1.960


def t_quantile(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (the normal one beyond 30)."""
    if df < 1:
        raise ValueError("a t-interval needs at least 2 values")
    return _T975[df - 1] if df <= len(_T975) else _Z975


@dataclass(frozen=True)
class Interval:
    """Mean of n values and its 95 % confidence interval (lo = hi = mean for one value: no interval)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def contains_zero(self) -> bool:
        return self.n > 1 and self.lo <= 0.0 <= self.hi


def mean_ci(values: Iterable[float]) -> Interval:
    """Mean and 95 % t-interval of the finite values (NaN everywhere when there are none)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = statistics.fmean(xs)
    if len(xs) == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = t_quantile(len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return Interval(mean, mean - half, mean + half, len(xs))
