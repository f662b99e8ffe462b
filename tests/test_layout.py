"""The code's shape: no import cycles, every module importable first, modules of a readable size, README layout.

These hold the structure of issue 13 in place: a cycle hidden behind a lazy
import, a module that only imports after another one, a 1,000-line module or
a README layout that lists files that moved would each fail here.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from test_layering import cycles, imports, modules

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 420  # "about 400"
# A module may be longer when its docstring says why, with this phrase.
LONG_REASON = "Over 400 lines on purpose"
MAX_CLASS_LINES = 210  # "about 200"
LONG_CLASS_REASON = "Over 200 lines on purpose"


MODULES = modules()


def _imports(module: str, path: Path) -> set[str]:
    """Project modules that ``module`` imports anywhere in its body (lazy imports included)."""
    return set(imports(module, path, set(MODULES)))


def test_no_import_cycle_even_through_lazy_imports():
    graph = {m: _imports(m, p) for m, p in MODULES.items()}
    assert cycles(graph) == []
    assert "bench.training.train" not in graph["bench.training.decisions"]  # training imports the decisions, not back


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module imported before any other project module (torch stays loaded: only the order is tested)."""
    code = (
        "import sys, importlib, torch\n"
        f"names = {sorted(m for m in MODULES if not m.endswith('__main__'))!r}\n"
        "bad = []\n"
        "for name in names:\n"
        "    for m in [m for m in sys.modules if m.split('.')[0] in ('bench', 'prunetrain_core')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        bad.append(f'{name}: {exc!r}')\n"
        "print('\\n'.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_bench_modules_are_short_or_say_why():
    long = []
    for name, path in MODULES.items():
        if not name.startswith("bench"):
            continue
        text = path.read_text()
        if text.count("\n") > MAX_LINES and LONG_REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{name} ({text.count(chr(10))} lines)")
    assert long == []


def test_bench_classes_are_short_or_say_why():
    """A class that does several jobs cannot be used one part at a time: each over ~200 lines says why."""
    long = []
    for name, path in MODULES.items():
        if name.startswith("bench"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES \
                        and LONG_CLASS_REASON not in (ast.get_docstring(node) or ""):
                    long.append(f"{name}.{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


def test_readme_layout_lists_exactly_the_modules():
    """Every module file in the README's layout block exists, and every module of bench/ is in it."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Layout\n.*?```\n(.*?)```", text, re.S).group(1)
    named: set[str] = set()
    top = folder = ""
    for line in block.splitlines():
        head = re.match(r"^(\S+/)", line)
        sub = re.match(r"^ {1,4}(\S+/)", line)  # "  report/  load.py ...": a folder inside the one above
        if head:
            top = folder = head.group(1)
        elif sub:
            folder = top + sub.group(1)
        named.update(folder + name for name in re.findall(r"\b\w+\.py\b", line))
    listed = {p for p in named}
    missing_files = sorted(p for p in listed if not (ROOT / p).is_file())
    assert missing_files == [], "README layout names files that do not exist"
    actual = {str(p.relative_to(ROOT)) for p in (ROOT / "bench").rglob("*.py") if p.name != "__init__.py"
              and p.name != "__main__.py"}
    assert sorted(actual - listed) == [], "modules missing from the README layout"
