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

The *structure* says how the kept channels are laid out.  ``union`` gives
every member of a space the same channels.  ``gating`` (:func:`gate`) keeps
the union only for a residual stream itself; a conv reading the stream keeps
just its own live input slices (the surgery gathers them), and a branch's last
conv keeps just its own live filters (the surgery scatters its output back,
adding the constant its dead filters still produced after BatchNorm).  Spaces
without a residual addition stay as under union, so gating never changes the
function where union would not.

The plan is plain data (``Plan.to_dict``): it can be logged, broadcast to other
ranks, saved in a checkpoint and tested without tensors.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from .graph import AXIS_OF_ROLE, ChannelGraph, NodeInfo

#: member roles whose weights vote on a channel's liveness, per rule (BN and constants never do)
VOTING_ROLES = ("conv_out", "conv_in", "linear_out", "linear_in")
READER_ROLES = ("conv_in", "linear_in")
LIVENESS_RULES = {"union": VOTING_ROLES, "readers": READER_ROLES}
STRUCTURES = ("union", "gating")


@dataclass
class Plan:
    """Which channel indices each prunable space keeps, and which branches are removed."""

    keep: dict[int, list[int]]
    sizes: dict[int, int]
    emptied: list[int] = field(default_factory=list)
    merges: list[tuple[str, str]] = field(default_factory=list)  # (add node, constant operand node)
    structure: str = "union"
    #: gating: "module:in" / "module:out" -> the space channels that layer keeps, where narrower than its space's
    layers: dict[str, list[int]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.layers) or any(len(self.keep[s]) != self.sizes[s] for s in self.keep)

    def kept_fraction(self) -> float:
        total = sum(self.sizes.values())
        return sum(len(v) for v in self.keep.values()) / total if total else 1.0

    def to_dict(self) -> dict:
        d = {
            "keep": {str(k): list(v) for k, v in self.keep.items()},
            "sizes": {str(k): v for k, v in self.sizes.items()},
            "emptied": list(self.emptied),
            "merges": [list(m) for m in self.merges],
        }
        if self.structure != "union":
            d.update(structure=self.structure, layers={k: list(v) for k, v in self.layers.items()})
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "Plan":
        return cls(
            keep={int(k): [int(i) for i in v] for k, v in d["keep"].items()},
            sizes={int(k): int(v) for k, v in d["sizes"].items()},
            emptied=[int(s) for s in d.get("emptied", [])],
            merges=[(str(a), str(b)) for a, b in d.get("merges", [])],
            structure=str(d.get("structure", "union")),
            layers={str(k): [int(i) for i in v] for k, v in d.get("layers", {}).items()},
        )


# --------------------------------------------------------------------------- measurement
@torch.no_grad()
def member_strengths(graph: ChannelGraph, model: nn.Module) -> dict[str, dict[int, float]]:
    """Per conv/linear axis in a prunable space ("module:in" / "module:out"): space channel -> max |w| of its slice."""
    gm = graph.graph_module
    out: dict[str, dict[int, float]] = {}
    for space in graph.prunable_spaces():
        for m in space.members:
            if m.role not in VOTING_ROLES:
                continue
            w = gm.get_submodule(m.module).weight.detach().abs()
            if m.role in ("conv_out", "linear_out"):
                s = w.flatten(1).amax(1)
            elif m.role == "conv_in":
                s = w.transpose(0, 1).flatten(1).amax(1)
            else:  # linear_in: columns of one channel are contiguous (channel-major flatten)
                s = w.view(w.shape[0], -1, m.positions).transpose(0, 1).flatten(1).amax(1)
            index = m.index if m.index is not None else range(space.size)
            out[f"{m.module}:{AXIS_OF_ROLE[m.role]}"] = dict(zip(index, s.double().cpu().tolist()))
    return out


