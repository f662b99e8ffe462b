"""Channel coupling found from the traced graph (torch.fx), not from per-model tables.

A *channel space* is a set of tensor axes that must keep one common channel
index: a conv's output filters, the BatchNorm after it, the activations and
pools in between, every conv that reads it (input slices), every tensor added
to it by a residual connection, and a Linear reading it through a flatten
(``positions`` columns per channel).  Pruning a channel means removing that
index from every member of its space at once, which is what keeps residual
additions aligned without gather/scatter ("channel union").

A gated model (:class:`ChannelGather` / :class:`ChannelScatter`, see
:mod:`.gating`) is understood too: a gathered or scattered axis is a *view*
of its space, and its members carry ``index`` (space channel of each of
their own channels), so a gated model can be analysed and pruned again.

Spaces that touch the network's input or output are fixed.  Any operation the
analysis cannot reason about (grouped or depthwise convolution, concatenation,
tensor-tensor products, slicing, ...) raises :class:`UnsupportedModelError`
naming the layer, so the engine never produces a silently wrong model.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .layers import BranchConstant, ChannelGather, ChannelScatter
from .rules import LayerRule, rule_of


class UnsupportedModelError(ValueError):
    """The model contains an operation whose channel coupling is not understood."""


# --------------------------------------------------------------------------- op tables
# (modules: prunetrain_core.rules, one rule per layer type)

PASSTHROUGH_FUNCTIONS: dict[str, Callable] = {
    "torch.nn.functional.relu": F.relu, "torch.nn.functional.relu6": F.relu6,
    "torch.nn.functional.leaky_relu": F.leaky_relu, "torch.nn.functional.gelu": F.gelu,
    "torch.nn.functional.silu": F.silu, "torch.nn.functional.hardswish": F.hardswish,
    "torch.nn.functional.sigmoid": F.sigmoid, "torch.nn.functional.dropout": F.dropout,
    "torch.nn.functional.max_pool2d": F.max_pool2d, "torch.nn.functional.avg_pool2d": F.avg_pool2d,
    "torch.nn.functional.adaptive_avg_pool2d": F.adaptive_avg_pool2d,
    "torch.nn.functional.adaptive_max_pool2d": F.adaptive_max_pool2d,
    "torch.relu": torch.relu, "torch.sigmoid": torch.sigmoid, "torch.tanh": torch.tanh,
}
PASSTHROUGH_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "contiguous", "clone", "float"}
ADD_FUNCTIONS: dict[str, Callable] = {"operator.add": operator.add, "operator.iadd": operator.iadd, "torch.add": torch.add}
ADD_METHODS = {"add", "add_", "__add__", "__iadd__"}
SCALAR_FUNCTIONS: dict[str, Callable] = {
    "operator.mul": operator.mul, "operator.truediv": operator.truediv, "operator.sub": operator.sub,
}
FLATTEN_FUNCTIONS: dict[str, Callable] = {"torch.flatten": torch.flatten}
RESHAPE_METHODS = {"view", "reshape", "flatten"}
MEAN_FUNCTIONS: dict[str, Callable] = {"torch.mean": torch.mean}
MEAN_METHODS = {"mean"}
NON_TENSOR_METHODS = {"size", "dim"}
NON_TENSOR_FUNCTIONS: dict[str, Callable] = {"builtins.getattr": getattr, "operator.getitem": operator.getitem}

#: every callable the engine may meet in a traced graph, by a stable name (arch.py serialises with it)
KNOWN_FUNCTIONS: dict[str, Callable] = {
    **PASSTHROUGH_FUNCTIONS, **ADD_FUNCTIONS, **SCALAR_FUNCTIONS, **FLATTEN_FUNCTIONS,
    **MEAN_FUNCTIONS, **NON_TENSOR_FUNCTIONS,
}
_FUNCTION_NAMES = {id(fn): name for name, fn in KNOWN_FUNCTIONS.items()}


def function_name(fn: Any) -> str | None:
    return _FUNCTION_NAMES.get(id(fn))


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Member:
    """One use of a channel space by a layer.

    role: ``conv_out`` / ``conv_in`` (weight dim 0 / 1), ``linear_out`` / ``linear_in``,
    ``bn`` (γ, β, running stats), ``const`` (a :class:`BranchConstant` left by a removed branch).
    ``positions``: columns per channel for a Linear fed by a flatten.
    ``index``: for a gated layer, the space channel of each of its channels (None: all, in order).
    """

    module: str
    role: str
    positions: int = 1
    index: tuple[int, ...] | None = None


@dataclass
class ChannelSpace:
    id: int
    size: int
    members: list[Member] = field(default_factory=list)
    fixed_reason: str | None = None  # why this space cannot be pruned (None = prunable)

    @property
    def prunable(self) -> bool:
        return self.fixed_reason is None


@dataclass(frozen=True)
class NodeInfo:
    """What the branch-removal analysis needs to know of one graph node (plain data)."""

    name: str
    kind: str               # placeholder conv linear bn pass add flatten mean scalar const other output
    inputs: tuple[str, ...]  # names of tensor-valued input nodes
    space: int | None        # channel space of the node's output tensor (None: not a tensor)
    reads: int | None = None  # space a conv/linear reads
    pointwise: bool = False  # 1×1 conv without padding: a uniform input gives a uniform output
    uniform_ok: bool = True  # pass-through op that keeps a uniform input uniform
    index: tuple[int, ...] | None = None  # space channel of each channel of the output (None: all)
    target: str | None = None  # the module a call_module node runs


@dataclass
class ChannelGraph:
    """The result of tracing: channel spaces plus the node structure around them."""

    spaces: list[ChannelSpace]
    nodes: list[NodeInfo]
    module_spaces: dict[str, dict[str, int]]  # module -> {"in": sid, "out": sid} (or {"bn": sid})
    graph_module: fx.GraphModule

    def space_of(self, module: str, axis: str) -> ChannelSpace:
        return self.spaces[self.module_spaces[module][axis]]

    def prunable_spaces(self) -> list[ChannelSpace]:
        return [s for s in self.spaces if s.prunable]

    def member_index(self, module: str, axis: str) -> tuple[int, ...] | None:
        """Space channels of a module axis (``in``/``out``/``bn``/``const``); None: the whole space in order."""
        space = self.spaces[self.module_spaces[module][axis]]
        return next((m.index for m in space.members if m.module == module and AXIS_OF_ROLE[m.role] == axis), None)

    @property
    def gated(self) -> bool:
        return any(m.index is not None for s in self.spaces for m in s.members)


#: the module axis a member role uses
AXIS_OF_ROLE = {"conv_in": "in", "linear_in": "in", "conv_out": "out", "linear_out": "out", "bn": "bn",
                "const": "const"}


# --------------------------------------------------------------------------- union-find
class _UnionFind:
    """Union-find over channel axes; an axis may also be a *view* (some channels, by index) of another."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.view: list[tuple[int, ...] | None] = []  # channel j of a is channel view[a][j] of parent[a]
        self.fixed: dict[int, str] = {}

    def new(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.view.append(None)
        return len(self.parent) - 1

    def locate(self, a: int) -> tuple[int, tuple[int, ...] | None]:
        """The root of ``a`` and the root channel of each of a's channels (None: identity)."""
        p = self.parent[a]
        if p == a:
            return a, None
        root, above = self.locate(p)
        mine = self.view[a]
        if above is not None:
            mine = tuple(above[i] for i in (mine if mine is not None else range(self.size[a])))
        self.parent[a], self.view[a] = root, mine  # path compression, maps composed
        return root, mine

    def find(self, a: int) -> int:
        return self.locate(a)[0]

    def union(self, a: int, b: int, where: str) -> int:
        (ra, ma), (rb, mb) = self.locate(a), self.locate(b)
        if ra == rb:
            if ma != mb:
                raise UnsupportedModelError(f"{where}: joins differently gathered channels of one tensor")
            return ra
        if ma is not None or mb is not None:
            raise UnsupportedModelError(f"{where}: joins a gathered or scattered axis with another axis")
        if self.size[ra] != self.size[rb]:
            raise UnsupportedModelError(f"{where}: joins channel axes of sizes {self.size[ra]} and {self.size[rb]}")
        self.parent[rb] = ra
        if rb in self.fixed:
            self.fixed.setdefault(ra, self.fixed.pop(rb))
        return ra

    def view_of(self, a: int, index: Sequence[int], where: str) -> int:
        """A new axis made of channels ``index`` of ``a`` (a gather)."""
        if any(not 0 <= i < self.size[a] for i in index):
            raise UnsupportedModelError(f"{where}: gathers channels outside 0..{self.size[a] - 1}")
        e = self.new(len(index))
        self.parent[e], self.view[e] = a, tuple(index)
        return e

    def attach(self, a: int, into: int, index: Sequence[int], where: str) -> None:
        """Make ``a`` the channels ``index`` of ``into`` (a scatter); ``a`` must not be a view already."""
        ra, ma = self.locate(a)
        if ma is not None or self.size[ra] != len(index) or any(not 0 <= i < self.size[into] for i in index):
            raise UnsupportedModelError(f"{where}: scatters an axis that is not a whole channel space")
        self.parent[ra], self.view[ra] = into, tuple(index)
        if ra in self.fixed:
            self.fixed.setdefault(into, self.fixed.pop(ra))


# --------------------------------------------------------------------------- tracing
ENGINE_LAYERS = (BranchConstant, ChannelGather, ChannelScatter)


class _Tracer(fx.Tracer):
    """Keeps the engine's own layers (constants, gather, scatter) as one node each, like nn layers."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, ENGINE_LAYERS) or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model``; a model fx cannot trace is refused clearly."""
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
        return fx.GraphModule(tracer.root, graph, class_name=type(model).__name__)
    except Exception as exc:  # fx raises many types for data-dependent control flow
        raise UnsupportedModelError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(exc).__name__}: {exc}); "
            "only models without data-dependent control flow are supported"
        ) from exc


