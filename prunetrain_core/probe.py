"""The per-channel constants a pruned network must keep adding, measured by running the old graph once per mode."""
from __future__ import annotations

from typing import Any, Collection, Mapping, Sequence

import torch
from torch import fx


@torch.no_grad()
def uniform_values(gm: fx.GraphModule, example_inputs: Sequence[torch.Tensor], wanted: Collection[str], *,
                   zero_inputs: Collection[str] = (), zero_channels: Mapping[str, torch.Tensor] | None = None
                   ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train- and eval-mode value of the nodes ``wanted`` (sample 0, first spatial position).

    Nodes in ``zero_inputs`` run on zeros (their dead inputs); the output
    channels ``zero_channels[node]`` of a conv/linear become what a zero
    filter gives (its bias), so the values are what removing those weights
    leaves: exact when the removed weights were exactly zero.  Buffers (BN
    running statistics) are restored after the train-mode pass.
    """
    zero_channels = zero_channels or {}

    def probe(training: bool) -> dict[str, torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}

        class _Probe(fx.Interpreter):
            def run_node(self, n: fx.Node) -> Any:
                if n.name in zero_inputs:
                    result = self.module.get_submodule(n.target)(torch.zeros_like(self.env[n.args[0]]))
                else:
                    result = super().run_node(n)
                if n.name in zero_channels:
                    result = _zero_filters(self.module.get_submodule(n.target), result, zero_channels[n.name])
                if n.name in wanted:  # spatially uniform: one value per channel
                    v = result[:1]
                    for dim in range(2, v.dim()):
                        v = v.narrow(dim, 0, 1)
                    captured[n.name] = v.detach().clone()
                return result

        # two samples: train-mode BatchNorm needs more than one value per channel
        inputs = [torch.cat([x[:1], x[:1]]) for x in example_inputs]
        gm.train(training)
        _Probe(gm).run(*inputs)
        return captured

    modes = [(m, m.training) for m in gm.modules()]
    buffers = {name: b.clone() for name, b in gm.named_buffers()}
    try:
        eval_values = probe(False)  # first: the train pass moves BN running statistics
        train_values = probe(True)
    finally:
        for m, training in modes:
            m.training = training
        for name, b in gm.named_buffers():
            b.copy_(buffers[name])
    return {name: (train_values[name], eval_values[name]) for name in wanted}


def _zero_filters(mod: torch.nn.Module, result: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    channels = channels.to(result.device)
    shape = (1, len(channels)) + (1,) * (result.dim() - 2)
    fill = torch.zeros(shape, dtype=result.dtype, device=result.device)
    if getattr(mod, "bias", None) is not None:
        fill = fill + mod.bias.detach().index_select(0, channels).view(shape).to(result.dtype)
    return result.index_copy(1, channels, fill.expand(result.shape[0], -1, *result.shape[2:]))
