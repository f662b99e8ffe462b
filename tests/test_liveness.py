"""Reader-only liveness, the proximal group-lasso step and the function-change budget, on real models."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import prunetrain_core as pc
from prunetrain_core.graph import ChannelGraph

from test_engine import _params, _randomise_bn, _zero_channel

NETWORKS = ["resnet20", "vgg8"]  # a residual and a plain network


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(pc.build_model(name, 10))


def _assert_same_function(before: nn.Module, after: nn.Module, x: torch.Tensor) -> pc.FunctionChange:
    y = torch.zeros(len(x), dtype=torch.long)
    change = pc.compare(pc.outputs(before, x), pc.outputs(after, x), y)
    assert change.eval_rel < 1e-5 and change.train_rel < 1e-5, change
    assert change.eval_acc_delta == 0 and change.train_acc_delta == 0
    return change


def _kill_readers(model: nn.Module, graph: ChannelGraph, fraction: float = 0.3) -> int:
    """Zero the *reader* slices of a fraction of every prunable space's channels; writers stay live."""
    rng = torch.Generator().manual_seed(3)
    killed = 0
    for space in graph.prunable_spaces():
        n = int(space.size * fraction)
        for c in torch.randperm(space.size, generator=rng)[:n].tolist():
            _zero_channel(model, graph, space.id, c, roles={"conv_in", "linear_in"})
        killed += n
    return killed


@pytest.mark.parametrize("name", NETWORKS)
def test_reader_rule_removes_channels_nobody_reads_and_keeps_the_function(name):
    model = _model(name)
    x = torch.randn(4, 3, 32, 32)
    graph = pc.analyse(model, x)
    killed = _kill_readers(model, graph)
    union = pc.reconfigure(model, x, liveness="union")
    assert _params(union) == _params(model)  # the writers are live: the union keeps every channel
    pruned = pc.reconfigure(model, x, liveness="readers")
    _assert_same_function(model, pruned, x)
    kept = sum(s.size for s in pc.analyse(pruned, x).prunable_spaces())
    assert kept == sum(s.size for s in graph.prunable_spaces()) - killed


def test_reader_rule_keeps_a_stream_channel_one_reader_of_the_residual_node_still_reads():
    model = _model("resnet20")
    x = torch.randn(2, 3, 32, 32)
    graph = pc.analyse(model, x)
    stream = graph.module_spaces["conv1"]["out"]  # stage 1's residual stream: read by every block
    _zero_channel(model, graph, stream, 7, roles={"conv_in"})
    with torch.no_grad():
        model.layer1[2].conv1.weight[:, 7] = 0.5  # one reader still reads it
    before = {s.id: s.size for s in graph.prunable_spaces()}
    pruned = pc.reconfigure(model, x, liveness="readers")
    assert pc.analyse(pruned, x).spaces[stream].size == before[stream]
    _zero_channel(model, graph, stream, 7, roles={"conv_in", "linear_in"})
    pruned = pc.reconfigure(model, x, liveness="readers")
    assert pruned.get_submodule("layer1.0.conv1").in_channels == before[stream] - 1
    _assert_same_function(model, pruned, x)


@pytest.mark.parametrize("name", NETWORKS)
def test_proximal_step_gives_exact_zeros_and_their_removal_keeps_the_function(name):
    model = _model(name)
    x = torch.randn(4, 3, 32, 32)
    lasso = pc.GroupLasso(model, x)
    norms = lasso.squared_norms().sqrt()
    step = float(norms.detach().quantile(0.2))
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    zeroed = lasso.proximal_step(step)
    assert zeroed >= int(0.2 * len(norms))
    after = lasso.squared_norms().sqrt()
    assert int((after == 0).sum()) >= zeroed  # exact zeros, not small values
    assert int((after < 1e-4).sum()) == int((after == 0).sum())
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, snapshot[n])]
    assert all(".weight" in n and "bn" not in n for n in moved)  # BN and biases are not grouped
    pruned = pc.reconfigure(model, x, liveness="readers")
    assert _params(pruned) < _params(model)
    _assert_same_function(model, pruned, x)


@pytest.mark.parametrize("name", NETWORKS)
def test_reader_groups_leave_writers_filters_alone_and_their_zeros_go_without_changing_the_function(name):
    model = _model(name)
    x = torch.randn(4, 3, 32, 32)
    everything, readers = pc.GroupLasso(model, x), pc.GroupLasso(model, x, groups="readers")
    graph = everything.graph
    reads = sum(s.size * sum(m.role in ("conv_in", "linear_in") for m in s.members) for s in graph.prunable_spaces())
    assert readers.group_count == reads < everything.group_count
    stem = next(m.module for s in graph.prunable_spaces() for m in s.members if m.role == "conv_out"
                and not any(n.module == m.module and n.role == "conv_in" for t in graph.prunable_spaces()
                            for n in t.members))
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    norms = readers.squared_norms().detach().sqrt()
    assert readers.proximal_step(float(norms.quantile(0.3))) >= int(0.3 * len(norms))
    assert torch.equal(model.get_submodule(stem).weight, snapshot[f"{stem}.weight"])  # a pure writer: untouched
    everything.proximal_step(1e-3)
    assert not torch.equal(model.get_submodule(stem).weight, snapshot[f"{stem}.weight"])  # the paper's groups: shrunk
    pruned = pc.reconfigure(model, x, liveness="readers", threshold=1e-12)  # the exact zeros, nothing near them
    assert _params(pruned) < _params(model)
    _assert_same_function(model, pruned, x)
    with pytest.raises(ValueError, match="groups"):
        pc.GroupLasso(model, x, groups="writers")


