"""A committed report's README states only figures its raw records hold.

Each check below reads the records committed beside the README (run.json, epochs.csv, the replay
validation file) and fails when the README says something else.  The evidence README's table is not
typed at all: reports/evidence_table.py generates it from the records, and this test regenerates it.
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

REPORTS = Path(__file__).resolve().parent.parent / "reports"
READMES = sorted(p for p in REPORTS.glob("*/README.md"))


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _test_sizes(folder: Path) -> set[int]:
    sizes = set()
    for path in folder.rglob("run.json"):
        size = json.loads(path.read_text()).get("data", {}).get("test_size")
        if isinstance(size, int):
            sizes.add(size)
    return sizes


def test_every_report_folder_is_checked():
    assert len(READMES) >= 5


@pytest.mark.parametrize("readme", READMES, ids=lambda p: p.parent.name)
def test_test_set_sizes_are_the_recorded_ones(readme):
    """"N test images" in a README is a test_size some run.json of that folder records, and "the full"
    test split is claimed only where the records evaluated all 10,000."""
    text = " ".join(readme.read_text().split())
    sizes = _test_sizes(readme.parent)
    stated = [(m.group(0), _number(m.group(2))) for m in
              re.finditer(r"(full |whole )?(\d[\d,]*) test (images|JPEGs)", text)]
    for phrase, n in stated:
        assert sizes, f"{readme}: states '{phrase}' but holds no run.json"
        assert n in sizes, f"{readme}: states '{phrase}', its records hold test_size {sorted(sizes)}"
        if phrase.startswith(("full", "whole")):
            assert n == 10000, f"{readme}: '{phrase}' is not the full CIFAR-10 test split"


def test_checker_catches_a_wrong_test_size(tmp_path):
    """The check above can fail: a README claiming the full test split over 4,000-image records."""
    (tmp_path / "r" / "runs" / "x").mkdir(parents=True)
    (tmp_path / "r" / "runs" / "x" / "run.json").write_text(json.dumps({"data": {"test_size": 4000}}))
    (tmp_path / "r" / "README.md").write_text("accuracy on the full 10,000 test images\n")
    with pytest.raises(AssertionError, match="records hold test_size \\[4000\\]"):
        test_test_set_sizes_are_the_recorded_ones(tmp_path / "r" / "README.md")


def test_replay_example_cites_the_validation_files_error():
    validation = json.loads((REPORTS / "replay-validation" / "cpu-resnet20-2560.json").read_text())
    text = " ".join((REPORTS / "cifar10-replay-example" / "README.md").read_text().split())
    m = re.search(r"over-predicted a dense epoch by ([\d.]+) %", text)
    assert m, "the replay example states the validation's dense error"
    assert float(m.group(1)) == round(validation["modes"]["dense"]["error_pct"], 1)


def _evidence_module():
    spec = importlib.util.spec_from_file_location("evidence_table", REPORTS / "evidence_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EVIDENCE = [p for p in READMES if "<!-- evidence:start -->" in p.read_text()]


@pytest.mark.parametrize("readme", EVIDENCE, ids=lambda p: p.parent.name)
def test_evidence_tables_regenerate_from_the_records(readme):
    module = _evidence_module()
    text = readme.read_text()
    block = text.split(module.START, 1)[1].split(module.END, 1)[0]
    assert block == "\n" + module.evidence_markdown(readme.parent / "runs"), \
        f"{readme}: the evidence block differs from what its records give (python reports/evidence_table.py " \
        f"{readme.parent / 'runs'} {readme})"
