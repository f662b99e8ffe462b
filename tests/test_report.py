"""`bench report` as a library: numbers against the records, damaged input, output files."""
from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.errors import RecordError
from bench.runfolder.records import EPOCH_FIELDNAMES, atomic_write_json
from bench.report import build_report, load_runs
from bench.report.aggregate import batch_sequence
from bench.report.plots import PLOT_NAMES as ALL_PLOT_NAMES

# every plot but the one-trajectory plot, which needs runs of one trajectory (bench replay; tests/test_replay.py)
PLOT_NAMES = [n for n in ALL_PLOT_NAMES if n != "trajectory.png"]
from report_fixtures import FakeRun, run_json, standard_runs, write_run

GTX = "NVIDIA GeForce GTX 1070"
CPU_LABEL = "cpu: AMD EPYC 7B13 (emulating gtx750ti)"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------
# helpers

def _mode_rows(fr: FakeRun, mode: str) -> list[dict]:
    return [r for r in fr.rows if r["mode"] == mode]


def expected_metrics(fr: FakeRun) -> dict[str, float]:
    """The table's per-run numbers computed straight from the rows written."""
    d, p = _mode_rows(fr, "dense"), _mode_rows(fr, "prunetrain")
    dt = sum(r["epoch_time_s"] + r["reconfig_time_s"] for r in d)
    pt = sum(r["epoch_time_s"] + r["reconfig_time_s"] for r in p)
    df = sum(r["train_flops"] for r in d)
    pf = sum(r["train_flops"] for r in p)
    ts, fs = 100 * (1 - pt / dt), 100 * (1 - pf / df)
    return {
        "dense_time_s": dt, "prunetrain_time_s": pt, "time_saved_pct": ts,
        "train_flops_saved_pct": fs, "time_per_flops_saved": ts / fs,
        "inference_flops_saved_pct": 100 * (1 - p[-1]["inference_flops"] / d[-1]["inference_flops"]),
        "dense_peak_memory_bytes": max(r["peak_memory_bytes"] for r in d),
        "prunetrain_peak_memory_bytes": max(r["peak_memory_bytes"] for r in p),
        "dense_final_acc": d[-1]["test_acc"], "prunetrain_final_acc": p[-1]["test_acc"],
        "dense_best_acc": max(r["test_acc"] for r in d),
        "prunetrain_best_acc": max(r["test_acc"] for r in p),
    }


@pytest.fixture
def results(tmp_path: Path) -> tuple[Path, list[FakeRun]]:
    root = tmp_path / "results"
    runs = standard_runs()
    for fr in runs:
        write_run(root, fr)
    return root, runs


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    """One report of the standard runs, shared by the tests that only read it (plots are slow)."""
    tmp = tmp_path_factory.mktemp("standard")
    runs = standard_runs()
    for fr in runs:
        write_run(tmp / "results", fr)
    res = build_report([tmp / "results"], tmp / "out", title="My title")
    return res, runs


def _row(table, device: str):
    rows = table[table["device"] == device]
    assert len(rows) == 1, table[["device", "model"]]
    return rows.iloc[0]


def _csv_lines(folder: Path) -> list[str]:
    return (folder / "epochs.csv").read_text().splitlines(keepends=True)


