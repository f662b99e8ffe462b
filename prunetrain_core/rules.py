"""What the engine knows about each layer type, in one table.

Torch-Pruning keeps one pruner per layer type; here every supported module type has one :class:`LayerRule`:
its *role* (how it treats channels) and the constructor arguments that describe it.  The graph builder
(the channel spaces), the surgery (how a layer's tensors are sliced), the gating pass (which layers compute
channels and which carry them) and the architecture record (describe / rebuild) all look a module up here, and
each keeps one handler per role; ``tests/test_engine.py`` checks that every role has a handler in each.  A new
layer type is one row here, plus a handler where its role is new.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .layers import BranchConstant, ChannelGather, ChannelScatter

#: how a layer treats the channel axis
ROLES = (
    "conv",     # computes new channels from its input channels (a dense 2-D convolution)
    "linear",   # the same for features; may read a flattened feature map
    "bn",       # one parameter (and statistic) per channel: sliced with the channels it normalises
    "const",    # BranchConstant: one constant per channel, sliced likewise
    "gather",   # ChannelGather: reads a subset of a wider tensor's channels (channel gating)
    "scatter",  # ChannelScatter: writes a narrow tensor back into its stream's width (channel gating)
    "pass",     # parameter-free, per channel or element-wise: the channel index passes through
    "flatten",  # nn.Flatten: channels become feature positions
)


@dataclass(frozen=True)
class LayerRule:
    role: str
    #: constructor arguments read back from the module's attributes (bench records describe layers by them)
    args: tuple[str, ...]
    #: a pass-through layer that maps a spatially uniform input to a uniform output (not average pooling with
    #: padding, which mixes in zeros): what lets a removed branch's constant pass it
    uniform_ok: bool = True
    #: the attribute holding the layer's output width (conv and linear)
    out_width: str | None = None

    @property
    def computes_channels(self) -> bool:
        """Conv and linear: the layers whose output channels are pruned and whose input channels are read."""
        return self.role in ("conv", "linear")


_BN = ("num_features", "eps", "momentum", "affine", "track_running_stats")
RULES: dict[type, LayerRule] = {
    nn.Conv2d: LayerRule("conv", ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                                  "groups", "padding_mode"), out_width="out_channels"),
    nn.Linear: LayerRule("linear", ("in_features", "out_features"), out_width="out_features"),
    nn.BatchNorm2d: LayerRule("bn", _BN),
    nn.BatchNorm1d: LayerRule("bn", _BN),
    BranchConstant: LayerRule("const", ("num_channels", "spatial_dims")),
    ChannelGather: LayerRule("gather", ("indices",)),
    ChannelScatter: LayerRule("scatter", ("indices", "width", "spatial_dims")),
    nn.Flatten: LayerRule("flatten", ("start_dim", "end_dim")),
    nn.MaxPool2d: LayerRule("pass", ("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode")),
    nn.AvgPool2d: LayerRule("pass", ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                     "divisor_override"), uniform_ok=False),
    nn.AdaptiveAvgPool2d: LayerRule("pass", ("output_size",)),
    nn.AdaptiveMaxPool2d: LayerRule("pass", ("output_size", "return_indices")),
    **{t: LayerRule("pass", ("p", "inplace")) for t in (nn.Dropout, nn.Dropout2d, nn.AlphaDropout)},
    **{t: LayerRule("pass", ("inplace",)) for t in (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
                                                     nn.Mish)},
    nn.LeakyReLU: LayerRule("pass", ("negative_slope", "inplace")),
    nn.ELU: LayerRule("pass", ("alpha", "inplace")),
    nn.GELU: LayerRule("pass", ("approximate",)),
    nn.Hardtanh: LayerRule("pass", ("min_val", "max_val", "inplace")),
    **{t: LayerRule("pass", ()) for t in (nn.Sigmoid, nn.Tanh, nn.Identity)},
}
assert all(rule.role in ROLES for rule in RULES.values())


def rule_of(module: nn.Module) -> LayerRule | None:
    """The rule of ``module``'s type, or of the nearest supported base class (a subclass of nn.Conv2d is a
    convolution); None when the engine does not support it."""
    for t in type(module).__mro__:
        if t in RULES:
            return RULES[t]
    return None


def has_role(module: nn.Module, *roles: str) -> bool:
    rule = rule_of(module)
    return rule is not None and rule.role in roles


def computes_channels(module: nn.Module) -> bool:
    """A conv or linear layer (:attr:`LayerRule.computes_channels`): its filters are pruned, its inputs read."""
    rule = rule_of(module)
    return rule is not None and rule.computes_channels
