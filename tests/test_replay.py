"""`bench replay`: rebuilding a run's shapes from run.json, the replayed run folder, the target's batch rule,
and bad input on a small real run (replayed against measured time: benchmarks/replay_validation.py)."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import prunetrain_core as pc
from bench.cli import main
from bench.training.data import load_data
from bench.report import build_report, load_runs

TINY_GPU = """
name = "tinygpu"
description = "a made-up 40 MiB GPU: the smoke run's batch does not fit, the rule must lower it"
[device]
kind = "cuda"
name_patterns = ["Tiny GPU"]
memory_gib = 0.04
[budget]
memory_gib = 0.04
reserve_gib = 0
headroom = 0.9
"""
RUN_ARGS = ["--profile", "smoke", "--subset", "256", "--epochs", "3", "--interval", "1", "--batch-size", "32", "--lasso", "paper",
            "--threshold", "0.2", "--quiet"]


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "epochs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _only_dir(parent: Path) -> Path:
    (d,) = [p for p in parent.iterdir() if p.is_dir()]
    return d


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the run and its replay.  With two, on a machine at load ~3.5, the measured dense
    CPU time once came out at 74 s against 11 s replayed (OpenMP workers waiting for a core spin, and the
    spinning counts as CPU time); with one there is no worker to spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, one_thread) -> Path:
    results = tmp_path_factory.mktemp("results")
    result = _invoke(["run", *RUN_ARGS, "--results-dir", str(results)])
    assert result.exit_code == 0, result.output
    return _only_dir(results)


@pytest.fixture(scope="module")
def replayed(small_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("replays")
    result = _invoke(["replay", str(small_run), "--profile", "smoke", "--results-dir", str(out), "--budget", "1",
                      "--quiet"])
    assert result.exit_code == 0, result.output
    return _only_dir(out)


@pytest.mark.slow
def test_run_json_rebuilds_every_shape_exactly(small_run):
    meta = json.loads((small_run / "run.json").read_text())
    rows = _rows(small_run)
    pt = meta["modes"]["prunetrain"]["architectures"]
    assert len(pt) == 3 and pt[-1]["params"] < pt[0]["params"]  # it pruned
    example = torch.zeros(2, 3, 32, 32)
    for mode, state in meta["modes"].items():
        for a in state["architectures"]:
            model = pc.rebuild(a["arch"])
            assert pc.channels(model) == dict(a["channels"])
            assert sum(p.numel() for p in model.parameters()) == a["params"]
            flops = pc.count_flops(model, example)
            assert flops.train_per_image == a["train_flops_per_image"]
            assert flops.inference_per_image == a["inference_flops"]
            trained = [r for r in rows if r["mode"] == mode and int(r["epoch"]) == a["epoch"] + 1]
            for r in trained:  # the shape that trained the next epoch is the one recorded
                assert float(r["inference_flops"]) == a["inference_flops"] and int(r["params"]) == a["params"]
    assert {r["source"] for r in rows} == {"measured"} and {r["replay_of"] for r in rows} == {""}


@pytest.mark.slow
def test_replay_writes_a_run_folder_of_the_same_schema(small_run, replayed):
    orig, rows = _rows(small_run), _rows(replayed)
    meta = json.loads((replayed / "run.json").read_text())
    assert list(rows[0]) == list(orig[0])  # same columns, same order
    assert [(r["mode"], r["epoch"]) for r in rows] == [(r["mode"], r["epoch"]) for r in orig]
    orig_meta = json.loads((small_run / "run.json").read_text())
    assert meta["source"] == "replay" and meta["replay_of"] == orig_meta["run_id"] and meta["status"] == "finished"
    for o, r in zip(orig, rows):
        assert r["source"] == "replay" and r["replay_of"] == orig_meta["run_id"]
        assert r["test_acc"] == r["train_acc"] == r["train_loss"] == ""  # accuracy is the original run's
        assert float(r["train_flops"]) == pytest.approx(float(o["train_flops"]), rel=1e-9)
        assert r["params"] == o["params"] and r["batch_size"] == o["batch_size"]  # same profile: same batches
        assert float(r["epoch_time_s"]) > 0
        assert (float(r["reconfig_time_s"]) > 0) == (float(o["reconfig_time_s"]) > 0)
    for mode, state in meta["modes"].items():
        for a in state["architectures"]:
            step = a["step_time_s"]
            assert step["q1"] <= step["median"] <= step["q3"] and step["rounds"] >= 5
            assert a["original_batch_size"] == a["batch_size"]
    # epoch time = images / batch x the shape's median step
    a0 = meta["modes"]["dense"]["architectures"][0]
    assert float(rows[0]["epoch_time_s"]) == pytest.approx(256 / int(rows[0]["batch_size"]) * a0["step_time_s"]["median"])
    assert all(a["reconfig_exact"] for a in meta["modes"]["prunetrain"]["architectures"][:-1])
    loaded = load_runs([replayed.parent, small_run.parent])
    assert len(loaded.runs) == 2 and not [w for w in loaded.warnings if "header" in w]


@pytest.mark.slow
def test_report_merges_measured_and_replayed(small_run, replayed, tmp_path):
    res = build_report([small_run.parent, replayed.parent], tmp_path / "report")
    assert len(res.table) == 2 and sorted(res.table["source"]) == ["measured", "replay"]
    assert res.table["trajectory"].nunique() == 1  # one trajectory, two devices
    md = (tmp_path / "report" / "report.md").read_text()
    assert "· replayed" in md and "](trajectory.png)" in md and "Limits: the trajectory" in md
    assert (tmp_path / "report" / "trajectory.png").stat().st_size > 0


@pytest.mark.slow
def test_replay_decides_the_batch_with_the_target_profile(small_run, tmp_path):
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY_GPU)
    out = tmp_path / "replays"
    result = _invoke(["replay", str(small_run), "--profile", str(profile), "--results-dir", str(out), "--budget", "0.5",
                      "--quiet"])
    assert result.exit_code == 0, result.output
    rows = _rows(_only_dir(out))
    orig = _rows(small_run)
    assert all(r["emulated"] == "1" and r["profile"] == "tinygpu" for r in rows)
    assert any(int(r["batch_size"]) < int(o["batch_size"]) for r, o in zip(rows, orig))
    meta = json.loads((_only_dir(out) / "run.json").read_text())
    budget = int(0.9 * 0.04 * 2**30)
    for state in meta["modes"].values():
        for a in state["architectures"]:
            assert a["memory"]["fixed"] + a["memory"]["per_sample_activations"] * a["batch_size"] <= budget
    # shareable as it is: the profile file, the replayed run and the results folder by name, never as paths
    text = (_only_dir(out) / "run.json").read_text()
    assert str(tmp_path) not in text and str(small_run.parent) not in text
    assert meta["profile"]["source"].startswith("tiny.toml sha256:") and meta["replay"]["of"]["path"] == small_run.name


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "no-arch"])
def test_bad_input_is_one_line_and_writes_nothing(small_run, tmp_path, damage):
    src = small_run
    args = ["--profile", "smoke"]
    if damage == "missing":
        src = tmp_path / "nothing-here"
        src.mkdir()
    elif damage == "no-arch":
        src = tmp_path / "old"
        src.mkdir()
        meta = json.loads((small_run / "run.json").read_text())
        for state in meta["modes"].values():
            for a in state["architectures"]:
                del a["arch"]
        (src / "run.json").write_text(json.dumps(meta))
        (src / "epochs.csv").write_text((small_run / "epochs.csv").read_text())
    out = tmp_path / "replays"
    result = CliRunner().invoke(main, ["replay", str(src), *args, "--results-dir", str(out), "--quiet"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert {"missing": "run.json: not found", "no-arch": ".arch' is missing"}[damage] in lines[0]
    assert not out.exists() or not any(out.iterdir())


# Whether a replay predicts the measured time is a timing claim: benchmarks/replay_validation.py measures it
# (±10 % per mode, ±5 points of time saved, figures in the README); the tests here check what a replay records.


@pytest.mark.slow
def test_interleaved_run_alternates_the_modes_and_trains_the_same(small_run, tmp_path):
    result = _invoke(["run", *RUN_ARGS, "--interleave", "--results-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run = _only_dir(tmp_path)
    rows, seq = _rows(run), _rows(small_run)
    assert [(r["mode"], r["epoch"]) for r in rows] == [(m, str(e)) for e in (1, 2, 3) for m in ("dense", "prunetrain")]
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["interleave"] is True and meta["status"] == "finished"
    by_key = {(r["mode"], r["epoch"]): r for r in seq}
    for r in rows:  # each mode keeps its own seed, data order and state: the same training as one after the other
        s = by_key[(r["mode"], r["epoch"])]
        for col in ("train_loss", "test_acc", "train_flops", "params", "batch_size"):
            assert r[col] == s[col], (r["mode"], r["epoch"], col)


@pytest.mark.slow
def test_replay_reads_the_runs_image_folder_given_again(small_run, tmp_path):
    """Records keep only the folder's name: --data-dir gives it again, checked against the recorded sizes."""
    from test_data import make_folder

    folder, other = tmp_path / "pets", tmp_path / "other"
    make_folder(folder, per_class=8, size=(32, 32), ext="png")
    make_folder(other, per_class=5, size=(32, 32), ext="png")
    results = tmp_path / "results"
    run = _invoke(["run", "--profile", "smoke", "--data", "pets", "--data-dir", str(folder), "--subset", "0", "--epochs", "2",
                   "--interval", "1", "--batch-size", "8", "--mode", "prunetrain", "--lasso", "paper",
                   "--threshold", "0.2", "--val", "4", "--held-out", "4", "--results-dir", str(results), "--quiet"])
    assert run.exit_code == 0, run.output
    run_dir = _only_dir(results)

    def replay(*extra: str):
        out = tmp_path / f"replays{len(list(tmp_path.iterdir()))}"
        result = CliRunner().invoke(main, ["replay", str(run_dir), "--profile", "smoke", "--results-dir", str(out),
                                           "--budget", "0.5", "--quiet", *extra])
        return result, out

    given, out = replay("--data-dir", str(folder))
    assert given.exit_code == 0, given.output
    note = json.loads((_only_dir(out) / "run.json").read_text())["replay"]["data"]
    assert note.startswith("real: pets (20 images")  # 24 less the 4 held out as the validation split
    absent, out = replay()
    assert absent.exit_code == 0, absent.output
    note = json.loads((_only_dir(out) / "run.json").read_text())["replay"]["data"]
    assert note.startswith("synthetic") and "'pets' not given (--data-dir FOLDER)" in note
    for src, extra, needle in [(run_dir, ["--data-dir", str(other)], "train_size 20 recorded, 11 here"),
                               (small_run, ["--data-dir", str(folder)], "did not read an image folder")]:
        result = CliRunner().invoke(main, ["replay", str(src), "--profile", "smoke", "--quiet",
                                           "--results-dir", str(tmp_path / "refused"), *extra])
        lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(lines) == 1 and needle in lines[0], result.output
        assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())


