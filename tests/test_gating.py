"""Channel gating (``structure="gating"``): function preservation, re-pruning, describe/rebuild, configuration."""
from __future__ import annotations

import io
import json

import pytest
import torch
from torch import nn

import prunetrain_core as pc
from prunetrain_core.graph import ChannelGraph
from prunetrain_core.layers import BranchConstant, ChannelGather, ChannelScatter

from test_engine import _randomise_bn

X = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(pc.build_model(name, 10))


@torch.no_grad()
def _zero_per_layer(model: nn.Module, graph: ChannelGraph, fraction: float = 0.5, seed: int = 0) -> None:
    """Zero a random fraction of every layer's own slices, layer by layer, so branches and stream disagree."""
    g = torch.Generator().manual_seed(seed)
    for space in graph.prunable_spaces():
        for m in space.members:
            if m.role not in ("conv_in", "conv_out", "linear_in"):
                continue
            w = graph.graph_module.get_submodule(m.module).weight
            axis = 0 if m.role == "conv_out" else 1
            dead = torch.randperm(w.shape[axis], generator=g)[: int(w.shape[axis] * fraction)]
            w.index_fill_(axis, dead, 0.0)


def _assert_same(before: nn.Module, after: nn.Module) -> None:
    a, b = pc.outputs(before, X), pc.outputs(after, X)
    assert (a.eval - b.eval).abs().max() <= 1e-5
    assert (a.train - b.train).abs().max() <= 1e-5


def _convs(model: nn.Module) -> dict[str, int]:
    return {n: m.in_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def _gated_resnet20():
    model = _model("resnet20")
    _zero_per_layer(model, pc.analyse(model, X[:2]))
    return model, pc.reconfigure(model, X[:2], structure="gating")


def test_gating_preserves_function_on_a_residual_network():
    model, gated = _gated_resnet20()
    _assert_same(model, gated)
    union = pc.reconfigure(model, X[:2])
    _assert_same(model, union)
    kinds = {type(m) for m in gated.modules()}
    assert ChannelGather in kinds and ChannelScatter in kinds
    narrower = [n for n, c in _convs(gated).items() if c < _convs(union)[n]]
    assert "layer1.1.conv1" in narrower and "layer3.0.shortcut.0" in narrower  # block and projection readers
    assert pc.channels(gated)["layer1.0.conv2"] < pc.channels(union)["layer1.0.conv2"]  # a branch writer
    assert pc.count_flops(gated, X[:2]).train_per_image < pc.count_flops(union, X[:2]).train_per_image


def test_gating_with_a_removed_branch_and_optimizer_state():
    model = _model("resnet20")
    graph = pc.analyse(model, X[:2])
    _zero_per_layer(model, graph)
    with torch.no_grad():  # layer2.1's inner channels all die: the branch leaves a constant
        model.get_submodule("layer2.1.conv1").weight.zero_()
        model.get_submodule("layer2.1.conv2").weight.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    opt.state[model.fc.weight]["momentum_buffer"] = torch.ones_like(model.fc.weight)
    gated = pc.reconfigure(model, X[:2], structure="gating", optimizer=opt)
    _assert_same(model, gated)
    assert any(isinstance(m, BranchConstant) for m in gated.modules())
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in gated.parameters()}
    gated.train()
    torch.nn.functional.cross_entropy(gated(X), torch.zeros(len(X), dtype=torch.long)).backward()
    opt.step()


def test_gating_on_a_plain_network_equals_union():
    model = _model("vgg8")
    _zero_per_layer(model, pc.analyse(model, X[:2]))
    gated = pc.reconfigure(model, X[:2], structure="gating")
    _assert_same(model, gated)
    assert pc.channels(gated) == pc.channels(pc.reconfigure(model, X[:2]))
    assert not any(isinstance(m, (ChannelGather, ChannelScatter)) for m in gated.modules())


