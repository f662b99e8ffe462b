"""Evidence rules: the controls (small-dense, thin-dense), the method named as it ran, intervals over seeds."""
from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

import prunetrain_core as pc
from bench.training import controls
from bench.config import PUBLISHED_METHOD, RunConfig, method_differences, method_name
from bench.errors import ConfigError
from bench.runfolder.records import read_epochs
from bench.report.stats import mean_ci, t_quantile

X = torch.randn(2, 3, 32, 32)


@pytest.mark.parametrize("name", ["vgg8", "resnet20"])
def test_initialise_gives_a_dense_shape_exactly_the_dense_models_weights(name):
    torch.manual_seed(3)
    dense = pc.build_model(name)
    rebuilt = pc.rebuild(pc.describe(pc.build_model(name)))   # registered in another order than it was built
    torch.manual_seed(3)
    pc.initialise(rebuilt, name)
    a, b = dense.state_dict(), rebuilt.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(4)
    pc.initialise(rebuilt, name)
    assert not torch.equal(rebuilt.state_dict()[next(iter(a))], a[next(iter(a))])  # the seed matters


def test_initialise_follows_the_rule_at_other_widths():
    torch.manual_seed(0)
    thin = pc.initialise(pc.scale_width(pc.build_model("vgg8"), X, 0.5), "vgg8")
    conv = dict(thin.named_modules())["features.0"]
    # PruneTrain's rule: N(0, sqrt(2 / (k² · C_out))) with C_out = 32 after thinning (not 64)
    assert conv.out_channels == 32
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 32)), rel=0.15)


def test_scale_width_thins_every_space_alike_and_keeps_residual_streams_coupled():
    model = pc.build_model("resnet20")
    thin = pc.scale_width(model, X, 0.5)
    widths = pc.channels(thin)
    assert widths["conv1"] == 8 and widths["layer1.0.conv2"] == 8 and widths["layer3.2.conv1"] == 32
    assert widths["fc"] == 10                                   # the classes are not a prunable space
    assert thin(X).shape == (2, 10)
    with pytest.raises(ValueError, match="factor"):
        pc.scale_width(model, X, 0.0)


@pytest.mark.parametrize("target", [0.3, 0.5, 0.8])
def test_thin_factor_meets_a_flops_target_within_five_percent(target):
    dense = pc.build_model("vgg8")
    factor, achieved = controls.thin_factor(dense, X, target)
    assert 0 < factor < 1 and achieved == pytest.approx(target, rel=0.05)
    measured = pc.count_flops(pc.scale_width(dense, X, factor), X).train_per_image / \
        pc.count_flops(dense, X).train_per_image
    assert measured == pytest.approx(achieved)


def test_method_is_named_as_it_ran():
    published = RunConfig()
    assert method_name(published) == "PruneTrain (published)" and method_differences(published) == {}
    assert all(getattr(published, k) == v for k, v in PUBLISHED_METHOD.items())
    # the published step at another ratio is not the published method
    name = method_name(replace(published, lpr=0.89))
    assert name.startswith("PruneTrain variant (") and "ratio 0.89" in name
    cpu = replace(published, lasso="proximal", liveness="readers", penalise="readers", keep_bn_scale=True,
                  group_weight="size", lasso_until=0.1, change_budget=0.01, lpr=0.89)
    assert set(method_differences(cpu)) == {"lasso", "liveness", "penalise", "keep_bn_scale", "group_weight",
                                           "lasso_until", "change_budget", "lpr"}
    assert "penalty in the first 10% of the epochs" in method_name(cpu)
    assert method_name(cpu, "dense") == "dense" and method_name(cpu, "small-dense").startswith("small-dense control")
    # the schedule is scaled to the machine, not part of the method's name
    assert method_name(replace(published, epochs=10, interval=1, batch_size=64)) == "PruneTrain (published)"


def test_control_modes_need_prunetrain():
    with pytest.raises(ConfigError, match="--controls-of"):
        RunConfig(modes=["dense", "small-dense"]).validate()
    RunConfig(modes=["dense", "prunetrain", "small-dense", "thin-dense"]).validate()
    with pytest.raises(ConfigError, match="--held-out must be <= --val"):
        RunConfig(val=100, held_out=256).validate()


def test_prunetrain_result_refuses_an_unfinished_run():
    with pytest.raises(ConfigError, match="has not finished"):
        controls.prunetrain_result({"status": "running", "architectures": []}, [], "run.json")


def test_mean_and_t_interval():
    ci = mean_ci([114.0, 120.0, 132.0])
    half = 4.303 * statistics.stdev([114.0, 120.0, 132.0]) / math.sqrt(3)
    assert (ci.mean, ci.lo, ci.hi, ci.n) == pytest.approx((122.0, 122.0 - half, 122.0 + half, 3))
    one = mean_ci([5.0, float("nan")])
    assert one.n == 1 and one.mean == 5.0 and math.isnan(one.lo) and not one.contains_zero
    assert mean_ci([-1.0, 2.0, 0.5]).contains_zero and not mean_ci([1.0, 1.2, 1.1]).contains_zero
    assert t_quantile(1) == 12.706 and t_quantile(100) == 1.96


