"""The record files of a run folder: their schema and the one writer and one reader of each.

A run folder ``<results-dir>/<run-id>/`` holds

* ``run.json``   configuration, hardware, versions, git commit, seed, emulation,
                 the channel shape after each reconfiguration, and ``status``
                 (``running`` / ``finished`` / ``failed``): its schema, one builder,
                 writer and reader are in :mod:`bench.runfolder.runjson`.
* ``epochs.csv`` one :class:`EpochRow` per (mode, epoch), appended by
                 :class:`EpochLog`, flushed and fsync'ed when the epoch ends, so a
                 killed run never leaves a torn row; read by :func:`read_epochs`.

Both readers have two manners, chosen by ``strict``: ``bench run --resume``
reads strictly (the first problem is a :class:`~bench.errors.RecordError`
naming file, line and column: a run is never continued from a damaged
record), ``bench report`` leniently (each problem is a warning, the damaged
part is skipped, the rest used: records are copied around by hand).

Adding a column is one line in :class:`EpochRow` (``name: type = column(...)``,
``machine=True`` for a clock or the machine's load) plus its value where the row
is built.  Files written before the column
existed read it as the column's ``absent`` value (default ``None``: unknown,
shown empty); the lenient reader names the missing columns once per file,
the strict reader accepts them and the resumed run rewrites the file with the
new header.

(Over 400 lines on purpose: the schema, writer and reader of epochs.csv sit
together so that a column change is seen by every one of them in one place.)
"""
from __future__ import annotations

import csv
import io
import math
import numbers
import os
import typing
from collections import Counter
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from .atomic import atomic_write_bytes, atomic_write_json
from ..config import MODES  # noqa: F401  (re-exported: the modes a record may hold)
from ..errors import RecordError
from .hooks import NO_HOOKS, Hooks

__all__ = ["SCHEMA_VERSION", "MODES", "EpochRow", "EPOCH_FIELDNAMES", "COLUMN_TYPES", "EpochLog", "write_epochs",
           "read_epochs", "parse_value", "atomic_write_bytes", "atomic_write_json"]

SCHEMA_VERSION = 1
# Columns without which a row means nothing; a file lacking one is not an epochs.csv.
REQUIRED_COLUMNS: tuple[str, ...] = ("mode", "epoch", "epoch_time_s")
# Per-file cap on line-level warnings, so one mangled file does not flood stderr.
MAX_LINE_WARNINGS = 5


def column(doc: str, *, absent: Any = None, low: float | None = 0, machine: bool = False) -> Any:
    """A column of epochs.csv: ``doc`` says what it holds, ``absent`` what files from before it read as,
    ``low`` the smallest valid number (None: no bound; strings ignore it), ``machine`` True for a clock or
    the machine's load: it differs between two runs of one configuration (all other columns must not)."""
    return field(metadata={"doc": doc, "absent": absent, "low": low, "machine": machine})


