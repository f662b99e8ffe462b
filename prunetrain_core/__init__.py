"""prunetrain_core: PruneTrain — group-lasso pruning *during* training, from the traced graph.

The public API::

    model = build_model("resnet32", num_classes=10)
    lasso = GroupLasso(model, example)                 # groups found from the traced graph
    lam = lambda_from_ratio(0.2, ce0, lasso.penalty().item())
    loss = ce + lam * lasso.penalty()
    model = reconfigure(model, example, threshold=1e-4, optimizer=opt)   # physically smaller
    flops = count_flops(model, example)
    arch = describe(model); same = rebuild(arch, model.state_dict())

Planning (which channels live) is pure data (:class:`Plan`); surgery applies it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .arch import channels, describe, rebuild
from .flops import FlopCount, count_flops
from .graph import ChannelGraph, UnsupportedModelError, analyse
from .lasso import GroupLasso, lambda_from_ratio
from .models import available_models, build_model
from .plan import Plan, channel_strength, make_plan
from .surgery import apply_plan

__all__ = [
    "build_model", "available_models", "analyse", "ChannelGraph", "UnsupportedModelError",
    "GroupLasso", "lambda_from_ratio", "Plan", "plan_reconfiguration", "apply_plan_to",
    "reconfigure", "count_flops", "FlopCount", "describe", "rebuild", "channels",
]


def _inputs(example_inputs: Sequence[torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)


def plan_reconfiguration(model: nn.Module, example_inputs, *, threshold: float = 1e-4, round_to: int = 1) -> Plan:
    """Decide, without changing anything, which channels each channel space keeps."""
    graph = analyse(model, _inputs(example_inputs))
    return make_plan(graph, channel_strength(graph, model), threshold=threshold, round_to=round_to)


def apply_plan_to(model: nn.Module, plan: Plan, example_inputs, *,
                  optimizer: torch.optim.Optimizer | None = None) -> nn.Module:
    """Apply a plan made (possibly on another rank) for this model's current architecture."""
    inputs = _inputs(example_inputs)
    return apply_plan(analyse(model, inputs), plan, inputs, optimizer)


def reconfigure(model: nn.Module, example_inputs, *, threshold: float = 1e-4,
                optimizer: torch.optim.Optimizer | None = None, round_to: int = 1) -> nn.Module:
    """Return a physically smaller dense model without the channels dead in every layer that uses them.

    ``optimizer`` (if given) afterwards holds the new parameters, with momentum
    and Adam moments sliced by the same indices, so training continues as is.
    """
    inputs = _inputs(example_inputs)
    graph = analyse(model, inputs)
    plan = make_plan(graph, channel_strength(graph, model), threshold=threshold, round_to=round_to)
    return apply_plan(graph, plan, inputs, optimizer)
