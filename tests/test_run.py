"""`bench run` end to end: records of a real smoke run, exported model, batch decisions, bad input."""
from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bench.cli import main
from bench.run import load_exported

SMALL_BUDGET_PROFILE = """
name = "tinygpu"
description = "a made-up 0.1 GiB GPU, to force the batch down"
[device]
kind = "cuda"
name_patterns = ["Tiny GPU"]
memory_gib = 0.1
[budget]
memory_gib = 0.1
reserve_gib = 0
headroom = 0.9
"""


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "epochs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("results")
    result = _invoke(["run", "--profile", "smoke", "--results-dir", str(results), "--quiet"])
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    return run_dir


@pytest.mark.slow
def test_smoke_run_records_every_epoch_of_both_modes(smoke_run):
    rows = _rows(smoke_run)
    assert [(r["mode"], int(r["epoch"])) for r in rows] == [
        ("dense", e) for e in range(1, 5)] + [("prunetrain", e) for e in range(1, 5)]
    meta = json.loads((smoke_run / "run.json").read_text())
    assert meta["status"] == "finished" and meta["config"]["interval"] == 1
    assert all(r["run_id"] == meta["run_id"] and r["profile"] == "smoke" for r in rows)
    for r in rows:
        assert float(r["epoch_time_s"]) > 0 and float(r["train_flops"]) > 0
        assert int(r["batch_size"]) > 0 and int(r["peak_memory_bytes"]) > 0


@pytest.mark.slow
def test_prunetrain_flops_fall_after_reconfigurations(smoke_run):
    rows = _rows(smoke_run)
    dense = [float(r["train_flops"]) / int(r["steps"]) / int(r["batch_size"]) for r in rows if r["mode"] == "dense"]
    pt = [r for r in rows if r["mode"] == "prunetrain"]
    per_image = [float(r["inference_flops"]) for r in pt]
    assert len(set(dense)) == 1  # dense never changes shape
    assert per_image[0] == float(rows[0]["inference_flops"])  # same start
    assert per_image[-1] < per_image[0]  # the smoke settings prune for real, at a faithful threshold
    assert all(b <= a for a, b in zip(per_image, per_image[1:]))  # never grows back
    assert float(pt[-1]["train_flops"]) < float(pt[0]["train_flops"])
    assert int(pt[-1]["params"]) < int(pt[0]["params"])
    assert float(pt[0]["lasso_lambda"]) > 0 and 0 < float(pt[0]["lasso_ratio"]) < 1
    arch = json.loads((smoke_run / "run.json").read_text())["modes"]["prunetrain"]["architectures"]
    assert [a["epoch"] for a in arch] == [0, 1, 2, 3]


@pytest.mark.slow
def test_every_reconfiguration_is_measured_and_keeps_the_function(smoke_run):
    rows = [r for r in _rows(smoke_run) if r["mode"] == "prunetrain"]
    measured = [r for r in rows if r["func_change_eval"] != ""]
    assert [int(r["epoch"]) for r in measured] == [1, 2, 3]  # each reconfiguration, and only those
    for r in measured:  # the change budget (1 %) bounds what the chosen threshold may change
        assert float(r["func_change_eval"]) <= 0.01 and float(r["func_change_train"]) <= 0.01
        assert float(r["prune_threshold"]) >= 1e-4
    arch = json.loads((smoke_run / "run.json").read_text())["modes"]["prunetrain"]["architectures"]
    assert all("tried" in a["function_change"] for a in arch[1:])  # the thresholds tried are recorded
    meta = json.loads((smoke_run / "run.json").read_text())
    assert meta["config"]["lasso"] == "proximal" and meta["config"]["batch_policy"] == "freed"


@pytest.mark.slow
def test_exported_model_loads_without_history(smoke_run):
    meta = json.loads((smoke_run / "run.json").read_text())
    model = load_exported(smoke_run / meta["modes"]["prunetrain"]["final_model"])
    assert sum(p.numel() for p in model.parameters()) == meta["modes"]["prunetrain"]["architectures"][-1]["params"]
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.slow
def test_report_of_a_real_run_matches_its_records(smoke_run, tmp_path):
    from bench.report import build_report

    result = build_report([smoke_run], tmp_path / "report")
    rows = _rows(smoke_run)
    table = result.table
    assert len(table) == 1
    dense_time = sum(float(r["epoch_time_s"]) + float(r["reconfig_time_s"]) for r in rows if r["mode"] == "dense")
    pt_time = sum(float(r["epoch_time_s"]) + float(r["reconfig_time_s"]) for r in rows if r["mode"] == "prunetrain")
    flops = {m: sum(float(r["train_flops"]) for r in rows if r["mode"] == m) for m in ("dense", "prunetrain")}
    row = table.iloc[0]
    time_cols = [c for c in table.columns if "time" in c and not c.endswith(("_lo", "_hi", "_n"))]
    values = {c: row[c] for c in time_cols}
    assert any(v == pytest.approx(dense_time, rel=1e-6) for v in values.values()), values
    assert any(v == pytest.approx(pt_time, rel=1e-6) for v in values.values()), values
    flop_saved = [c for c in table.columns if "flop" in c.lower() and "saved" in c.lower()
                  and "inference" not in c.lower() and not c.endswith(("_lo", "_hi", "_n"))]
    assert flop_saved and row[flop_saved[0]] == pytest.approx(100 * (1 - flops["prunetrain"] / flops["dense"]), rel=1e-6)
    assert (tmp_path / "report" / "report.html").exists()