@pytest.mark.parametrize("structure", ["gating", "union"])
def test_a_gated_model_is_analysed_lassoed_and_pruned_again(structure):
    _, gated = _gated_resnet20()
    graph = pc.analyse(gated, X[:2])
    assert graph.gated
    lasso = pc.GroupLasso(gated, X[:2], graph=graph)
    assert torch.isfinite(lasso.penalty()) and lasso.group_count > 0
    _zero_per_layer(gated, graph, fraction=0.3, seed=1)
    again = pc.reconfigure(gated, X[:2], structure=structure)
    _assert_same(gated, again)
    assert sum(p.numel() for p in again.parameters()) < sum(p.numel() for p in gated.parameters())


def test_describe_rebuild_and_save_load_a_gated_model():
    _, gated = _gated_resnet20()
    arch = json.loads(json.dumps(pc.describe(gated)))
    same = pc.rebuild(arch, gated.state_dict())
    _assert_same(gated, same)
    bare = pc.rebuild(arch)  # without weights (as `bench replay` does): same shapes and gates
    assert pc.channels(bare) == pc.channels(gated)
    assert pc.analyse(bare, X[:2]).gated
    buf = io.BytesIO()
    torch.save(gated.state_dict(), buf)
    bare.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    _assert_same(gated, bare)


def test_gating_plan_is_plain_data():
    model = _model("resnet20")
    _zero_per_layer(model, pc.analyse(model, X[:2]))
    plan = pc.plan_reconfiguration(model, X[:2], structure="gating")
    assert plan.structure == "gating" and plan.layers and plan.changed
    twin = pc.Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert twin == plan
    assert "structure" not in pc.plan_reconfiguration(model, X[:2]).to_dict()  # union plans read as before
    _assert_same(model, pc.apply_plan_to(model, twin, X[:2]))


def test_unknown_structure_is_refused():
    with pytest.raises(ValueError, match="structure must be one of union, gating"):
        pc.plan_reconfiguration(_model("resnet20"), X[:2], structure="intersection")


# ------------------------------------------------------------------ the harness


def test_run_config_structure_is_validated_in_one_line():
    from bench.config import RunConfig
    from bench.errors import ConfigError

    assert RunConfig().structure == "union"
    with pytest.raises(ConfigError) as err:
        RunConfig(structure="intersection").validate()
    assert str(err.value) == "--structure must be one of union, gating, got 'intersection'"
    assert RunConfig.from_dict(RunConfig(structure="gating").to_dict()).structure == "gating"


def test_a_study_can_vary_the_structure_with_one_dense_run():
    from bench.config import RunConfig
    from bench.sweep import parse_vary, plan_study

    key, values = parse_vary("structure=union,gating")
    assert (key, values) == ("structure", ["union", "gating"])
    entries = plan_study(RunConfig(), {key: values}, repeat=1)
    assert [e.mode for e in entries].count("dense") == 1
    assert {e.config(RunConfig()).structure for e in entries if e.mode == "prunetrain"} == {"union", "gating"}


def test_bench_run_trains_a_gated_model_and_records_the_structure(tmp_path):
    import os
    import subprocess
    import sys

    args = ["--profile", "smoke", "--subset", "128", "--epochs", "2", "--interval", "1", "--batch-size", "16",
            "--max-batch", "32", "--mode", "prunetrain", "--lasso", "proximal", "--lpr", "0.95",
            "--structure", "gating", "--quiet", "--results-dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench", "run", *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    (run_json,) = tmp_path.rglob("run.json")
    assert json.loads(run_json.read_text())["config"]["structure"] == "gating"
    bad = subprocess.run([sys.executable, "-m", "bench", "run", "--structure", "both"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--structure" in bad.stderr


def test_speed_section_times_union_against_gating_on_a_tiny_input():
    from bench.speed import SECTIONS
    from bench.speed.gating import measure_gating

    assert "gating" in SECTIONS
    rows = measure_gating("resnet20", batch=2, rounds=1, warmup=0)
    names = [r.name for r in rows]
    assert names[1:] == ["gating convs", "union step", "gating step", "conv time gating ÷ union (> 1: union faster)",
                         "step time gating ÷ union (> 1: union faster)"]
    assert all(r.value > 0 for r in rows)
    assert "training FLOPs gating ÷ union 0." in rows[-2].note  # gating's convs are narrower
