"""The fault seam (bench/runfolder/hooks.py): inert by default, honoured only under the test suite, and said out loud."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.errors import ConfigError
from bench.runfolder.hooks import NO_HOOKS, FaultHooks, from_environment


def test_fault_variable_outside_the_test_suite_is_announced_and_ignored():
    heard: list[str] = []
    hooks = from_environment({"BENCH_FAULT_KILL_AT": "mid-epoch"}, warn=heard.append)
    assert hooks is NO_HOOKS
    hooks.kill_point("mid-epoch")  # does nothing (this test process is still alive)
    assert len(heard) == 1 and "BENCH_FAULT_KILL_AT=mid-epoch ignored" in heard[0]


def test_fault_variable_under_the_test_suite_is_active_and_announced():
    heard: list[str] = []
    hooks = from_environment({"BENCH_FAULT_NAN_AT": "dense:2", "BENCH_UNDER_TEST": "1"}, warn=heard.append)
    assert isinstance(hooks, FaultHooks) and hooks.active == {"BENCH_FAULT_NAN_AT": "dense:2"}
    assert [hooks.nan_loss("dense", e) for e in (1, 2, 3)] == [False, True, True]
    assert not hooks.nan_loss("prunetrain", 3)
    assert "fault injection active" in heard[0]
    assert from_environment({}) is NO_HOOKS


@pytest.mark.parametrize("env", [{"BENCH_FAULT_KILL_AT": "somewhere"}, {"BENCH_FAULT_NAN_AT": "dense:two"}])
def test_malformed_fault_variable_is_one_clear_error(env):
    with pytest.raises(ConfigError, match=next(iter(env))):
        from_environment({**env, "BENCH_UNDER_TEST": "1"})


def test_injected_fault_is_recorded_in_run_json(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_FAULT_NAN_AT", "dense:1")
    result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--mode", "dense", "--epochs", "1",
                                       "--subset", "128", "--results-dir", str(tmp_path), "--quiet"])
    assert result.exit_code == 2, result.output  # the dense loss was made NaN: the run stops as diverged
    assert "fault injection active: BENCH_FAULT_NAN_AT=dense:1" in result.stderr
    (run_dir,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["fault_injection"][0]["variables"] == {"BENCH_FAULT_NAN_AT": "dense:1"}
