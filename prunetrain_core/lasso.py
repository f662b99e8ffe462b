"""Group-lasso penalty over the channel groups found in the traced graph, and λ from the ratio.

Groups (one per channel and layer, in prunable spaces only): every conv's
output filter W[k], every conv's input slice W[:, c] (the first conv reads the
image, a fixed space, so it has none), every Linear's input columns (all H·W
columns of one flattened channel together) and a hidden Linear's output rows.
The classifier's rows belong to the network output and are never grouped.

penalty = Σ_g sqrt(‖w_g‖² + ε), with one global λ.  The norms are computed
with one squared-weight tensor and two reductions per layer, not per channel.

Two ways to apply it: add ``λ·penalty()`` to the loss (the subgradient
w/‖w‖; a collapsing group then oscillates at a size set by lr·λ and never
reaches zero), or take the optimizer step on the loss alone and then call
:meth:`GroupLasso.proximal_step` (block soft-thresholding: groups whose norm
falls below the step become exactly zero).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .graph import ChannelGraph, analyse

EPS = 1e-8


@dataclass(frozen=True)
class _LayerGroups:
    weight: nn.Parameter
    out_groups: bool   # rows / filters (dim 0)
    in_groups: bool    # input channels (dim 1)
    positions: int     # columns per input channel (Linear fed by a flatten)


class GroupLasso:
    """The PruneTrain regulariser for one model shape (rebuild it after each reconfiguration)."""

    def __init__(self, model: nn.Module, example_inputs: Sequence[torch.Tensor] | torch.Tensor,
                 graph: ChannelGraph | None = None):
        graph = graph or analyse(model, example_inputs)
        params = dict(model.named_parameters())
        flags: dict[str, dict] = {}
        for space in graph.prunable_spaces():
            for m in space.members:
                if m.role in ("conv_out", "linear_out"):
                    flags.setdefault(m.module, {})["out"] = True
                elif m.role in ("conv_in", "linear_in"):
                    f = flags.setdefault(m.module, {})
                    f["in"], f["k"] = True, m.positions
        self.layers = [
            _LayerGroups(params[f"{name}.weight"], f.get("out", False), f.get("in", False), f.get("k", 1))
            for name, f in flags.items()
        ]
        self.graph = graph

    @property
    def group_count(self) -> int:
        n = 0
        for layer in self.layers:
            w = layer.weight
            n += w.shape[0] if layer.out_groups else 0
            n += w.shape[1] // layer.positions if layer.in_groups else 0
        return n

    def squared_norms(self) -> torch.Tensor:
        """‖w_g‖² of every group, concatenated (differentiable)."""
        parts = []
        for layer in self.layers:
            w = layer.weight
            sq = w * w
            if layer.out_groups:
                parts.append(sq.flatten(1).sum(1))
            if layer.in_groups:
                if w.dim() == 2:
                    parts.append(sq.view(w.shape[0], -1, layer.positions).sum((0, 2)))
                else:
                    parts.append(sq.sum((0, *range(2, w.dim()))))
        if not parts:
            return torch.zeros(0)
        return torch.cat(parts)

    def penalty(self) -> torch.Tensor:
        """G(W) = Σ_g sqrt(‖w_g‖² + ε)."""
        return torch.sqrt(self.squared_norms() + EPS).sum()

    @torch.no_grad()
    def proximal_step(self, step: float) -> int:
        """Block soft-threshold every group: w_g ← w_g · max(0, 1 − step/‖w_g‖); returns groups now zero.

        This is the proximal operator of ``step · Σ_g ‖w_g‖``.  Out-filters are
        shrunk before in-slices of the same weight (the groups overlap; the
        order is fixed so every rank computes the same result).
        """
        if step < 0:
            raise ValueError(f"the proximal step must be >= 0, got {step}")
        zero = 0
        for layer in self.layers:
            w = layer.weight
            if layer.out_groups:
                norms = w.flatten(1).norm(dim=1)
                w.mul_(_shrink(norms, step).view(-1, *([1] * (w.dim() - 1))))
                zero += int((norms <= step).sum())
            if layer.in_groups:
                if w.dim() == 2:
                    cols = w.view(w.shape[0], -1, layer.positions)
                    norms = cols.pow(2).sum((0, 2)).sqrt()
                    cols.mul_(_shrink(norms, step).view(1, -1, 1))
                else:
                    norms = w.transpose(0, 1).flatten(1).norm(dim=1)
                    w.mul_(_shrink(norms, step).view(1, -1, *([1] * (w.dim() - 2))))
                zero += int((norms <= step).sum())
        return zero


def _shrink(norms: torch.Tensor, step: float) -> torch.Tensor:
    return (1.0 - step / norms.clamp_min(1e-30)).clamp_min(0.0)


def proximal_step_size(lr: float, lam: float, momentum: float) -> float:
    """lr·λ/(1−momentum): the distance the subgradient penalty moves a group per step once momentum settles."""
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    return lr * lam / (1.0 - momentum)


def lambda_from_ratio(ratio: float, ce0: float, g0: float) -> float:
    """λ such that λ·G₀ / (CE₀ + λ·G₀) = ratio, from the first mini-batch at the initial weights."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"lasso penalty ratio must be in (0, 1), got {ratio}")
    if g0 <= 0:
        raise ValueError("the group-lasso sum G0 must be positive")
    return ratio * ce0 / ((1.0 - ratio) * g0)
