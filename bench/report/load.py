"""Find and read run folders for the report, tolerating damaged records.

Records come from many machines, copied around by hand, sometimes while a run
is still writing them.  So nothing here raises on bad input: every problem
becomes a one-line warning naming the file (and line), the damaged part is
skipped and the rest is used.  Only when nothing usable is left does
:func:`load_runs` raise :class:`~bench.errors.RecordError`.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from ..errors import RecordError
from ..records import COLUMN_TYPES, EPOCH_FIELDNAMES, SCHEMA_VERSION, parse_value

MODES: tuple[str, str] = ("dense", "prunetrain")
RUN_STATUSES = ("running", "finished", "failed")
# Columns the report cannot do without; all others may be missing (older files).
REQUIRED_COLUMNS: tuple[str, ...] = ("mode", "epoch", "epoch_time_s")
# Per-file cap on line-level warnings, so one mangled file does not flood stderr.
MAX_LINE_WARNINGS = 5


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
        return label

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
# epochs.csv

def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _version_text(v: Any) -> str:
    return "none (older format)" if v is None else str(v)


def read_epochs_csv(path: Path, warnings: list[str]) -> pd.DataFrame | None:
    """The complete, valid rows of one epochs.csv; None when nothing is usable.

    A last line without newline is a row torn by a kill mid-write and is
    ignored; rows with the wrong field count or unparsable values are skipped
    with a warning naming ``path:line``.  A header with known columns in another
    order, or some missing (older format), is read by name.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        warnings.append(f"{path}: cannot read ({e.strerror or e}); file skipped")
        return None
    text = data.decode("utf-8-sig", errors="replace")
    lines = text.split("\n")
    if not text.strip():
        warnings.append(f"{path}: file is empty; skipped")
        return None
    if text.endswith("\n"):
        lines = lines[:-1]
    else:
        torn_line = len(lines)
        lines = lines[:-1]
        if torn_line > 1:
            warnings.append(f"{path}:{torn_line}: last line is incomplete (no newline: "
                            "the run was stopped mid-write or is still writing); ignored")
        else:
            warnings.append(f"{path}:1: incomplete header line (no newline); file skipped")
            return None
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]

    try:
        header = [h.strip() for h in next(csv.reader([lines[0]]))]
    except (csv.Error, StopIteration) as e:
        warnings.append(f"{path}:1: unreadable header ({e}); file skipped")
        return None
    missing_required = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing_required or len(set(header)) != len(header):
        what = (f"lacks column(s) {', '.join(missing_required)}" if missing_required
                else "repeats a column name")
        warnings.append(f"{path}:1: not an epochs.csv header ({what}); file skipped")
        return None
    if header != EPOCH_FIELDNAMES:
        unknown = [h for h in header if h not in COLUMN_TYPES]
        absent = [h for h in EPOCH_FIELDNAMES if h not in header]
        parts = []
        if absent:
            parts.append(f"missing column(s) {', '.join(absent)} (left empty)")
        if unknown:
            parts.append(f"unknown column(s) {', '.join(unknown)} ignored")
        if parts:
            warnings.append(f"{path}:1: header differs from schema version {SCHEMA_VERSION}: "
                            + "; ".join(parts))

    rows: list[dict[str, Any]] = []
    line_problems: list[str] = []
    versions: Counter[Any] = Counter()
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            fields = next(csv.reader([line]))
        except csv.Error as e:
            line_problems.append(f"{path}:{lineno}: unreadable CSV ({e}); row skipped")
            continue
        if len(fields) != len(header):
            line_problems.append(f"{path}:{lineno}: {len(fields)} fields, expected {len(header)}; "
                                 "row skipped")
            continue
        row: dict[str, Any] = {name: None for name in EPOCH_FIELDNAMES}
        problem = None
        for name, raw in zip(header, fields):
            typ = COLUMN_TYPES.get(name)
            if typ is None:
                continue
            try:
                row[name] = parse_value(name, typ, raw.strip() if typ is not str else raw)
            except (ValueError, OverflowError):
                problem = f"column {name}: {raw!r} is not a valid {typ.__name__}"
                break
        if problem is None:
            problem = _row_problem(row)
        if problem is not None:
            line_problems.append(f"{path}:{lineno}: {problem}; row skipped")
            continue
        row["line"] = lineno
        versions[row["schema_version"]] += 1
        rows.append(row)

    warnings.extend(line_problems[:MAX_LINE_WARNINGS])
    if len(line_problems) > MAX_LINE_WARNINGS:
        warnings.append(f"{path}: {len(line_problems) - MAX_LINE_WARNINGS} more damaged rows skipped")
    for version in versions:
        if version is None or version < SCHEMA_VERSION:
            warnings.append(f"{path}: {versions[version]} row(s) of an older record format "
                            f"(schema_version {_version_text(version)}); read the compatible columns")
        elif version > SCHEMA_VERSION:
            warnings.append(f"{path}: {versions[version]} row(s) written by a newer bench "
                            f"(schema_version {version}, this reads {SCHEMA_VERSION}); "
                            "read the known columns")
    if not rows and line_problems:
        warnings.append(f"{path}: no usable rows; file skipped")
        return None

    df = pd.DataFrame(rows, columns=[*EPOCH_FIELDNAMES, "line"])
    for name, typ in COLUMN_TYPES.items():
        if typ is not str:
            df[name] = pd.to_numeric(df[name], errors="coerce").astype(float)
    dup = df.duplicated(subset=["run_id", "mode", "epoch"], keep="last")
    if dup.any():
        for _, r in df[dup].iterrows():
            warnings.append(f"{path}:{int(r['line'])}: {r['mode']} epoch {int(r['epoch'])} "
                            "appears again later; the later row is used")
        df = df[~dup]
    df["epoch"] = df["epoch"].astype(int)
    return df.reset_index(drop=True)


