"""`bench check`: the table of every path a long run takes, and its exit code."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

import cudafake
from bench import check as check_mod
from bench import cli
from bench.check import FAIL, PASS, Row, format_table


@pytest.mark.slow
def test_bench_check_on_this_cpu_passes_every_row_that_applies():
    result = CliRunner().invoke(cli.main, ["check", "--channels-last"])
    assert result.exit_code == 0, result.output
    table = {line[:37].strip(): line[37:].split("  ")[0].strip()
             for line in result.stdout.splitlines()[2:]}
    must_pass = ["dense step", "PruneTrain step (penalty, λ)", "reconfiguration keeps the function",
                 "checkpoint → resume = uninterrupted", "--emulate gtx1070", "--emulate gtx1080ti",
                 "--emulate gtx750ti", "out of memory → lower batch, go on", "channels_last"]
    assert {k: table.get(k) for k in must_pass} == {k: PASS for k in must_pass}, result.stdout
    assert table["device identity (CUDA vs NVML)"] == "not applicable"
    assert table["data-parallel, 2 ranks"].startswith("not applicable")


def test_a_failing_row_makes_the_exit_code_one(monkeypatch):
    rows = [Row("dense step", PASS, "4 steps"), Row("checkpoint → resume = uninterrupted", FAIL, "max |Δ| 1e-3")]
    monkeypatch.setattr(check_mod.Checker, "check_all", lambda self: rows)
    result = CliRunner().invoke(cli.main, ["check", "--device", "cpu"])
    assert result.exit_code == 1
    assert format_table(rows) in result.stdout
    assert "1 of 2 checks failed: checkpoint → resume = uninterrupted" in result.stderr


def test_a_card_this_torch_cannot_drive_is_a_failed_row(monkeypatch):
    cudafake.install(monkeypatch, [cudafake.GTX1070], arch_list=cudafake.CURRENT_ARCHS)
    result = CliRunner().invoke(cli.main, ["check", "--device", "cuda"])
    assert result.exit_code == 1
    assert "torch build supports the card" in result.stdout and "sm_61" in result.stdout


def test_zeroed_channels_are_what_reconfiguration_removes():
    """The check's zeroing leaves the function as it is and prunes for real (the check's premise)."""
    import torch

    import prunetrain_core as pc

    torch.manual_seed(0)
    model = pc.build_model("resnet20", 10)
    x = torch.randn(4, 3, 32, 32)
    killed = check_mod.zero_half_the_channels(model, x[:2])
    before = pc.outputs(model, x)
    smaller = pc.reconfigure(model, x[:2])
    change = pc.compare(before, pc.outputs(smaller, x), torch.zeros(4, dtype=torch.long))
    assert killed > 0 and change.max_rel < 1e-5
    assert sum(p.numel() for p in smaller.parameters()) < 0.4 * sum(p.numel() for p in model.parameters())
