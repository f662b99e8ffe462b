"""Deciding which channels live: pure logic over channel spaces and per-channel strengths.

A channel of a space is *dead* in a layer when max|w| over that layer's slice
is below the threshold (the absolute value: a signed comparison would count
every negative weight as small).  Which layers vote is the *liveness rule*:

* ``union``: the channel goes only when it is dead in **every** layer that
  writes or reads it (PruneTrain's channel union);
* ``readers``: it goes when every layer that *reads* it ignores it.  The
  writer's filter may still be live: nobody reads its output, so removing it
  changes nothing.  At a residual node all readers of the shared stream vote,
  so the union over the node is kept.

A space whose channels all die is
emptied only where that removes a residual branch and leaves a constant that a
residual addition absorbs; elsewhere its strongest channel stays, so the
network never loses a path it still needs.

The plan is plain data (``Plan.to_dict``): it can be logged, broadcast to other
ranks, saved in a checkpoint and tested without tensors.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from .graph import ChannelGraph, NodeInfo

#: member roles whose weights vote on a channel's liveness, per rule (BN and constants never do)
VOTING_ROLES = ("conv_out", "conv_in", "linear_out", "linear_in")
READER_ROLES = ("conv_in", "linear_in")
LIVENESS_RULES = {"union": VOTING_ROLES, "readers": READER_ROLES}


@dataclass
class Plan:
    """Which channel indices each prunable space keeps, and which branches are removed."""

    keep: dict[int, list[int]]
    sizes: dict[int, int]
    emptied: list[int] = field(default_factory=list)
    merges: list[tuple[str, str]] = field(default_factory=list)  # (add node, constant operand node)

    @property
    def changed(self) -> bool:
        return any(len(self.keep[s]) != self.sizes[s] for s in self.keep)

    def kept_fraction(self) -> float:
        total = sum(self.sizes.values())
        return sum(len(v) for v in self.keep.values()) / total if total else 1.0

    def to_dict(self) -> dict:
        return {
            "keep": {str(k): list(v) for k, v in self.keep.items()},
            "sizes": {str(k): v for k, v in self.sizes.items()},
            "emptied": list(self.emptied),
            "merges": [list(m) for m in self.merges],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "Plan":
        return cls(
            keep={int(k): [int(i) for i in v] for k, v in d["keep"].items()},
            sizes={int(k): int(v) for k, v in d["sizes"].items()},
            emptied=[int(s) for s in d.get("emptied", [])],
            merges=[(str(a), str(b)) for a, b in d.get("merges", [])],
        )


# --------------------------------------------------------------------------- measurement
@torch.no_grad()
def channel_strength(graph: ChannelGraph, model: nn.Module, liveness: str = "union") -> dict[int, list[float]]:
    """For every prunable space: per channel, max |w| over the slices of the layers that vote under ``liveness``."""
    if liveness not in LIVENESS_RULES:
        raise ValueError(f"liveness rule must be one of {', '.join(LIVENESS_RULES)}, got {liveness!r}")
    roles = LIVENESS_RULES[liveness]
    gm = graph.graph_module
    out: dict[int, list[float]] = {}
    for space in graph.prunable_spaces():
        best = torch.zeros(space.size, dtype=torch.float64)
        for m in space.members:
            if m.role not in roles:
                continue
            w = gm.get_submodule(m.module).weight.detach().abs()
            if m.role in ("conv_out", "linear_out"):
                s = w.flatten(1).amax(1)
            elif m.role == "conv_in":
                s = w.transpose(0, 1).flatten(1).amax(1)
            else:  # linear_in: columns of one channel are contiguous (channel-major flatten)
                s = w.view(w.shape[0], space.size, m.positions).transpose(0, 1).flatten(1).amax(1)
            best = torch.maximum(best, s.to(best.device, torch.float64).cpu())
        out[space.id] = best.tolist()
    return out


# --------------------------------------------------------------------------- pure planning
def make_plan(
    graph: ChannelGraph,
    strengths: Mapping[int, Sequence[float]],
    threshold: float = 1e-4,
    round_to: int = 1,
) -> Plan:
    """Union rule + branch removal + optional rounding of channel counts to multiples of ``round_to``."""
    if threshold <= 0:
        raise ValueError("threshold must be > 0")
    if round_to < 1:
        raise ValueError("round_to must be >= 1")
    keep: dict[int, list[int]] = {}
    sizes: dict[int, int] = {}
    candidates: list[int] = []
    for space in graph.prunable_spaces():
        strength = list(strengths[space.id])
        sizes[space.id] = space.size
        live = [i for i, s in enumerate(strength) if s >= threshold]
        if not live:
            candidates.append(space.id)
            keep[space.id] = []
            continue
        keep[space.id] = _round_up(live, strength, round_to)

    emptied: list[int] = []
    merges: list[tuple[str, str]] = []
    for sid in candidates:
        trial = branch_removal(graph.nodes, set(emptied) | {sid})
        if trial is None:
            strength = list(strengths[sid])
            strongest = max(range(len(strength)), key=lambda i: (strength[i], -i))
            keep[sid] = _round_up([strongest], strength, round_to)
        else:
            emptied.append(sid)
            merges = trial
    return Plan(keep=keep, sizes=sizes, emptied=emptied, merges=merges)


def _round_up(live: list[int], strength: Sequence[float], round_to: int) -> list[int]:
    """Add the strongest dead channels until the count is a multiple of ``round_to``."""
    target = min(len(strength), math.ceil(len(live) / round_to) * round_to)
    if target > len(live):
        chosen = set(live)
        dead = sorted((i for i in range(len(strength)) if i not in chosen), key=lambda i: (-strength[i], i))
        chosen.update(dead[: target - len(live)])
        live = sorted(chosen)
    return live


def branch_removal(nodes: Sequence[NodeInfo], emptied: set[int]) -> list[tuple[str, str]] | None:
    """Where emptying ``emptied`` spaces leaves constants, find the additions that absorb them.

    Layers that read an emptied space output a constant (their bias); the
    constant may flow through BN, pointwise ops and 1×1 convs, and must end in
    a residual addition with a live tensor.  Returns the (add, constant operand)
    pairs, or ``None`` when the constant would reach anything else (the output,
    a 3×3 conv whose zero padding breaks uniformity, a flatten, ...).
    """
    deleted = {n.name for n in nodes if n.space in emptied and n.kind != "output"}
    const: set[str] = set()
    merges: list[tuple[str, str]] = []
    for n in nodes:
        if n.name in deleted:
            continue
        if n.kind in ("conv", "linear") and n.reads in emptied:
            const.add(n.name)
            continue
        ins = set(n.inputs)
        if ins & deleted:
            return None  # a live layer would read a removed tensor
        c_in = ins & const
        if not c_in:
            continue
        if n.kind == "add":
            if c_in == ins:
                const.add(n.name)
            else:
                merges += [(n.name, c) for c in n.inputs if c in c_in]
        elif n.kind in ("bn", "scalar") or (n.kind == "pass" and n.uniform_ok) or (
            n.kind in ("conv", "linear") and n.pointwise
        ):
            const.add(n.name)
        else:
            return None
    return merges if merges or not const else None


def plan_summary(graph: ChannelGraph, plan: Plan) -> dict[str, int]:
    """Channels kept per space, labelled by the layer that writes it (for logs)."""
    names = defaultdict(list)
    for space in graph.prunable_spaces():
        for m in space.members:
            if m.role in ("conv_out", "linear_out"):
                names[space.id].append(m.module)
    return {"/".join(names[s][:1]) or f"space{s}": len(k) for s, k in plan.keep.items()}