def test_a_trajectory_knows_the_budget_searchs_trial_surgeries(small_run, tmp_path):
    """The replayed reconfiguration repeats the run's change-budget trials, read from its record."""
    from bench.replay.trajectory import load_trajectory

    src = tmp_path / "budget"
    src.mkdir()
    meta = json.loads((small_run / "run.json").read_text())
    archs = meta["modes"]["prunetrain"]["architectures"]
    archs[1]["function_change"] = {**(archs[1].get("function_change") or {}), "tried": [[1e-4, 0.0], [1e-3, 0.2]]}
    (src / "run.json").write_text(json.dumps(meta))
    (src / "epochs.csv").write_text((small_run / "epochs.csv").read_text())
    shapes = load_trajectory(src).shapes["prunetrain"]
    assert [s.budget_trials for s in shapes[:2]] == [0, 2]


def test_shapes_after_the_penalty_window_are_timed_without_the_penalty(small_run):
    """As bench run: the penalty acts up to the window's last epoch, whose reconfiguration starts the next shape."""
    from dataclasses import replace

    from bench.replay.run import StepRunner
    from bench.replay.trajectory import load_trajectory

    traj = load_trajectory(small_run)  # 3 epochs, a shape after each of epochs 1 and 2
    data = load_data("synthetic", subset=64).train
    penalised = {}
    for until in (1.0, 0.34):  # the whole run; epoch 1 only
        cfg = replace(traj.cfg, lasso_until=until)
        penalised[until] = [StepRunner(s, data, 8, torch.device("cpu"), cfg, 1e-4).step.lasso is not None
                            for s in traj.shapes["prunetrain"]]
        assert StepRunner(traj.shapes["dense"][0], data, 8, torch.device("cpu"), cfg, 1e-4).step.lasso is None
    assert [s.epoch for s in traj.shapes["prunetrain"]] == [0, 1, 2]
    assert penalised == {1.0: [True, True, True], 0.34: [True, False, False]}


