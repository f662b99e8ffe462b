"""A committed report's README states only figures its raw records hold.

Each check below reads the records committed beside the README (run.json, epochs.csv, the replay
validation file) and fails when the README says something else.  The evidence README's table is not
typed at all: reports/evidence_table.py generates it from the records, and this test regenerates it.
"""
from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
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
def test_evidence_readme_blocks_regenerate_from_the_records(readme):
    """Every generated block -- the recipe's and the first recipe's tables with their verdicts, every seed's final
    accuracies, the recipe choice on the validation split, the ablations -- is what reports/evidence_table.py
    makes of the committed records."""
    module = _evidence_module()
    text = readme.read_text()
    blocks = module.readme_blocks(readme.parent)
    assert len(blocks) == 5
    for (start, end), expected in blocks.items():
        assert start in text and end in text, f"{readme}: no {start} block"
        block = text.split(start, 1)[1].split(end, 1)[0]
        assert block == "\n" + expected, \
            f"{readme}: the {start} block differs from what its records give (python reports/evidence_table.py " \
            f"{readme.parent})"


def test_the_recipe_choice_reads_validation_accuracy_and_flags_a_stopped_run(tmp_path):
    """selection_markdown compares validation accuracy at the same seed and epoch, and a ratio holds only when
    every seed trained all its epochs within 2 points of dense: a stopped run or a far gap does not hold."""
    from bench.runfolder.records import write_epochs
    from report_fixtures import FakeRun, _row

    module = _evidence_module()

    def run(parent, name, lpr, seed, val, modes, epochs=2):
        folder = parent / name
        folder.mkdir(parents=True)
        archs = [{"epoch": 0, "train_flops_per_image": 100.0}, {"epoch": 1, "train_flops_per_image": 40.0}]
        meta = {"config": {"seed": seed, "lpr": lpr, "epochs": epochs, "keep_bn_scale": True},
                "modes": {m: {"architectures": archs} for m in modes}}
        (folder / "run.json").write_text(json.dumps(meta))
        fake = FakeRun(run_id=name, epochs=epochs)
        write_epochs(folder / "epochs.csv", [{**_row(fake, mode, epoch), "val_acc": acc, "test_acc": 99.0}
                                             for mode in modes for epoch, acc in enumerate(val[mode], 1)])

    runs, sel = tmp_path / "runs", tmp_path / "selection"
    run(runs, "s0", 0.9, 0, {"dense": [50.0, 60.0], "prunetrain": [40.0, 59.0]}, ["dense", "prunetrain"])
    run(runs, "s1", 0.9, 1, {"dense": [52.0, 62.0], "prunetrain": [41.0, 61.5]}, ["dense", "prunetrain"])
    run(sel, "a", 0.95, 0, {"prunetrain": [30.0, 50.0]}, ["prunetrain"])
    run(sel, "b", 0.95, 1, {"prunetrain": [31.0]}, ["prunetrain"])
    md = module.selection_markdown(runs, sel)
    assert "| the recipe | 0 | 0.400 | 2 of 2 | 59.00 | 60.00 | -1.00 |" in md
    assert "| ratio 0.95 | 0 | 0.400 | 2 of 2 | 50.00 | 60.00 | -10.00 |" in md
    assert "| ratio 0.95 | 1 | 0.400 | 1 of 2 (stopped) | 31.00 | 52.00 | -21.00 |" in md
    assert md.rstrip().endswith("every seed: the recipe (2 seeds).")


def test_the_project_readme_states_the_cpu_evidence_as_its_records_give_it():
    """README.md's verdict block on the CPU evidence is generated from reports/cifar10-cpu-evidence/runs."""
    module = _evidence_module()
    text = (REPORTS.parent / "README.md").read_text()
    assert module.SUMMARY_START in text, "README.md cites the CPU evidence through its generated block"
    block = text.split(module.SUMMARY_START, 1)[1].split(module.SUMMARY_END, 1)[0]
    expected = module.summary_markdown(REPORTS / "cifar10-cpu-evidence")
    assert block == "\n" + expected, "README.md's CPU evidence block differs from its records (python " \
        "reports/evidence_table.py reports/cifar10-cpu-evidence README.md --summary)"


