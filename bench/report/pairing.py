"""Comparisons made across run folders: a pruning run and the dense run it is compared with, kept apart.

Dense training reads none of the pruning methods' settings (bench.config.NOT_READ_BY_DENSE), so one dense run
serves every run that differs from it only in those: ``bench sweep`` trains one dense per repeat for that reason
(bench.report.study pairs a study's folders through study.json), and a plain run folder that holds no dense mode
(``bench run --mode prunetrain``, with its controls or competing methods added later) is compared here with the
dense mode of another folder: same seed, same device, every setting dense reads equal.  The joined record names
the folder its dense came from (``dense_from``), and the report lists each such borrowing.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from ..config import dense_settings
from .load import Run


def joined(dense: Run, other: Run) -> Run:
    """One record of ``other``'s modes and ``dense``'s dense mode; its path, settings and run.json are ``other``'s."""
    own = other.meta.get("modes") if isinstance(other.meta.get("modes"), dict) else {}
    meta = dict(other.meta)
    meta["modes"] = {"dense": dense.mode_info("dense"), **{m: i for m, i in own.items() if m != "dense"}}
    meta["config"] = {**other.config, "modes": ["dense", *[m for m in other.config.get("modes", []) if m != "dense"]]}
    meta["dense_from"] = dense.run_id
    statuses = (dense.mode_status("dense"), other.status)
    status = ("finished" if statuses == ("finished", "finished") else
              "failed" if "failed" in statuses else "running")
    epochs = pd.concat([dense.mode_epochs("dense"), other.epochs[other.epochs["mode"] != "dense"]], ignore_index=True)
    return Run(path=other.path, run_id=f"{other.run_id} vs {dense.run_id}", meta=meta, epochs=epochs, status=status)


def same_dense(a: Run, b: Run) -> bool:
    """Whether dense training is the same computation in both runs: seed, device and every setting dense reads."""
    return (a.device_label == b.device_label and a.config.get("seed") == b.config.get("seed")
            and dense_settings(a.config) == dense_settings(b.config))


def borrow_dense(runs: Sequence[Run]) -> list[Run]:
    """``runs`` with every folder that lacks a dense mode joined to a finished dense run of the same computation.

    A folder with no matching dense stays as it is (the report then says dense is not recorded); the report's
    list of runs names the folder each borrowed dense came from (``dense_from``)."""
    donors = [r for r in runs if r.mode_status("dense") == "finished"]
    out: list[Run] = []
    for run in runs:
        if run.mode_info("dense") or not run.config:
            out.append(run)
            continue
        match = next((d for d in donors if same_dense(d, run)), None)
        if match is None:
            out.append(run)
            continue
        out.append(joined(match, run))
    return out