def _where(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        return f"layer '{node.target}' ({type(mod).__name__})"
    stack = node.meta.get("nn_module_stack") or {}
    inside = f" inside '{list(stack.values())[-1][0]}'" if stack else ""
    target = getattr(node.target, "__name__", node.target)
    return f"operation '{node.name}' ({target}){inside}"


def _propagate_shapes(gm: fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> None:
    """Record tensor shapes on the nodes; runs in eval mode under no_grad so nothing changes."""
    modes = [(m, m.training) for m in gm.modules()]
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    finally:
        for m, training in modes:
            m.training = training


def _shape(node: Any) -> tuple[int, ...] | None:
    if isinstance(node, fx.Node):
        meta = node.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape"):
            return tuple(meta.shape)
    return None


def analyse(model: nn.Module, example_inputs: Sequence[torch.Tensor] | torch.Tensor) -> ChannelGraph:
    """Trace ``model`` once and return its channel spaces."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    gm = trace(model)
    _propagate_shapes(gm, example_inputs)
    return _Analyser(gm).run()


class _Analyser:
    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.uf = _UnionFind()
        self.axis: dict[str, tuple] = {}  # node name -> ("ch", sid) | ("flat", sid, k)
        self.members: list[tuple[int, Member]] = []
        self.module_axes: dict[str, dict[str, int]] = {}
        self.infos: list[dict] = []

    # helpers ---------------------------------------------------------------
    def _axis(self, arg: Any, node: fx.Node) -> tuple:
        if not isinstance(arg, fx.Node) or arg.name not in self.axis:
            raise UnsupportedModelError(f"{_where(node, self.gm)}: input is not a tensor the engine can follow")
        return self.axis[arg.name]

    def _tensor_args(self, node: fx.Node) -> list[fx.Node]:
        return [a for a in node.all_input_nodes if a.name in self.axis]

    def _bind_module(self, name: str, axis: str, sid: int, node: fx.Node) -> int:
        axes = self.module_axes.setdefault(name, {})
        if axis in axes:  # a module called twice must keep one shape
            sid = self.uf.union(axes[axis], sid, _where(node, self.gm))
        axes[axis] = sid
        return sid

    def _info(self, node: fx.Node, kind: str, **kw: Any) -> None:
        ax = self.axis.get(node.name)
        self.infos.append(dict(
            name=node.name, kind=kind, inputs=tuple(a.name for a in self._tensor_args(node)),
            space=ax[1] if ax else None,
            target=node.target if node.op == "call_module" else None, **kw))

    # main loop -------------------------------------------------------------
    def run(self) -> ChannelGraph:
        for node in self.gm.graph.nodes:
            handler = getattr(self, f"_op_{node.op}")
            handler(node)
        return self._finish()

    def _op_placeholder(self, node: fx.Node) -> None:
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            return
        sid = self.uf.new(shape[1])
        self.uf.fixed[sid] = "network input"
        self.axis[node.name] = ("ch", sid)
        self._info(node, "placeholder")

    def _op_get_attr(self, node: fx.Node) -> None:
        if _shape(node) is not None:
            raise UnsupportedModelError(f"{_where(node, self.gm)}: a tensor attribute used in forward is not supported")

    def _op_output(self, node: fx.Node) -> None:
        self._info(node, "output")
        for arg in node.all_input_nodes:
            if arg.name in self.axis:
                self.uf.fixed[self.uf.find(self.axis[arg.name][1])] = "network output"

    def _op_call_module(self, node: fx.Node) -> None:
        mod = self.gm.get_submodule(node.target)
        rule = rule_of(mod)
        if rule is None:
            raise UnsupportedModelError(f"{_where(node, self.gm)}: this layer type is not supported")
        getattr(self, f"_module_{rule.role}")(node, node.target, mod, rule)

    # one handler per role of prunetrain_core.rules: how a layer of that role couples channel spaces
    def _module_conv(self, node: fx.Node, name: str, mod: nn.Module, rule: LayerRule) -> None:
        if mod.groups != 1:
            kind = "depthwise" if mod.groups == mod.in_channels else "grouped"
            raise UnsupportedModelError(
                f"{_where(node, self.gm)}: {kind} convolution (groups={mod.groups}) is not supported")
        ax = self._axis(node.args[0], node)
        if ax[0] != "ch":
            raise UnsupportedModelError(f"{_where(node, self.gm)}: reads a flattened tensor")
        sin = self._bind_module(name, "in", ax[1], node)
        sout = self._bind_module(name, "out", self.uf.new(mod.out_channels), node)
        self.members += [(sin, Member(name, "conv_in")), (sout, Member(name, "conv_out"))]
        self.axis[node.name] = ("ch", sout)
        pointwise = mod.kernel_size == (1, 1) and mod.padding in ((0, 0), "valid")
        self._info(node, "conv", reads=sin, pointwise=pointwise)

    def _module_linear(self, node: fx.Node, name: str, mod: nn.Module, rule: LayerRule) -> None:
        ax = self._axis(node.args[0], node)
        shape = _shape(node.args[0])
        if shape is None or len(shape) != 2:
            raise UnsupportedModelError(f"{_where(node, self.gm)}: Linear on a {len(shape or ())}-D input")
        k = ax[2] if ax[0] == "flat" else 1
        sin = self._bind_module(name, "in", ax[1], node)
        sout = self._bind_module(name, "out", self.uf.new(mod.out_features), node)
        self.members += [(sin, Member(name, "linear_in", k)), (sout, Member(name, "linear_out"))]
        self.axis[node.name] = ("ch", sout)
        self._info(node, "linear", reads=sin, pointwise=True)

    def _module_bn(self, node: fx.Node, name: str, mod: nn.Module, rule: LayerRule) -> None:
        if self._axis(node.args[0], node)[0] != "ch":
            raise UnsupportedModelError(f"{_where(node, self.gm)}: BatchNorm on a flattened tensor")
        self._per_channel(node, name, "bn", "bn")

    def _module_const(self, node: fx.Node, name: str, mod: nn.Module, rule: LayerRule) -> None:
        self._per_channel(node, name, "const", "scalar")

    def _per_channel(self, node: fx.Node, name: str, role: str, kind: str) -> None:
        """A layer with one value per channel of its input's space (BatchNorm, BranchConstant): a member of it."""
        sid = self._bind_module(name, role, self._axis(node.args[0], node)[1], node)
        self.members.append((sid, Member(name, role)))
        self.axis[node.name] = ("ch", sid)
        self._info(node, kind)

    def _module_gather(self, node: fx.Node, name: str, mod: nn.Module, rule: LayerRule) -> None:
        ax = self._axis(node.args[0], node)
        if ax[0] == "flat" and ax[2] != 1:
            raise UnsupportedModelError(f"{_where(node, self.gm)}: gathers from a flattened feature map")
        self.axis[node.name] = (ax[0], self.uf.view_of(ax[1], mod.indices, _where(node, self.gm)), *ax[2:])
        self._info(node, "gather")

    def _module_scatter(self, node: fx.Node, name: str, mod: nn.Module, rule: LayerRule) -> None:
        ax = self._axis(node.args[0], node)
        if ax[0] != "ch":
            raise UnsupportedModelError(f"{_where(node, self.gm)}: scatters a flattened tensor")
        wide = self.uf.new(mod.width)
        self.uf.attach(ax[1], wide, mod.indices, _where(node, self.gm))
        self.axis[node.name] = ("ch", wide)
        self._info(node, "scatter")

    def _module_pass(self, node: fx.Node, name: str, mod: nn.Module, rule: LayerRule) -> None:
        self.axis[node.name] = self._axis(node.args[0], node)
        self._info(node, "pass", uniform_ok=rule.uniform_ok)

    def _module_flatten(self, node: fx.Node, name: str, mod: nn.Module, rule: LayerRule) -> None:
        self._flatten(node, node.args[0], mod.start_dim, mod.end_dim)

    def _op_call_function(self, node: fx.Node) -> None:
        name = function_name(node.target)
        if name in NON_TENSOR_FUNCTIONS:
            src = node.args[0] if node.args else None
            if _shape(node) is not None or (name == "operator.getitem" and _shape(src) is not None):
                raise UnsupportedModelError(f"{_where(node, self.gm)}: indexing or slicing a tensor is not supported")
            return
        self._generic(node, name, node.args, node.kwargs, is_method=False)

    def _op_call_method(self, node: fx.Node) -> None:
        self._generic(node, node.target, node.args, node.kwargs, is_method=True)

    def _generic(self, node: fx.Node, name: str | None, args: tuple, kwargs: dict, is_method: bool) -> None:
        if is_method and name in NON_TENSOR_METHODS:
            return
        if (is_method and name in PASSTHROUGH_METHODS) or (not is_method and name in PASSTHROUGH_FUNCTIONS):
            self.axis[node.name] = self._axis(args[0], node)
            uniform_ok = name not in ("torch.nn.functional.avg_pool2d",)
            self._info(node, "pass", uniform_ok=uniform_ok)
        elif (is_method and name in ADD_METHODS) or (not is_method and name in ADD_FUNCTIONS):
            self._add(node, args)
        elif not is_method and name in SCALAR_FUNCTIONS:
            tensors = [a for a in args if isinstance(a, fx.Node) and a.name in self.axis]
            if len(tensors) != 1 or any(isinstance(a, fx.Node) and a not in tensors for a in args):
                raise UnsupportedModelError(f"{_where(node, self.gm)}: tensor-by-tensor product/difference is not supported")
            self.axis[node.name] = self.axis[tensors[0].name]
            self._info(node, "scalar")
        elif (not is_method and name in FLATTEN_FUNCTIONS) or (is_method and name == "flatten"):
            start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
            end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
            self._flatten(node, args[0], start, end)
        elif is_method and name in RESHAPE_METHODS:
            self._reshape(node, args[0])
        elif (is_method and name in MEAN_METHODS) or (not is_method and name in MEAN_FUNCTIONS):
            self._mean(node, args, kwargs)
        else:
            label = name or getattr(node.target, "__name__", str(node.target))
            raise UnsupportedModelError(
                f"{_where(node, self.gm)}: '{label}' is not supported "
                "(supported: conv/BN/linear, element-wise activations, pooling, residual add, flatten, mean)")

    def _add(self, node: fx.Node, args: tuple) -> None:
        tensors = [a for a in args[:2] if isinstance(a, fx.Node) and a.name in self.axis]
        if not tensors:
            raise UnsupportedModelError(f"{_where(node, self.gm)}: addition without a tensor operand")
        first = self.axis[tensors[0].name]
        sid = first[1]
        for other in tensors[1:]:
            ax = self.axis[other.name]
            if ax[0] != first[0] or (ax[0] == "flat" and ax[2] != first[2]):
                raise UnsupportedModelError(f"{_where(node, self.gm)}: adds tensors of different layouts")
            if _shape(other) != _shape(tensors[0]):
                raise UnsupportedModelError(f"{_where(node, self.gm)}: broadcasting addition is not supported")
            sid = self.uf.union(sid, ax[1], _where(node, self.gm))
        self.axis[node.name] = (first[0], sid, *first[2:])
        self._info(node, "add")

    def _flatten(self, node: fx.Node, src: Any, start: int, end: int) -> None:
        ax = self._axis(src, node)
        shape = _shape(src)
        ndim = len(shape)
        if end < 0:
            end += ndim
        if start == 0 and ndim >= 1:
            raise UnsupportedModelError(f"{_where(node, self.gm)}: flattening the batch dimension is not supported")
        if ndim == 2 or start > 1 or end == start:
            self.axis[node.name] = ax  # no channel mixing
            self._info(node, "pass")
            return
        if ax[0] != "ch" or start != 1 or end != ndim - 1:
            raise UnsupportedModelError(f"{_where(node, self.gm)}: only flatten(x, 1) of a N×C×H×W tensor is supported")
        k = 1
        for d in shape[2:]:
            k *= d
        self.axis[node.name] = ("flat", ax[1], k)
        self._info(node, "flatten")

    def _reshape(self, node: fx.Node, src: Any) -> None:
        ax = self._axis(src, node)
        before, after = _shape(src), _shape(node)
        if before == after:
            self.axis[node.name] = ax
            self._info(node, "pass")
        elif ax[0] == "ch" and len(before) >= 3 and after is not None and len(after) == 2 and after[0] == before[0]:
            self._flatten(node, src, 1, -1)
        else:
            raise UnsupportedModelError(f"{_where(node, self.gm)}: reshape {before} -> {after} is not supported")

    def _mean(self, node: fx.Node, args: tuple, kwargs: dict) -> None:
        ax = self._axis(args[0], node)
        shape = _shape(args[0])
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        dims = tuple(d % len(shape) for d in dims)
        if ax[0] != "ch" or not dims or 0 in dims or 1 in dims:
            raise UnsupportedModelError(f"{_where(node, self.gm)}: mean over the batch or channel axis is not supported")
        out = _shape(node)
        if keep or len(out) > 2:
            self.axis[node.name] = ax
            self._info(node, "pass")
        else:
            self.axis[node.name] = ("flat", ax[1], 1)
            self._info(node, "flatten")

    def _finish(self) -> ChannelGraph:
        uf = self.uf
        roots: dict[int, int] = {}
        spaces: list[ChannelSpace] = []

        def space_id(sid: int) -> int:
            root = uf.find(sid)
            if root not in roots:
                roots[root] = len(spaces)
                spaces.append(ChannelSpace(len(spaces), uf.size[root], fixed_reason=uf.fixed.get(root)))
            return roots[root]

        for sid, member in self.members:
            index = uf.locate(sid)[1]
            spaces[space_id(sid)].members.append(member if index is None else replace(member, index=index))
        for root, reason in uf.fixed.items():
            spaces[space_id(root)].fixed_reason = reason
        for space in spaces:
            if space.prunable and not any(m.role in ("conv_in", "linear_in") for m in space.members):
                space.fixed_reason = "no layer reads it"
        nodes = []
        for info in self.infos:
            if info["space"] is not None:
                info["index"] = uf.locate(info["space"])[1]
                info["space"] = space_id(info["space"])
            if info.get("reads") is not None:
                info["reads"] = space_id(info["reads"])
            nodes.append(NodeInfo(**info))
        module_spaces = {m: {a: space_id(s) for a, s in axes.items()} for m, axes in self.module_axes.items()}
        return ChannelGraph(spaces, nodes, module_spaces, self.gm)


def members_by_role(space: ChannelSpace, roles: Iterable[str]) -> list[Member]:
    roles = set(roles)
    return [m for m in space.members if m.role in roles]
