"""FLOPs of one training step and of inference, counted by torch.utils.flop_counter.

FlopCounterMode runs around a real forward, cross-entropy and backward on the
current shapes (on the ``meta`` device, so nothing is computed, and with
BatchNorm left out of the probe: it has no counted FLOPs), so the
backward convolutions are counted too — including that the first conv needs
no input gradient.  No hand-written formulas.  Counts are cached per
architecture signature, since they change only at reconfiguration.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class FlopCount:
    train_per_image: float      # forward + loss + backward, FLOPs (2 × MAC)
    inference_per_image: float  # forward only

    def to_dict(self) -> dict:
        return {"train_per_image": self.train_per_image, "inference_per_image": self.inference_per_image}


_CACHE: dict[str, FlopCount] = {}


def architecture_signature(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """A hash of every parameter/buffer name and shape plus the forward code and input shape."""
    h = hashlib.sha1()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(f"{name}:{tuple(t.shape)};".encode())
    code = getattr(model, "code", None) or type(model).__qualname__
    h.update(code.encode())
    h.update(str(tuple(input_shape)).encode())
    return h.hexdigest()


def count_flops(model: nn.Module, example_input: torch.Tensor, num_classes: int | None = None) -> FlopCount:
    """Per-image FLOPs of a training step and of inference for ``model`` at this input size."""
    shape = (1, *example_input.shape[1:])
    key = architecture_signature(model, shape)
    if key not in _CACHE:
        _CACHE[key] = _count(model, shape)
    return _CACHE[key]


def _count(model: nn.Module, shape: tuple[int, ...]) -> FlopCount:
    batch = 2  # BN needs more than one value per channel in train mode
    try:
        probe = copy.deepcopy(model).to("meta")
        device = torch.device("meta")
    except Exception:  # a module that cannot live on meta: count on the CPU instead
        probe = copy.deepcopy(model).cpu()
        device = torch.device("cpu")
    _drop_batchnorm(probe)
    x = torch.zeros((batch, *shape[1:]), device=device)
    probe.eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        out = probe(x)
    inference = fc.get_total_flops() / batch
    probe.train()
    with FlopCounterMode(display=False) as fc:
        out = probe(x)
        target = torch.zeros(batch, dtype=torch.long, device=device)
        loss = F.cross_entropy(out, target)
        loss.backward()
    train = fc.get_total_flops() / batch
    del out
    return FlopCount(train_per_image=float(train), inference_per_image=float(inference))


def _drop_batchnorm(probe: nn.Module) -> None:
    """Replace the probe's BatchNorm modules by identities: same count, 3-5x faster.

    FlopCounterMode counts no FLOPs for batch norm, and BN does not change
    which convolution gradients backward computes, so the totals are
    unchanged; but on ``meta`` its kernels are Python decompositions that
    made up most of the counting time (about a second per ResNet count,
    paid at every reconfiguration).
    """
    for name, module in list(probe.named_modules()):
        if name and isinstance(module, nn.modules.batchnorm._BatchNorm):
            parent, _, attr = name.rpartition(".")
            setattr(probe.get_submodule(parent) if parent else probe, attr, nn.Identity())
