"""Checkpoints: architecture as data, weights, optimizer, RNG states, schedule position.

Written atomically after every epoch (temporary file, fsync, rename), so a
kill at any moment leaves the previous complete checkpoint.  Loaded with
``weights_only=True``: a checkpoint holds only tensors and plain data, never
pickled code, so a file from someone else cannot run anything.
"""
from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import prunetrain_core as pc

from ..errors import CheckpointError
from ..runfolder.atomic import atomic_write_bytes

FORMAT = 1


@dataclass
class ModeState:
    """What a checkpoint must hold to continue a mode exactly where it stopped."""

    epoch: int = 0                 # last completed epoch
    batch: int = 0                 # global batch
    lam: float | None = None
    oom_retries: int = 0
    architectures: list[dict] = field(default_factory=list)
    batch_reasons: list[str] = field(default_factory=list)
    start_need: int = 0            # bytes one process needed at the starting batch (the freed-memory cap)

    def note(self, text: str, *, in_training: bool = False) -> None:
        """One line of the mode's batch decisions, under its epoch: the last completed one, or with
        ``in_training`` the one being trained (an out-of-memory retry, in training or evaluation)."""
        self.batch_reasons.append(f"epoch {self.epoch + int(in_training)}: {text}")

    def to_blob(self) -> dict:
        """The checkpoint's 'epoch' and 'state' keys (read back by :func:`check_state`)."""
        return {"epoch": self.epoch, "state": {
            "batch": self.batch, "lam": self.lam, "oom_retries": self.oom_retries,
            "architectures": self.architectures, "batch_reasons": self.batch_reasons,
            "start_need": self.start_need}}


def optimizer_to_named(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state with parameters named, not numbered (order can change at surgery)."""
    names = {id(p): n for n, p in model.named_parameters()}
    state = optimizer.state_dict()
    groups = [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    return {"state_dict": state, "param_names": groups}


def optimizer_from_named(model: nn.Module, blob: dict, factory, path: Path | str = "checkpoint") -> torch.optim.Optimizer:
    params = dict(model.named_parameters())
    names = blob.get("param_names")
    if not (isinstance(names, list) and all(isinstance(g, list) and all(isinstance(n, str) for n in g) for g in names)):
        raise CheckpointError(f"{path}: key 'optimizer.param_names' must be a list of lists of parameter names")
    if not isinstance(blob.get("state_dict"), dict):
        raise CheckpointError(f"{path}: key 'optimizer.state_dict' is missing or not a dict")
    try:
        groups = [[params[n] for n in g] for g in names]
    except KeyError as exc:
        raise CheckpointError(f"{path}: key 'optimizer.param_names' names parameter {exc} "
                              "that the model does not have") from None
    optimizer = factory([{"params": g} for g in groups])
    try:
        optimizer.load_state_dict(blob["state_dict"])
    except Exception as exc:
        raise CheckpointError(f"{path}: key 'optimizer.state_dict' does not fit the model "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    for p, st in optimizer.state.items():
        for key, value in st.items():
            if torch.is_tensor(value) and value.dim() and value.shape != p.shape:
                raise CheckpointError(f"{path}: key 'optimizer.state_dict' holds a {key} of shape "
                                      f"{list(value.shape)} for a parameter of shape {list(p.shape)}")
    return optimizer


def optimizer_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move the optimizer's per-parameter state (momentum, moments) to ``device``, in place."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim():
                state[key] = value.to(device)


def rng_state() -> dict:
    """The random states a run draws from: torch's CPU generator and Python's.

    CUDA's generators are not saved: nothing in a run draws from them (the
    augmentation draws on a seeded CPU generator), and restoring one state per
    GPU breaks a resume that sees fewer GPUs.
    """
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}


def set_rng_state(state: dict, path: Path | str = "checkpoint") -> None:
    """Restore :func:`rng_state` (a "cuda" entry of older checkpoints is ignored: see there)."""
    try:
        torch.set_rng_state(state["torch"])
        if "python" in state:
            random.setstate((3, tuple(int(x) for x in state["python"]), None))
    except Exception as exc:
        raise CheckpointError(f"{path}: key 'rng' is not a saved random state "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def save(path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, extra: dict[str, Any],
         before_replace: Callable[[], None] | None = None) -> None:
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
    atomic_write_bytes(Path(path), buf.getvalue(), before_replace=before_replace)


def load(path: Path) -> dict:
    """A checkpoint, every tensor on the CPU.

    ``torch.set_rng_state`` takes only a CPU byte tensor, and loading onto a GPU
    would put the RNG state there; the model and optimizer move their own
    state to the training device.
    """
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
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


def scaler_state(blob: dict, path: Path) -> dict:
    """The fp16 GradScaler's state saved with the checkpoint, checked (a resume continues its loss scale)."""
    state = blob.get("scaler")
    keys = {"scale": (int, float), "growth_factor": (int, float), "backoff_factor": (int, float),
            "growth_interval": int, "_growth_tracker": int}
    if not isinstance(state, dict) or any(not isinstance(state.get(k), t) or isinstance(state.get(k), bool)
                                          for k, t in keys.items()):
        raise CheckpointError(f"{path}: key 'scaler' is missing or not a GradScaler state "
                              f"({', '.join(keys)}); this run uses --amp fp16")
    if not (math.isfinite(state["scale"]) and state["scale"] > 0):
        raise CheckpointError(f"{path}: key 'scaler.scale' must be a finite number > 0 (got {state['scale']!r})")
    return state


