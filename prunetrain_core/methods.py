"""The decisions of the methods PruneTrain competes with: which channels go, as a :class:`~.plan.Plan`.

Each is pure (values in, a plan out) so that it is tested without training, and each is applied by the
same surgery as PruneTrain's (:func:`~.reconfig.apply_plan_to`); a method only decides.

* **Network Slimming** (Liu et al., "Learning efficient convolutional networks through network slimming",
  ICCV 2017): an L1 penalty on every BatchNorm scale γ (:class:`BNScaleL1`, sparsity s = 1e-4, their VGGNet
  value), then the channels whose |γ| fall below one *global* percentile of all γ are removed
  (:func:`ratio_plan`).  Their code takes the cut as the value at index ⌊n·ratio⌋ of the sorted |γ|; here a
  channel goes when its |γ| is strictly below that value, so a ratio removes at most ⌊n·ratio⌋ BN channels
  (ties at the cut stay).
* **Early-Bird tickets** (You et al., "Drawing early-bird tickets", ICLR 2020): the same penalty; after every
  epoch the global-percentile mask over all BN channels (:func:`bn_mask`); the ticket is drawn when the
  largest normalised Hamming distance between consecutive masks over the last 5 epochs is below 0.1
  (:func:`ticket_drawn`, their l = 5 and ε = 0.1).  Their code compares the newest mask with each of the
  previous four; the paper's text, followed here, compares consecutive ones.
* **Random pruning** at given per-space counts (:func:`random_plan`): the sanity baseline that asks whether
  the choice of channels matters at all.

A channel of a residual stream is written by several layers, each with its own BN.  The engine keeps one
channel set per space (the union rule), so a stream channel goes only where *every* writer's |γ| is below
the cut; :class:`RatioDecision` counts the channels the rule kept.  Every space keeps at least one channel
(its largest |γ|): these methods never remove a whole branch.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from .graph import ChannelGraph
from .plan import Plan
from .rules import has_role

#: Early-Bird's FIFO length and mask-distance tolerance (You et al., ICLR 2020, Sec. 3.2)
EARLYBIRD_WINDOW = 5
EARLYBIRD_TOLERANCE = 0.1


class BNScaleL1:
    """Network Slimming's sparsity term Σ|γ| over every BatchNorm scale of ``model``.

    It has :class:`~.lasso.GroupLasso`'s ``penalty()``, so a training step adds ``s · penalty()`` to the loss
    (its subgradient is the paper's ``s · sign(γ)``, and loss scaling treats it like the cross-entropy).
    """

    def __init__(self, model: nn.Module) -> None:
        self.scales = [m.weight for m in model.modules() if has_role(m, "bn") and m.weight is not None]

    def penalty(self) -> torch.Tensor:
        return torch.stack([g.abs().sum() for g in self.scales]).sum()


# --------------------------------------------------------------------------- measurement
@torch.no_grad()
def bn_scales(graph: ChannelGraph, model: nn.Module) -> dict[int, dict[str, list[float]]]:
    """Per prunable space, per BatchNorm in it: |γ| of every space channel (0 where a gated BN lacks one)."""
    gm = graph.graph_module
    out: dict[int, dict[str, list[float]]] = {}
    for space in graph.prunable_spaces():
        per_bn: dict[str, list[float]] = {}
        for m in space.members:
            weight = getattr(gm.get_submodule(m.module), "weight", None)
            if m.role != "bn" or weight is None:
                continue
            values = [0.0] * space.size
            for c, v in zip(m.index if m.index is not None else range(space.size), weight.abs().double().tolist()):
                values[c] = v
            per_bn[m.module] = values
        out[space.id] = per_bn
    return out


# --------------------------------------------------------------------------- pure decisions
def _all_values(scales: Mapping[int, Mapping[str, Sequence[float]]]) -> list[float]:
    return [v for sid in sorted(scales) for bn in sorted(scales[sid]) for v in scales[sid][bn]]


def ratio_cut(scales: Mapping[int, Mapping[str, Sequence[float]]], ratio: float) -> float:
    """The global cut: the value at index ⌊n·ratio⌋ of all n BN channels' |γ|, sorted (Liu et al.'s code)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    values = sorted(_all_values(scales))
    if not values:
        raise ValueError("the model has no BatchNorm scale in a prunable channel space")
    return values[int(len(values) * ratio)]


def bn_mask(scales: Mapping[int, Mapping[str, Sequence[float]]], ratio: float) -> list[bool]:
    """Early-Bird's mask: per BN channel (spaces, then BN names, in order) whether its |γ| reaches the cut."""
    cut = ratio_cut(scales, ratio)
    return [v >= cut for v in _all_values(scales)]


