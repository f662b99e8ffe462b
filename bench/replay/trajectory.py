"""A finished (or partial) run's pruning trajectory, read back from its records for `bench replay`.

The trajectory is the card-independent half of a result: which architectures
each mode passed through, after which epoch, and how many images every epoch
trained on.  ``run.json`` holds each architecture as :func:`prunetrain_core.describe`
data (the traced graph, removed branches included), so it is rebuilt exactly;
``epochs.csv`` gives the epochs that completed.  Every problem is one
:class:`~bench.errors.RecordError` line naming the file and the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prunetrain_core as pc

from ..config import RunConfig
from ..errors import RecordError
from ..runfolder.records import read_epochs
from ..runfolder.runjson import config_from_record, read_run_json


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
    budget_trials: int = 0     # trial surgeries the change-budget search measured to reach this shape


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

    meta = read_run_json(path, strict=True, needed_by="`bench replay`")
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
                          train_flops_per_image=float(a["train_flops_per_image"]),
                          budget_trials=len((a.get("function_change") or {}).get("tried") or []))
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"{path}: key '{key}[{i}]' is malformed ({exc!r:.80})") from None
        if out and shape.epoch <= out[-1].epoch:
            raise RecordError(f"{path}: key '{key}[{i}].epoch' is not after the previous shape's")
        out.append(shape)
    return out


def _read_rows(path: Path) -> list[dict]:
    """The complete rows of the run's epochs.csv, read strictly (a torn last row is not an epoch)."""
    if not path.exists():
        raise RecordError(f"{path}: not found; `bench replay` needs the run's epoch records")
    return [row.to_dict() for _, row in read_epochs(path, strict=True)]
