"""The short table that ends `bench run` and `bench report` on the terminal: what was saved, at what accuracy.

It is a view of the report's own rows (aggregate.py), so the terminal and report.md never disagree.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import fmt
from .aggregate import aggregate, pair_problem, train_time
from .load import load_run

HEADERS = ["Configuration", "n", "Dense time", "PruneTrain time", "Time saved", "Training FLOPs saved",
           "Final acc. dense", "Final acc. PruneTrain", "Timed under contention"]


def summary_table(table: pd.DataFrame) -> str:
    """One line per compared configuration (mean of its n runs), under its label."""
    rows = []
    for _, r in table.iterrows():
        unit = r["dense_time_s"]
        rows.append([str(r["label"]), str(int(r["n"])), fmt.cell(r, "dense_time_s", "time", unit),
                     fmt.cell(r, "prunetrain_time_s", "time", unit), fmt.cell(r, "time_saved_pct", "pct") + " %",
                     fmt.cell(r, "train_flops_saved_pct", "pct") + " %", fmt.cell(r, "dense_final_acc", "acc") + " %",
                     fmt.cell(r, "prunetrain_final_acc", "acc") + " %", _contention(r)])
    return fmt.text_table(HEADERS, rows)


def _contention(r: pd.Series) -> str:
    flagged, total = r.get("contended_epochs", 0), r.get("epochs_with_load", 0)
    if fmt.missing(flagged) or not flagged:
        return "no" if total else "not recorded"
    return f"{int(flagged)} of {int(total)} epochs: times not trustworthy"


def run_summary(run_dir: Path) -> str:
    """The summary of one finished run folder: the table when both modes finished, else each mode's totals."""
    warnings: list[str] = []
    run = load_run(Path(run_dir), warnings)
    if run is None:
        return f"no summary: {'; '.join(warnings) or 'nothing recorded'}"
    if pair_problem(run) is None:
        table = aggregate([run]).table
        return summary_table(table)
    rows = []
    for mode in ("dense", "prunetrain"):
        e = run.mode_epochs(mode)
        if not e.empty:
            rows.append([mode, str(int(e["epoch"].max())), fmt.duration(float(train_time(e).sum())),
                         fmt.cell({"a": float(e["test_acc"].iloc[-1])}, "a", "acc") + " %"])
    return fmt.text_table(["Mode", "Epochs", "Training time", "Final test acc."], rows)
