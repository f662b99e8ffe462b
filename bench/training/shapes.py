"""Pruned shapes built the way PruneTrain builds them, and the training step they are timed with (bench run's).

Channels of a freshly initialised model are zeroed in every layer that uses
them and the engine's ``reconfigure`` (plan, then surgery) removes them, so a
measured shape is one a real run can reach.
"""
from __future__ import annotations

import copy
import functools
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

import prunetrain_core as pc
from prunetrain_core.plan import channel_strength, make_plan
from prunetrain_core.surgery import apply_plan

from ..config import RunConfig
from . import trainable
from .step import TrainStep


def input_size(model_name: str) -> int:
    return 224 if "imagenet" in model_name else 32


def random_batch(batch: int, size: int = 32, num_classes: int = 10, device="cpu", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = torch.randint(0, num_classes, (batch,), generator=g)
    return x.to(device), y.to(device)


def _ordered_spaces(graph) -> list:
    """Prunable spaces in depth order (by the first layer that writes them)."""
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    pos = {}
    for s in graph.prunable_spaces():
        writers = [m.module for m in s.members if m.role in ("conv_out", "linear_out")]
        pos[s.id] = min((order.get(w.replace(".", "_"), order.get(w, 10**9)) for w in writers), default=10**9)
    return sorted(graph.prunable_spaces(), key=lambda s: (pos[s.id], s.id))


def keep_counts(graph, shape: float | str) -> dict[int, int]:
    """Channels to keep per prunable space for a named shape.

    a float f: ``max(1, round(f · size))`` everywhere; ``"taper"``: keep
    fraction falling linearly with depth from 1.0 (first space) to 0.3 (last);
    ``"ragged"``: a fixed pseudo-random fraction in [0.4, 0.8] per space, so the
    counts are arbitrary (often odd), like those a real run ends with.
    """
    spaces = _ordered_spaces(graph)
    n = len(spaces)
    out = {}
    g = torch.Generator().manual_seed(1234)
    for i, s in enumerate(spaces):
        if isinstance(shape, (int, float)):
            f = float(shape)
        elif shape == "taper":
            f = 1.0 - 0.7 * (i / max(1, n - 1))
        elif shape == "ragged":
            f = 0.4 + 0.4 * float(torch.rand((), generator=g))
        else:
            raise ValueError(f"unknown shape {shape!r}: a keep fraction, 'taper' or 'ragged'")
        out[s.id] = max(1, min(s.size, round(f * s.size)))
    return out


@torch.no_grad()
def zero_channels(model: nn.Module, graph, keep: Mapping[int, int], seed: int = 0) -> nn.Module:
    """Zero all but ``keep[space]`` random channels of every space, in every layer that uses them."""
    g = torch.Generator().manual_seed(seed)
    for s in graph.prunable_spaces():
        k = keep.get(s.id, s.size)
        if k >= s.size:
            continue
        dead = torch.randperm(s.size, generator=g)[: s.size - k].tolist()
        for m in s.members:
            if m.role not in ("conv_out", "conv_in", "linear_out", "linear_in"):
                continue
            w = model.get_submodule(m.module).weight
            local = {c: j for j, c in enumerate(m.index)} if m.index is not None else None
            for c in dead if local is None else [local[c] for c in dead if c in local]:
                if m.role in ("conv_out", "linear_out"):
                    w[c] = 0
                elif m.role == "conv_in":
                    w[:, c] = 0
                else:
                    w[:, c * m.positions:(c + 1) * m.positions] = 0
    return model


def _zeroed(model_name: str, shape: float | str, num_classes: int, seed: int):
    torch.manual_seed(seed)
    model = pc.build_model(model_name, num_classes)
    size = input_size(model_name)
    example = torch.zeros(2, 3, size, size)
    graph = pc.analyse(model, example)   # the traced module shares the model's parameters
    zero_channels(model, graph, keep_counts(graph, shape), seed=seed)
    return model, graph, example


def zeroed_model(model_name: str, shape: float | str, *, num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A freshly initialised model (seeded) whose channels outside ``shape`` are zero (CPU)."""
    return _zeroed(model_name, shape, num_classes, seed)[0]


def pruned_models(model_name: str, shape: float | str, round_to: Sequence[int] = (1,), *, num_classes: int = 10,
                  seed: int = 0, device="cpu") -> dict[int, nn.Module]:
    """The physically smaller models PruneTrain's reconfiguration makes of :func:`zeroed_model`, per multiple."""
    model, graph, example = _zeroed(model_name, shape, num_classes, seed)
    strength = channel_strength(graph, model)
    return {r: apply_plan(graph, make_plan(graph, strength, round_to=r), (example,)).to(device) for r in round_to}


def pruned_model(model_name: str, shape: float | str, *, round_to: int = 1, num_classes: int = 10,
                 seed: int = 0, device="cpu") -> nn.Module:
    """:func:`pruned_models` for one multiple (``reconfigure(zeroed_model(...), round_to=...)``)."""
    return pruned_models(model_name, shape, (round_to,), num_classes=num_classes, seed=seed, device=device)[round_to]


def channel_summary(model: nn.Module) -> str:
    """Output channels of every conv, compressed (for tables)."""
    outs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    return ",".join(str(c) for c in outs[:4]) + (f",…({len(outs)} convs)" if len(outs) > 4 else "")


def train_flops(model: nn.Module, example: torch.Tensor) -> float:
    """Training FLOPs per image of ``model`` (counted on a CPU copy)."""
    return pc.count_flops(copy.deepcopy(model).cpu(), example).train_per_image


def fixed_batch_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, cfg: RunConfig | None = None,
                     lasso: "pc.GroupLasso | None" = None, lam: float = 1e-4,
                     channels_last: bool = False) -> Callable[[], None]:
    """One call = one step of ``bench run``'s :class:`~bench.training.step.TrainStep` on the fixed batch
    ``(x, y)``: the step that trains, with SGD as ``cfg`` sets it (RunConfig's defaults unless given), the
    penalty at ``lam`` where a ``lasso`` is given, fp32."""
    cfg = cfg or RunConfig()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    opt = trainable.optimizer(cfg, model.parameters())
    step = TrainStep(model, opt, device=x.device, lasso=lasso, lam=lam if lasso is not None else None,
                     channels_last=channels_last)
    return functools.partial(step, x, y)


def with_momentum(model: nn.Module, lr: float = 0.1, seed: int = 0) -> torch.optim.Optimizer:
    """SGD whose momentum buffers are populated (no step: the zeroed channels must stay zero)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        opt.state[p]["momentum_buffer"] = (torch.randn(p.shape, generator=g) * 1e-3).to(p.device)
    return opt


def copy_with_optimizer(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
    new = copy.deepcopy(model)
    new_opt = torch.optim.SGD(new.parameters(), **{k: v for k, v in opt.defaults.items()})
    for p_old, p_new in zip(model.parameters(), new.parameters()):
        new_opt.state[p_new] = {k: v.clone() for k, v in opt.state[p_old].items()}
    return new, new_opt
