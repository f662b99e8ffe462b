"""Find and read run folders for the report, tolerating damaged records (bench.runfolder.records' lenient readers).

Records come from many machines, copied around by hand, sometimes while a run
is still writing them.  So nothing here raises on bad input: every problem
becomes a one-line warning naming the file (and line), the damaged part is
skipped and the rest is used.  Only when nothing usable is left does
:func:`load_runs` raise :class:`~bench.errors.RecordError`.
"""
from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from ..runfolder import runjson
from ..errors import RecordError
from ..runfolder.records import COLUMN_TYPES, EPOCH_FIELDNAMES, MODES, read_epochs



@dataclass
class Run:
    """One run folder: its metadata (run.json) and its complete epoch rows."""

    path: Path
    run_id: str
    meta: dict[str, Any]          # run.json as read ({} when missing or invalid)
    epochs: pd.DataFrame          # one row per (mode, epoch), columns EPOCH_FIELDNAMES + "line"
    status: str                   # running | finished | failed | unknown (no run.json)
    has_meta: bool = True

    # -- identity ------------------------------------------------------------
    def _row_value(self, column: str) -> Any:
        """Most common non-empty value of a CSV column (fallback when run.json lacks it)."""
        if column not in self.epochs or self.epochs.empty:
            return None
        values = self.epochs[column].dropna()
        if values.empty:
            return None
        return values.mode().iloc[0]

    @property
    def config(self) -> dict[str, Any]:
        cfg = self.meta.get("config")
        return cfg if isinstance(cfg, dict) else {}

    @property
    def hardware(self) -> dict[str, Any]:
        hw = self.meta.get("hardware")
        return hw if isinstance(hw, dict) else {}

    def _field(self, config_key: str, column: str) -> Any:
        value = self.config.get(config_key)
        if value is None or value == "":
            value = self._row_value(column)
        return value

    @property
    def model(self) -> str:
        return str(self._field("model", "model") or "?")

    @property
    def dataset(self) -> str:
        return str(self._field("dataset", "dataset") or "?")

    @property
    def profile(self) -> str | None:
        value = self._field("profile", "profile")
        return None if value is None else str(value)

    @property
    def device_name(self) -> str:
        name = self.hardware.get("device_name") or self._row_value("device")
        return str(name) if name else "unknown device"

    @property
    def emulated(self) -> bool:
        value = self.meta.get("emulated")
        if isinstance(value, bool):
            return value
        row = self._row_value("emulated")
        return bool(row) if row is not None and not _isnan(row) else False

    @property
    def world_size(self) -> int:
        value = self._field("world_size", "world_size")
        try:
            return max(1, int(value))
        except (TypeError, ValueError):
            return 1

    @property
    def device_label(self) -> str:
        """What identifies the hardware configuration: device, process count, emulation.

        Two runs with the same label ran on the same kind of hardware with the
        same memory behaviour, so their times may be aggregated.
        """
        label = self.device_name
        if self.world_size > 1:
            label += f" ×{self.world_size}"
        if self.emulated:
            label += f" (emulating {self.profile or '?'})"
        if self.source == "replay":
            label += " · replayed"
        return label

    @property
    def source(self) -> str:
        """``replay`` for a `bench replay` folder (timed here, trajectory of another run), else ``measured``."""
        value = self.meta.get("source") or self._row_value("source")
        return "replay" if value == "replay" else "measured"

    @property
    def replay_of(self) -> str | None:
        value = self.meta.get("replay_of") or self._row_value("replay_of")
        return str(value) if self.source == "replay" and value else None

    @property
    def in_progress(self) -> bool:
        return self.status == "running"

    @property
    def expected_epochs(self) -> int | None:
        value = self.config.get("epochs")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    def mode_info(self, mode: str) -> dict[str, Any]:
        modes = self.meta.get("modes")
        info = modes.get(mode) if isinstance(modes, dict) else None
        return info if isinstance(info, dict) else {}

    def mode_status(self, mode: str) -> str | None:
        status = self.mode_info(mode).get("status")
        return status if isinstance(status, str) else None

    def architectures(self, mode: str) -> list[dict[str, Any]]:
        """Valid architecture entries of one mode, ``channels`` as an ordered dict.

        ``channels`` may be a mapping or a list of [name, count] pairs; entries
        without usable channels are dropped.
        """
        archs = self.mode_info(mode).get("architectures")
        if not isinstance(archs, list):
            return []
        out = []
        for a in archs:
            if not isinstance(a, dict):
                continue
            chans = channel_map(a.get("channels"))
            if chans:
                out.append({**a, "channels": chans})
        return out

    def mode_epochs(self, mode: str) -> pd.DataFrame:
        return self.epochs[self.epochs["mode"] == mode].sort_values("epoch")

    @property
    def completeness(self) -> int:
        """Rank for choosing between duplicate copies: finished > failed > running, then rows."""
        rank = {"finished": 3, "failed": 2, "running": 1}.get(self.status, 0)
        return rank * 1_000_000 + len(self.epochs)


