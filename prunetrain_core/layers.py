"""The layers the engine adds to a pruned network: removed-branch constants, and channel gating."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class BranchConstant(nn.Module):
    """Adds what a removed residual branch still contributed: a per-channel constant.

    A branch whose inner channels all died outputs its last BatchNorm applied
    to a constant.  In training mode BatchNorm maps a constant batch to its
    shift β; in eval mode to γ(c − μ)/σ + β.  Both values are kept, so the
    pruned network computes the same function as before in either mode.
    """

    def __init__(self, num_channels: int, spatial_dims: int = 2):
        super().__init__()
        shape = (1, num_channels) + (1,) * spatial_dims
        self.num_channels, self.spatial_dims = num_channels, spatial_dims
        self.register_buffer("train_value", torch.zeros(shape))
        self.register_buffer("eval_value", torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.train_value if self.training else self.eval_value)

    def extra_repr(self) -> str:
        return f"{self.num_channels}"


class ChannelGather(nn.Module):
    """Channel gating: a layer reads only the channels of a wider tensor that it uses.

    ``indices`` are positions along dim 1 of the input; kept as a buffer so it
    moves with the model, and as plain data (``indices``) so the architecture
    can be described and rebuilt without the weights.
    """

    def __init__(self, indices: Sequence[int]):
        super().__init__()
        self.register_buffer("index", torch.tensor(list(indices), dtype=torch.long))

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(int(i) for i in self.index.tolist())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.index)

    def extra_repr(self) -> str:
        return f"{len(self.index)}"


class ChannelScatter(nn.Module):
    """Channel gating: a narrow branch output written back into its residual stream's width.

    The stream channels the branch no longer computes (its filters died) get
    the per-channel constant the dead filters still produced after BatchNorm,
    in training (``train_value``) and in eval mode (``eval_value``), so the
    network computes the same function as before.
    """

    def __init__(self, indices: Sequence[int], width: int, spatial_dims: int = 2):
        super().__init__()
        shape = (1, width) + (1,) * spatial_dims
        self.width, self.spatial_dims = width, spatial_dims
        self.register_buffer("index", torch.tensor(list(indices), dtype=torch.long))
        self.register_buffer("train_value", torch.zeros(shape))
        self.register_buffer("eval_value", torch.zeros(shape))

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(int(i) for i in self.index.tolist())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.train_value if self.training else self.eval_value
        out = base.to(x.dtype).expand(x.shape[0], self.width, *x.shape[2:])
        return out.index_copy(1, self.index, x)

    def extra_repr(self) -> str:
        return f"{len(self.index)} -> {self.width}"