@pytest.mark.parametrize("name", NETWORKS)
def test_keeping_bn_scale_changes_only_what_batchnorm_undoes(name):
    x = torch.randn(8, 3, 32, 32)
    shrunk, kept = _model(name), _model(name)
    for model in (shrunk, kept):  # running statistics of this input, so eval mode is a real check too
        model.train()
        with torch.no_grad():
            model(x)
    step = float(pc.GroupLasso(kept, x, groups="readers").squared_norms().sqrt().detach().quantile(0.3))
    pc.GroupLasso(shrunk, x, groups="readers").proximal_step(step)
    lasso = pc.GroupLasso(kept, x, groups="readers")
    filters = {layer.weight: layer.weight.detach().flatten(1).norm(dim=1) for layer in lasso.layers if layer.bn}
    assert all((layer.bn is not None) == (layer.weight.dim() == 4) for layer in lasso.layers)  # convs: BN; fc: none
    lasso.proximal_step(step, keep_bn_scale=True)
    for weight, before in filters.items():  # every filter BN reads is back at its norm (or exactly zero)
        after = weight.detach().flatten(1).norm(dim=1)
        assert torch.allclose(after[after > 0], before[after > 0], rtol=1e-5)
    zeros = int(pc.GroupLasso(shrunk, x, groups="readers").squared_norms().eq(0).sum())
    assert zeros > 0 and int(lasso.squared_norms().eq(0).sum()) == zeros  # the same exact zeros
    change = pc.compare(pc.outputs(shrunk, x), pc.outputs(kept, x), torch.zeros(8, dtype=torch.long))
    assert change.eval_rel < 1e-4 and change.train_rel < 1e-4  # BN's ε is all that differs
    moved = max(float((a - b).detach().abs().max()) for a, b in zip(shrunk.parameters(), kept.parameters()))
    assert moved > 1e-3  # ... though the weights differ


def test_proximal_step_is_block_soft_thresholding():
    model = pc.build_model("vgg8", 10)
    x = torch.randn(2, 3, 32, 32)
    lasso = pc.GroupLasso(model, x)
    fc = model.fc.weight
    col = fc.detach()[:, 0].clone()  # one group: the classifier reads channel 0 through one column
    step = 0.3 * float(col.norm())
    with torch.no_grad():
        fc[:, 1] = 0.1 * step / fc[:, 1].norm() * fc[:, 1]  # a group below the step
    lasso.proximal_step(step)
    assert torch.allclose(fc.detach()[:, 0], col * (1 - step / col.norm()), atol=1e-6)
    assert torch.count_nonzero(fc.detach()[:, 1]) == 0
    with pytest.raises(ValueError):
        lasso.proximal_step(-1.0)


def test_size_weighted_proximal_step_thresholds_each_group_at_step_times_root_size():
    model = pc.build_model("vgg8", 10)
    x = torch.randn(2, 3, 32, 32)
    lasso = pc.GroupLasso(model, x, groups="readers", weighting="size")
    fc, conv = model.fc.weight, model.features[16].weight  # the classifier reads 10-element columns
    step = 0.5 * float(fc.detach()[:, 0].norm()) / math.sqrt(10)
    with torch.no_grad():
        fc[:, 1] *= 0.9 * step * math.sqrt(10) / fc[:, 1].norm()  # below step·√10, above the step itself
        conv[:, 2] *= 0.5 * step * math.sqrt(conv[:, 2].numel()) / conv[:, 2].norm()
    col, before = fc.detach()[:, 0].clone(), conv.detach().clone()
    lasso.proximal_step(step)
    assert torch.allclose(fc.detach()[:, 0], col * (1 - step * math.sqrt(10) / col.norm()), atol=1e-6)
    assert torch.count_nonzero(fc.detach()[:, 1]) == 0 and torch.count_nonzero(conv.detach()[:, 2]) == 0
    c = math.sqrt(conv[:, 0].numel())
    assert torch.allclose(conv.detach()[:, 0], before[:, 0] * (1 - step * c / before[:, 0].norm()), atol=1e-6)


