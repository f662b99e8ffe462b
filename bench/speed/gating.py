"""Section ``gating``: channel union against channel gating, at equal pruning.

One pruned model is reconfigured both ways.  Inside residual branches the
same random channels die in writer and reader (both structures remove them);
at the residual streams every layer loses its own random fraction of its
slices, so union keeps almost every stream channel while gating keeps each
layer narrow and pays for gathers and scatters.  Timed: the convolutions
alone (forward + backward of every conv on inputs of its shape) and the whole
training step.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

import prunetrain_core as pc

from ..training.shapes import fixed_batch_step, input_size, random_batch, train_flops, zero_channels
from .table import Row
from ..machine.timing import Case, Stat, interleaved, ratio_stat, resolve_device


@torch.no_grad()
def gating_pair(model_name: str, keep: float = 0.5, *, num_classes: int = 10, seed: int = 0
                ) -> tuple[nn.Module, nn.Module]:
    """(union-shaped, gating-shaped) reconfigurations of one model whose layers kept ``keep`` of their channels."""
    torch.manual_seed(seed)
    model = pc.build_model(model_name, num_classes)
    size = input_size(model_name)
    example = torch.zeros(2, 3, size, size)
    graph = pc.analyse(model, example)
    streams = {n.space for n in graph.nodes if n.kind == "add"}
    inner = {s.id: max(1, round(keep * s.size)) for s in graph.prunable_spaces() if s.id not in streams}
    zero_channels(model, graph, inner, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    for space in graph.prunable_spaces():
        if space.id not in streams:
            continue
        for m in space.members:  # each layer its own dead channels
            if m.role in ("conv_in", "conv_out", "linear_in"):
                w = model.get_submodule(m.module).weight
                axis = 0 if m.role == "conv_out" else 1
                dead = torch.randperm(w.shape[axis], generator=g)[: w.shape[axis] - max(1, round(keep * w.shape[axis]))]
                w.index_fill_(axis, dead, 0.0)
    return (pc.reconfigure(copy.deepcopy(model), example),
            pc.reconfigure(copy.deepcopy(model), example, structure="gating"))


class ConvsOnly:
    """Forward + backward of every conv of a model on fixed inputs of the shapes it sees in training."""

    def __init__(self, model: nn.Module, x: torch.Tensor):
        shapes: list[tuple[nn.Conv2d, torch.Size]] = []
        hooks = [m.register_forward_hook(lambda mod, inp, out: shapes.append((mod, inp[0].shape)))
                 for m in model.modules() if isinstance(m, nn.Conv2d)]
        try:
            with torch.no_grad():
                model.train()(x)
        finally:
            for h in hooks:
                h.remove()
        self.work = [(conv, torch.randn(shape, device=x.device, requires_grad=True)) for conv, shape in shapes]

    def __call__(self) -> None:
        outs = [conv(x) for conv, x in self.work]
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])


def measure_gating(model_name: str = "resnet20", batch: int = 64, device=None, rounds: int = 5, warmup: int = 1,
                   keep: float = 0.5) -> list[Row]:
    """Conv-only and full-step time of the gating-shaped model over the union-shaped one (same pruning)."""
    device = resolve_device(device)
    union, gating = gating_pair(model_name, keep)
    size = input_size(model_name)
    flops = train_flops(gating, torch.zeros(2, 3, size, size)) / train_flops(union, torch.zeros(2, 3, size, size))
    union, gating = union.to(device), gating.to(device)
    x, y = random_batch(batch, size, device=device)
    cases = {"union convs": Case(ConvsOnly(union, x)), "gating convs": Case(ConvsOnly(gating, x)),
             "union step": Case(fixed_batch_step(union, x, y)), "gating step": Case(fixed_batch_step(gating, x, y))}
    s = interleaved(cases, rounds, warmup=warmup, device=device)
    gates = sum(type(m).__name__ in ("ChannelGather", "ChannelScatter") for m in gating.modules())
    what = f"{model_name}, batch {batch}, each layer keeps {keep:g} of its channels"
    rows = []
    for name in cases:
        st = Stat.of(s[name])
        rows.append(Row("gating", f"{name} ({what})" if name == "union convs" else name, st.median * 1e3, "ms",
                        st.iqr * 1e3, note="fwd+bwd of every conv alone" if "convs" in name else "fwd+CE+bwd+SGD"))
    conv = ratio_stat(s["gating convs"], s["union convs"])
    step = ratio_stat(s["gating step"], s["union step"])
    rows.append(Row("gating", "conv time gating ÷ union (> 1: union faster)", conv.median, "x", conv.iqr,
                    note=f"training FLOPs gating ÷ union {flops:.2f}"))
    rows.append(Row("gating", "step time gating ÷ union (> 1: union faster)", step.median, "x", step.iqr,
                    note=f"{gates} gathers/scatters in the gating model"))
    return rows
