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


def test_readme_performance_figures_are_the_committed_raw_output():
    """Every figure of the performance table is the committed `bench speed --json` row of that name,
    formatted as `bench speed` prints it, with its target; the stated command wrote that file."""
    import json

    from bench import fmt

    section = README.read_text().split("## Performance", 1)[1].split("\n## ", 1)[0]
    command = re.search(r"```bash\n(bench speed [^\n]*--json (\S+))\n```", section)
    assert command, "the performance section states the command that wrote its JSON"
    data = json.loads((README.parent / command.group(2)).read_text())
    assert f"--model {data['model']} --batch-size {data['batch']}" in command.group(1)
    assert f"--threads {data['threads']}" in command.group(1)
    rows = {r["name"]: r for r in data["rows"]}
    table = re.findall(r"^\| (.+?) \| (.+?) \| (.*?) \|$", section.split("| figure (row of the JSON)", 1)[1], re.M)
    figures = [t for t in table if not set(t[0]) <= {"-"}]
    assert len(figures) >= 5
    for name, median, target in figures:
        assert name in rows, name
        assert median == fmt.measure(rows[name]["value"], rows[name]["unit"]), name
        assert target == (rows[name]["target"] or ""), name
    assert "--compile" not in section  # no claim without its measurement
