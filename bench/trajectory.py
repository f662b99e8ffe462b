"""A finished (or partial) run's pruning trajectory, read back from its records for `bench replay`.

The trajectory is the card-independent half of a result: which architectures
each mode passed through, after which epoch, and how many images every epoch
trained on.  ``run.json`` holds each architecture as :func:`prunetrain_core.describe`
data (the traced graph, removed branches included), so it is rebuilt exactly;
``epochs.csv`` gives the epochs that completed.  Every problem is one
:class:`~bench.errors.RecordError` line naming the file and the key.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prunetrain_core as pc

from .config import MODES, RunConfig
from .errors import RecordError
from .records import COLUMN_TYPES, parse_value


@dataclass
class Shape:
    """One architecture of one mode: in effect for the epochs after ``epoch`` up to the next shape's."""

    mode: str
    index: int                 # position in the mode's architecture list (0 = the starting model)
    epoch: int                 # recorded after this epoch (0 = before training)
    arch: dict                 # prunetrain_core.describe() data
    channels: dict[str, int]
    batch_size: int            # the batch the original run used with this shape
    params: int
    inference_flops: float
    train_flops_per_image: float


@dataclass
class Trajectory:
    path: Path
    meta: dict
    cfg: RunConfig
    rows: list[dict]                    # complete epochs.csv rows of the replayed modes, in file order
    shapes: dict[str, list[Shape]]      # per mode, in epoch order

    @property
    def run_id(self) -> str:
        return str(self.meta["run_id"])

    @property
    def train_size(self) -> int | None:
        size = (self.meta.get("data") or {}).get("train_size")
        return size if isinstance(size, int) and size > 0 else None

    def shape_for(self, mode: str, epoch: int) -> Shape:
        """The shape that trained ``epoch`` (1-based): the last one recorded before it."""
        return [s for s in self.shapes[mode] if s.epoch < epoch][-1]

    def next_shape(self, shape: Shape) -> Shape | None:
        later = self.shapes[shape.mode][shape.index + 1:]
        return later[0] if later else None

    def samples(self, row: dict) -> int:
        """Images the row's epoch trained on: the training set, or what the row's FLOPs imply."""
        if self.train_size:
            return self.train_size
        shape = self.shape_for(row["mode"], row["epoch"])
        return round(row["train_flops"] / shape.train_flops_per_image)


def load_trajectory(run_dir: Path) -> Trajectory:
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    from .run import config_from_record, read_run_json  # bench.run imports the trainer: only when replaying

    meta = read_run_json(run_dir, needed_by="`bench replay`")
    cfg = config_from_record(path, meta["config"])
    if cfg.model not in pc.available_models():
        raise RecordError(f"{path}: key 'config.model' is {cfg.model!r}, not a model of this version")
    rows = _read_rows(run_dir / "epochs.csv")
    shapes: dict[str, list[Shape]] = {}
    for mode, state in meta["modes"].items():
        done = [r for r in rows if r["mode"] == mode]
        if not done:
            continue  # this mode never completed an epoch: nothing to replay
        shapes[mode] = _shapes(path, mode, state.get("architectures"))
        first = min(r["epoch"] for r in done)
        if shapes[mode][0].epoch >= first:
            raise RecordError(f"{path}: key 'modes.{mode}.architectures' has no shape for epoch {first}")
    if not shapes:
        raise RecordError(f"{run_dir / 'epochs.csv'}: no complete epoch to replay")
    return Trajectory(run_dir, meta, cfg, [r for r in rows if r["mode"] in shapes], shapes)


def _shapes(path: Path, mode: str, archs: Any) -> list[Shape]:
    key = f"modes.{mode}.architectures"
    if not isinstance(archs, list) or not archs:
        raise RecordError(f"{path}: key '{key}' must be a non-empty list")
    out = []
    for i, a in enumerate(archs):
        if not isinstance(a, dict) or not isinstance(a.get("arch"), dict):
            raise RecordError(f"{path}: key '{key}[{i}].arch' is missing: the run was recorded by an older "
                              "`bench run` that kept only channel counts; record it again with this version")
        try:
            shape = Shape(mode=mode, index=i, epoch=int(a["epoch"]), arch=a["arch"],
                          channels={str(k): int(v) for k, v in a["channels"]}, batch_size=int(a["batch_size"]),
                          params=int(a["params"]), inference_flops=float(a["inference_flops"]),
                          train_flops_per_image=float(a["train_flops_per_image"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"{path}: key '{key}[{i}]' is malformed ({exc!r:.80})") from None
        if out and shape.epoch <= out[-1].epoch:
            raise RecordError(f"{path}: key '{key}[{i}].epoch' is not after the previous shape's")
        out.append(shape)
    return out


def _read_rows(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecordError(f"{path}: not found; `bench replay` needs the run's epoch records") from None
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]  # a torn last row (killed run) is not an epoch
    rows = []
    for n, raw in enumerate(csv.DictReader(lines), start=2):
        try:
            row = {k: parse_value(k, COLUMN_TYPES[k], v or "") for k, v in raw.items() if k in COLUMN_TYPES}
            if row.get("mode") not in MODES or not row.get("epoch") or row.get("epoch_time_s") is None:
                raise ValueError("mode, epoch and epoch_time_s are required")
        except (ValueError, TypeError) as exc:
            raise RecordError(f"{path}:{n}: malformed row ({exc})") from None
        rows.append(row)
    return rows
