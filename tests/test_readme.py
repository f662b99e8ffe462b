"""The README's API example runs as written."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_api_example_runs():
    text = README.read_text()
    section = text.split("## Library API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    lines = out.getvalue().split()
    assert lines[0] == "44"
    assert float(lines[1]) > 1e8


def test_readme_quick_start_commands_are_the_ci_ones():
    text = README.read_text()
    assert "bench run --profile smoke && .venv/bin/bench report" in text
    assert "-m pytest -q" in text
    assert "-m pytest -q" in (README.parent / ".ci" / "run").read_text()