@dataclass(kw_only=True)
class EpochRow:
    """One row of epochs.csv; its fields, in order, are the file's columns.

    Every field must be given (a missing or misspelt key is a TypeError) with
    a value of its type; ``None`` is allowed only where the type says so.
    """

    schema_version: int = column("record format version")
    run_id: str = column("the run folder's name")
    mode: str = column("dense | prunetrain | small-dense | thin-dense (the controls)")
    model: str = column("model name, e.g. resnet32")
    dataset: str = column("data set name")
    profile: str = column("hardware profile name")
    device: str = column('e.g. "NVIDIA GeForce GTX 1070" or "cpu: AMD EPYC ..."')
    emulated: int = column("1 when a larger device emulates the profile's budget")
    world_size: int = column("processes", low=1)
    epoch: int = column("1-based", low=1)
    batch_size: int = column("global mini-batch", low=1)
    lr: float = column("learning rate the epoch ran with")
    train_loss: float | None = column("epoch mean; empty in a replay (nothing is trained)")
    train_acc: float | None = column("percent; empty in a replay")
    test_loss: float | None = column("after the epoch; empty in a replay")
    test_acc: float | None = column("percent; empty in a replay")
    val_loss: float | None = column("on the validation split (held out of the training images), after the epoch; "
                                    "empty in a replay and in files from before this column")
    val_acc: float | None = column("percent on the validation split: what a recipe is chosen by, never test_acc")
    epoch_time_s: float | None = column("synchronised wall clock of the training epoch (a replay: images / batch × "
                                        "step); empty only where fits is 0", machine=True)
    eval_time_s: float | None = column("evaluation after the epoch; empty in a replay", machine=True)
    reconfig_time_s: float = column("reconfiguration after this epoch (0 if none)", machine=True)
    compile_time_s: float = column("torch.compile (re)compilation, kept out of epoch_time_s", machine=True)
    warmup_time_s: float | None = column("untimed first forward + backward of each new shape (cuDNN autotuning, "
                                         "CUDA start-up), kept out of epoch_time_s; empty in a replay", machine=True)
    train_flops: float = column("whole epoch: fwd + loss + bwd, FlopCounterMode")
    inference_flops: float = column("per image")
    params: int = column("parameters of the shape the epoch trained")
    peak_memory_bytes: int = column("peak training memory of the epoch (see peak_memory_source); where fits is 0, "
                                    "the need at batch 1")
    fits: int = column("1: the shape fit the profile's memory; 0: not even at batch 1 (a replay's result: the "
                       "epoch is not timed, epoch_time_s empty)", absent=1)
    memory_limit_bytes: int | None = column("bytes the batch rule allows (usable budget × headroom); empty in "
                                            "files from before this column")
    peak_memory_source: str | None = column("measured (the CUDA allocator's peak) | predicted (the memory model: "
                                            "CPU runs and replays); empty in files from before this column")
    peak_memory_reserved_bytes: int | None = column("CUDA: max_memory_reserved, what the emulation cap limits; "
                                                    "empty on the CPU and in a replay")
    memory_budget_bytes: int = column("the profile's budget")
    lasso_lambda: float | None = column("group-lasso λ (0 for dense); a replay copies the original's")
    lasso_ratio: float | None = column("λG / (CE + λG), epoch mean; empty in a replay")
    grad_bytes_per_step: int = column("bytes of gradients all-reduced per step (0 on 1 process)")
    comm_wait_s: float | None = column("time waiting on communication; empty where not separable")
    oom_retries: int = column("steps retried at a lower batch after an OOM")
    steps: int = column("optimizer steps in the epoch")
    source: str = column("measured (bench run) | replay (bench replay: timed here, trajectory of replay_of)",
                         absent="measured")
    replay_of: str | None = column("the run id whose trajectory a replay timed; empty when measured")
    cpu_time_s: float | None = column("this process's CPU time in the training epoch (1 thread: wall − CPU = "
                                      "waiting for a core); a replay: images / batch × CPU per step", machine=True)
    load_avg: float | None = column("1-minute load average when the epoch ended; empty in a replay", machine=True)
    other_cpu_cores: float | None = column("cores other processes used during the epoch (/proc; empty elsewhere)",
                                           machine=True)
    busy_processes: str | None = column("the busiest other processes, and on CUDA the other processes on the GPU",
                                        machine=True)
    # measured at a reconfiguration on a fixed batch of the validation split, before vs after it; empty otherwise
    prune_threshold: float | None = column("threshold used (chosen under --change-budget; empty: none fit it)")
    func_change_eval: float | None = column("max |Δlogit| / max |logit| before, eval mode")
    func_change_train: float | None = column("the same in train mode (batch statistics)")
    func_acc_delta_eval: float | None = column("accuracy change on that batch, points, eval mode", low=None)
    func_acc_delta_train: float | None = column("the same in train mode", low=None)

    def __post_init__(self) -> None:
        if (self.epoch_time_s is None) != (self.fits == 0):
            raise TypeError(f"EpochRow.epoch_time_s is {self.epoch_time_s!r} with fits {self.fits!r}: a shape that "
                            "does not fit (fits 0) goes untimed, every other epoch has a time")
        for name, (typ, nullable) in _TYPES.items():
            value = getattr(self, name)
            if value is None:
                if not nullable:
                    raise TypeError(f"EpochRow.{name} is None; only {', '.join(_NULLABLE)} may be")
                continue
            setattr(self, name, _coerce(name, typ, value))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _types() -> dict[str, tuple[type, bool]]:
    hints = typing.get_type_hints(EpochRow)
    out = {}
    for f in fields(EpochRow):
        args = typing.get_args(hints[f.name])
        out[f.name] = (args[0], True) if args else (hints[f.name], False)
    return out


