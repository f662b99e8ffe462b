"""Reconfiguration as two steps: a pure plan (which channels live), then the surgery that applies it."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .graph import ChannelGraph, analyse
from .plan import Plan, channel_strength, check_structure, gate, make_plan, member_strengths
from .surgery import apply_plan


def as_inputs(example_inputs: Sequence[torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)


def plan_reconfiguration(model: nn.Module, example_inputs, *, threshold: float = 1e-4, round_to: int = 1,
                         liveness: str = "union", structure: str = "union") -> Plan:
    """Decide, without changing anything, which channels each channel space keeps.

    ``liveness``: ``union`` (a channel goes when it is dead in every layer that
    writes or reads it) or ``readers`` (when every layer that reads it ignores it).
    ``structure``: ``union`` (one channel set per space) or ``gating`` (at a
    residual stream each reading and branch-writing layer keeps its own set;
    the stream keeps their union).
    """
    graph = analyse(model, as_inputs(example_inputs))
    return plans_at(graph, model, [threshold], round_to=round_to, liveness=liveness, structure=structure)[0]


def plans_at(graph: ChannelGraph, model: nn.Module, thresholds: Sequence[float], *, round_to: int = 1,
             liveness: str = "union", structure: str = "union") -> list[Plan]:
    """:func:`plan_reconfiguration`'s rule at each of ``thresholds`` on one traced graph, its channel strengths
    measured once (the change-budget search, :func:`prunetrain_core.faithful.plan_within_budget`, plans a grid)."""
    check_structure(structure)
    strength = channel_strength(graph, model, liveness)
    per_layer = member_strengths(graph, model) if structure == "gating" else None
    plans = []
    for t in thresholds:
        plan = make_plan(graph, strength, threshold=t, round_to=round_to)
        plans.append(gate(graph, plan, per_layer, threshold=t, round_to=round_to) if per_layer is not None else plan)
    return plans


def apply_plan_to(model: nn.Module, plan: Plan, example_inputs, *,
                  optimizer: torch.optim.Optimizer | None = None) -> nn.Module:
    """Apply a plan made (possibly on another rank) for this model's current architecture.

    ``optimizer`` (if given) afterwards holds the new parameters, with momentum
    and Adam moments sliced by the same indices, so training continues as is.
    """
    inputs = as_inputs(example_inputs)
    return apply_plan(analyse(model, inputs), plan, inputs, optimizer)


def reconfigure(model: nn.Module, example_inputs, *, threshold: float = 1e-4,
                optimizer: torch.optim.Optimizer | None = None, round_to: int = 1,
                liveness: str = "union", structure: str = "union") -> nn.Module:
    """A physically smaller model without the dead channels: plan, then apply."""
    plan = plan_reconfiguration(model, example_inputs, threshold=threshold, round_to=round_to, liveness=liveness,
                                structure=structure)
    return apply_plan_to(model, plan, example_inputs, optimizer=optimizer)


def scale_width(model: nn.Module, example_inputs, factor: float, *, round_to: int = 1) -> nn.Module:
    """The same network with every prunable channel space ``factor`` times as wide (at least one channel,
    rounded to a multiple of ``round_to`` where the space allows): a uniformly thinner dense network, made by
    the same surgery as a reconfiguration, so residual streams stay coupled.  Weights are sliced, not
    re-initialised (see :func:`prunetrain_core.models.initialise`)."""
    if not 0 < factor <= 1:
        raise ValueError(f"factor must be in (0, 1], got {factor}")
    inputs = as_inputs(example_inputs)
    graph = analyse(model, inputs)
    spaces = graph.prunable_spaces()

    def width(size: int) -> int:
        n = max(1, round(factor * size))
        return min(size, -(-n // round_to) * round_to) if round_to > 1 else n

    plan = Plan(keep={s.id: list(range(width(s.size))) for s in spaces}, sizes={s.id: s.size for s in spaces})
    return apply_plan(graph, plan, inputs, None)