@pytest.mark.slow
def test_repeat_and_all_modes_end_to_end(tmp_path):
    """bench run --repeat 2 --mode all: two seeds of dense, PruneTrain and both controls, each control built
    from that seed's PruneTrain; the report states intervals over the two seeds."""
    args = ["--profile", "smoke", "--repeat", "2", "--mode", "all", "--epochs", "2", "--subset", "256",
            "--val", "300", "--test-size", "300", "--results-dir", str(tmp_path / "r"), "--quiet"]
    out = subprocess.run([sys.executable, "-m", "bench", "run", *args], capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr
    folders = sorted(p for p in (tmp_path / "r").iterdir() if p.is_dir())
    assert len(folders) == 2
    seeds = []
    for folder in folders:
        meta = json.loads((folder / "run.json").read_text())
        seeds.append(meta["config"]["seed"])
        assert meta["data"]["val_size"] == 300 and meta["data"]["test_size"] == 300
        assert meta["device_peak"]["source"] == "measured" and meta["device_peak"]["flops_per_s"] > 0
        assert meta["method"].startswith("PruneTrain variant (")
        modes = meta["modes"]
        assert list(modes) == ["dense", "prunetrain", "small-dense", "thin-dense"]
        assert all(m["status"] == "finished" and m["method"] for m in modes.values())
        pt_last = modes["prunetrain"]["architectures"][-1]
        assert modes["small-dense"]["architectures"][0]["params"] == pt_last["params"]
        changes = [a["function_change"] for a in modes["prunetrain"]["architectures"] if a["function_change"]]
        assert changes and all(c["measured_on"].startswith("validation split") for c in changes)
        rows = [r for _, r in read_epochs(folder / "epochs.csv", strict=True)]
        flops = {m: sum(r.train_flops for r in rows if r.mode == m) for m in modes}
        assert flops["thin-dense"] == pytest.approx(flops["prunetrain"], rel=0.05)
        assert all(r.val_acc is not None for r in rows)
    assert seeds == [0, 1]
    rep = subprocess.run([sys.executable, "-m", "bench", "report", str(tmp_path / "r"), "--out", str(tmp_path / "rep")],
                         capture_output=True, text=True, timeout=600)
    assert rep.returncode == 0, rep.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "95 % CI over 2 seeds" in md and "Against the controls" in md and "small-dense" in md


def test_peak_is_measured_and_each_modes_share_of_it_computed():
    from types import SimpleNamespace

    from bench.machine.peak import measure_peak
    from bench.report.aggregate import peak_fraction

    peak = measure_peak(torch.device("cpu"), side=128, repeats=2)
    assert peak["source"] == "measured" and peak["dtype"] == "float32" and peak["flops_per_s"] > 0
    run = SimpleNamespace(meta={"device_peak": {"flops_per_s": 1e11}})
    m = {"dense_train_flops": 6e12, "dense_time_s": 120.0, "prunetrain_train_flops": 3e12, "prunetrain_time_s": 100.0}
    out = peak_fraction(run, m)
    assert out["dense_flops_per_s"] == pytest.approx(5e10) and out["dense_peak_fraction_pct"] == pytest.approx(50.0)
    assert out["prunetrain_peak_fraction_pct"] == pytest.approx(30.0)
    assert math.isnan(peak_fraction(SimpleNamespace(meta={}), m)["dense_peak_fraction_pct"])  # an older record


@pytest.mark.slow
def test_controls_are_added_to_a_finished_run_and_refused_before_prunetrain_finished(tmp_path):
    args = ["--profile", "smoke", "--epochs", "2", "--subset", "128", "--val", "300", "--test-size", "200",
            "--results-dir", str(tmp_path / "r"), "--quiet"]
    first = subprocess.run([sys.executable, "-m", "bench", "run", *args, "--mode", "dense"], capture_output=True,
                           text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    dense_only = next((tmp_path / "r").iterdir())
    refused = subprocess.run([sys.executable, "-m", "bench", "run", "--controls-of", str(dense_only)],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "PruneTrain mode has not finished" in refused.stderr
    assert json.loads((dense_only / "run.json").read_text())["modes"].keys() == {"dense"}  # nothing written
    both = subprocess.run([sys.executable, "-m", "bench", "run", *args, "--results-dir", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=900)
    assert both.returncode == 0, both.stderr
    folder = next((tmp_path / "b").iterdir())
    added = subprocess.run([sys.executable, "-m", "bench", "run", "--controls-of", str(folder), "--quiet"],
                           capture_output=True, text=True, timeout=900)
    assert added.returncode == 0, added.stderr
    meta = json.loads((folder / "run.json").read_text())
    assert meta["status"] == "finished" and meta["config"]["modes"] == ["dense", "prunetrain", "small-dense",
                                                                       "thin-dense"]
    assert all(meta["modes"][m]["status"] == "finished" for m in ("small-dense", "thin-dense"))
    assert meta["modes"]["thin-dense"]["control"]["width_factor"] <= 1.0
