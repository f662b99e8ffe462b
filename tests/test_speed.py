"""`bench speed` and the bench.speed package: behaviour, not timings (the benchmarks under benchmarks/ measure)."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from click.testing import CliRunner

import prunetrain_core as pc
from bench import speed
from bench.training import decisions, shapes, step
from bench.machine import timing
from bench.cli import SPEED_SECTIONS, main


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_bench_speed_quick_emits_every_section(tmp_path, keep_threads):
    out_json, out_csv = tmp_path / "speed.json", tmp_path / "speed.csv"
    result = CliRunner().invoke(main, [
        "speed", "--quick", "--model", "resnet20", "--batch-size", "2", "--threads", "1",
        "--reconfig-models", "resnet20", "--json", str(out_json), "--csv", str(out_csv)])
    assert result.exit_code == 0, result.output
    assert SPEED_SECTIONS == speed.SECTIONS
    rows = json.loads(out_json.read_text())["rows"]
    assert {r["section"] for r in rows} == set(speed.SECTIONS)
    with open(out_csv, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    names = [r["name"] for r in rows]
    for needle in ("penalty / dense step", "reconfigure() / epoch", "harness reconfiguration / epoch",
                   "harness overhead, end to end", "harness cost per step / bare step",
                   "keep 0.75: time ratio", "keep 0.5: time ratio", "keep 0.25: time ratio", "taper",
                   "ragged, rounded to 8: time ratio", "[channels_last] keep 0.5: time ratio",
                   "dense step: channels_last / contiguous", "auto_round_channels", "Loader speed-up"):
        assert any(needle in n for n in names), needle
        assert needle in result.output
    for r in rows:
        assert isinstance(r["value"], (int, float)) and math.isfinite(r["value"]), r
        # durations, throughputs and true ratios are positive; differences ("overhead", "saved") may not be
        difference = "cost per step" in r["name"] or "overhead" in r["name"] or "saved" in r["name"] \
            or "(step with penalty − step)" in r["name"]
        if not difference and (r["unit"] in ("ms", "s", "img/s", "int") or any(k in r["name"] for k in (
                "time ratio", "/ dense step", "/ epoch", "speed-up", "time÷FLOP"))):
            assert r["value"] > 0, r
        if r["target"] is not None:
            assert r["met"] in (True, False)
    choice = next(r for r in rows if r["name"].startswith("auto_round_channels"))["value"]
    assert choice in decisions.ROUND_CANDIDATES


def test_bench_speed_rejects_unknown_model():
    result = CliRunner().invoke(main, ["speed", "--model", "resnet7"])
    assert result.exit_code == 2
    assert "unknown model 'resnet7'" in result.output


def test_auto_round_channels_measures_once_and_caches(monkeypatch, keep_threads):
    torch.set_num_threads(1)
    monkeypatch.setattr(decisions, "_ROUND_CACHE", {})
    monkeypatch.setattr(decisions, "_PROBE_CACHE", {})
    calls = []
    real = decisions.probe_rounding

    def small_probe(model_name, device=None, **kw):
        calls.append(model_name)
        return real(model_name, device, batch=2, budget_s=0.0, warmup=0, candidates=kw["candidates"])

    monkeypatch.setattr(decisions, "probe_rounding", small_probe)
    first = decisions.auto_round_channels("resnet20", "cpu")
    assert first in decisions.ROUND_CANDIDATES
    assert decisions.auto_round_channels("resnet20", torch.device("cpu")) == first
    assert calls == ["resnet20"]                                   # measured once per (device, model)
    assert decisions.auto_round_channels("resnet20", "cuda:0") == 8        # CUDA: tensor-core multiple, not measured
    assert calls == ["resnet20"]


def test_pruned_shapes_have_the_planned_channel_counts():
    half = shapes.pruned_model("resnet20", 0.5)
    convs = [m.out_channels for m in half.modules() if isinstance(m, torch.nn.Conv2d)]
    assert set(convs) == {8, 16, 32}
    rounded = shapes.pruned_models("resnet20", "ragged", (1, 8))
    raw = [m.out_channels for m in rounded[1].modules() if isinstance(m, torch.nn.Conv2d)]
    r8 = [m.out_channels for m in rounded[8].modules() if isinstance(m, torch.nn.Conv2d)]
    assert any(c % 8 for c in raw)                                 # ragged: arbitrary counts
    assert all(c % 8 == 0 for c in r8) and all(b >= a for a, b in zip(raw, r8))
    x = torch.zeros(2, 3, 32, 32)
    assert pc.count_flops(rounded[8], x).train_per_image > pc.count_flops(rounded[1], x).train_per_image


def test_interleaving_rotates_the_order_and_stats_are_quartiles():
    order = []
    cases = {k: timing.Case(lambda k=k: order.append(k)) for k in "abc"}
    samples = timing.interleaved(cases, 3, warmup=0)
    assert order == list("abc" "bca" "cab")
    assert all(len(v) == 3 and all(t >= 0 for t in v) for v in samples.values())
    st = timing.Stat.of([1, 2, 3, 4, 5])
    assert (st.median, st.q1, st.q3, st.iqr) == (3, 2, 4, 2)
    assert timing.ratio_stat([2, 4], [1, 2]).median == 2


def test_channels_last_hazard_names_the_crashing_shortcut():
    risky = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 8, 1, stride=2))
    safe = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 16, 1, stride=2))
    assert "1×1 stride-2 conv with 4 input channels" in step.channels_last_hazard(risky, "cpu")
    assert step.channels_last_hazard(safe, "cpu") is None
    assert step.channels_last_hazard(risky, "cuda") is None


@pytest.mark.parametrize("met,code", [(True, 0), (False, 1)])
def test_enforce_targets_exits_non_zero_on_a_miss(monkeypatch, met, code):
    from bench.speed import run as speed_run
    from bench.speed.table import Row, SpeedReport

    def fake_run_speed(model, **kw):
        return SpeedReport("cpu: test", 1, torch.__version__, 2, model, 1,
                           rows=[Row("penalty", "penalty / dense step", 5.0, "%", target="≤ 3%", met=met)])

    monkeypatch.setattr(speed_run, "run_speed", fake_run_speed)
    result = CliRunner().invoke(main, ["speed", "--model", "resnet20", "--enforce-targets"])
    assert result.exit_code == code, result.output
    assert ("target missed: penalty / dense step: 5.00%" in result.stderr) == (not met)
