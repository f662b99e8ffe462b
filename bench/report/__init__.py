"""`bench report`: compare dense and PruneTrain training across machines' records.

``build_report`` reads run folders (``results/<run_id>/`` with epochs.csv and
run.json) from anywhere under the given paths, compares the complete
dense/PruneTrain pairs per hardware configuration, and writes report.md,
a self-contained report.html and the plots into ``out_dir``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import ConfigError
from .aggregate import TRAINING_TIME_DEFINITION, Aggregation, aggregate
from .load import LoadResult, Run, record_error, load_runs
from .plots import make_plots
from .render import DEFAULT_TITLE, write_report
from .pairing import borrow_dense
from .study import find_studies, study_section, study_views

__all__ = ["ReportResult", "build_report", "load_runs", "aggregate", "Aggregation",
           "LoadResult", "Run", "TRAINING_TIME_DEFINITION"]


@dataclass
class ReportResult:
    """What ``build_report`` produced; ``warnings`` are for stderr, one line each."""

    out_dir: Path
    table: pd.DataFrame            # one row per configuration (see aggregate.py)
    warnings: list[str]
    files: list[Path]
    epochs: pd.DataFrame = field(default_factory=pd.DataFrame)  # per-epoch rows behind the plots
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)    # every run read: compared or why not


def build_report(paths: Sequence[Path], out_dir: Path, *, title: str | None = None) -> ReportResult:
    """Read the records under ``paths`` and write the report into ``out_dir``.

    Raises RecordError (one line, ``.warnings`` attached) when no run has a complete dense/PruneTrain pair
    or a finished pruning method beside its dense, ConfigError when ``out_dir`` cannot be made.
    """
    paths = [Path(p) for p in paths]
    out_dir = Path(out_dir)
    loaded = load_runs(paths)
    study_warnings: list[str] = []
    views, members = study_views(find_studies(paths, study_warnings), loaded.runs, study_warnings)
    # a study's single-mode runs are compared as the dense+PruneTrain pairs the study defines
    runs = [r for r in loaded.runs if r.path.resolve() not in members] + [p for v in views for _, p in v.pairs] + \
        [p for v in views for p in v.method_pairs]
    agg = aggregate(borrow_dense(runs))   # a folder without dense: compared with the same dense computation elsewhere
    warnings = loaded.warnings + study_warnings + agg.warnings
    if agg.table.empty and agg.methods.empty:   # a folder of dense and a competing method alone is reportable
        counts = agg.runs["status"].value_counts()
        summary = ", ".join(f"{n} {'in progress' if s == 'running' else s}"
                            for s, n in counts.items())
        raise record_error(
            f"no run with a complete dense + PruneTrain pair or a finished method beside dense among {len(agg.runs)} run(s) "
            f"({summary}); " + ("wait for the runs in progress to finish, or see the warnings"
                               if (agg.runs["status"] == "running").any() else
                               "see the warnings: they name each record that is damaged or incomplete"), warnings)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"--out {out_dir}: exists and is not a folder; choose another path") from None
    except OSError as e:
        raise ConfigError(f"--out {out_dir}: cannot create folder ({e.strerror}); "
                          "choose another path") from None
    plots = make_plots(agg) if not agg.table.empty else []   # the plots draw dense + PruneTrain pairs
    studies = [study_section(v, i) for i, v in enumerate(views)]
    files = write_report(out_dir, title or DEFAULT_TITLE, agg, plots, warnings, paths, studies)
    return ReportResult(out_dir=out_dir, table=agg.table, warnings=warnings, files=files,
                        epochs=agg.epochs, runs=agg.runs)