@pytest.mark.parametrize("policy, batch", [("freed", 32), ("fill", 64)])
def test_batch_policy_is_applied_to_dense_too_and_recorded(tmp_path, policy, batch):
    """fill: every mode starts at the largest batch the budget allows; freed: at the base batch."""
    results = tmp_path / "results"
    result = _invoke(["run", "--profile", "smoke", "--subset", "128", "--epochs", "1", "--batch-size", "32",
                      "--max-batch", "64", "--mode", "dense", "--batch-policy", policy,
                      "--results-dir", str(results), "--quiet"])
    assert result.exit_code == 0, result.output
    (run_dir,) = list(results.iterdir())
    (row,) = _rows(run_dir)
    assert int(row["batch_size"]) == batch and float(row["lr"]) == pytest.approx(0.1 * batch / 32)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["config"]["batch_policy"] == policy
    assert f"{policy} policy" in meta["modes"]["dense"]["batch_reasons"][0]


def test_batch_is_lowered_to_fit_an_emulated_small_gpu(tmp_path):
    profile = tmp_path / "tinygpu.toml"
    profile.write_text(SMALL_BUDGET_PROFILE)
    results = tmp_path / "results"
    result = _invoke(["run", "--profile", str(profile), "--model", "resnet20", "--data", "synthetic",
                      "--subset", "128", "--epochs", "1", "--batch-size", "128", "--mode", "dense",
                      "--results-dir", str(results), "--quiet"])
    assert result.exit_code == 0, result.output
    (run_dir,) = list(results.iterdir())
    (row,) = _rows(run_dir)
    assert int(row["emulated"]) == 1  # a GPU profile's decisions, made on the CPU
    assert int(row["memory_budget_bytes"]) == int(0.1 * 2**30)
    assert int(row["batch_size"]) < 128  # 128 images of ResNet-20 activations need ~200 MiB
    assert row["peak_memory_source"] == "predicted"  # on the CPU: the model's figure (checked in test_memory)
    meta = json.loads((run_dir / "run.json").read_text())
    assert "lowered" in " ".join(meta["modes"]["dense"]["batch_reasons"])


def test_records_hold_no_path_of_this_machine(tmp_path, monkeypatch):
    """run.json and epochs.csv can be shared as they are: the profile file, results folder and command line
    appear by name (the profile with a hash of its content), never as paths of the machine that wrote them."""
    profile = tmp_path / "tinygpu.toml"
    profile.write_text(SMALL_BUDGET_PROFILE)
    results = tmp_path / "results"
    args = ["run", "--profile", str(profile), "--model", "resnet20", "--data", "synthetic",
            "--subset", "64", "--epochs", "1", "--mode", "dense", "--results-dir", str(results), "--quiet"]
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "venv" / "bin" / "bench"), *args])
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    (run_dir,) = list(results.iterdir())
    text = (run_dir / "run.json").read_text() + (run_dir / "epochs.csv").read_text()
    assert str(tmp_path) not in text and "/work/" not in text and "/home/" not in text
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["config"]["profile"] == "tinygpu" and meta["profile"]["source"].startswith("tinygpu.toml sha256:")
    assert meta["command"].startswith("bench run --profile tinygpu.toml")