_TYPES = _types()
_NULLABLE = [n for n, (_, nullable) in _TYPES.items() if nullable]
EPOCH_FIELDNAMES: list[str] = [f.name for f in fields(EpochRow)]
COLUMN_TYPES: dict[str, type] = {n: t for n, (t, _) in _TYPES.items()}
#: clocks and machine load: the columns in which two runs of one configuration may differ
MACHINE_COLUMNS: frozenset[str] = frozenset(f.name for f in fields(EpochRow) if f.metadata["machine"])
_META = {f.name: f.metadata for f in fields(EpochRow)}
assert all(f.default is MISSING for f in fields(EpochRow))  # every column is given by the writer


def _coerce(name: str, typ: type, value: Any) -> Any:
    """``value`` as a plain ``typ`` (numpy and torch scalars included); TypeError when it is not one."""
    if typ is str and isinstance(value, str):
        return value
    if typ is int and isinstance(value, numbers.Integral):
        return int(value)
    if typ is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"EpochRow.{name} must be {typ.__name__}, got {value!r:.60} ({type(value).__name__})")


def parse_value(name: str, typ: type, text: str) -> Any:
    """The value of one CSV cell; ``""`` is None; ValueError when the text is not a ``typ``."""
    if text == "":
        return None
    if typ is int:
        try:
            return int(text)
        except ValueError:
            number = float(text)
            if not number.is_integer():
                raise
            return int(number)
    if typ is float:
        return float(text)
    return text


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # exact: a resumed run's rows equal an uninterrupted one's
    return value


def format_row(row: EpochRow | Mapping[str, Any]) -> str:
    """One CSV line (with newline) in column order; a mapping must hold exactly the columns (TypeError otherwise)."""
    row = as_row(row)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_cell(getattr(row, n)) for n in EPOCH_FIELDNAMES])
    return buf.getvalue()


def header_line() -> str:
    return ",".join(EPOCH_FIELDNAMES) + "\n"


def as_row(row: EpochRow | Mapping[str, Any]) -> EpochRow:
    return row if isinstance(row, EpochRow) else EpochRow(**row)


