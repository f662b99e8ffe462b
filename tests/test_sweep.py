"""`bench sweep`: the study plan, the study record, resume after a kill, and the report's study section."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.config import RunConfig
from bench.errors import ConfigError
from bench.report import build_report
from bench.report.study import batch_effect, pareto_front
from bench.sweep import parse_vary, plan_study

TINY = ["--profile", "smoke", "--subset", "128", "--epochs", "2", "--batch-size", "16", "--max-batch", "32",
        "--quiet"]


def _bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bench", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _study(results: Path) -> tuple[Path, dict]:
    (folder,) = [p for p in results.iterdir() if (p / "study.json").exists()]
    return folder, json.loads((folder / "study.json").read_text())


# ------------------------------------------------------------------ the plan (pure)
def test_vary_values_are_typed_like_the_setting():
    assert parse_vary("interval=2,5,10") == ("interval", [2, 5, 10])
    assert parse_vary("lpr=0.1,0.2") == ("lpr", [0.1, 0.2])
    assert parse_vary("adjust-batch=on,off") == ("adjust_batch", [True, False])


@pytest.mark.parametrize("spec, needle", [
    ("interval", "SETTING=V1,V2"), ("colour=1,2", "'colour' is not a setting"),
    ("seed=1,2", "'seed' is not a setting"), ("interval=2,x", "'x' is not int"),
    ("adjust_batch=maybe", "on or off"), ("interval=2,2", "given twice"),
])
def test_bad_vary_is_one_clear_error(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_vary(spec)


def test_dense_runs_once_per_repeat_for_prunetrain_only_settings():
    base = RunConfig(seed=3)
    entries = plan_study(base, {"interval": [2, 5], "lpr": [0.1, 0.2]}, repeat=2)
    dense = [e for e in entries if e.mode == "dense"]
    pt = [e for e in entries if e.mode == "prunetrain"]
    assert [(e.seed, e.setting) for e in dense] == [(3, {}), (4, {})]
    assert len(pt) == 8 and {e.seed for e in pt} == {3, 4}
    assert {(e.setting["interval"], e.setting["lpr"]) for e in pt} == {(2, .1), (2, .2), (5, .1), (5, .2)}
    cfg = pt[0].config(base)
    assert cfg.modes == ["prunetrain"] and cfg.interval == 2 and cfg.lpr == 0.1 and cfg.seed == 3


def test_a_setting_dense_depends_on_gets_a_dense_run_per_value():
    entries = plan_study(RunConfig(), {"adjust_batch": [True, False], "interval": [5]}, repeat=1)
    assert [e.setting for e in entries if e.mode == "dense"] == [{"adjust_batch": True}, {"adjust_batch": False}]


def test_a_study_of_methods_gives_each_method_only_the_settings_it_reads():
    """--vary mode=...: one dense per repeat, PruneTrain per penalty ratio, slimming per pruning ratio; each
    method's run is its own folder of that one mode, and every method is paired with the repeat's dense."""
    from bench.runfolder.study import dense_partner
    entries = plan_study(RunConfig(seed=1), {"mode": ["prunetrain", "slimming", "earlybird"],
                                             "lpr": [0.1, 0.2], "prune_ratio": [0.3, 0.5]}, repeat=2)
    first = [(e.mode, e.setting) for e in entries if e.repeat == 0]
    assert first == [("dense", {}), ("prunetrain", {"lpr": 0.1}), ("prunetrain", {"lpr": 0.2}),
                     ("slimming", {"prune_ratio": 0.3}), ("slimming", {"prune_ratio": 0.5}),
                     ("earlybird", {"prune_ratio": 0.3}), ("earlybird", {"prune_ratio": 0.5})]
    assert len(entries) == 14 and {e.seed for e in entries if e.repeat == 1} == {2}
    slim = next(e for e in entries if e.mode == "slimming" and e.repeat == 1)
    cfg = slim.config(RunConfig())
    assert cfg.modes == ["slimming"] and cfg.prune_ratio == 0.3 and cfg.seed == 2
    records = [{"id": e.id, "mode": e.mode, "setting": e.setting, "repeat": e.repeat} for e in entries]
    assert dense_partner(records, records[10])["id"] == "dense[base]#1"
    with pytest.raises(ConfigError, match="--vary prune_ratio: no run of this study reads it"):
        plan_study(RunConfig(), {"prune_ratio": [0.3, 0.5]}, repeat=1)
    assert parse_vary("mode=prunetrain,earlybird") == ("mode", ["prunetrain", "earlybird"])
    with pytest.raises(ConfigError, match="random pruning follows PruneTrain's records in the same folder"):
        parse_vary("mode=prunetrain,random")
    with pytest.raises(ConfigError, match="'dense' is not a pruning method a study compares"):
        parse_vary("mode=dense,slimming")


def test_an_invalid_combination_is_refused_before_anything_runs():
    with pytest.raises(ConfigError, match=r"prunetrain\[lpr=1.5\]#0: --lpr must be between 0 and 1"):
        plan_study(RunConfig(), {"lpr": [0.2, 1.5]}, repeat=1)


def test_study_record_keeps_the_image_folder_by_name_and_asks_for_it_again(tmp_path):
    from bench.sweep import Study

    images = tmp_path / "data" / "my-cifar"
    base = RunConfig(data="my-cifar", data_dir=str(images))
    study = Study.create(tmp_path / "results", base, {"interval": [2]}, repeat=1)
    text = study.path.read_text()
    assert str(tmp_path) not in text and json.loads(text)["base_config"]["data_dir"] == "my-cifar"
    assert study.entry_config(study.data["entries"][1]).data_dir == str(images)  # the path given at the start
    with pytest.raises(ConfigError, match="read the image folder 'my-cifar'.*--data-dir"):
        Study.open(study.folder).base_config()  # a resume must give the folder again
    again = Study.open(study.folder, tmp_path / "elsewhere" / "my-cifar")
    assert again.entry_config(again.data["entries"][0]).data_dir == str(tmp_path / "elsewhere" / "my-cifar")


def test_pareto_front_and_batch_effect():
    t = pd.DataFrame({
        "settings": ["adjust_batch on", "adjust_batch off"], "device": ["gpu", "gpu"],
        "prunetrain_time_s": [60.0, 80.0], "prunetrain_final_acc": [90.0, 91.0],
        "dense_time_s": [100.0, 100.0], "dense_final_acc": [92.0, 92.0],
        "time_saved_pct": [40.0, 20.0], "batch_sizes": ["128→256", "128"],
    })
    assert pareto_front(t) == [True, True]  # faster vs more accurate: neither beats the other
    t.loc[1, "prunetrain_final_acc"] = 89.0
    assert pareto_front(t) == [True, False]  # slower and less accurate than "on"

    class View:
        varied = {"adjust_batch": [True, False]}
        table = t
    text = batch_effect(View())
    assert "40.0 % time saved with the dynamic mini-batch" in text and "20.0 % without it" in text
    assert "+20.0 points" in text


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("sweep")
    proc = _bench("sweep", *TINY, "--vary", "interval=1,2", "--vary", "mode=prunetrain,slimming",
                  "--results-dir", str(results))
    assert proc.returncode == 0, proc.stderr
    return results


@pytest.mark.slow
def test_sweep_records_a_study_of_ordinary_runs(finished_study):
    folder, study = _study(finished_study)
    assert study["kind"] == "study" and study["status"] == "finished"
    assert study["varied"] == {"interval": [1, 2], "mode": ["prunetrain", "slimming"]}
    entries = study["entries"]   # slimming does not read the interval: one run of it
    assert [(e["mode"], e["setting"]) for e in entries] == [
        ("dense", {}), ("prunetrain", {"interval": 1}), ("prunetrain", {"interval": 2}), ("slimming", {})]
    assert all(e["status"] == "finished" for e in entries)
    runs = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert runs == sorted(e["run"] for e in entries)
    for e in entries:  # each one an ordinary `bench run` folder of its one mode, with the study's setting
        meta = json.loads((folder / e["run"] / "run.json").read_text())
        assert meta["status"] == "finished" and meta["config"]["modes"] == [e["mode"]]
        assert meta["config"]["seed"] == 0 and meta["config"]["epochs"] == 2
        if e["mode"] == "prunetrain":
            assert meta["config"]["interval"] == e["setting"]["interval"]


@pytest.mark.slow
def test_report_pairs_the_study_and_adds_its_section(finished_study, tmp_path):
    result = build_report([finished_study], tmp_path / "report")
    assert not [w for w in result.warnings if "not compared" in w]  # single-mode runs are paired, not dropped
    assert len(result.table) == 2  # one configuration per setting in the main table too
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Study: interval, mode" in md
    section = md.split("## Study: interval, mode")[1].split("\n## ")[0]
    first = next(block for block in section.split("\n\n") if block.startswith("| Setting"))
    rows = [line for line in first.splitlines() if line.startswith("| ")][2:]
    assert [r.split(" | ")[0] for r in rows] == ["| dense", "| interval 1", "| interval 2"]
    methods = next(block for block in section.split("\n\n") if block.startswith("| Device"))
    assert [r.split(" | ")[2:4] for r in methods.splitlines()[2:]] == [
        ["prunetrain", result.table["method"].iloc[0]], ["prunetrain", result.table["method"].iloc[1]],
        ["slimming", "Network Slimming: L1 on BN scales s=0.0001 until pruning, ratio 0.4 once after epoch 1"]]
    assert "★" in section  # at least one setting is on the Pareto front
    assert (tmp_path / "report" / "study1_accuracy_time.png").stat().st_size > 1000
    # the same numbers as the runs: PruneTrain's training time of "interval 1" is its own record's sum
    folder, study = _study(finished_study)
    pt = next(e for e in study["entries"] if e["setting"] == {"interval": 1})
    rows_csv = pd.read_csv(folder / pt["run"] / "epochs.csv")
    expected = float((rows_csv["epoch_time_s"] + rows_csv["reconfig_time_s"]).sum())
    got = result.table[result.table["settings"].str.contains("reconfigure every 1 epochs")]["prunetrain_time_s"]
    assert math.isclose(float(got.iloc[0]), expected, rel_tol=1e-9)


@pytest.mark.slow
def test_replay_of_a_study_replays_every_run_and_reports_it(finished_study, tmp_path):
    proc = _bench("replay", str(_study(finished_study)[0]), "--profile", "gtx750ti", "--budget", "1",
                  "--results-dir", str(tmp_path / "replayed"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    folder, study = _study(tmp_path / "replayed")
    original = _study(finished_study)[1]
    assert study["replay_of"] == original["study_id"] and study["status"] == "finished"
    assert [e["id"] for e in study["entries"]] == [e["id"] for e in original["entries"]]
    for e in study["entries"]:
        meta = json.loads((folder / e["run"] / "run.json").read_text())
        assert meta["source"] == "replay" and meta["config"]["modes"] == [e["mode"]]
    result = build_report([finished_study, tmp_path / "replayed"], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Study: interval, mode\n" in md and "## Study: interval, mode (replayed on cpu" in md
    assert "(emulating gtx750ti))" in md
    assert set(result.table["source"]) == {"measured", "replay"}


@pytest.mark.slow
def test_a_killed_sweep_resumes_where_it_stopped(tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "bench", "sweep", *TINY, "--epochs", "3", "--vary", "interval=1,2",
            "--results-dir", str(results)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    dense_run = None
    try:  # kill it while the second run (the first PruneTrain one) is training
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                _, study = _study(results)
            except (ValueError, FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.2)
                continue
            first, second = study["entries"][:2]
            if first["status"] == "finished" and second["status"] == "running":
                dense_run = first["run"]
                time.sleep(1.5)
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert dense_run is not None, "the sweep never reached its second run"
    folder, study = _study(results)
    assert study["status"] == "running" and study["entries"][2]["status"] == "pending"

    resumed = _bench("sweep", "--resume", str(folder), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    _, study = _study(results)
    assert study["status"] == "finished" and all(e["status"] == "finished" for e in study["entries"])
    assert study["entries"][0]["run"] == dense_run  # dense was not run again
    runs = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert runs == sorted(e["run"] for e in study["entries"])  # no second folder for the interrupted run
    for e in study["entries"]:
        rows = pd.read_csv(folder / e["run"] / "epochs.csv")
        assert sorted(rows["epoch"]) == [1, 2, 3] and set(rows["mode"]) == {e["mode"]}


@pytest.mark.parametrize("extra, needle", [
    (["--vary", "colour=1,2"], "'colour' is not a setting"),
    (["--vary", "lpr=0.5,2"], "--lpr must be between 0 and 1"),
    ([], "at least one --vary"),
])
def test_bad_sweep_input_exits_2_without_a_study_folder(tmp_path, extra, needle):
    proc = _bench("sweep", *TINY, *extra, "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
