"""Applying a plan: a physically smaller dense model, and the optimizer moved onto it.

New Conv2d / BatchNorm2d / Linear modules receive sliced weights, biases and
running statistics; removed residual branches disappear from the graph and
their constant contribution (the BN shift they still added) becomes a
:class:`BranchConstant` at the residual node.  The result is an ``fx.GraphModule`` with the
original module names, so state-dict keys stay readable.  No masks remain in
the forward pass, and under union no index_select either; a gating plan (or a
gated model) goes through :func:`.gating.regate`.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import fx, nn

from .gating import regate
from .graph import ChannelGraph
from .layers import BranchConstant
from .plan import Plan
from .probe import uniform_values
from .rules import rule_of

CONST_PREFIX = "pt_const_"


def apply_plan(
    graph: ChannelGraph,
    plan: Plan,
    example_inputs: Sequence[torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
) -> fx.GraphModule:
    """Build the pruned model for ``plan``; re-point and slice ``optimizer`` if given."""
    _check_plan_matches(graph, plan)
    gm = graph.graph_module
    index = _Index(graph, plan)
    new_graph = copy.deepcopy(gm.graph)
    root: dict[str, Any] = {}
    if plan.merges:
        _merge_removed_branches(graph, plan, index, new_graph, root, example_inputs)
    _eliminate_dead_code(new_graph)
    if plan.structure == "gating" or graph.gated:
        index = regate(graph, plan, new_graph, root, example_inputs)

    remap: dict[nn.Parameter, tuple[nn.Parameter, tuple]] = {}
    for node in new_graph.nodes:
        if node.op == "call_module" and node.target not in root:
            root[node.target] = _sliced_module(gm.get_submodule(node.target), node.target, graph, index, remap)
    model = fx.GraphModule(root, new_graph, class_name=gm.__class__.__name__)
    model.train(gm.training)
    if optimizer is not None:
        _move_optimizer(optimizer, remap)
    return model


def _merge_removed_branches(graph: ChannelGraph, plan: Plan, index: "_Index", new_graph: fx.Graph,
                            root: dict[str, Any], example_inputs: Sequence[torch.Tensor]) -> None:
    """Replace each addition of a removed branch by a BranchConstant on the live operand."""
    constants = _branch_constants(graph, plan, example_inputs)
    by_name = {n.name: n for n in new_graph.nodes}
    taken = {n.target for n in new_graph.nodes if n.op == "call_module"}
    counter = 0
    for add_name, operand_name in plan.merges:
        while f"{CONST_PREFIX}{counter}" in taken:
            counter += 1
        target = f"{CONST_PREFIX}{counter}"
        taken.add(target)
        add_node = by_name[add_name]
        live = next(a for a in add_node.all_input_nodes if a.name != operand_name)
        with new_graph.inserting_before(add_node):
            const_node = new_graph.call_module(target, (live,))
        add_node.replace_all_uses_with(const_node)
        new_graph.erase_node(add_node)
        keep = index.keep(index.space_of_node(add_name))
        train_value, eval_value = constants[operand_name]
        const = BranchConstant(len(keep), train_value.dim() - 2).to(train_value.device)
        const.train_value.copy_(train_value.index_select(1, keep.to(train_value.device)))
        const.eval_value.copy_(eval_value.index_select(1, keep.to(eval_value.device)))
        root[target] = const


def _check_plan_matches(graph: ChannelGraph, plan: Plan) -> None:
    sizes = {s.id: s.size for s in graph.prunable_spaces()}
    if sizes != plan.sizes:
        raise ValueError("the plan was made for a different architecture than this model")


class _Index:
    """Kept indices per space and per module axis (full range for fixed spaces)."""

    def __init__(self, graph: ChannelGraph, plan: Plan):
        self.graph, self.plan = graph, plan
        self._cache: dict[int, torch.Tensor] = {}
        self._node_space = {n.name: n.space for n in graph.nodes}

    def keep(self, sid: int) -> torch.Tensor:
        if sid not in self._cache:
            if sid in self.plan.keep:
                idx = self.plan.keep[sid]
            else:
                idx = range(self.graph.spaces[sid].size)
            self._cache[sid] = torch.tensor(list(idx), dtype=torch.long)
        return self._cache[sid]

    def axis(self, module: str, axis: str) -> torch.Tensor:
        return self.keep(self.graph.module_spaces[module][axis])

    def space_of_node(self, name: str) -> int:
        return self._node_space[name]


def _positions(graph: ChannelGraph, module: str) -> int:
    """Columns per input channel of a Linear (H·W when it reads a flattened feature map)."""
    space = graph.space_of(module, "in")
    return next(m.positions for m in space.members if m.module == module and m.role == "linear_in")


def _sliced_module(mod: nn.Module, name: str, graph: ChannelGraph, index: _Index, remap: dict) -> nn.Module:
    """A fresh module of the new shape with the kept slices of ``mod``'s tensors (by its role: prunetrain_core.rules;
    a layer without channel tensors of its own is copied)."""
    rule = rule_of(mod)
    slicer = _SLICERS.get(rule.role) if rule is not None else None
    new = slicer(mod, name, graph, index, remap) if slicer is not None else copy.deepcopy(mod)
    new.train(mod.training)
    return new


def _slice_conv(mod: nn.Module, name: str, graph: ChannelGraph, index: _Index, remap: dict) -> nn.Module:
    i_out, i_in = index.axis(name, "out"), index.axis(name, "in")
    new = nn.Conv2d(
        len(i_in), len(i_out), mod.kernel_size, mod.stride, mod.padding, mod.dilation,
        1, mod.bias is not None, mod.padding_mode, device=mod.weight.device, dtype=mod.weight.dtype,
    )
    _copy_param(mod.weight, new, "weight", (i_out, i_in), remap)
    if mod.bias is not None:
        _copy_param(mod.bias, new, "bias", (i_out,), remap)
    return new


def _slice_linear(mod: nn.Module, name: str, graph: ChannelGraph, index: _Index, remap: dict) -> nn.Module:
    i_out, i_ch = index.axis(name, "out"), index.axis(name, "in")
    k = _positions(graph, name)
    i_in = (i_ch[:, None] * k + torch.arange(k)[None, :]).flatten()
    new = nn.Linear(len(i_in), len(i_out), mod.bias is not None, device=mod.weight.device, dtype=mod.weight.dtype)
    _copy_param(mod.weight, new, "weight", (i_out, i_in), remap)
    if mod.bias is not None:
        _copy_param(mod.bias, new, "bias", (i_out,), remap)
    return new


def _slice_const(mod: nn.Module, name: str, graph: ChannelGraph, index: _Index, remap: dict) -> nn.Module:
    idx = index.axis(name, "const")
    new = BranchConstant(len(idx), mod.spatial_dims).to(mod.train_value.device)
    new.train_value.copy_(mod.train_value.index_select(1, idx.to(mod.train_value.device)))
    new.eval_value.copy_(mod.eval_value.index_select(1, idx.to(mod.eval_value.device)))
    return new


def _slice_bn(mod: nn.Module, name: str, graph: ChannelGraph, index: _Index, remap: dict) -> nn.Module:
    idx = index.axis(name, "bn")
    new = type(mod)(len(idx), mod.eps, mod.momentum, mod.affine, mod.track_running_stats,
                    device=_device_of(mod), dtype=_dtype_of(mod))
    if mod.affine:
        _copy_param(mod.weight, new, "weight", (idx,), remap)
        _copy_param(mod.bias, new, "bias", (idx,), remap)
    if mod.track_running_stats:
        new.running_mean.copy_(mod.running_mean.index_select(0, idx.to(mod.running_mean.device)))
        new.running_var.copy_(mod.running_var.index_select(0, idx.to(mod.running_var.device)))
        new.num_batches_tracked.copy_(mod.num_batches_tracked)
    return new


#: how a layer of each role is sliced; roles absent here (pass, flatten, gather, scatter) hold no channel tensors
#: that a plan shrinks, and are copied
_SLICERS = {"conv": _slice_conv, "linear": _slice_linear, "const": _slice_const, "bn": _slice_bn}


def _device_of(mod: nn.Module) -> torch.device:
    t = next(iter(mod.parameters()), None)
    if t is None:
        t = next(iter(mod.buffers()))
    return t.device


def _dtype_of(mod: nn.Module) -> torch.dtype:
    t = next(iter(mod.parameters()), None)
    if t is None:
        t = next(iter(mod.buffers()))
    return t.dtype


@torch.no_grad()
def _copy_param(old: nn.Parameter, new_mod: nn.Module, attr: str, idx: tuple, remap: dict) -> None:
    value = old.detach()
    for dim, i in enumerate(idx):
        value = value.index_select(dim, i.to(value.device))
    param = nn.Parameter(_in_layout_of(old, value).clone(), requires_grad=old.requires_grad)
    setattr(new_mod, attr, param)
    remap[old] = (param, idx)


def _in_layout_of(old: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` (sliced from ``old``) in ``old``'s memory format.

    ``index_select`` returns a contiguous tensor; a channels_last model must stay
    channels_last after the surgery, or every later step pays a layout conversion.
    A tensor contiguous in both formats (a 1x1 kernel, one input channel) stays as sliced.
    """
    for fmt in (torch.channels_last, torch.channels_last_3d):
        if value.dim() == old.dim() == (4 if fmt is torch.channels_last else 5) \
                and old.is_contiguous(memory_format=fmt) and not old.is_contiguous():
            return value.contiguous(memory_format=fmt)
    return value


