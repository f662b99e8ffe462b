"""Architecture as plain data, and back: for checkpoints, exports, logs and reports.

``describe(model)`` serialises the traced graph (nodes with their targets and
arguments) and every module's constructor arguments into JSON-friendly data;
``rebuild(arch, state_dict)`` turns that data back into a module without the
original class or the run's history.  ``channels`` and the counts are a
compact summary for logs and plots.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import fx, nn

from .graph import KNOWN_FUNCTIONS, UnsupportedModelError, function_name, trace
from .rules import RULES, rule_of

FORMAT = 1

#: layer types by name, as the architecture data names them (their arguments: prunetrain_core.rules)
_MODULE_TYPES = {t.__name__: t for t in RULES}


def describe(model: nn.Module, example_input: torch.Tensor | None = None) -> dict:
    """The model's architecture as JSON-friendly data (no weights)."""
    gm = trace(model)
    modules: dict[str, dict] = {}
    nodes = []
    for node in gm.graph.nodes:
        entry = {"name": node.name, "op": node.op, "args": _encode(node.args), "kwargs": _encode(node.kwargs)}
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            modules[node.target] = _module_spec(mod, node.target)
            entry["target"] = node.target
        elif node.op == "call_function":
            name = function_name(node.target)
            if name is None:
                raise UnsupportedModelError(f"operation '{node.name}' ({node.target}) cannot be described")
            entry["target"] = name
        else:
            entry["target"] = node.target
        nodes.append(entry)
    arch = {
        "format": FORMAT,
        "class_name": type(model).__name__,
        "nodes": nodes,
        "modules": modules,
        "channels": channels(model),
        "params": sum(p.numel() for p in model.parameters()),
    }
    return arch


def channels(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv and linear layer, in the order the forward pass runs them."""
    if isinstance(model, fx.GraphModule):
        names = [n.target for n in model.graph.nodes if n.op == "call_module"]
        layers = [(n, model.get_submodule(n)) for n in dict.fromkeys(names)]
    else:
        layers = list(model.named_modules())
    out = {}
    for name, mod in layers:
        rule = rule_of(mod)
        if rule is not None and rule.out_width:
            out[name] = getattr(mod, rule.out_width)
    return out


def rebuild(arch: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor] | None = None) -> fx.GraphModule:
    """Rebuild a model from :func:`describe` data; load ``state_dict`` strictly if given."""
    if arch.get("format") != FORMAT:
        raise ValueError(f"unsupported architecture format {arch.get('format')!r} (expected {FORMAT})")
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    root: dict[str, Any] = {}
    for name, spec in arch["modules"].items():
        root[name] = _build_module(name, spec)
    for entry in arch["nodes"]:
        op, target = entry["op"], entry["target"]
        args = _decode(entry["args"], env)
        kwargs = _decode(entry["kwargs"], env)
        if op == "output":
            env[entry["name"]] = graph.output(args[0])
            continue
        if op == "call_function":
            if target not in KNOWN_FUNCTIONS:
                raise ValueError(f"unknown function {target!r} in architecture data")
            target = KNOWN_FUNCTIONS[target]
        node = graph.create_node(op, target, tuple(args), dict(kwargs), name=entry["name"])
        env[entry["name"]] = node
    model = fx.GraphModule(root, graph, class_name=str(arch.get("class_name", "PrunedModel")))
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model


# --------------------------------------------------------------------------- helpers
def _module_spec(mod: nn.Module, name: str) -> dict:
    t = type(mod)
    if t not in RULES:   # the exact type: a subclass would be rebuilt as its base class
        raise UnsupportedModelError(f"layer '{name}' ({t.__name__}) cannot be described")
    rule = RULES[t]
    kwargs = {a: _plain(getattr(mod, a)) for a in rule.args}
    if rule.computes_channels:
        kwargs["bias"] = mod.bias is not None
    return {"type": t.__name__, "kwargs": kwargs}


def _build_module(name: str, spec: Mapping) -> nn.Module:
    t = _MODULE_TYPES.get(spec.get("type"))
    if t is None:
        raise ValueError(f"layer '{name}': unknown layer type {spec.get('type')!r} in architecture data")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec["kwargs"].items()}
    return t(**kwargs)


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _encode(v: Any) -> Any:
    if isinstance(v, fx.Node):
        return {"node": v.name}
    if isinstance(v, tuple):
        return {"tuple": [_encode(x) for x in v]}
    if isinstance(v, list):
        return [_encode(x) for x in v]
    if isinstance(v, dict):
        return {"dict": {k: _encode(x) for k, x in v.items()}}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, torch.dtype):
        return {"dtype": str(v).replace("torch.", "")}
    raise UnsupportedModelError(f"argument {v!r} of type {type(v).__name__} cannot be described")


def _decode(v: Any, env: Mapping[str, fx.Node]) -> Any:
    if isinstance(v, dict):
        if "node" in v:
            return env[v["node"]]
        if "tuple" in v:
            return tuple(_decode(x, env) for x in v["tuple"])
        if "dict" in v:
            return {k: _decode(x, env) for k, x in v["dict"].items()}
        if "dtype" in v:
            return getattr(torch, v["dtype"])
        raise ValueError(f"malformed argument {v!r} in architecture data")
    if isinstance(v, list):
        return [_decode(x, env) for x in v]
    return v
