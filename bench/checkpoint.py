"""Checkpoints: architecture as data, weights, optimizer, RNG states, schedule position.

Written atomically after every epoch (temporary file, fsync, rename), so a
kill at any moment leaves the previous complete checkpoint.  Loaded with
``weights_only=True``: a checkpoint holds only tensors and plain data, never
pickled code, so a file from someone else cannot run anything.
"""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

import prunetrain_core as pc

from .errors import CheckpointError
from .records import atomic_write_bytes

FORMAT = 1


def optimizer_to_named(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state with parameters named, not numbered (order can change at surgery)."""
    names = {id(p): n for n, p in model.named_parameters()}
    state = optimizer.state_dict()
    groups = [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    return {"state_dict": state, "param_names": groups}


def optimizer_from_named(model: nn.Module, blob: dict, factory) -> torch.optim.Optimizer:
    params = dict(model.named_parameters())
    try:
        groups = [[params[n] for n in names] for names in blob["param_names"]]
    except KeyError as exc:
        raise CheckpointError(f"checkpoint optimizer names parameter {exc} that the model does not have") from None
    optimizer = factory([{"params": g} for g in groups])
    optimizer.load_state_dict(blob["state_dict"])
    return optimizer


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:
        random.setstate((3, tuple(int(x) for x in state["python"]), None))


def save(path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, extra: dict[str, Any]) -> None:
    blob = {
        "format": FORMAT,
        "arch": pc.describe(model),
        "model": model.state_dict(),
        "optimizer": optimizer_to_named(model, optimizer),
        "rng": rng_state(),
        **extra,
    }
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load(path: Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # torch raises many types for damaged or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path}: key 'format' must be {FORMAT} (not a bench checkpoint or a newer one)")
    for key, typ in (("arch", dict), ("model", dict), ("optimizer", dict), ("epoch", int), ("rng", dict)):
        if not isinstance(blob.get(key), typ):
            raise CheckpointError(f"{path}: key '{key}' is missing or not a {typ.__name__}")
    return blob


def restore_model(blob: dict, path: Path) -> nn.Module:
    """Rebuild the (possibly pruned) model from the checkpoint's architecture data and weights."""
    try:
        return pc.rebuild(blob["arch"], blob["model"])
    except Exception as exc:
        raise CheckpointError(f"{path}: key 'arch'/'model' does not describe a loadable model "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
