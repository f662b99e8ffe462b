"""The one layer the engine adds to a pruned network."""
from __future__ import annotations

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
