"""Channel gating surgery: narrow layers around a full-width residual stream, joined by gather and scatter.

Every tensor of the new graph carries the list of its space's channels it
holds (``ids``).  A residual addition (and a removed branch's constant) holds
the stream's kept channels; a conv or linear holds what the plan gives its
output.  Where a layer reads fewer channels than its input holds, a
:class:`ChannelGather` is inserted; where an addition's operand holds fewer
than the stream, a :class:`ChannelScatter`, whose constants are measured on
the old graph with the dropped filters zeroed.  Gathers and scatters already
in the graph are removed first and rebuilt, so a gated model can be pruned
again, under either structure.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import fx, nn

from .graph import ChannelGraph
from .layers import ChannelGather, ChannelScatter
from .plan import Plan
from .probe import uniform_values
from .rules import computes_channels, has_role, rule_of


class GatedIndex:
    """Kept positions per module axis, in the module's own channel order (what ``_sliced_module`` slices)."""

    def __init__(self) -> None:
        self.local: dict[tuple[str, str], torch.Tensor] = {}

    def axis(self, module: str, axis: str) -> torch.Tensor:
        return self.local[(module, axis)]


def _positions(holder: Sequence[int] | None, ids: Sequence[int]) -> list[int]:
    """Where each of ``ids`` sits in ``holder`` (None: the whole space in order)."""
    if holder is None:
        return list(ids)
    at = {c: j for j, c in enumerate(holder)}
    missing = [c for c in ids if c not in at]
    if missing:
        raise RuntimeError(f"gating: channels {missing[:5]} are not available where they are read")
    return [at[c] for c in ids]


def _unique(name: str, taken: set[str]) -> str:
    k, candidate = 1, name
    while candidate in taken:
        k, candidate = k + 1, f"{name}{k}"
    taken.add(candidate)
    return candidate