def restore_model(blob: dict, path: Path, reference: nn.Module | None = None) -> nn.Module:
    """Rebuild the (possibly pruned) model from the checkpoint's architecture data and weights.

    With ``reference`` (the run's unpruned model) every layer must be one of its layers with at most
    its channels: pruning only removes.
    """
    try:
        model = pc.rebuild(blob["arch"], blob["model"])
    except Exception as exc:
        raise CheckpointError(f"{path}: key 'arch'/'model' does not describe a loadable model "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    have = pc.channels(model)
    recorded = blob["arch"].get("channels")
    if recorded is not None and recorded != have:
        bad = next((k for k in set(recorded) | set(have) if recorded.get(k) != have.get(k)), None) \
            if isinstance(recorded, dict) else None
        raise CheckpointError(f"{path}: key 'arch.channels' does not match the weights"
                              + (f" (layer {bad}: {recorded.get(bad)!r} recorded, {have.get(bad)!r} in the weights)"
                                 if bad else ""))
    if reference is not None:
        original = pc.channels(reference)
        for name, n in have.items():
            if name not in original:
                raise CheckpointError(f"{path}: key 'arch' has layer {name!r}, which the run's model does not have")
            if n > original[name]:
                raise CheckpointError(f"{path}: key 'arch' gives layer {name!r} {n} channels, more than the "
                                      f"{original[name]} of the run's model")
    return model


def read(path: Path, dist: Any = None) -> dict | None:
    """The checkpoint at ``path``, or None; under torchrun rank 0 reads it and broadcasts it (no shared disk
    needed)."""
    def read_here() -> dict | None:
        if not path.exists():
            return None
        return load(path)  # onto the CPU: the model and optimizer move their own state
    return dist.from_rank0(read_here) if dist is not None else read_here()


def restore_mode(blob: dict, path: Path, mode: str, cfg: Any, num_classes: int, device: torch.device,
                 make_optimizer: Callable) -> tuple[ModeState, nn.Module, torch.optim.Optimizer]:
    """Mode ``mode``'s schedule position, model (on ``device``) and optimizer from its checkpoint ``blob``."""
    if blob.get("mode") != mode:
        raise CheckpointError(f"{path}: key 'mode' is {blob.get('mode')!r}, expected {mode!r}")
    # untrusted input: every key is checked, a bad one is one CheckpointError line naming file and key
    state = check_state(blob, path, epochs=cfg.epochs, max_batch=max(cfg.max_batch, cfg.batch_size))
    reference = pc.build_model(cfg.model, num_classes)
    model = restore_model(blob, path, reference=reference).to(device)
    optimizer = optimizer_from_named(model, blob["optimizer"], make_optimizer, path)
    return state, model, optimizer


def check_state(blob: dict, path: Path, *, epochs: int, max_batch: int) -> ModeState:
    """The schedule position of a checkpoint ('epoch' and 'state'), type- and range-checked."""
    def fail(key: str, what: str, got: Any) -> CheckpointError:
        return CheckpointError(f"{path}: key '{key}' {what} (got {got!r:.80})")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    epoch = blob.get("epoch")
    if not is_int(epoch) or not 1 <= epoch <= epochs:
        raise fail("epoch", f"must be an epoch of this run, 1..{epochs}", epoch)
    s = blob.get("state")
    if not isinstance(s, dict):
        raise fail("state", "is missing or not a dict", s)
    batch, lam, retries = s.get("batch"), s.get("lam"), s.get("oom_retries")
    if not is_int(batch) or not 1 <= batch <= max_batch:
        raise fail("state.batch", f"must be a batch size 1..{max_batch}", batch)
    if lam is not None and (isinstance(lam, bool) or not isinstance(lam, (int, float))
                            or not math.isfinite(lam) or lam < 0):
        raise fail("state.lam", "must be a finite number >= 0 or null", lam)
    if not is_int(retries) or retries < 0:
        raise fail("state.oom_retries", "must be an integer >= 0", retries)
    archs, reasons = s.get("architectures"), s.get("batch_reasons")
    if not isinstance(archs, list) or not all(isinstance(a, dict) and is_int(a.get("epoch")) for a in archs):
        raise fail("state.architectures", "must be a list of architecture records with an 'epoch'", archs)
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise fail("state.batch_reasons", "must be a list of strings", reasons)
    start_need = s.get("start_need", 0)  # absent in checkpoints written before the freed-memory policy
    if not is_int(start_need) or start_need < 0:
        raise fail("state.start_need", "must be an integer >= 0", start_need)
    return ModeState(epoch=epoch, batch=batch, lam=None if lam is None else float(lam), oom_retries=retries,
                     architectures=list(archs), batch_reasons=list(reasons), start_need=start_need)


def export(path: Path, model: nn.Module, data) -> None:
    """The final model for inference without the run's history: architecture data + weights + normalisation."""
    buf = io.BytesIO()
    torch.save({"format": 1, "arch": pc.describe(model), "model": model.state_dict(),
                "num_classes": data.num_classes, "mean": list(data.train.mean), "std": list(data.train.std)}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_exported(path: Path) -> nn.Module:
    """Load a model saved by ``bench run`` for inference (no run history needed)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return pc.rebuild(blob["arch"], blob["model"]).eval()
