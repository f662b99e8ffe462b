"""The grouping key of the report: which recorded settings make two runs repeats of one configuration, and how a
row is named by the settings that set it apart (the rest is listed once)."""
from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

from .load import Run


#: RunConfig fields that do not tell configurations apart, and why.  Every other field does: the key is derived
#: from RunConfig, so a setting added there splits the groups without anyone remembering to list it here.
NOT_SETTINGS: dict[str, str] = {
    "seed": "the repeat axis: runs that differ only in their seed are repeats of one configuration",
    "model": "a column of the key of its own", "data": "a column of the key of its own (the data set)",
    "epochs": "a column of the key of its own",
    "data_dir": "a path on one machine; the data set's name is the data column",
    "device": "the device column names the device trained on",
    "world_size": "the device column names the process count (×N)",
    "emulate": "the device column says what was emulated (an --emulate that applied nothing changed nothing)",
    "modes": "a compared run trained both modes",
    "profile": "named first in the settings, with its memory budget",
}
#: how a setting reads in a label (the field's name with spaces otherwise)
SETTING_NAMES = {"batch_size": "batch", "interval": "reconfigure every", "lpr": "lasso penalty ratio",
                 "lasso_until": "penalty until", "lr_milestones": "lr milestones"}


def setting_keys() -> list[str]:
    """The RunConfig fields that must agree for runs to be repeats (read when called: a new field counts at once)."""
    from ..config import FIELDS

    return [k for k in FIELDS if k not in NOT_SETTINGS]


def _setting_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "none"
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{value} epochs" if key == "interval" else str(value)


def setting_parts(run: Run, budget: float) -> list[str]:
    """The run's settings as "name value" phrases, profile (and budget) first; their join is the group key.

    The profile and memory budget are part of it: on one device, a smaller budget changes the batch sizes
    PruneTrain can use, and so its time.  A field an older record lacks has its default (added settings
    default to what ran before them).
    """
    from ..config import default

    first = f"profile {run.profile or '?'}"
    if not math.isnan(budget):
        first += f" ({budget / (1 << 30):.3g} GiB budget)"
    cfg = run.config
    if not cfg:
        d = run.mode_epochs("dense")
        batch = d["batch_size"].iloc[0] if not d.empty else math.nan
        return [first, f"batch {int(batch) if pd.notna(batch) else '?'} (run.json missing)"]
    return [first] + [f"{SETTING_NAMES.get(k, k.replace('_', ' '))} {_setting_value(k, cfg.get(k, default(k)))}"
                      for k in setting_keys()]


def settings_text(run: Run, budget: float) -> str:
    """The run settings that must agree for runs to count as repeats of one configuration (see setting_parts)."""
    return ", ".join(setting_parts(run, budget))


def varied_settings(base: Sequence[str], epochs: Sequence[Any], parts: Sequence[Sequence[str]]) -> list[str]:
    """Per row, only what sets it apart from the rows of the same device, model and data ("" when alone):
    the epochs where they differ, then the settings not shared by all of them."""
    out = []
    for b, e, p in zip(base, epochs, parts):
        peers = [i for i, other in enumerate(base) if other == b]
        shared = set.intersection(*(set(parts[i]) for i in peers))
        words = ([f"{int(e)} epochs"] if len({epochs[i] for i in peers}) > 1 else []) + [x for x in p if x not in shared]
        out.append(", ".join(words))
    return out


def shared_settings(table: pd.DataFrame) -> list[str]:
    """The settings every row of the table shares (listed once in the report)."""
    if table.empty:
        return []
    common = set.intersection(*(set(p) for p in table["setting_parts"]))
    return [x for x in table["setting_parts"].iloc[0] if x in common]