def align_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Give each state tensor shaped like its parameter (momentum, Adam's moments) the parameter's strides.

    torch.optim's foreach kernels take their fast path only when every tensor of a
    list shares sizes and strides with its partner (ATen/native/ForeachUtils.h,
    ``check_fast_path_restrictions``); one channels_last parameter with a
    contiguous momentum buffer sends the whole list to one kernel per tensor.
    Call after the surgery and after any change of the parameters' memory format.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            for key, value in (state or {}).items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype, device=value.device).copy_(value)


def _eliminate_dead_code(graph: fx.Graph) -> None:
    """Drop nodes whose results nobody uses (all our module calls are pure)."""
    changed = True
    while changed:
        changed = False
        for node in reversed(list(graph.nodes)):
            if node.op not in ("placeholder", "output") and not node.users:
                graph.erase_node(node)
                changed = True


def _branch_constants(graph: ChannelGraph, plan: Plan, example_inputs: Sequence[torch.Tensor]
                      ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train- and eval-mode value of each constant a removed branch adds at a residual node.

    Layers reading an emptied space are run on zeros (their dead inputs).
    """
    readers = {n.name for n in graph.nodes if n.kind in ("conv", "linear") and n.reads in set(plan.emptied)}
    wanted = {operand for _, operand in plan.merges}
    return uniform_values(graph.graph_module, example_inputs, wanted, zero_inputs=readers)


def _move_optimizer(optimizer: torch.optim.Optimizer, remap: dict) -> None:
    """Point param groups at the new parameters and slice per-parameter state alike.

    Tensors shaped like the parameter (SGD momentum, Adam moments) are sliced
    with the same indices; scalars (Adam's step) are kept.  Parameters of
    removed layers leave the optimizer together with their state.
    """
    old_state = optimizer.state
    new_state: dict = {}
    for group in optimizer.param_groups:
        params = []
        for p in group["params"]:
            if p not in remap:
                continue  # removed with its branch
            new_p, idx = remap[p]
            params.append(new_p)
            if p in old_state:
                new_state[new_p] = {k: _slice_state(v, p, idx) for k, v in old_state[p].items()}
        group["params"] = params
    optimizer.state.clear()
    optimizer.state.update(new_state)
    align_optimizer_state(optimizer)


def _slice_state(value: Any, param: torch.Tensor, idx: tuple) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    if value.shape == param.shape and value.dim() > 0:
        for dim, i in enumerate(idx):
            value = value.index_select(dim, i.to(value.device))
    return value.clone()  # never share a tensor (e.g. Adam's step) with the old state