class _Regate:
    def __init__(self, graph: ChannelGraph, plan: Plan, new_graph: fx.Graph, root: dict[str, Any]):
        self.graph, self.plan, self.g, self.root = graph, plan, new_graph, root
        self.gm = graph.graph_module
        self.info = {n.name: n for n in graph.nodes}
        self.ids: dict[fx.Node, list[int]] = {}
        self.taken: set[str] = set()

    def module(self, target: str) -> nn.Module:
        return self.root[target] if target in self.root else self.gm.get_submodule(target)

    def stream(self, sid: int) -> list[int]:
        return list(self.plan.keep[sid]) if sid in self.plan.keep else list(range(self.graph.spaces[sid].size))

    def kept(self, module: str, axis: str) -> list[int]:
        """Space channels a conv/linear axis keeps: the plan's own choice, else what the stream keeps of its own."""
        key = f"{module}:{axis}"
        if key in self.plan.layers:
            return list(self.plan.layers[key])
        image = self.graph.member_index(module, axis)
        stream = self.stream(self.graph.module_spaces[module][axis])
        if image is None:
            return stream
        have = set(image)
        return [c for c in stream if c in have]

    def old_ids(self, name: str) -> list[int]:
        n = self.info[name]
        return list(n.index) if n.index is not None else list(range(self.graph.spaces[n.space].size))

    # ------------------------------------------------------------------ passes
    def joins(self) -> dict[fx.Node, tuple[int, list[str | None]]]:
        """Residual additions and removed-branch constants: their space and, per argument, the old node there."""
        out: dict[fx.Node, tuple[int, list[str | None]]] = {}
        for node in self.g.nodes:
            n = self.info.get(node.name)
            is_const = node.op == "call_module" and has_role(self.module(node.target), "const")
            if (n is not None and n.kind == "add") or is_const:
                args = [a.name if isinstance(a, fx.Node) else None for a in node.args]
                live = node.args[0]
                sid = n.space if n is not None else out[live][0] if live in out else self.info[live.name].space
                out[node] = (sid, args)
        return out

    def drop_old_gates(self) -> None:
        for node in list(self.g.nodes):
            if node.op == "call_module" and has_role(self.module(node.target), "gather", "scatter"):
                node.replace_all_uses_with(node.args[0])
                self.g.erase_node(node)
        self.taken = {n.target for n in self.g.nodes if n.op == "call_module"} | set(self.root)  # names free again

    def propagate(self, joins: dict) -> None:
        for node in self.g.nodes:
            n = self.info.get(node.name)
            if node in joins:
                self.ids[node] = self.stream(joins[node][0])
            elif node.op == "placeholder":
                if n is not None and n.space is not None:
                    self.ids[node] = self.old_ids(node.name)
            elif node.op == "call_module" and computes_channels(self.module(node.target)):
                self.ids[node] = self.kept(node.target, "out")
            elif node.op != "output" and (node.op == "call_module" or (n is not None and n.space is not None)):
                src = next((a for a in node.all_input_nodes if a in self.ids), None)
                if src is not None:
                    self.ids[node] = self.ids[src]

    def insert_gathers(self) -> None:
        for node in list(self.g.nodes):
            if node.op == "call_module" and computes_channels(self.module(node.target)):
                src = node.args[0]
                want = self.kept(node.target, "in")
                if self.ids[src] != want:
                    target = _unique(f"{node.target}_gather", self.taken)
                    self.root[target] = ChannelGather(_positions(self.ids[src], want))
                    with self.g.inserting_before(node):
                        gather = self.g.call_module(target, (src,))
                    node.replace_input_with(src, gather)
                    self.ids[gather] = want

    def insert_scatters(self, joins: dict, example_inputs: Sequence[torch.Tensor]) -> None:
        todo = []
        for node, (_, old_args) in joins.items():
            for pos, arg in enumerate(node.args):
                if isinstance(arg, fx.Node) and arg in self.ids and self.ids[arg] != self.ids[node]:
                    todo.append((node, arg, old_args[pos]))
        if not todo:
            return
        values = uniform_values(self.gm, example_inputs, {old for _, _, old in todo}, zero_channels=self.dropped())
        for node, arg, old in todo:
            stream, narrow = self.ids[node], self.ids[arg]
            target = _unique(f"{self._writer(arg)}_scatter", self.taken)
            at = _positions(stream, narrow)
            train_value, eval_value = values[old]
            scatter = ChannelScatter(at, len(stream), train_value.dim() - 2).to(train_value.device)
            wide = torch.tensor(_positions(self.old_ids(old), stream), device=train_value.device)
            for buf, value in ((scatter.train_value, train_value), (scatter.eval_value, eval_value)):
                buf.copy_(value.index_select(1, wide))
                buf[:, at] = 0  # the branch's own channels come from the branch
            self.root[target] = scatter
            with self.g.inserting_before(node):
                new = self.g.call_module(target, (arg,))
            node.replace_input_with(arg, new)

    def dropped(self) -> dict[str, torch.Tensor]:
        """Output channels each conv/linear loses, by old node name (zeroed when measuring the constants)."""
        out = {}
        for n in self.graph.nodes:
            if n.kind in ("conv", "linear") and n.target:
                image = self.graph.member_index(n.target, "out")
                space = self.graph.spaces[self.graph.module_spaces[n.target]["out"]]
                have = image if image is not None else range(space.size)
                kept = set(self.kept(n.target, "out"))
                gone = [j for j, c in enumerate(have) if c not in kept]
                if gone:
                    out[n.name] = torch.tensor(gone, dtype=torch.long)
        return out

    def _writer(self, node: fx.Node) -> str:
        """The layer whose output an addition's operand carries (names the scatter)."""
        while True:
            if node.op == "call_module" and computes_channels(self.module(node.target)):
                return node.target
            if len(node.all_input_nodes) != 1:
                return "pt"
            node = node.all_input_nodes[0]

    def index(self) -> GatedIndex:
        out = GatedIndex()
        for node in self.g.nodes:
            if node.op != "call_module" or node.target in self.root:
                continue
            mod, name = self.module(node.target), node.target
            if computes_channels(mod):
                for axis in ("in", "out"):
                    out.local[(name, axis)] = self._local(name, axis, self.kept(name, axis))
            elif has_role(mod, "bn", "const"):
                axis = rule_of(mod).role   # the channel space's name of a bn or const member
                out.local[(name, axis)] = self._local(name, axis, self.ids[node])
        return out

    def _local(self, module: str, axis: str, ids: Sequence[int]) -> torch.Tensor:
        return torch.tensor(_positions(self.graph.member_index(module, axis), ids), dtype=torch.long)


def regate(graph: ChannelGraph, plan: Plan, new_graph: fx.Graph, root: dict[str, Any],
           example_inputs: Sequence[torch.Tensor]) -> GatedIndex:
    """Rebuild ``new_graph``'s gathers and scatters for ``plan``; new modules go into ``root``."""
    r = _Regate(graph, plan, new_graph, root)
    joins = r.joins()
    r.drop_old_gates()
    r.propagate(joins)
    r.insert_gathers()
    r.insert_scatters(joins, example_inputs)
    new_graph.lint()
    return r.index()