def test_the_evidence_readings_hold_in_the_records():
    """The words of reports/cifar10-cpu-evidence/README.md's "Reading", checked seed by seed against the records:
    with the recipe, PruneTrain and small-dense each end above dense on every seed, PruneTrain above small-dense
    on every seed, and small-dense trains on fewer FLOPs than PruneTrain; with the first recipe, PruneTrain ends
    below dense on every seed."""
    module = _evidence_module()
    evidence = REPORTS / "cifar10-cpu-evidence"
    text = (evidence / "README.md").read_text()
    for words in ("PruneTrain ends above dense, on every seed", "also ends\n  above dense on every seed",
                  "PruneTrain ends above\n  `small-dense` on every seed", "the cheaper of the two",
                  "PruneTrain ends below dense on every seed"):
        assert words in text, words

    def final(run, mode):
        return float(run.mode_epochs(mode)["test_acc"].iloc[-1])

    def flops(run, mode):
        return float(run.mode_epochs(mode)["train_flops"].sum())

    recipe, _ = module.compared_runs(evidence / "runs", evidence / "first-recipe")
    assert len(recipe) == 3
    for run in recipe:
        assert final(run, "prunetrain") > final(run, "small-dense") > final(run, "dense")
        assert flops(run, "small-dense") < flops(run, "prunetrain")
    first, _ = module.compared_runs(evidence / "first-recipe")
    assert len(first) == 3 and all(final(run, "prunetrain") < final(run, "dense") for run in first)
    assert "under a tenth of the training FLOPs saved on every seed measured" in text
    dense = {run.config["seed"]: flops(run, "dense") for run in recipe}
    penalise_all = [r for r in module.load_runs([evidence / "ablations"]).runs if r.config.get("penalise") == "all"]
    assert penalise_all and all(flops(r, "prunetrain") > 0.9 * dense[r.config["seed"]] for r in penalise_all)


def _methods_module():
    sys.path.insert(0, str(REPORTS))   # methods_table reuses evidence_table's pairing of borrowed dense runs
    spec = importlib.util.spec_from_file_location("methods_table", REPORTS / "methods_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


METHODS = REPORTS / "cifar10-cpu-methods"


def test_methods_readme_blocks_regenerate_from_the_records():
    """The method comparison's tables and its verdict (which method gave the most accuracy for its training
    time, where PruneTrain stands) are what reports/methods_table.py makes of the committed records."""
    module = _methods_module()
    text = (METHODS / "README.md").read_text()
    for (start, end), expected in module.readme_blocks(METHODS, REPORTS / "cifar10-cpu-evidence" /
                                                       "first-recipe").items():
        assert start in text and end in text, f"no {start} block"
        assert text.split(start, 1)[1].split(end, 1)[0] == "\n" + expected, \
            f"the {start} block differs from its records (python reports/methods_table.py {METHODS} " \
            "reports/cifar10-cpu-evidence/first-recipe)"


def test_the_method_comparison_holds_the_evidence_runs_unchanged():
    """Its PruneTrain and control rows are the evidence study's, record for record: the methods were added to
    copies of those folders (bench run --methods-of), nothing retrained."""
    evidence = {p.name: p for p in (REPORTS / "cifar10-cpu-evidence" / "runs").iterdir()}
    for folder in sorted((METHODS / "runs").iterdir()):
        mine = [r for r in (folder / "epochs.csv").read_text().splitlines()[1:] if ",slimming," not in r
                and ",earlybird," not in r and ",random," not in r]
        assert mine == (evidence[folder.name] / "epochs.csv").read_text().splitlines()[1:]


def test_the_gain_at_equal_cpu_time_reads_dense_at_its_last_epoch_within_the_time_and_calls_ties():
    import pandas as pd

    module = _methods_module()
    dense = pd.DataFrame({"cpu_time_s": [100.0, 100.0, 100.0], "test_acc": [40.0, 50.0, 60.0]})
    assert module._acc_within(dense, 250.0) == 50.0 and module._acc_within(dense, 300.0) == 60.0
    assert math.isnan(module._acc_within(dense, 99.0))

    def seeds(gains: dict[str, list[float]]) -> dict:
        return {s: {m: {"gain": g[s], "final_acc": 60 + g[s], "flops_saved": 40.0, "drawn": True}
                    for m, g in gains.items()} for s in range(3)}

    tie = module.verdict_markdown(seeds({"prunetrain": [5.0, 1.0, 3.0], "slimming": [2.0, 4.0, 2.5]}))
    assert "→ **not distinguishable**" in tie and "do not distinguish it from Network Slimming." in tie
    ahead = module.verdict_markdown(seeds({"prunetrain": [1.0, 2.0, 1.5], "slimming": [5.0, 6.1, 5.4]}))
    assert "Most accuracy per unit of training time on this CPU: Network Slimming**." in ahead
    assert "→ **Network Slimming ahead**" in ahead and "PruneTrain stands 2 of 2" in ahead


def test_the_project_readme_states_the_method_comparison_as_its_records_give_it():
    module = _methods_module()
    text = (REPORTS.parent / "README.md").read_text()
    block = text.split(module.VERDICT_START, 1)[1].split(module.VERDICT_END, 1)[0]
    expected = module.readme_blocks(METHODS, REPORTS / "cifar10-cpu-evidence" / "first-recipe")
    assert block == "\n" + expected[(module.VERDICT_START, module.VERDICT_END)], \
        "README.md's method verdict differs from its records (python reports/methods_table.py " \
        "reports/cifar10-cpu-methods reports/cifar10-cpu-evidence/first-recipe --readme README.md)"