def _row_problem(row: Mapping[str, Any]) -> str | None:
    """Why a parsed row cannot be used, or None."""
    if row["mode"] not in MODES:
        return f"mode {row['mode']!r} is not one of {', '.join(MODES)}"
    epoch = row["epoch"]
    if epoch is None or epoch < 1:
        return f"epoch {epoch!r} is not a positive number"
    t = row["epoch_time_s"]
    if t is None or not math.isfinite(t) or t < 0:
        return f"epoch_time_s {t!r} is not a finite time"
    # absurd values (negative memory, batch 0, ...) would flow into the report's numbers
    for name, typ in COLUMN_TYPES.items():
        v = row.get(name)
        if typ is str or v is None:
            continue
        low = 1 if name in ("batch_size", "world_size") else 0
        if not math.isfinite(v) or v < low:
            return f"{name} {v!r} is not a finite number >= {low}"
    return None


# --------------------------------------------------------------------------
# run.json

def read_run_json(path: Path, warnings: list[str]) -> dict[str, Any] | None:
    """run.json as a dict, or None (with a warning) when missing, unreadable or invalid.

    Fields of the wrong type are dropped (with a warning) so that the rest is
    still usable; records of an older or newer schema are read as far as the
    fields are known.
    """
    if not path.exists():
        warnings.append(f"{path}: missing; using epochs.csv alone "
                        "(no hardware details, architectures or run status)")
        return None
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        warnings.append(f"{path}: cannot read ({e.strerror or e}); using epochs.csv alone")
        return None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        warnings.append(f"{path}:{e.lineno}: invalid JSON ({e.msg}, column {e.colno}); "
                        "using epochs.csv alone")
        return None
    if not isinstance(meta, dict):
        warnings.append(f"{path}: not a JSON object; using epochs.csv alone")
        return None
    version = meta.get("schema_version")
    if version is None:
        warnings.append(f"{path}: older record format (no schema_version); "
                        "read the compatible fields")
    elif not isinstance(version, int) or isinstance(version, bool):
        warnings.append(f"{path}: unrecognised schema_version {version!r}; using epochs.csv alone")
        return None
    elif version < SCHEMA_VERSION:
        warnings.append(f"{path}: older record format (schema_version {version}, this reads "
                        f"{SCHEMA_VERSION}); read the compatible fields")
    elif version > SCHEMA_VERSION:
        warnings.append(f"{path}: written by a newer bench (schema_version {version}, this "
                        f"reads {SCHEMA_VERSION}); read the known fields")
    expected = {"run_id": str, "status": str, "config": dict, "hardware": dict,
                "modes": dict, "versions": dict, "emulated": bool}
    for key, typ in expected.items():
        if key in meta and meta[key] is not None and not isinstance(meta[key], typ):
            warnings.append(f"{path}: field {key!r} should be a {typ.__name__}, got "
                            f"{type(meta[key]).__name__}; ignored")
            del meta[key]
    if "status" in meta and meta["status"] not in RUN_STATUSES:
        warnings.append(f"{path}: unknown status {meta['status']!r}; treated as unknown")
        del meta["status"]
    return meta


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
