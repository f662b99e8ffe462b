"""Rows of ``bench speed``, the targets they are checked against, and the result table (JSON, CSV, text).

Numbers are formatted by the report's formatter (:mod:`bench.fmt`), so
a figure reads the same in ``bench speed`` and in ``bench report``.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import fmt
from ..machine.timing import Stat

#: the targets (fractions) that rows are checked against
TARGET_PENALTY = 0.03          # penalty ≤ 3% of a dense step
TARGET_RECONFIG = 0.01         # reconfiguration ≤ 1% of an epoch
TARGET_HARNESS = 0.02          # harness overhead ≤ 2% per step
TARGET_TIME_PER_FLOP = 0.8     # time saved ≥ 0.8 × FLOPs saved ...
TARGET_MIN_FLOPS_SAVED = 0.4   # ... for shapes that remove ≥ 40% of training FLOPs

CSV_COLUMNS = ["section", "name", "value", "unit", "iqr", "target", "met", "note"]


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
        return fmt.measure(self.value, self.unit)


def pct_row(section: str, name: str, stat: Stat, **kw: Any) -> Row:
    """A row in percent from a ratio statistic."""
    return Row(section, name, 100 * stat.median, "%", 100 * stat.iqr, **kw)


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

    @property
    def missed(self) -> list[Row]:
        """Rows whose target was not met."""
        return [r for r in self.rows if r.met is False]

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
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["device", "threads", "batch", *CSV_COLUMNS])
            w.writeheader()
            for r in self.rows:
                w.writerow({"device": self.device, "threads": self.threads, "batch": self.batch,
                            **{c: getattr(r, c) for c in CSV_COLUMNS}})

    def format_table(self) -> str:
        head = (f"bench speed: {self.model}, batch {self.batch}, device {self.device}, {self.threads} threads, "
                f"torch {self.torch_version}; medians (IQR) over ≤{self.rounds} interleaved rounds"
                + (f", {self.seconds:.0f} s" if self.seconds else ""))
        if self.load_before is not None and self.load_after is not None:
            busy = max(self.load_before, self.load_after) > (os.cpu_count() or 1)
            head += (f"\nload average {self.load_before:.1f} → {self.load_after:.1f} on {os.cpu_count()} cores"
                     + (": the machine was shared, absolute times are inflated (ratios less so)" if busy else ""))
        rows = [[r.section, r.name, r.formatted_value(),
                 "" if r.iqr is None else fmt.measure(r.iqr, r.unit).replace(" img/s", ""),
                 r.target or "", "" if r.met is None else ("yes" if r.met else "NO"), r.note] for r in self.rows]
        return head + "\n" + fmt.text_table(["section", "measure", "median", "IQR", "target", "met", "note"], rows)
