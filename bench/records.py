"""The record schema, in one place: writer, reader and report all use it.

A run folder ``<results-dir>/<run-id>/`` holds

* ``run.json``   configuration, hardware, versions, git commit, seed, emulation,
                 the channel shape after each reconfiguration, and ``status``
                 (``running`` / ``finished`` / ``failed``); rewritten atomically.
* ``epochs.csv`` one row per (mode, epoch), appended, flushed and fsync'ed when
                 the epoch ends, so a killed run never leaves a torn row.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import faults

SCHEMA_VERSION = 1
_UMASK = os.umask(0)
os.umask(_UMASK)

# (column, type) in file order.  Types are used by readers to validate rows.
EPOCH_COLUMNS: list[tuple[str, type]] = [
    ("schema_version", int),
    ("run_id", str),
    ("mode", str),              # dense | prunetrain
    ("model", str),
    ("dataset", str),
    ("profile", str),
    ("device", str),            # e.g. "NVIDIA GeForce GTX 1070" or "cpu: AMD EPYC ..."
    ("emulated", int),          # 1 when a larger device emulates the profile's budget
    ("world_size", int),
    ("epoch", int),             # 1-based
    ("batch_size", int),        # global batch
    ("lr", float),
    ("train_loss", float),
    ("train_acc", float),       # percent
    ("test_loss", float),
    ("test_acc", float),        # percent
    ("epoch_time_s", float),    # synchronised wall clock of the training epoch
    ("eval_time_s", float),
    ("reconfig_time_s", float), # reconfiguration after this epoch (0 if none)
    ("compile_time_s", float),  # torch.compile (re)compilation, kept out of epoch_time_s
    ("train_flops", float),     # whole epoch: fwd + loss + bwd, FlopCounterMode
    ("inference_flops", float), # per image
    ("params", int),
    ("peak_memory_bytes", int),
    ("memory_budget_bytes", int),
    ("lasso_lambda", float),
    ("lasso_ratio", float),     # λG / (CE + λG), epoch mean
    ("grad_bytes_per_step", int),  # bytes of gradients all-reduced per step (0 on 1 process)
    ("comm_wait_s", float),     # time waiting on communication, where separable
    ("oom_retries", int),       # steps retried at a lower batch after an OOM
    ("steps", int),
    ("source", str),            # measured (bench run) | replay (bench replay: timed here, trajectory of replay_of)
    ("replay_of", str),         # the run id whose trajectory a replay timed (empty when measured)
]
EPOCH_FIELDNAMES = [name for name, _ in EPOCH_COLUMNS]


def atomic_write_bytes(path: Path, data: bytes, fault_point: str | None = None) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or new file, never half.

    ``fault_point`` names this write for the test hook :func:`bench.faults.maybe_kill`.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; records must be readable like any file
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if fault_point is not None:
            faults.maybe_kill(fault_point)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any, fault_point: str | None = None) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode(),
                       fault_point=fault_point)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def format_row(row: Mapping[str, Any]) -> str:
    """One CSV line (with newline) in schema order; missing values are empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EPOCH_FIELDNAMES, extrasaction="raise", lineterminator="\n")
    writer.writerow({k: _fmt(row.get(k)) for k in EPOCH_FIELDNAMES})
    return buf.getvalue()


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def header_line() -> str:
    return ",".join(EPOCH_FIELDNAMES) + "\n"


class EpochLog:
    """Append-only epochs.csv: each row written with one write(), flushed and fsync'ed.

    A row is either wholly on disk or absent (a reader ignores a last line
    without its newline), so ``kill -9`` never leaves a torn row behind.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.exists() or self.path.stat().st_size == 0:
            atomic_write_bytes(self.path, header_line().encode())
        else:
            self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            atomic_write_bytes(self.path, data[: data.rfind(b"\n") + 1])

    def append(self, row: Mapping[str, Any]) -> None:
        line = format_row(row).encode()
        with open(self.path, "ab") as fh:
            faults.maybe_kill("record-append", before=lambda: _write_synced(fh, line[: len(line) // 2]))
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_to(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Rewrite the file with exactly ``rows`` (used on resume)."""
        data = header_line() + "".join(format_row(r) for r in rows)
        atomic_write_bytes(self.path, data.encode())


def _write_synced(fh, data: bytes) -> None:
    fh.write(data)
    fh.flush()
    os.fsync(fh.fileno())


def parse_value(name: str, typ: type, text: str) -> Any:
    if text == "":
        return None
    if typ is int:
        return int(float(text))
    if typ is float:
        return float(text)
    return text


COLUMN_TYPES = dict(EPOCH_COLUMNS)