@pytest.mark.parametrize("args,needle", [
    (["--profile", "gtx9999"], "unknown profile 'gtx9999'"),
    (["--profile", "smoke", "--model", "resnet33"], "unknown model 'resnet33'"),
    (["--profile", "smoke", "--data", "mnist"], "mnist"),
    (["--profile", "smoke", "--data", "cifar10", "--data-dir", "/nonexistent/folder"], "/nonexistent/folder"),
    (["--profile", "smoke", "--lpr", "1.5"], "--lpr"),
    (["--profile", "smoke", "--lasso-until", "0"], "--lasso-until"),
    (["--profile", "smoke", "--round-channels", "x"], "--round-channels"),
    (["--profile", "smoke", "--device", "cpu", "--amp", "bf16"], "--amp bf16: mixed precision is CUDA only"),
    (["--profile", "smoke", "--device", "cpu", "--emulate"], "--emulate caps a GPU's memory"),
    (["--profile", "smoke", "--mode", "dense", "--interleave"], "--interleave"),
])
def test_bad_input_is_one_line_exit_2_and_no_results(tmp_path, args, needle):
    results = tmp_path / "results"
    result = CliRunner().invoke(main, ["run", *args, "--results-dir", str(results), "--quiet"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not results.exists() or not any(results.iterdir())


def test_malformed_profile_file_names_file_and_key(tmp_path):
    bad = tmp_path / "mine.toml"
    bad.write_text(SMALL_BUDGET_PROFILE.replace("memory_gib = 0.1\n[budget]", "memory_gib = -2\n[budget]"))
    results = tmp_path / "results"
    result = CliRunner().invoke(main, ["run", "--profile", str(bad), "--results-dir", str(results)])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "mine.toml" in line and "device.memory_gib" in line
    assert not results.exists()


def test_resume_of_a_folder_without_run_json_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(main, ["run", "--resume", str(tmp_path / "run")])
    assert result.exit_code == 2 and "run.json" in result.stderr


def test_env_and_profiles_commands():
    env = CliRunner().invoke(main, ["env"])
    assert env.exit_code == 0 and "torch" in env.output
    profiles = CliRunner().invoke(main, ["profiles"])
    assert profiles.exit_code == 0
    for name in ("gtx750ti", "gtx1070", "gtx1080ti", "server", "cpu", "smoke"):
        assert name in profiles.output


def test_git_commit_says_when_the_code_differs_from_it(tmp_path):
    import subprocess

    from bench.runfolder.folder import git_commit

    def git(*args):
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path, check=True,
                       capture_output=True)
    assert git_commit(tmp_path) is None  # not a checkout
    git("init", "-q")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "x.py").write_text("a = 1\n")
    (tmp_path / "README.md").write_text("readme\n")
    git("add", "-A")
    git("commit", "-qm", "one")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "README.md").write_text("changed\n")        # not code: still the commit's code
    (tmp_path / "bench" / "new.py").write_text("b = 2\n")  # untracked: not imported by anything committed
    assert git_commit(tmp_path) == head
    (tmp_path / "bench" / "x.py").write_text("a = 2\n")
    assert git_commit(tmp_path) == f"{head}-dirty"


def test_threads_are_applied_and_recorded_and_a_busy_machine_is_warned_of(tmp_path, monkeypatch):
    import torch

    import bench.run

    monkeypatch.setattr(bench.run, "busy_now", lambda threads, gpu=None: f"the machine is busy ({threads} threads)")
    before = torch.get_num_threads()
    results = tmp_path / "results"
    try:
        result = _invoke(["run", "--profile", "smoke", "--subset", "64", "--epochs", "1", "--mode", "dense",
                          "--threads", "1", "--results-dir", str(results)])
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    assert "warning: the machine is busy (1 threads)" in result.stderr
    (run_dir,) = list(results.iterdir())
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["torch_threads"] == 1 and meta["config"]["threads"] == 1
    assert meta["busy_at_start"] == "the machine is busy (1 threads)"


def test_a_run_on_a_pipe_prints_a_line_per_epoch_and_ends_with_a_summary(tmp_path):
    """No terminal (CI, nohup, `| cat`): no bar, but every epoch as a line, then the summary and the folder."""
    results = tmp_path / "results"
    result = _invoke(["run", "--profile", "smoke", "--subset", "64", "--epochs", "2", "--interval", "1",
                      "--results-dir", str(results)])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    for mode in ("dense", "prunetrain"):
        for epoch in (1, 2):
            (line,) = [x for x in lines if x.startswith(f"{mode} epoch {epoch}/2: ")]
            assert re.search(r": \d+\.\d s, train acc \d+\.\d %, test acc \d+\.\d %, training FLOPs \d+ % of dense, "
                             r"batch \d+", line), line
    (reconf,) = [x for x in lines if x.startswith("prunetrain epoch 1/2: ")]
    assert re.search(r"; reconfigured in \d+\.\d\d s to \d+ % of dense \(threshold .*\), function change ", reconf)
    out = result.stdout.splitlines()
    (run_dir,) = list(results.iterdir())
    assert out[-1] == str(run_dir)
    assert out[0].split()[:2] == ["Configuration", "n"] and "Time saved" in out[0]
    assert "resnet20 / synthetic" in out[2] and re.search(r" -?\d+\.\d % +\d+\.\d % +\d+\.\d % +\d+\.\d % ", out[2])


def test_resume_with_options_that_would_change_the_run_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text("{}")
    result = CliRunner().invoke(main, ["run", "--resume", str(folder), "--epochs", "6", "--lpr", "0.5",
                                       "--profile", "gtx750ti", "--results-dir", str(tmp_path / "elsewhere")])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --resume continues ") and "--profile, --epochs, --lpr, --results-dir" in line
    assert sorted(p.name for p in folder.iterdir()) == ["run.json"] and (folder / "run.json").read_text() == "{}"
    assert not (tmp_path / "elsewhere").exists()


def test_an_interrupted_run_prints_the_exact_resume_command(tmp_path, monkeypatch):
    import bench.run

    def interrupt(runners):
        raise KeyboardInterrupt
    monkeypatch.setattr(bench.run, "_round_robin", interrupt)
    results = tmp_path / "results"
    result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--subset", "64", "--epochs", "1",
                                       "--results-dir", str(results), "--quiet"])
    assert result.exit_code == 130
    (run_dir,) = list(results.iterdir())
    assert result.stderr.strip().endswith(f"continue with bench run --resume {run_dir}")