@dataclass
class LoadResult:
    runs: list[Run]
    warnings: list[str] = field(default_factory=list)


def channel_map(raw: Any) -> dict[str, float]:
    """Layer -> output channels in network order, from a mapping or [name, count] pairs.

    JSON written with sorted keys has lost the network order; then the names
    are put in natural order (layer2 before layer10), the best guess left.
    """
    items: list[tuple[Any, Any]]
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = [tuple(p) for p in raw if isinstance(p, (list, tuple)) and len(p) == 2]
    else:
        return {}
    chans = {str(k): float(v) for k, v in items
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    names = list(chans)
    if isinstance(raw, dict) and len(names) > 2 and names == sorted(names):
        chans = {k: chans[k] for k in sorted(names, key=_natural_key)}
    return chans


def _natural_key(name: str) -> list[Any]:
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", name) if t]


# --------------------------------------------------------------------------
# Finding run folders

def _is_run_dir(d: Path) -> bool:
    return (d / "epochs.csv").exists() or (d / "run.json").exists()


def find_run_dirs(paths: Sequence[Path], warnings: list[str]) -> list[Path]:
    """Run folders among ``paths``: each a run folder, a file in one, or any parent of some.

    Hidden folders (``.git``, ``.venv``) are not searched; a run folder's own
    subfolders are not searched either (checkpoints live there, not runs).
    """
    found: list[Path] = []
    seen: set[Path] = set()

    def add(d: Path) -> None:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            found.append(d)

    for p in paths:
        p = Path(p)
        if not p.exists():
            warnings.append(f"{p}: no such file or folder; skipped")
            continue
        if p.is_file():
            if p.name in ("epochs.csv", "run.json"):
                add(p.parent)
            else:
                warnings.append(f"{p}: not a run folder, epochs.csv or run.json; skipped")
            continue
        if _is_run_dir(p):
            add(p)
            continue
        before = len(found)
        for root, dirs, files in os.walk(p, onerror=lambda e: warnings.append(
                f"{e.filename}: cannot list folder ({e.strerror}); skipped")):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if "epochs.csv" in files or "run.json" in files:
                add(Path(root))
                dirs[:] = []
        if len(found) == before:
            warnings.append(f"{p}: no run folders (with epochs.csv or run.json) found inside")
    return found


# --------------------------------------------------------------------------
# The record files, read leniently by bench.runfolder.records' readers

def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def read_epochs_csv(path: Path, warnings: list[str]) -> pd.DataFrame | None:
    """The complete, valid rows of one epochs.csv as a frame (numbers as float, plus ``line``); None when
    nothing is usable.  Reading and its warnings: :func:`bench.runfolder.records.read_epochs`."""
    rows = read_epochs(path, strict=False, warnings=warnings)
    if rows is None:
        return None
    df = pd.DataFrame([{**row.to_dict(), "line": lineno} for lineno, row in rows],
                      columns=[*EPOCH_FIELDNAMES, "line"])
    for name, typ in COLUMN_TYPES.items():
        if typ is not str:
            df[name] = pd.to_numeric(df[name], errors="coerce").astype(float)
    df["epoch"] = df["epoch"].astype(int)
    return df.reset_index(drop=True)


def read_run_json(path: Path, warnings: list[str]) -> dict[str, Any] | None:
    """run.json read leniently (see :func:`bench.runfolder.runjson.read_run_json`)."""
    return runjson.read_run_json(path, strict=False, warnings=warnings)


# --------------------------------------------------------------------------
# One run, many runs

def load_run(run_dir: Path, warnings: list[str]) -> Run | None:
    """Read one run folder; None (with warnings) when it holds nothing usable."""
    meta = read_run_json(run_dir / "run.json", warnings)
    csv_path = run_dir / "epochs.csv"
    if not csv_path.exists():
        state = f" (status {meta['status']})" if meta and "status" in meta else ""
        warnings.append(f"{csv_path}: missing; run{state} skipped")
        return None
    df = read_epochs_csv(csv_path, warnings)
    if df is None:
        return None

    csv_ids = [i for i in df["run_id"].dropna().unique() if i != ""]
    run_id = (meta or {}).get("run_id") or (Counter(df["run_id"].dropna()).most_common(1)[0][0]
                                            if csv_ids else run_dir.name)
    foreign = df["run_id"].notna() & (df["run_id"] != "") & (df["run_id"] != run_id)
    if foreign.any():
        lines = ", ".join(str(int(x)) for x in df.loc[foreign, "line"][:5])
        warnings.append(f"{csv_path}: {int(foreign.sum())} row(s) belong to another run "
                        f"({', '.join(sorted(set(df.loc[foreign, 'run_id'])))}; lines {lines}); "
                        "skipped")
        df = df[~foreign].reset_index(drop=True)
        if df.empty:
            warnings.append(f"{csv_path}: no rows of run {run_id}; run skipped")
            return None
    status = (meta or {}).get("status", "unknown")
    return Run(path=run_dir, run_id=str(run_id), meta=meta or {}, epochs=df,
               status=status, has_meta=meta is not None)


def dedupe_runs(runs: Iterable[Run], warnings: list[str]) -> list[Run]:
    """Keep one copy per run_id: the most complete one (then the first path)."""
    by_id: dict[str, list[Run]] = {}
    for r in runs:
        by_id.setdefault(r.run_id, []).append(r)
    kept: list[Run] = []
    for run_id, copies in by_id.items():
        if len(copies) == 1:
            kept.append(copies[0])
            continue
        best = max(copies, key=lambda r: r.completeness)  # max keeps the first on ties
        others = ", ".join(str(c.path) for c in copies if c is not best)
        warnings.append(f"run {run_id} found in more than one folder: {best.path} and {others}; "
                        f"using {best.path}")
        kept.append(best)
    return kept


def load_runs(paths: Sequence[Path]) -> LoadResult:
    """All usable runs under ``paths``, one per run_id, plus the warnings collected.

    Raises RecordError (one line) when no run is usable; the exception carries
    the warnings as ``.warnings`` so a caller can still show why.
    """
    warnings: list[str] = []
    dirs = find_run_dirs(paths, warnings)
    runs = [r for d in dirs if (r := load_run(d, warnings)) is not None]
    runs = dedupe_runs(runs, warnings)
    if not runs:
        where = ", ".join(str(p) for p in paths) or "(no paths)"
        n = len(dirs)
        detail = f"{n} run folder(s) found, none readable" if n else "no run folders found"
        raise record_error(f"no usable run records in {where}: {detail}; "
                            "run `bench run` first or check the warnings above", warnings)
    runs.sort(key=lambda r: (r.device_label, r.model, r.dataset, str(r.path)))
    return LoadResult(runs=runs, warnings=warnings)


def record_error(message: str, warnings: list[str]) -> RecordError:
    err = RecordError(message)
    err.warnings = list(warnings)  # type: ignore[attr-defined]
    return err