@dataclass(frozen=True)
class RatioDecision:
    """A ratio plan and what it took: the cut, BN channels below it, and what the union rule kept."""

    plan: Plan
    cut: float
    ratio: float
    bn_channels: int           # BN channels counted for the percentile
    bn_below: int              # of them, |γ| below the cut
    kept_by_union: int         # stream channels kept because some (not every) writer's |γ| reaches the cut
    kept_last: int             # spaces whose every channel was below the cut: their largest |γ| stays

    def to_dict(self) -> dict:
        return {"cut": self.cut, "ratio": self.ratio, "bn_channels": self.bn_channels, "bn_below": self.bn_below,
                "kept_by_union": self.kept_by_union, "kept_last": self.kept_last,
                "union_rule": "a channel shared by several BatchNorms (a residual stream) goes only where every "
                              "one's |γ| is below the cut; every space keeps at least its largest |γ|"}


def ratio_plan(graph: ChannelGraph, scales: Mapping[int, Mapping[str, Sequence[float]]], ratio: float) -> RatioDecision:
    """Network Slimming's (and Early-Bird's) pruning: the channels whose |γ| fall below the global cut.

    A space without a BatchNorm keeps every channel (nothing there is penalised).
    """
    cut = ratio_cut(scales, ratio)
    keep: dict[int, list[int]] = {}
    sizes: dict[int, int] = {}
    kept_by_union = kept_last = 0
    for space in graph.prunable_spaces():
        sizes[space.id] = space.size
        per_bn = list(scales.get(space.id, {}).values())
        if not per_bn:
            keep[space.id] = list(range(space.size))
            continue
        best = [max(bn[c] for bn in per_bn) for c in range(space.size)]
        live = [c for c in range(space.size) if best[c] >= cut]
        kept_by_union += sum(1 for c in live if min(bn[c] for bn in per_bn) < cut)
        if not live:
            live = [max(range(space.size), key=lambda c: (best[c], -c))]
            kept_last += 1
        keep[space.id] = live
    values = _all_values(scales)
    return RatioDecision(plan=Plan(keep=keep, sizes=sizes), cut=cut, ratio=ratio, bn_channels=len(values),
                         bn_below=sum(v < cut for v in values), kept_by_union=kept_by_union, kept_last=kept_last)


def mask_distance(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Normalised Hamming distance: the fraction of channels whose keep/prune decision differs."""
    if len(a) != len(b) or not a:
        raise ValueError(f"masks of {len(a)} and {len(b)} channels cannot be compared")
    return sum(x != y for x, y in zip(a, b)) / len(a)


def mask_distances(masks: Sequence[Sequence[bool]], window: int = EARLYBIRD_WINDOW) -> list[float]:
    """The distances between consecutive masks among the last ``window`` masks."""
    last = list(masks)[-window:]
    return [mask_distance(a, b) for a, b in zip(last, last[1:])]


def ticket_drawn(masks: Sequence[Sequence[bool]], window: int = EARLYBIRD_WINDOW,
                 tolerance: float = EARLYBIRD_TOLERANCE) -> bool:
    """Early-Bird's stopping rule: ``window`` masks seen and every consecutive distance among them below
    ``tolerance``."""
    return len(masks) >= window and max(mask_distances(masks, window)) < tolerance


def random_plan(graph: ChannelGraph, counts: Mapping[int, int], seed: int) -> Plan:
    """Per prunable space, ``counts[space]`` channels drawn at random (seeded; spaces not named keep all).

    A count is clipped to [1, size]: a space keeps at least one channel.
    """
    rng = random.Random(seed)
    keep: dict[int, list[int]] = {}
    sizes: dict[int, int] = {}
    for space in graph.prunable_spaces():
        sizes[space.id] = space.size
        n = min(space.size, max(1, int(counts.get(space.id, space.size))))
        keep[space.id] = sorted(rng.sample(range(space.size), n))
    return Plan(keep=keep, sizes=sizes)


def space_counts(graph: ChannelGraph, widths: Mapping[str, int]) -> dict[int, int]:
    """Per prunable space, the channel count another model of the same network reached, read from its
    output widths per layer (:func:`~.arch.channels`) at the space's first writer; 0 where that layer is gone
    (a removed branch), so :func:`random_plan` keeps one channel there."""
    out: dict[int, int] = {}
    for space in graph.prunable_spaces():
        writer = next((m.module for m in space.members if m.role in ("conv_out", "linear_out")), None)
        if writer is not None:
            out[space.id] = int(widths.get(writer, 0))
    return out


__all__ = ["BNScaleL1", "bn_scales", "ratio_cut", "bn_mask", "RatioDecision", "ratio_plan", "mask_distance",
           "mask_distances", "ticket_drawn", "random_plan", "space_counts", "EARLYBIRD_WINDOW",
           "EARLYBIRD_TOLERANCE"]