def test_size_weights_stop_the_small_classifier_columns_from_dying_first():
    """At PyTorch's default init a classifier column is ~17x smaller than a conv input slice: uniform weights kill
    columns (and so channels of the last conv, their only reader) before any conv slice; size weights press on
    each layer in proportion to its weight scale: the wide convs' slices go first, with the few weakest columns
    (10-element norms spread widely)."""
    x = torch.randn(2, 3, 32, 32)
    for weighting, columns_die_first in (("uniform", True), ("size", False)):
        torch.manual_seed(0)
        model = pc.build_model("vgg8", 10)
        lasso = pc.GroupLasso(model, x, groups="readers", weighting=weighting)
        norms = lasso.squared_norms().sqrt().detach()
        step = float((norms / lasso.group_weights()).quantile(0.2))  # kills the 20 % most pressed groups
        dead = lasso.proximal_step(step)
        dead_columns = int(model.fc.weight.detach().norm(dim=0).eq(0).sum())
        assert dead >= 0.19 * len(norms)
        if columns_die_first:
            assert dead_columns == dead  # all of them columns
        else:
            assert dead_columns < 0.15 * 512 and dead_columns < dead / 4  # the weakest columns only


def test_proximal_step_size_matches_the_subgradient_under_momentum():
    assert pc.proximal_step_size(0.1, 2e-3, 0.9) == pytest.approx(0.1 * 2e-3 / 0.1)
    assert pc.proximal_step_size(0.1, 2e-3, 0.0) == pytest.approx(2e-4)
    with pytest.raises(ValueError):
        pc.proximal_step_size(0.1, 2e-3, 1.0)


def test_outputs_leave_buffers_mode_and_rng_alone():
    model = _model("resnet20")
    x = torch.randn(4, 3, 32, 32)
    buffers = [b.clone() for b in model.buffers()]
    model.eval()
    rng = torch.get_rng_state()
    out = pc.outputs(model, x)
    assert not model.training
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))
    assert torch.equal(rng, torch.get_rng_state())
    assert not torch.allclose(out.eval, out.train)  # batch statistics differ from the running ones


def test_train_mode_outputs_draw_the_same_dropout_masks_whatever_ran_in_between():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5),
                          nn.Linear(8 * 6 * 6, 10))
    x = torch.randn(4, 3, 8, 8)
    before = pc.outputs(model, x)
    torch.randn(1000)  # a surgery may draw random numbers (new modules initialise their weights)
    after = pc.outputs(model, x)
    assert torch.equal(before.train, after.train) and torch.equal(before.eval, after.eval)
    change = pc.compare(before, after, torch.zeros(4, dtype=torch.long))
    assert change.max_rel == 0
    rng = torch.get_rng_state()
    pc.outputs(model, x)
    assert torch.equal(rng, torch.get_rng_state())  # the caller's stream is untouched


def test_function_change_is_relative_to_the_logit_scale():
    before = pc.Outputs(torch.tensor([[4.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    after = pc.Outputs(torch.tensor([[4.0, 0.4], [0.0, 2.0]]), torch.tensor([[0.0, 2.0], [0.0, 1.0]]))
    change = pc.compare(before, after, torch.tensor([0, 1]))
    assert change.eval_rel == pytest.approx(0.1)
    assert change.train_rel == pytest.approx(2.0)
    assert change.eval_acc_delta == 0 and change.train_acc_delta == -50.0
    assert change.max_rel == pytest.approx(2.0)


def test_budget_removes_near_dead_channels_only_while_the_change_stays_within_tolerance():
    model = _model("resnet20")
    x = torch.randn(16, 3, 32, 32)
    y = torch.randint(0, 10, (16,))
    graph = pc.analyse(model, x)
    inner = graph.module_spaces["layer3.1.conv1"]["out"]
    with torch.no_grad():
        model.layer3[1].conv2.weight[:, :20] *= 1e-4  # 20 near-dead channels: tiny, not zero
        model.layer3[1].conv2.weight[:, 20:30] *= 0.05  # 10 weak but not dead
    grid = pc.threshold_grid(1e-4)
    strict = pc.plan_within_budget(model, x, x, y, tolerance=1e-9, thresholds=grid, liveness="readers")
    assert strict.threshold is None and not strict.plan.changed
    loose = pc.plan_within_budget(model, x, x, y, tolerance=1e-3, thresholds=grid, liveness="readers")
    assert loose.plan.changed and loose.change.max_rel <= 1e-3
    assert len(loose.plan.keep[inner]) <= 64 - 20
    assert all(c >= 20 for c in loose.plan.keep[inner][:1])
    pruned = pc.apply_plan_to(model, loose.plan, x)
    measured = pc.compare(pc.outputs(model, x), pc.outputs(pruned, x), y)
    assert measured.max_rel == pytest.approx(loose.change.max_rel, rel=1e-4, abs=1e-7)
    # bisection: few trials, and the next threshold up (if tried) was over the budget
    assert len(loose.tried) <= 4
    above = [c for t, c in loose.tried if t > loose.threshold]
    assert all(c > 1e-3 for c in above)


def test_unknown_liveness_rule_is_refused():
    model = pc.build_model("resnet20", 10)
    with pytest.raises(ValueError, match="liveness"):
        pc.plan_reconfiguration(model, torch.randn(2, 3, 32, 32), liveness="writers")