class _Refs(HTMLParser):
    """Every URL-bearing attribute and tag name of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.imgs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "poster", "data", "action", "xlink:href"):
                self.refs.append((tag, name, value or ""))
            if tag == "img" and name == "src":
                self.imgs.append(value or "")


# --------------------------------------------------------------------------
# the numbers

def test_table_numbers_match_records(standard):
    res, runs = standard
    assert res.warnings == []
    assert len(res.table) == 2

    gtx = _row(res.table, GTX)
    assert gtx["n"] == 3 and gtx["model"] == "resnet32" and gtx["dataset"] == "cifar10"
    assert gtx["epochs"] == 6
    per_run = [expected_metrics(fr) for fr in runs[:3]]
    for name in per_run[0]:
        values = [m[name] for m in per_run]
        # mean and 95 % t-interval over the three seeds (t(0.975, 2) = 4.303, from any statistics table)
        half = 4.303 * statistics.stdev(values) / 3 ** 0.5
        assert gtx[name] == pytest.approx(statistics.mean(values)), name
        assert gtx[f"{name}_lo"] == pytest.approx(statistics.mean(values) - half), name
        assert gtx[f"{name}_hi"] == pytest.approx(statistics.mean(values) + half), name
    assert gtx["batch_sizes"] == "128→256→384"

    cpu = _row(res.table, CPU_LABEL)
    assert cpu["n"] == 1 and bool(cpu["emulated"]) and cpu["profile"] == "gtx750ti"
    for name, value in expected_metrics(runs[3]).items():
        assert cpu[name] == pytest.approx(value), name


def test_training_time_includes_reconfiguration(standard):
    res, runs = standard
    cpu = _row(res.table, CPU_LABEL)
    p = _mode_rows(runs[3], "prunetrain")
    reconfig = sum(r["reconfig_time_s"] for r in p)
    assert reconfig > 0
    assert cpu["prunetrain_time_s"] == pytest.approx(sum(r["epoch_time_s"] for r in p) + reconfig)
    assert cpu["prunetrain_reconfig_time_s"] == pytest.approx(reconfig)
    # evaluation is not training time
    assert cpu["dense_time_s"] == pytest.approx(sum(r["epoch_time_s"] for r in _mode_rows(runs[3], "dense")))


def test_accuracy_final_and_best_differ(standard):
    res, runs = standard
    cpu = _row(res.table, CPU_LABEL)
    p = _mode_rows(runs[3], "prunetrain")
    assert cpu["prunetrain_final_acc"] == pytest.approx(p[-1]["test_acc"])
    assert cpu["prunetrain_best_acc"] == pytest.approx(p[-2]["test_acc"])
    assert cpu["prunetrain_best_acc"] > cpu["prunetrain_final_acc"]


def test_markdown_shows_mean_with_confidence_interval(standard):
    res, runs = standard
    md = (res.out_dir / "report.md").read_text()
    gtx = _row(res.table, GTX)
    # dense time: mean of 114/120/132 s = 122 s, 95 % CI 122 ± 4.303 · 9.165 / √3 = 99.2–144.8 s, in minutes
    times = sorted(expected_metrics(fr)["dense_time_s"] for fr in runs[:3])
    assert times == pytest.approx([114.0, 120.0, 132.0])
    assert "2.03 (1.65–2.41) min" in md
    acc = [expected_metrics(fr)["dense_final_acc"] for fr in runs[:3]]
    half = 4.303 * statistics.stdev(acc) / 3 ** 0.5
    mean = statistics.mean(acc)
    assert f"{mean:.1f} ({mean - half:.1f}–{mean + half:.1f})" in md
    assert "95 % CI over 3 seeds" in md          # the first finding states its interval
    assert "128→256→384" in md
    assert "Σ epoch\\_time\\_s + Σ reconfig\\_time\\_s" in md  # the definition, stated
    assert "| 3 |" in md  # n


def test_batch_sequence():
    assert batch_sequence([128, 128, 256, 256, 384]) == "128→256→384"
    assert batch_sequence([128.0, float("nan"), 96]) == "128→96"
    assert batch_sequence([]) == "?"


def test_report_files_written(standard):
    res, _ = standard
    out = res.out_dir
    names = {p.name for p in res.files}
    assert {"report.md", "report.html", *PLOT_NAMES} <= names
    for p in res.files:
        assert p.parent == out and p.stat().st_size > 0
    for name in PLOT_NAMES:
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    md = (out / "report.md").read_text()
    assert md.startswith("# My title")
    for name in PLOT_NAMES:
        assert f"]({name})" in md
    assert "## How it was measured" in md
    assert "Emulation does not model" in md
    assert "Intel Core i7-7700K" in md and "AMD EPYC 7B13" in md


def test_html_is_self_contained(standard):
    res, _ = standard
    page = (res.out_dir / "report.html").read_text()
    parser = _Refs()
    parser.feed(page)
    assert len(parser.imgs) == len(PLOT_NAMES)
    for tag, attr, value in parser.refs:
        assert tag == "img" and attr == "src" and value.startswith("data:image/png;base64,"), (tag, attr, value[:60])
    assert "link" not in parser.tags and "iframe" not in parser.tags
    assert not re.search(r"https?://", page)
    assert "@import" not in page and "url(" not in page


def test_names_from_records_are_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    fr = FakeRun("run-evil", model=evil, device="GPU <b>&\"x\"</b>")
    write_run(tmp_path / "results", fr)
    res = build_report([tmp_path / "results"], tmp_path / "out")
    page = (res.out_dir / "report.html").read_text()
    assert evil not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only the report's own image check
    md = (res.out_dir / "report.md").read_text()
    assert evil not in md and "&lt;script&gt;" in md


# --------------------------------------------------------------------------
# finding runs

def test_paths_may_be_run_folder_file_or_parent(results, tmp_path):
    root, runs = results
    one = root / runs[3].run_id
    assert len(load_runs([one]).runs) == 1
    assert len(load_runs([one / "epochs.csv"]).runs) == 1
    assert len(load_runs([tmp_path]).runs) == 4
    res = load_runs([root, tmp_path / "nope"])
    assert len(res.runs) == 4
    assert any("nope" in w and "no such" in w for w in res.warnings)


def test_nothing_usable_raises_record_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordError) as e:
        build_report([tmp_path / "empty"], tmp_path / "out")
    assert "\n" not in str(e.value) and "empty" in str(e.value)

    bad = tmp_path / "bad" / "r1"
    bad.mkdir(parents=True)
    (bad / "epochs.csv").write_text("this is,not,a record\n1,2,3\n")
    (bad / "run.json").write_text("{oops")
    with pytest.raises(RecordError) as e:
        build_report([tmp_path / "bad"], tmp_path / "out")
    assert "\n" not in str(e.value)
    assert any("epochs.csv:1" in w for w in e.value.warnings)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dense_done, pt_done", [(6, 2), (0, 0)])
def test_only_incomplete_runs_raise_record_error(tmp_path, dense_done, pt_done):
    write_run(tmp_path / "r", FakeRun("run-live", status="running", dense_done=dense_done,
                                      pt_done=pt_done))
    with pytest.raises(RecordError) as e:
        build_report([tmp_path / "r"], tmp_path / "out")
    assert "1 in progress" in str(e.value) and "\n" not in str(e.value)
    assert any("run-live" in w and "in progress" in w for w in e.value.warnings)


# --------------------------------------------------------------------------
# damaged records: each named, skipped, the rest still reported

def _damaged_tree(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "results"
    for fr in standard_runs():
        write_run(root, fr)
    d: dict[str, Path] = {}
    extra = root / "copied-from-laptop"

    # torn last line (killed mid-write): the last PruneTrain epoch is cut in half
    d["torn"] = write_run(extra, FakeRun("torn-run"))
    lines = _csv_lines(d["torn"])
    (d["torn"] / "epochs.csv").write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])

    # a garbage line in the middle (an extra line: the run is still complete)
    d["garbage"] = write_run(extra, FakeRun("garbage-run", device="Tesla T4"))
    lines = _csv_lines(d["garbage"])
    lines.insert(4, "\x00\x00garbage from a bad copy\n")
    (d["garbage"] / "epochs.csv").write_text("".join(lines))

    # an unparsable value: epoch_time_s of line 3 is not a number
    d["value"] = write_run(extra, FakeRun("value-run", device="Tesla P100"))
    lines = _csv_lines(d["value"])
    fields = lines[2].split(",")
    fields[EPOCH_FIELDNAMES.index("epoch_time_s")] = "12.5s"
    lines[2] = ",".join(fields)
    (d["value"] / "epochs.csv").write_text("".join(lines))

    # wrong header
    d["header"] = write_run(extra, FakeRun("header-run", device="Tesla V100"))
    lines = _csv_lines(d["header"])
    lines[0] = "a,b,c\n"
    (d["header"] / "epochs.csv").write_text("".join(lines))

    # run.json missing: still compared from epochs.csv alone
    d["nojson"] = write_run(extra, FakeRun("nojson-run", device="NVIDIA GeForce RTX 3090"))
    (d["nojson"] / "run.json").unlink()

    # run.json invalid JSON
    d["badjson"] = write_run(extra, FakeRun("badjson-run", device="NVIDIA A100"))
    (d["badjson"] / "run.json").write_text('{"schema_version": 1, "run_id": "badjson-run",\n  "status": ')

    # run.json unreadable (a folder where the file should be)
    d["unreadable"] = write_run(extra, FakeRun("unreadable-run", device="NVIDIA L4"))
    (d["unreadable"] / "run.json").unlink()
    (d["unreadable"] / "run.json").mkdir()

    # older format: run.json without schema_version, CSV rows of version 0 lacking columns
    old = FakeRun("old-run", device="NVIDIA GeForce GTX 750 Ti")
    d["old"] = write_run(extra, old)
    meta = run_json(old)
    del meta["schema_version"]
    atomic_write_json(d["old"] / "run.json", meta)
    keep = [c for c in EPOCH_FIELDNAMES if c not in ("comm_wait_s", "grad_bytes_per_step")
            and not c.startswith(("func_", "prune_"))]
    out = [",".join(keep) + "\n"]
    for r in old.rows:
        out.append(",".join("0" if c == "schema_version" else repr(r[c]) if isinstance(r[c], float)
                            else "" if r[c] is None else str(r[c]) for c in keep) + "\n")
    (d["old"] / "epochs.csv").write_text("".join(out))

    # still running: PruneTrain at epoch 3 of 6
    d["running"] = write_run(extra, FakeRun("running-run", device="NVIDIA RTX A4000",
                                            status="running", pt_done=3))

    # PruneTrain diverged
    d["failed"] = write_run(extra, FakeRun("failed-run", device="NVIDIA H100", status="failed",
                                           pt_done=2, pt_status="failed"))

    # the same run copied twice
    d["dup"] = tmp_path / "elsewhere" / standard_runs()[3].run_id
    shutil.copytree(root / standard_runs()[3].run_id, d["dup"])
    return root, d


def test_damaged_records_warn_and_rest_is_reported(tmp_path):
    root, d = _damaged_tree(tmp_path)
    res = build_report([root, tmp_path / "elsewhere"], tmp_path / "out")
    w = res.warnings
    text = "\n".join(w)

    def has(*parts: str) -> bool:
        return any(all(p in line for p in parts) for line in w)

    n_torn = len(_csv_lines(d["torn"]))
    assert has(f"{d['torn'] / 'epochs.csv'}:{n_torn}", "incomplete")
    assert has("torn-run", "incomplete", "prunetrain 5/6 epochs")
    assert has(f"{d['garbage'] / 'epochs.csv'}:5", "fields, expected")
    assert has(f"{d['value'] / 'epochs.csv'}:3", "epoch_time_s", "12.5s")
    assert has("value-run", "dense 5/6 epochs (missing 2)")
    assert has(f"{d['header'] / 'epochs.csv'}:1", "not an epochs.csv header")
    assert has(str(d["nojson"] / "run.json"), "missing")
    assert has(f"{d['badjson'] / 'run.json'}:2", "invalid JSON")
    assert has(str(d["unreadable"] / "run.json"), "cannot read")
    assert has(str(d["old"] / "run.json"), "older record format", "no schema_version")
    assert has(str(d["old"] / "epochs.csv"), "schema_version 0")
    assert has("running-run", "in progress", "prunetrain 3/6")
    assert has("failed-run", "prunetrain failed")
    assert has("found in more than one folder", str(d["dup"]),
               str(root / standard_runs()[3].run_id))
    assert "Traceback" not in text

    devices = set(res.table["device"])
    # good, plus the ones still usable despite damage
    assert {GTX, CPU_LABEL, "Tesla T4", "NVIDIA GeForce RTX 3090", "NVIDIA A100", "NVIDIA L4",
            "NVIDIA GeForce GTX 750 Ti"} == devices
    assert _row(res.table, GTX)["n"] == 3
    assert _row(res.table, CPU_LABEL)["n"] == 1  # the duplicate copy is counted once
    # an older-format run still yields its numbers
    old = _row(res.table, "NVIDIA GeForce GTX 750 Ti")
    assert old["time_saved_pct"] == pytest.approx(_row(res.table, GTX)["time_saved_pct"])

    runs = res.runs.set_index("run_id")
    assert runs.loc["running-run", "status"] == "running"
    assert not runs.loc["running-run", "compared"]
    md = (res.out_dir / "report.md").read_text()
    assert "still in progress" in md and "running-run" in md
    page = (res.out_dir / "report.html").read_text()
    assert "still in progress" in page
    assert "torn-run" in page  # warnings are listed in the report too


def test_running_run_with_all_epochs_is_compared_and_flagged(tmp_path):
    write_run(tmp_path / "r", FakeRun("run-nearly", status="running"))
    res = build_report([tmp_path / "r"], tmp_path / "out")
    assert len(res.table) == 1 and bool(res.table.iloc[0]["in_progress"])
    assert "(in progress)" in (res.out_dir / "report.md").read_text()


def test_windows_line_endings_and_bom_are_read(tmp_path):
    folder = write_run(tmp_path / "r", FakeRun("run-crlf"))
    text = (folder / "epochs.csv").read_text()
    (folder / "epochs.csv").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    res = load_runs([tmp_path / "r"])
    assert res.warnings == [] and len(res.runs[0].epochs) == 12


def test_newer_schema_version_is_read_with_warning(tmp_path):
    fr = FakeRun("run-future")
    folder = write_run(tmp_path / "r", fr)
    meta = json.loads((folder / "run.json").read_text())
    meta["schema_version"] = 7
    atomic_write_json(folder / "run.json", meta)
    res = load_runs([tmp_path / "r"])
    assert len(res.runs) == 1
    assert any("schema_version 7" in w and "newer" in w for w in res.warnings)


def test_many_bad_rows_are_summarised(tmp_path):
    folder = write_run(tmp_path / "r", FakeRun("run-noisy"))
    lines = _csv_lines(folder)
    (folder / "epochs.csv").write_text("".join(lines + ["x\n"] * 20))
    res = load_runs([tmp_path / "r"])
    assert len([w for w in res.warnings if "fields, expected" in w]) == 5
    assert any("15 more damaged rows" in w for w in res.warnings)


def test_stale_plots_are_removed_and_out_must_be_a_folder(results, tmp_path):
    root, _ = results
    out = tmp_path / "out"
    out.mkdir()
    (out / "channels.png").write_bytes(b"old")
    for fr_dir in root.iterdir():  # no architectures -> no channels plot
        meta = json.loads((fr_dir / "run.json").read_text())
        meta["modes"] = {"dense": {"status": "finished"}, "prunetrain": {"status": "finished"}}
        atomic_write_json(fr_dir / "run.json", meta)
    res = build_report([root], out)
    assert "channels.png" not in {p.name for p in res.files}
    assert not (out / "channels.png").exists()

    from bench.errors import BenchError
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BenchError):
        build_report([root], tmp_path / "afile")


# --------------------------------------------------------------------------
# a real browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.chromium
def test_report_html_renders_in_chromium(standard, tmp_path):
    res, _ = standard
    url = (res.out_dir / "report.html").resolve().as_uri()
    chromium = shutil.which("chromium")

    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile-dom'}",
         "--dump-dom", "--virtual-time-budget=5000", url],
        capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom.stdout)
    assert m, "the page's load script did not run: " + dom.stdout[:500]
    loaded, total = int(m.group(1)), int(m.group(2))
    assert total == len(PLOT_NAMES) and loaded == total

    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile-shot'}",
         f"--screenshot={shot}", "--window-size=1280,4000", url],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.exists() and shot.read_bytes().startswith(PNG_MAGIC)
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one


def test_different_settings_are_separate_rows(tmp_path):
    write_run(tmp_path / "r", FakeRun("run-a"))
    write_run(tmp_path / "r", FakeRun("run-b", interval=3))
    res = build_report([tmp_path / "r"], tmp_path / "out")
    assert len(res.table) == 2 and list(res.table["n"]) == [1, 1]
    assert res.table["label"].nunique() == 2
    assert all("reconfigure every" in label for label in res.table["label"])


def test_epochs_frame_for_plots(standard):
    res, runs = standard
    e = res.epochs
    assert len(e) == sum(len(fr.rows) for fr in runs)
    for col in ("label", "row", "device_label", "train_time_s", "cum_train_time_s", "run_path"):
        assert col in e
    one = e[(e["run_id"] == runs[3].run_id) & (e["mode"] == "prunetrain")].sort_values("epoch")
    assert one["cum_train_time_s"].iloc[-1] == pytest.approx(
        _row(res.table, CPU_LABEL)["prunetrain_time_s"])


def test_runs_differing_in_any_recorded_setting_are_separate_rows_labelled_by_it(tmp_path):
    """amp, group_weight, ... were left out of the key once, and a bf16 run was merged with an fp32 one."""
    write_run(tmp_path / "r", FakeRun("run-a"))
    write_run(tmp_path / "r", FakeRun("run-b", config={"amp": "bf16"}))
    write_run(tmp_path / "r", FakeRun("run-c", config={"group_weight": "size", "adjust_batch": False}))
    res = build_report([tmp_path / "r"], tmp_path / "out")
    assert list(res.table["n"]) == [1, 1, 1]
    labels = sorted(res.table["label"])
    # each row is named by the settings that vary between the rows only: no shared setting, no Python bool
    assert [lab.split(" · ")[-1] for lab in labels] == [
        "group weight size, adjust batch off, amp off", "group weight uniform, adjust batch on, amp bf16",
        "group weight uniform, adjust batch on, amp off"], labels
    assert not any("reconfigure every" in lab or "True" in lab or "False" in lab for lab in labels)
    md = (res.out_dir / "report.md").read_text()
    assert md.count("reconfigure every 2 epochs") == 1  # the shared settings, listed once


def test_runs_differing_only_in_seed_are_repeats(tmp_path):
    write_run(tmp_path / "r", FakeRun("run-a"))
    write_run(tmp_path / "r", FakeRun("run-b", config={"seed": 1}, speed=1.1))
    res = build_report([tmp_path / "r"], tmp_path / "out")
    assert list(res.table["n"]) == [2]


def test_a_setting_added_to_runconfig_splits_the_groups(tmp_path, monkeypatch):
    """The key comes from RunConfig: a new field counts without being listed anywhere else."""
    import dataclasses

    import bench.config
    from bench.report.settings import NOT_SETTINGS, setting_keys

    new = dataclasses.fields(dataclasses.make_dataclass(
        "WithKnob", [("new_knob", str, dataclasses.field(default="a", metadata=bench.config.ADDED))]))[0]
    monkeypatch.setitem(bench.config.FIELDS, "new_knob", new)
    assert "new_knob" in setting_keys()
    write_run(tmp_path / "r", FakeRun("run-a"))                           # an older record: the default, "a"
    write_run(tmp_path / "r", FakeRun("run-b", config={"new_knob": "a"}, speed=1.1))
    write_run(tmp_path / "r", FakeRun("run-c", config={"new_knob": "b"}))
    res = build_report([tmp_path / "r"], tmp_path / "out")
    assert sorted(res.table["n"]) == [1, 2]
    assert any(lab.endswith("· new knob b") for lab in res.table["label"])
    # the stated exclusions are RunConfig fields (a renamed field cannot silently leave the key)
    assert set(NOT_SETTINGS) <= set(bench.config.FIELDS)
    assert "seed" in NOT_SETTINGS and {"amp", "compile", "channels_last", "momentum"} <= set(setting_keys())


def test_no_negative_or_tiny_divisor_ratio_is_printed(tmp_path):
    """A slower PruneTrain gave "−8.40" and a 1 % FLOP saving "−25.20" in the ratio column; now the cell says why."""
    from bench.fmt import ratio_cell

    row = {"time_per_flops_saved": -8.4, "train_flops_saved_pct": 5.2, "time_saved_pct": -43.8, "n": 1}
    assert ratio_cell(row) == "– (no time saved)"
    row.update(train_flops_saved_pct=1.1, time_per_flops_saved=-25.2)
    assert ratio_cell(row).startswith("– (too few FLOPs saved")
    row.update(train_flops_saved_pct=30.0, time_saved_pct=24.0, time_per_flops_saved=0.8)
    assert ratio_cell(row) == "0.80"
    write_run(tmp_path / "r", FakeRun("slow", dense_epoch_s=20.0))
    res = build_report([tmp_path / "r"], tmp_path / "out")
    res.table.loc[0, ["time_saved_pct", "time_per_flops_saved"]] = [-10.0, -0.4]
    from bench.report.render import core_tables, _findings

    time_table, _ = core_tables(res.table)
    assert time_table.rows[0][TIME_RATIO_COLUMN] == "– (no time saved)"
    assert "-0.40" not in " ".join(_findings(res.table).items)


TIME_RATIO_COLUMN = 7


def test_a_finding_timed_under_contention_says_its_time_comparison_is_not_trustworthy(tmp_path):
    write_run(tmp_path / "busy", FakeRun("busy", device="cpu: AMD EPYC 7B13", kind="cpu", profile="cpu",
                                         other_cores=2.0))
    write_run(tmp_path / "quiet", FakeRun("quiet", device="cpu: AMD EPYC 7B13", kind="cpu", profile="cpu",
                                          other_cores=0.1))
    busy = build_report([tmp_path / "busy"], tmp_path / "out-busy")
    first = (busy.out_dir / "report.md").read_text().split("## Findings", 1)[1].split("\n- ", 1)[1].split("\n")[0]
    assert "not trustworthy: 6 of 12 epochs" not in first  # both modes' epochs count
    assert "This time comparison is not trustworthy: 12 of 12 epochs were timed while other processes" in first
    assert "interleave" in first and "replay" in first
    quiet = build_report([tmp_path / "quiet"], tmp_path / "out-quiet")
    assert "not trustworthy" not in (quiet.out_dir / "report.md").read_text()


def test_busy_message_names_the_load_and_the_busy_processes():
    from bench.machine.contention import Contention, busy_message

    assert busy_message(Contention(1.0, 0.3, 0.2, ""), cpu_cores=2, threads=1) is None
    text = busy_message(Contention(1.0, 2.6, 1.9, "python(4242) 0.98 cores"), cpu_cores=2, threads=2)
    assert "load average 2.6 on 2 cores" in text and "python(4242) 0.98 cores" in text and "--interleave" in text
    assert busy_message(Contention(1.0, 4.0, None, None), cpu_cores=2, threads=1) is not None  # load alone
    # the load average lags a minute behind: measured quiet (other work just ended) is quiet
    assert busy_message(Contention(1.0, 2.1, 0.0, ""), cpu_cores=2, threads=1) is None


def test_bench_report_ends_with_a_summary_table(tmp_path):
    from click.testing import CliRunner

    from bench.cli import main

    write_run(tmp_path / "r", FakeRun("run-a"))
    result = CliRunner().invoke(main, ["report", str(tmp_path / "r"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    header, rule, row, last = result.stdout.splitlines()
    assert header.split()[:2] == ["Configuration", "n"] and set(rule) <= {"-", " "}
    assert row.startswith("NVIDIA GeForce GTX 1070 · resnet32 / cifar10  1  ") and "not recorded" in row
    assert last.startswith("1 configuration(s) compared; wrote ")


def test_the_report_says_what_a_profile_is_for_when_its_file_says_so(tmp_path):
    folder = write_run(tmp_path / "r", FakeRun("smoke-run", device="cpu: AMD EPYC 7B13", kind="cpu", profile="smoke"))
    meta = json.loads((folder / "run.json").read_text())
    meta["profile"] = {"name": "smoke", "purpose": "A seconds-long check; it presses hard on purpose."}
    atomic_write_json(folder / "run.json", meta)
    res = build_report([tmp_path / "r"], tmp_path / "out")
    md = (res.out_dir / "report.md").read_text()
    assert "> **Note:** Profile smoke: A seconds-long check; it presses hard on purpose." in md
    assert md.index("Profile smoke:") < md.index("## Findings")


def test_small_things_a_user_sees(tmp_path):
    """report.md without escaped backticks, no bare "None" warnings under a contention note, plots that say what
    they show (contended epochs, predicted memory, a slower PruneTrain), and a no-pair error that fits the case."""
    from bench.report.aggregate import aggregate
    from bench.report.plots import plot_epoch_time, plot_memory_batch, plot_summary

    write_run(tmp_path / "r", FakeRun("busy", device="cpu: AMD EPYC 7B13", kind="cpu", profile="cpu",
                                      other_cores=2.0, speed=1.0))
    res = build_report([tmp_path / "r"], tmp_path / "out")
    md = (res.out_dir / "report.md").read_text()
    assert "\\`" not in md
    warnings = md.split("### Warnings", 1)[1]
    assert "None while reading the records. Epochs timed under contention" in warnings
    agg = aggregate(load_runs([tmp_path / "r"]).runs)
    assert agg.epochs["contended"].all()
    labels = [lab for fig in [plot_epoch_time(agg)] for leg in fig.legends for lab in
              [t.get_text() for t in leg.get_texts()]]
    assert "timed under contention" in labels
    mem = plot_memory_batch(agg)
    assert any("predicted" in ax.get_ylabel() for ax in mem.axes)
    agg.table.loc[0, ["time_saved_pct", "time_saved_pct_min", "time_saved_pct_max"]] = -40.0
    summary = plot_summary(agg)
    (ax,) = summary.axes
    assert ax.get_ylim() != ax.get_xlim() and ax.get_ylim()[0] < -40
    texts = [t.get_text() for leg in summary.legends for t in leg.get_texts()]
    assert "below 0: PruneTrain took more time than dense" in texts and not ax.texts

    broken = tmp_path / "broken"
    write_run(broken, FakeRun("finished-but-damaged", pt_done=3))
    with pytest.raises(RecordError) as err:
        build_report([broken], tmp_path / "out2")
    assert "wait" not in str(err.value) and "see the warnings" in str(err.value)


def test_every_option_says_what_it_does():
    from click.testing import CliRunner

    from bench.cli import main

    for command in ("run", "sweep", "report", "replay"):
        cmd = main.commands[command]
        bare = [p.opts[0] for p in cmd.params if isinstance(p, __import__("click").Option) and not p.help]
        assert bare == [], f"bench {command}: {bare} have no help"
    assert "(default: results)" in CliRunner().invoke(main, ["report", "--help"]).output


def _without_dense(root: Path, fr: FakeRun) -> Path:
    """A folder of PruneTrain alone (``bench run --mode prunetrain``), written with the real writers."""
    folder = write_run(root, FakeRun(**{**fr.__dict__, "dense_done": 0, "rows": []}))
    meta = json.loads((folder / "run.json").read_text())
    del meta["modes"]["dense"]
    meta["config"]["modes"] = ["prunetrain"]
    atomic_write_json(folder / "run.json", meta)
    return folder


def test_a_folder_without_dense_is_compared_with_the_same_dense_computation_elsewhere(tmp_path):
    """A PruneTrain-only folder is joined to the dense run of another folder only where dense computed the same
    thing (same seed, device and every setting dense reads): a different PruneTrain ratio or the order of the
    modes does not matter, a different seed or batch does; the run list names where its dense came from."""
    base = dict(device="cpu (AMD EPYC 7B13)", kind="cpu", profile="cpu")
    donor = FakeRun("20261206-090000-cpu-resnet32-aa01", **base)
    write_run(tmp_path / "r", donor)
    _without_dense(tmp_path / "r", FakeRun("20261206-100000-cpu-resnet32-bb02", speed=0.9, acc_offset=1.0,
                                            config={"lpr": 0.3, "interleave": True}, **base))
    _without_dense(tmp_path / "r", FakeRun("20261206-100000-cpu-resnet32-cc03", config={"seed": 1}, **base))
    _without_dense(tmp_path / "r", FakeRun("20261206-100000-cpu-resnet32-dd04", config={"batch_size": 64}, **base))
    res = build_report([tmp_path / "r"], tmp_path / "out")
    assert len(res.table) == 2 and sorted(res.table["n"]) == [1, 1]
    borrowed = res.table[res.table["settings"].str.contains("ratio 0.3", regex=False)].iloc[0]
    own = res.table[~res.table["settings"].str.contains("ratio 0.3", regex=False)].iloc[0]
    assert borrowed["dense_time_s"] == own["dense_time_s"]            # the one dense run, counted for both
    assert borrowed["prunetrain_time_s"] == pytest.approx(0.9 * own["prunetrain_time_s"])
    notes = dict(zip(res.runs["run_id"], res.runs["note"]))
    assert notes["20261206-100000-cpu-resnet32-bb02 vs 20261206-090000-cpu-resnet32-aa01"] == \
        "dense from run 20261206-090000-cpu-resnet32-aa01"
    for lone in ("cc03", "dd04"):
        assert notes[f"20261206-100000-cpu-resnet32-{lone}"].endswith("dense not recorded")