# ------------------------------------------------------------------------------- shapes that do not fit the card
def _need_at_batch_1(arch: dict) -> int:
    """What the replay's memory model predicts for one image (measured as bench.replay.run measures it)."""
    from bench.training.memory import measure_training_memory

    model = pc.rebuild(arch)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return measure_training_memory(model, torch.zeros(16, 3, 32, 32), optimizer=opt).total_for_batch(1)


def _profile_with_limit(tmp_path: Path, limit: float, name: str = "halfgpu") -> Path:
    """A made-up GPU whose batch rule allows ``limit`` bytes (usable × headroom 0.9, nothing reserved)."""
    path = tmp_path / f"{name}.toml"
    gib = limit / 0.9 / 2**30
    path.write_text(TINY_GPU.replace('"tinygpu"', f'"{name}"').replace("0.04", f"{gib:.9f}"))
    return path


@pytest.mark.slow
def test_a_shape_that_does_not_fit_the_target_is_recorded_not_refused(small_run, tmp_path):
    """Dense does not fit even at batch 1, the pruned shapes do: rows with fits 0 and no time, the need and the
    limit in the rows and in run.json, and the report says so in words and computes no time saved."""
    meta = json.loads((small_run / "run.json").read_text())
    pt = meta["modes"]["prunetrain"]["architectures"]
    dense_need, pruned_need = _need_at_batch_1(pt[0]["arch"]), _need_at_batch_1(pt[-1]["arch"])
    assert pruned_need < dense_need
    profile = _profile_with_limit(tmp_path, (dense_need + pruned_need) / 2)
    out = tmp_path / "replays"
    result = _invoke(["replay", str(small_run), "--profile", str(profile), "--results-dir", str(out), "--budget", "0.3",
                      "--quiet"])
    assert result.exit_code == 0, result.output
    replay_dir = _only_dir(out)
    rows = _rows(replay_dir)
    assert list(rows[0]) == list(_rows(small_run)[0])  # the same schema as every run folder
    dense = [r for r in rows if r["mode"] == "dense"]
    assert dense and all(r["fits"] == "0" and r["epoch_time_s"] == "" and r["cpu_time_s"] == "" for r in dense)
    limit, need = int(dense[0]["memory_limit_bytes"]), int(dense[0]["peak_memory_bytes"])
    assert need == pytest.approx(dense_need, rel=0.01) and need > limit and dense[0]["batch_size"] == "1"
    prune = {int(r["epoch"]): r for r in rows if r["mode"] == "prunetrain"}
    assert prune[1]["fits"] == "0" and prune[1]["epoch_time_s"] == ""  # epoch 1 trains the dense shape
    fitting = [e for e, r in prune.items() if r["fits"] == "1"]
    assert fitting and all(float(prune[e]["epoch_time_s"]) > 0 for e in fitting)
    first = min(fitting)
    assert all(prune[e]["fits"] == "0" for e in prune if e < first)
    replayed = json.loads((replay_dir / "run.json").read_text())
    a0 = replayed["modes"]["dense"]["architectures"][0]
    assert a0["fit"] == {"fits": False, "batch": 1, "need_bytes": need, "limit_bytes": limit}
    assert need == math.ceil(a0["memory"]["fixed"] + a0["memory"]["per_sample_activations"])  # the memory model's
    assert a0["step_time_s"] is None and replayed["modes"]["prunetrain"]["architectures"][-1]["fit"]["fits"] is True
    mib = lambda n: f"{n / 2**20:,.0f} MiB"  # noqa: E731
    words = f"dense does not fit halfgpu (needs {mib(need)} at batch 1, limit {mib(limit)})"
    assert any(words in line for line in replayed["replay"]["not_fitting"])

    res = build_report([replay_dir.parent], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert words in md and f"PruneTrain fits from epoch {first}, dense never" in md
    assert "no time saved is computed" in md
    (row,) = res.table.to_dict("records")
    assert math.isnan(row["time_saved_pct"]) and math.isnan(row["dense_time_s"])
    assert math.isnan(row["prunetrain_time_s"])  # never a partial sum over the epochs that fit

    tiny = _profile_with_limit(tmp_path, pruned_need / 2, name="nofit")  # nothing fits at all: still a result
    out2 = tmp_path / "replays2"
    result = _invoke(["replay", str(small_run), "--profile", str(tiny), "--results-dir", str(out2), "--quiet"])
    assert result.exit_code == 0, result.output
    assert {r["fits"] for r in _rows(_only_dir(out2))} == {"0"}
    build_report([out2], tmp_path / "report2")
    assert "neither mode fits in any epoch" in (tmp_path / "report2" / "report.md").read_text()


# ------------------------------------------------------------------------------- shapes that do not fit here together
@pytest.mark.slow
def test_shapes_are_timed_one_at_a_time_when_they_do_not_fit_here_together(small_run, tmp_path, monkeypatch):
    """The memory available here decides: interleaved holds every shape at once, sequential at most one."""
    import gc
    import weakref

    import bench.replay.run
    import bench.replay.fit

    live: weakref.WeakSet = weakref.WeakSet()
    held: list[int] = []

    class Counted(bench.replay.run.StepRunner):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            live.add(self)

        def __call__(self) -> None:
            gc.collect()  # a runner not freed would stay in the set: count only what is really held
            held.append(len(live))
            super().__call__()

    monkeypatch.setattr(bench.replay.run, "StepRunner", Counted)
    shapes = sum(len(s["architectures"]) for s in json.loads((small_run / "run.json").read_text())["modes"].values())
    results = {}
    for timing, available in (("sequential", 1), ("interleaved", 2**50)):
        monkeypatch.setattr(bench.replay.fit, "available_memory", lambda device, a=available: a)
        held.clear()
        out = tmp_path / timing
        result = _invoke(["replay", str(small_run), "--profile", "smoke", "--results-dir", str(out), "--budget", "0.2",
                          "--quiet"])
        assert result.exit_code == 0, result.output
        run = _only_dir(out)
        meta = json.loads((run / "run.json").read_text())["replay"]
        assert meta["timing"] == timing and len(meta["order"]) == shapes
        assert meta["memory_here"]["available_bytes"] == available and meta["memory_here"]["total_need_bytes"] > 1
        results[timing] = (run, max(held))
        if timing == "sequential":
            assert "not cancelled" in meta["timing_why"] and meta["stopped"].count(";") == shapes - 1
    assert results["sequential"][1] == 1 and results["interleaved"][1] == shapes
    seq, inter = _rows(results["sequential"][0]), _rows(results["interleaved"][0])
    assert list(seq[0]) == list(inter[0]) and [(r["mode"], r["epoch"]) for r in seq] == [(r["mode"], r["epoch"]) for r in inter]
    assert all(float(r["epoch_time_s"]) > 0 for r in seq + inter)
    build_report([results["sequential"][0].parent], tmp_path / "report")
    assert "shapes timed one at a time" in (tmp_path / "report" / "report.md").read_text()