class EpochLog:
    """The writer of epochs.csv: each row written with one write(), flushed and fsync'ed.

    A row is either wholly on disk or absent (a reader ignores a last line
    without its newline), so ``kill -9`` never leaves a torn row behind.
    """

    def __init__(self, path: Path, hooks: Hooks = NO_HOOKS):
        self.path, self.hooks = Path(path), hooks
        if not self.path.exists() or self.path.stat().st_size == 0:
            atomic_write_bytes(self.path, header_line().encode())
        else:
            self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            atomic_write_bytes(self.path, data[: data.rfind(b"\n") + 1])

    def append(self, row: EpochRow | Mapping[str, Any]) -> None:
        """Append one row; a mapping must hold exactly the columns (TypeError otherwise)."""
        line = format_row(row).encode()
        with open(self.path, "ab") as fh:
            self.hooks.kill_point("record-append", before=lambda: _write_synced(fh, line[: len(line) // 2]))
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_to(self, rows: Iterable[EpochRow]) -> None:
        """Rewrite the file with exactly ``rows`` under the current header (used on resume)."""
        write_epochs(self.path, rows)


def write_epochs(path: Path, rows: Iterable[EpochRow | Mapping[str, Any]]) -> None:
    """A whole epochs.csv at once, atomically (a resume's rewrite, a replay's records)."""
    atomic_write_bytes(Path(path), (header_line() + "".join(format_row(r) for r in rows)).encode())


def _write_synced(fh, data: bytes) -> None:
    fh.write(data)
    fh.flush()
    os.fsync(fh.fileno())


# --------------------------------------------------------------------------------- reading epochs.csv

class Reader:
    """Strict: the first problem raises RecordError.  Lenient: problems become warnings, capped per file."""

    def __init__(self, path: Path, strict: bool, warnings: list[str] | None):
        self.path, self.strict = path, strict
        self.warnings = warnings if warnings is not None else []
        self.line_problems: list[str] = []

    def fatal(self, where: str, problem: str, skipped: str = "file skipped") -> None:
        if self.strict:
            raise RecordError(f"{self.path}{where}: {problem}")
        self.warnings.append(f"{self.path}{where}: {problem}; {skipped}")

    def line(self, lineno: int, problem: str) -> None:
        if self.strict:
            raise RecordError(f"{self.path}:{lineno}: {problem}")
        self.line_problems.append(f"{self.path}:{lineno}: {problem}; row skipped")

    def note(self, message: str) -> None:
        if not self.strict:
            self.warnings.append(message)

    def flush_line_problems(self) -> None:
        self.warnings.extend(self.line_problems[:MAX_LINE_WARNINGS])
        extra = len(self.line_problems) - MAX_LINE_WARNINGS
        if extra > 0:
            self.warnings.append(f"{self.path}: {extra} more damaged rows skipped")


def read_epochs(path: Path, *, strict: bool, warnings: list[str] | None = None) -> list[tuple[int, EpochRow]] | None:
    """The complete, valid rows of an epochs.csv as ``(line number, row)``.

    A last line without newline is a row torn by a kill mid-write and is
    ignored.  A header with the known columns in another order, or lacking some
    (an older file: see the module docstring), is read by name.  Strict: a
    missing file has no rows; any damage raises.  Lenient: damage is a warning
    naming ``path:line``; None when nothing is usable.
    """
    path = Path(path)
    r = Reader(path, strict, warnings)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if strict:
            return []
        r.fatal("", "missing")
        return None
    except OSError as e:
        r.fatal("", f"cannot read ({e.strerror or e})")
        return None
    text = data.decode("utf-8-sig", errors="replace")
    if not text.strip():
        if strict:
            return []
        r.fatal("", "file is empty")
        return None
    lines = text.split("\n")
    if text.endswith("\n"):
        lines = lines[:-1]
    else:
        lines = lines[:-1]
        if not lines:
            r.fatal(":1", "incomplete header line (no newline)")
            return None
        r.note(f"{path}:{len(lines) + 1}: last line is incomplete (no newline: "
               "the run was stopped mid-write or is still writing); ignored")
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    header = _read_header(r, lines[0])
    if header is None:
        return None
    rows: list[tuple[int, EpochRow]] = []
    for lineno, line in enumerate(lines[1:], start=2):
        if line.strip():
            row = _read_line(r, header, lineno, line)
            if row is not None:
                rows.append((lineno, row))
    r.flush_line_problems()
    if not rows and r.line_problems:
        r.warnings.append(f"{path}: no usable rows; file skipped")
        return None
    _version_notes(r, Counter(row.schema_version for _, row in rows))
    return _drop_repeated(r, rows)


def _read_header(r: Reader, line: str) -> list[str] | None:
    try:
        header = [h.strip() for h in next(csv.reader([line]))]
    except (csv.Error, StopIteration) as e:
        r.fatal(":1", f"unreadable header ({e})")
        return None
    missing_required = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing_required or len(set(header)) != len(header):
        what = (f"lacks column(s) {', '.join(missing_required)}" if missing_required else "repeats a column name")
        r.fatal(":1", f"not an epochs.csv header ({what})")
        return None
    unknown = [h for h in header if h not in COLUMN_TYPES]
    absent = [h for h in EPOCH_FIELDNAMES if h not in header]
    if unknown and r.strict:
        raise RecordError(f"{r.path}:1: header has column(s) {', '.join(unknown)} unknown to this bench version "
                          f"(schema version {SCHEMA_VERSION}); continue it with the bench that wrote it")
    parts = []
    if absent:
        parts.append(f"missing column(s) {', '.join(absent)} (read as {_absent_text(absent)})")
    if unknown:
        parts.append(f"unknown column(s) {', '.join(unknown)} ignored")
    if parts:
        r.note(f"{r.path}:1: header differs from schema version {SCHEMA_VERSION}: " + "; ".join(parts))
    return header


def _absent_text(names: list[str]) -> str:
    values = {repr(_META[n]["absent"]) if _META[n]["absent"] is not None else "empty" for n in names}
    return ", ".join(sorted(values))


def _read_line(r: Reader, header: list[str], lineno: int, line: str) -> EpochRow | None:
    try:
        cells = next(csv.reader([line]))
    except csv.Error as e:
        r.line(lineno, f"unreadable CSV ({e})")
        return None
    if len(cells) != len(header):
        r.line(lineno, f"wrong number of fields: {len(cells)} fields, expected {len(header)}")
        return None
    values = {name: _META[name]["absent"] for name in EPOCH_FIELDNAMES}
    for name, raw in zip(header, cells):
        typ = COLUMN_TYPES.get(name)
        if typ is None:
            continue
        try:
            values[name] = parse_value(name, typ, raw.strip() if typ is not str else raw)
        except (ValueError, OverflowError):
            r.line(lineno, f"column {name}: {raw!r:.40} is not a valid {typ.__name__}")
            return None
    problem = row_problem(values)
    if problem is not None:
        r.line(lineno, problem)
        return None
    row = EpochRow.__new__(EpochRow)  # values are parsed and checked; None marks an unknown (older file)
    row.__dict__.update(values)
    return row


def row_problem(values: Mapping[str, Any]) -> str | None:
    """Why a row's values cannot be used (absurd numbers would flow into the report), or None."""
    if values["mode"] not in MODES:
        return f"mode {values['mode']!r} is not one of {', '.join(MODES)}"
    if values["epoch"] is None:
        return "epoch is empty"
    t, fits = values["epoch_time_s"], values.get("fits")
    if fits not in (0, 1, None):
        return f"fits {fits!r} is not 0 or 1"
    if fits == 0 and t is not None:
        return f"epoch_time_s {t!r} given for a shape that did not fit (fits 0)"
    if fits != 0 and (t is None or not math.isfinite(t) or t < 0):  # fits 0: recorded, not timed
        return f"epoch_time_s {t!r} is not a finite time"
    for name, typ in COLUMN_TYPES.items():
        v, low = values.get(name), _META[name]["low"]
        if typ is str or v is None or low is None:
            continue
        if not math.isfinite(v) or v < low:
            return f"{name} {v!r} is not a finite number >= {low}"
    return None


def _version_notes(r: Reader, versions: Counter) -> None:
    for version, n in versions.items():
        if version is not None and version > SCHEMA_VERSION and r.strict:
            raise RecordError(f"{r.path}: rows of schema_version {version}, written by a newer bench "
                              f"(this writes {SCHEMA_VERSION}); continue it with the bench that wrote it")
        if version is None or version < SCHEMA_VERSION:
            old = "none (older format)" if version is None else str(version)
            r.note(f"{r.path}: {n} row(s) of an older record format (schema_version {old}); "
                   "read the compatible columns")
        elif version > SCHEMA_VERSION:
            r.note(f"{r.path}: {n} row(s) written by a newer bench (schema_version {version}, "
                   f"this reads {SCHEMA_VERSION}); read the known columns")


def _drop_repeated(r: Reader, rows: list[tuple[int, EpochRow]]) -> list[tuple[int, EpochRow]]:
    """Each (run, mode, epoch) once: a repeated one keeps its later row (lenient) or is an error (strict)."""
    last = {(row.run_id, row.mode, row.epoch): lineno for lineno, row in rows}
    kept = []
    for lineno, row in rows:
        if last[(row.run_id, row.mode, row.epoch)] == lineno:
            kept.append((lineno, row))
        elif r.strict:
            raise RecordError(f"{r.path}:{lineno}: {row.mode} epoch {row.epoch} appears again later")
        else:
            r.warnings.append(f"{r.path}:{lineno}: {row.mode} epoch {row.epoch} appears again later; "
                              "the later row is used")
    return kept


# ------------------------------------------------------------------------------------------- run.json
