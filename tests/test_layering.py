"""The import layers of the code: every module imports only from lower layers (or inside its own package).

The layers follow how a run flows (README, "Layout"): the engine, then the
base of the harness (errors, config, fmt), the machine, the run folder, the
training, the commands, and the command line on top.  A command never imports
another command at its own layer (``replay`` does not import ``speed``); a
study (``sweep``) is made of runs and replays, so it sits one layer above them.
Imports inside functions count the same as those at the top of a module.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "prunetrain_core")

# (layer, unit): a unit is a package or a module; a module belongs to the longest unit that prefixes it.
LAYERS: dict[str, int] = {
    "prunetrain_core": 0,
    "bench": 1, "bench.errors": 1, "bench.config": 1, "bench.fmt": 1,
    "bench.machine": 2,
    "bench.runfolder": 3,
    "bench.training": 4,
    "bench.run": 5, "bench.check": 5, "bench.replay": 5, "bench.speed": 5, "bench.report": 5,
    "bench.sweep": 6,
    "bench.cli": 7, "bench.__main__": 8,
}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imports(module: str, path: Path, known: set[str]) -> dict[str, int]:
    """Project modules ``module`` imports anywhere in its body (lazy imports included), with a line of each."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            names = subs if len(subs) == len(node.names) else [base, *subs]
        else:
            continue
        for name in names:
            while name and name not in known:   # `import a.b.c` of a module: the module itself
                name = name.rpartition(".")[0]
            if name and name != module:
                found.setdefault(name, node.lineno)
    return found


def unit(module: str, layers: dict[str, int]) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in layers:
            return ".".join(parts[:n])
    raise KeyError(f"{module} has no layer: add its package to LAYERS")


def violations(graph: dict[str, dict[str, int]], layers: dict[str, int]) -> list[str]:
    """Imports of a higher layer, or of another unit at the same layer (a sibling command)."""
    bad = []
    for module, targets in sorted(graph.items()):
        src = unit(module, layers)
        for target, line in sorted(targets.items()):
            dst = unit(target, layers)
            if dst == src or target == src:  # inside its own package (the package's __init__ included)
                continue
            if layers[dst] > layers[src] or (layers[dst] == layers[src] and layers[src] >= LAYERS["bench.run"]):
                bad.append(f"{module}:{line} imports {target} (layer {layers[dst]} {dst}) from layer "
                           f"{layers[src]} {src}")
    return bad


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def graph_of_tree() -> dict[str, dict[str, int]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def test_every_import_lies_on_a_lower_layer():
    assert violations(graph_of_tree(), LAYERS) == []


def test_no_import_cycle():
    assert cycles(graph_of_tree()) == []


def test_every_module_has_a_layer():
    for module in modules():
        unit(module, LAYERS)


def test_training_does_not_import_the_commands_that_use_it():
    for module, targets in graph_of_tree().items():
        used = {unit(t, LAYERS) for t in targets}
        if unit(module, LAYERS) == "bench.training":
            assert not used & {"bench.speed", "bench.replay", "bench.run", "bench.check"}, module
        if unit(module, LAYERS) == "bench.replay":
            assert "bench.speed" not in used, module


# ------------------------------------------------------------------------- the checker itself, on made-up graphs

@pytest.mark.parametrize("graph,needle", [
    ({"bench.training.step": {"bench.speed.decisions": 3}}, "bench.training.step:3 imports bench.speed.decisions"),
    ({"bench.replay.run": {"bench.speed.timing": 7}}, "bench.replay.run:7 imports bench.speed.timing"),  # sibling
    ({"bench.machine.gpu": {"bench.runfolder.records": 1}}, "bench.machine.gpu:1 imports bench.runfolder.records"),
    ({"prunetrain_core.plan": {"bench.config": 2}}, "prunetrain_core.plan:2 imports bench.config"),
])
def test_the_checker_names_an_import_that_runs_up_the_layers(graph, needle):
    (line,) = violations(graph, LAYERS)
    assert line.startswith(needle)


def test_the_checker_accepts_imports_down_and_within_a_package():
    graph = {"bench.replay.run": {"bench.replay.fit": 1, "bench.training.step": 2, "bench.machine.timing": 3,
                                  "bench.config": 4, "prunetrain_core": 5},
             "bench.sweep": {"bench.run": 1, "bench.replay.run": 2},
             "bench.machine.gpu": {"bench.machine.hardware": 1, "bench.errors": 2}}
    assert violations(graph, LAYERS) == []


def test_the_checker_finds_a_cycle_even_through_a_lazy_import(tmp_path):
    (tmp_path / "a.py").write_text("from b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import y\n")
    known = {"a", "b"}
    graph = {m: imports(m, tmp_path / f"{m}.py", known) for m in known}
    assert graph == {"a": {"b": 1}, "b": {"a": 2}}
    assert cycles(graph) == [["a", "b"]]