def channel_strength(graph: ChannelGraph, model: nn.Module, liveness: str = "union") -> dict[int, list[float]]:
    """For every prunable space: per channel, max |w| over the slices of the layers that vote under ``liveness``."""
    if liveness not in LIVENESS_RULES:
        raise ValueError(f"liveness rule must be one of {', '.join(LIVENESS_RULES)}, got {liveness!r}")
    roles = LIVENESS_RULES[liveness]
    per_member = member_strengths(graph, model)
    out: dict[int, list[float]] = {}
    for space in graph.prunable_spaces():
        best = [0.0] * space.size
        for m in space.members:
            if m.role in roles:
                for c, v in per_member[f"{m.module}:{AXIS_OF_ROLE[m.role]}"].items():
                    best[c] = max(best[c], v)
        out[space.id] = best
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
        keep[space.id] = _round_up(live, range(len(strength)), strength, round_to)

    emptied: list[int] = []
    merges: list[tuple[str, str]] = []
    for sid in candidates:
        trial = branch_removal(graph.nodes, set(emptied) | {sid})
        if trial is None:
            strength = list(strengths[sid])
            strongest = max(range(len(strength)), key=lambda i: (strength[i], -i))
            keep[sid] = _round_up([strongest], range(len(strength)), strength, round_to)
        else:
            emptied.append(sid)
            merges = trial
    return Plan(keep=keep, sizes=sizes, emptied=emptied, merges=merges)


def _round_up(live: list[int], candidates: Sequence[int], strength, round_to: int) -> list[int]:
    """Add the strongest dead ``candidates`` until the count is a multiple of ``round_to``."""
    target = min(len(candidates), math.ceil(len(live) / round_to) * round_to)
    if target > len(live):
        chosen = set(live)
        dead = sorted((i for i in candidates if i not in chosen), key=lambda i: (-strength[i], i))
        chosen.update(dead[: target - len(live)])
        live = sorted(chosen)
    return live


# --------------------------------------------------------------------------- gating
#: node kinds a dead filter's constant crosses unchanged on its way to a residual addition
_CHAIN_KINDS = ("bn", "scalar", "scatter")


def scattered_writers(nodes: Sequence[NodeInfo]) -> set[str]:
    """Convs whose output reaches a residual addition only through per-channel layers nothing else uses.

    Only there can dead filters leave the layer: what they produced is a
    per-channel constant that a scatter can add in their place.
    """
    by_name = {n.name: n for n in nodes}
    users = Counter(i for n in nodes for i in n.inputs)
    found = set()
    for add in (n for n in nodes if n.kind == "add"):
        for name in add.inputs:
            n = by_name[name]
            while users[n.name] == 1 and len(n.inputs) == 1 and (
                    n.kind in _CHAIN_KINDS or (n.kind == "pass" and n.uniform_ok)):
                n = by_name[n.inputs[0]]
            if n.kind == "conv" and users[n.name] == 1 and n.target:
                found.add(n.target)
    return found


def check_structure(structure: str) -> None:
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {', '.join(STRUCTURES)}, got {structure!r}")


def gate(graph: ChannelGraph, plan: Plan, strengths: Mapping[str, Mapping[int, float]], threshold: float = 1e-4,
         round_to: int = 1) -> Plan:
    """``plan`` (a union plan) with channel gating at the residual streams: each reader and branch writer keeps its own.

    ``strengths``: :func:`member_strengths`.  A layer keeps at least its strongest channel.
    """
    streams = {n.space for n in graph.nodes if n.kind == "add"} & set(plan.keep) - set(plan.emptied)
    writers = scattered_writers(graph.nodes)
    keep = {s: list(v) for s, v in plan.keep.items()}
    chosen: dict[str, int] = {}
    for sid in sorted(streams):
        for m in graph.spaces[sid].members:
            if m.role == "conv_in" or (m.role == "linear_in" and m.positions == 1) or (
                    m.role == "conv_out" and m.module in writers):
                key = f"{m.module}:{AXIS_OF_ROLE[m.role]}"
                s = strengths[key]
                if not set(s) & set(keep[sid]):  # all it still has left the stream: its strongest stays
                    keep[sid] = sorted(set(keep[sid]) | {max(s, key=lambda c: (s[c], -c))})
                chosen[key] = sid
    layers: dict[str, list[int]] = {}
    for key, sid in chosen.items():
        s = strengths[key]
        candidates = [c for c in keep[sid] if c in s]
        live = [c for c in candidates if s[c] >= threshold] or [max(candidates, key=lambda c: (s[c], -c))]
        mine = _round_up(live, candidates, s, round_to)
        if mine != candidates:
            layers[key] = mine
    return Plan(keep=keep, sizes=dict(plan.sizes), emptied=list(plan.emptied), merges=list(plan.merges),
                structure="gating", layers=layers)


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
        elif n.kind in ("bn", "scalar", "gather", "scatter") or (n.kind == "pass" and n.uniform_ok) or (
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
