"""Group-lasso penalty over the channel groups found in the traced graph, and λ from the ratio.

Groups (one per channel and layer, in prunable spaces only): every conv's
output filter W[k], every conv's input slice W[:, c] (the first conv reads the
image, a fixed space, so it has none), every Linear's input columns (all H·W
columns of one flattened channel together) and a hidden Linear's output rows.
The classifier's rows belong to the network output and are never grouped.

penalty = Σ_g sqrt(‖w_g‖² + ε), with one global λ.  The norms are computed
with one squared-weight tensor and two reductions per layer, not per channel.

Which groups: ``groups="all"`` (the paper: writers' filters and readers' slices) or
``groups="readers"`` (only the input slices and columns, the groups that decide
liveness under the reader rule).  A writer's filter followed by BatchNorm is
scale-invariant: shrinking it does not change the function, so the CE gradient
does not resist and its effective learning rate grows as 1/‖w‖² (filters blow
up and training slows).  Under the reader rule that filter need not be zero to
go, so penalising it costs accuracy and buys nothing.

Group weights: ``weighting="uniform"`` (the paper's default: every group
counts once) or ``"size"`` (each group's norm times √(its element count), the
textbook group lasso of Yuan & Lin and the authors' ``get_group_lasso_group``).
Uniform weights press hardest, per unit of norm, on the groups whose weights
are small: a 10-row classifier column at PyTorch's default init has norm ≈ 0.08
against ≈ √2 for a conv input slice, so it dies first and, in a plain network
where the classifier is the last conv's only reader, takes that conv down to
a few channels.  Size weights make the pressure per unit of norm follow each
layer's weight scale instead (≈ uniform across layers at He init).

Two ways to apply it: add ``λ·penalty()`` to the loss (the subgradient
w/‖w‖; a collapsing group then oscillates at a size set by lr·λ and never
reaches zero), or take the optimizer step on the loss alone and then call
:meth:`GroupLasso.proximal_step` (block soft-thresholding: groups whose norm
falls below the step become exactly zero).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .graph import ChannelGraph, analyse

EPS = 1e-8
#: all: every writer's filter and every reader's slice (the paper) | readers: readers' slices only
GROUPS = ("all", "readers")
#: uniform: every group once (the paper) | size: each group's norm times √(elements in it)
WEIGHTINGS = ("uniform", "size")


@dataclass(frozen=True)
class _LayerGroups:
    weight: nn.Parameter
    out_groups: bool   # rows / filters (dim 0)
    in_groups: bool    # input channels (dim 1)
    positions: int     # columns per input channel (Linear fed by a flatten)
    bn: nn.Module | None = None  # the BatchNorm that alone reads this bias-free conv: each filter is scale-free
    out_weight: float = 1.0  # the weight of each filter's (row's) norm
    in_weight: float = 1.0   # the weight of each input slice's (column block's) norm


class GroupLasso:
    """The PruneTrain regulariser for one model shape (rebuild it after each reconfiguration)."""

    def __init__(self, model: nn.Module, example_inputs: Sequence[torch.Tensor] | torch.Tensor,
                 graph: ChannelGraph | None = None, groups: str = "all", weighting: str = "uniform"):
        if groups not in GROUPS:
            raise ValueError(f"groups must be one of {', '.join(GROUPS)}, got {groups!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        graph = graph or analyse(model, example_inputs)
        params = dict(model.named_parameters())
        flags: dict[str, dict] = {}
        for space in graph.prunable_spaces():
            for m in space.members:
                if m.role in ("conv_out", "linear_out") and groups == "all":
                    flags.setdefault(m.module, {})["out"] = True
                elif m.role in ("conv_in", "linear_in"):
                    f = flags.setdefault(m.module, {})
                    f["in"], f["k"] = True, m.positions
        normalised = _normalised_by_batchnorm(model, graph)
        sized = weighting == "size"
        self.layers = []
        for name, f in flags.items():
            w = params[f"{name}.weight"]
            self.layers.append(_LayerGroups(
                w, f.get("out", False), f.get("in", False), f.get("k", 1), normalised.get(name),
                out_weight=math.sqrt(w[0].numel()) if sized else 1.0,
                in_weight=math.sqrt(w.numel() // (w.shape[1] // f.get("k", 1))) if sized else 1.0))
        self.graph = graph
        self.weighting = weighting
        self._weights = self._group_weights()  # the shapes are fixed for this instance: built once, not per step

    @property
    def group_count(self) -> int:
        return len(self._weights)

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

    def group_weights(self) -> torch.Tensor:
        """The weight c_g of every group, in the order of :meth:`squared_norms`."""
        return self._weights

    def _group_weights(self) -> torch.Tensor:
        parts = []
        for layer in self.layers:
            w = layer.weight
            if layer.out_groups:
                parts.append(torch.full((w.shape[0],), layer.out_weight, device=w.device, dtype=w.dtype))
            if layer.in_groups:
                parts.append(torch.full((w.shape[1] // layer.positions,), layer.in_weight, device=w.device,
                                        dtype=w.dtype))
        return torch.cat(parts) if parts else torch.zeros(0)

    def penalty(self) -> torch.Tensor:
        """G(W) = Σ_g c_g·sqrt(‖w_g‖² + ε) (c_g = 1 unless size-weighted)."""
        norms = torch.sqrt(self.squared_norms() + EPS)
        if self.weighting == "uniform":
            return norms.sum()
        return (norms * self._weights.to(norms.device, norms.dtype)).sum()

    @torch.no_grad()
    def proximal_step(self, step: float, keep_bn_scale: bool = False) -> int:
        """Block soft-threshold every group: w_g ← w_g · max(0, 1 − step·c_g/‖w_g‖); returns groups now zero.

        This is the proximal operator of ``step · Σ_g c_g·‖w_g‖``.  Out-filters are
        shrunk before in-slices of the same weight (the groups overlap; the
        order is fixed so every rank computes the same result).

        ``keep_bn_scale``: then every filter that only a BatchNorm reads is
        scaled back to its norm before the step, and that BN's running mean and
        variance with it, so the network computes what it did (train and eval
        mode, up to BN's ε).  BN undoes a filter's scale anyway; shrinking it
        only raises its effective learning rate (∝ 1/‖w‖²) until training is
        noise.  Kept at its scale, the penalty moves what BN lets matter: the
        filter's direction, so weak input slices still reach exact zeros.
        """
        if step < 0:
            raise ValueError(f"the proximal step must be >= 0, got {step}")
        zero = 0
        for layer in self.layers:
            w = layer.weight
            rescale = keep_bn_scale and layer.bn is not None
            before = w.flatten(1).norm(dim=1) if rescale or layer.out_groups else None  # filter norms
            if layer.out_groups:
                norms = before
                out_step = step * layer.out_weight
                w.mul_(_shrink(norms, out_step).view(-1, *([1] * (w.dim() - 1))))
                zero += int((norms <= out_step).sum())
            if layer.in_groups:
                in_step = step * layer.in_weight
                if w.dim() == 2:
                    cols = w.view(w.shape[0], -1, layer.positions)
                    norms = cols.pow(2).sum((0, 2)).sqrt()
                    cols.mul_(_shrink(norms, in_step).view(1, -1, 1))
                else:
                    norms = w.transpose(0, 1).flatten(1).norm(dim=1)
                    w.mul_(_shrink(norms, in_step).view(1, -1, *([1] * (w.dim() - 2))))
                zero += int((norms <= in_step).sum())
            if rescale:
                after = w.flatten(1).norm(dim=1)
                scale = torch.where(after > 0, before / after.clamp_min(1e-30), torch.ones_like(after))
                w.mul_(scale.view(-1, *([1] * (w.dim() - 1))))
                if layer.bn.running_mean is not None:
                    layer.bn.running_mean.mul_(scale)
                    layer.bn.running_var.mul_(scale * scale)
        return zero


def _normalised_by_batchnorm(model: nn.Module, graph: ChannelGraph) -> dict[str, nn.Module]:
    """conv name → the BatchNorm that is the only reader of its output, for bias-free convs.

    Scaling such a filter scales its BN channel's input and statistics alike: BN's output is unchanged.
    """
    users: dict[str, list] = {}
    for node in graph.nodes:
        for name in node.inputs:
            users.setdefault(name, []).append(node)
    found = {}
    for node in graph.nodes:
        if node.kind != "conv" or node.target is None:
            continue
        readers = users.get(node.name, [])
        conv = model.get_submodule(node.target)
        if len(readers) == 1 and readers[0].kind == "bn" and readers[0].target and conv.bias is None:
            found[node.target] = model.get_submodule(readers[0].target)
    return found


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
