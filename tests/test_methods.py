"""The competing methods' decision rules (prunetrain_core.methods) on small models whose γ are set by hand."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import prunetrain_core as pc
from prunetrain_core import methods

X = torch.randn(2, 3, 32, 32)


def _set_gammas(model: nn.Module, value: float = 1.0) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(value)


def _space_of(graph, bn: str) -> int:
    return graph.module_spaces[bn]["bn"]


def test_slimming_removes_the_channels_below_the_global_percentile_and_the_surgery_applies_it():
    model = pc.build_model("vgg8")
    _set_gammas(model, 1.0)
    bns = dict(model.named_modules())
    with torch.no_grad():
        bns["features.1"].weight[:10] = -0.01     # |γ| counts: a negative scale is not small
        bns["features.1"].weight[10:20] = 0.001
        bns["features.5"].weight[:30] = 0.002
    graph = pc.analyse(model, (X,))
    scales = methods.bn_scales(graph, model)
    n = sum(len(v) for s in scales.values() for v in s.values())
    assert n == 64 + 128 + 256 + 512 + 512
    # the 40 smallest |γ| are 10 × 0.001 and 30 × 0.002; the cut at ⌊n·ratio⌋ = 40 is 0.01: both groups go
    decision = methods.ratio_plan(graph, scales, 40 / n)
    assert decision.cut == pytest.approx(0.01) and decision.bn_below == 40
    keep = decision.plan.keep
    assert keep[_space_of(graph, "features.1")] == list(range(10)) + list(range(20, 64))
    assert keep[_space_of(graph, "features.5")] == list(range(30, 128))
    assert all(len(keep[s.id]) == s.size for s in graph.prunable_spaces()
               if s.id not in (_space_of(graph, "features.1"), _space_of(graph, "features.5")))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(X).sum().backward()
    opt.step()
    small = pc.apply_plan_to(model, decision.plan, X, optimizer=opt)
    widths = pc.channels(small)
    assert widths["features.0"] == 54 and widths["features.4"] == 98 and small(X).shape == (2, 10)
    assert all(p in opt.state and opt.state[p]["momentum_buffer"].shape == p.shape for p in small.parameters())


def test_a_residual_stream_channel_goes_only_where_every_writers_gamma_is_below_the_cut():
    model = pc.build_model("resnet20")
    _set_gammas(model, 1.0)
    bns = dict(model.named_modules())
    writers = ["bn1", "layer1.0.bn2", "layer1.1.bn2", "layer1.2.bn2"]   # the four BNs of stage 1's stream
    with torch.no_grad():
        for name in writers:
            bns[name].weight[:3] = 1e-3           # channels 0-2: below the cut in every writer
        for name in writers[:3]:
            bns[name].weight[3] = 1e-3            # channel 3: below in three writers, live in layer1.2.bn2
        bns["layer1.0.bn1"].weight[:5] = 1e-3     # a space with one BN: its five channels go
    graph = pc.analyse(model, (X,))
    scales = methods.bn_scales(graph, model)
    stream = _space_of(graph, "bn1")
    assert sorted(scales[stream]) == sorted(writers)
    n = sum(len(v) for s in scales.values() for v in s.values())
    decision = methods.ratio_plan(graph, scales, 20 / n)          # the 20 small values: 3·4 + 3 + 5
    assert decision.bn_below == 20
    assert decision.plan.keep[stream] == list(range(3, 16))       # channel 3 stays: one writer keeps it
    assert decision.plan.keep[_space_of(graph, "layer1.0.bn1")] == list(range(5, 16))
    assert decision.kept_by_union == 1
    assert "every one's |γ|" in decision.to_dict()["union_rule"]
    small = pc.apply_plan_to(model, decision.plan, X)
    assert pc.channels(small)["conv1"] == 13 and pc.channels(small)["layer1.0.conv1"] == 11


def test_every_space_keeps_its_largest_gamma_when_all_fall_below_the_cut():
    model = pc.build_model("vgg8")
    _set_gammas(model, 1.0)
    with torch.no_grad():
        bn = dict(model.named_modules())["features.1"]
        bn.weight.copy_(torch.linspace(1e-4, 1e-3, 64))
    graph = pc.analyse(model, (X,))
    decision = methods.ratio_plan(graph, methods.bn_scales(graph, model), 0.1)
    assert decision.plan.keep[_space_of(graph, "features.1")] == [63] and decision.kept_last == 1
    with pytest.raises(ValueError, match="ratio"):
        methods.ratio_cut(methods.bn_scales(graph, model), 1.0)


def test_the_early_bird_ticket_is_drawn_when_five_consecutive_masks_differ_by_less_than_a_tenth():
    base = [True] * 80 + [False] * 20
    moved = lambda k: [not v if i < k else v for i, v in enumerate(base)]   # k of 100 decisions flipped
    assert methods.mask_distance(base, moved(9)) == pytest.approx(0.09)
    assert not methods.ticket_drawn([base] * 4)                              # fewer than five masks: never
    assert methods.ticket_drawn([base, moved(9), base, moved(9), base])      # every step 0.09 < 0.1
    assert not methods.ticket_drawn([base, moved(10), base, base, base])     # one step of exactly 0.1
    history = [moved(50), moved(10), base, base, base, base, base]           # the large steps fell out of the window
    assert methods.ticket_drawn(history) and not methods.ticket_drawn(history[:6])
    assert methods.mask_distances(history[:6]) == [0.1, 0, 0, 0]
    # consecutive, not against the newest: 0→9→18 flips drift by 0.09 a step although the ends differ by 0.18
    drift = [base, moved(9), moved(18), moved(9), base]
    assert methods.ticket_drawn(drift)
    with pytest.raises(ValueError, match="cannot be compared"):
        methods.mask_distance(base, base[:50])


def test_the_early_bird_mask_is_the_global_percentile_mask():
    scales = {1: {"a": [0.5, 0.1, 0.3]}, 2: {"b": [0.2, 0.4], "c": [0.05, 0.6]}}
    # sorted: .05 .1 .2 .3 .4 .5 .6; ratio 0.3 → index 2 → cut 0.2; order: space 1 (a), space 2 (b, then c)
    assert methods.bn_mask(scales, 0.3) == [True, False, True, True, True, False, True]


def test_random_pruning_keeps_the_recorded_counts_with_seeded_choices():
    model = pc.build_model("resnet20")
    graph = pc.analyse(model, (X,))
    widths = dict(pc.channels(model))
    widths.update({"conv1": 5, "layer1.0.conv1": 7, "layer3.2.conv1": 0})   # 0: a branch the other run removed
    counts = methods.space_counts(graph, widths)
    plan = methods.random_plan(graph, counts, seed=3)
    stream, branch, gone = (graph.module_spaces[m]["out"] for m in ("conv1", "layer1.0.conv1", "layer3.2.conv1"))
    assert len(plan.keep[stream]) == 5 and len(plan.keep[branch]) == 7 and len(plan.keep[gone]) == 1
    assert all(len(plan.keep[s.id]) == s.size for s in graph.prunable_spaces() if s.id not in (stream, branch, gone))
    assert plan.keep == methods.random_plan(graph, counts, seed=3).keep              # seeded
    assert plan.keep[branch] != methods.random_plan(graph, counts, seed=4).keep[branch]
    assert plan.keep[branch] != list(range(7))                                        # not the first ones
    small = pc.apply_plan_to(model, plan, X)
    assert pc.channels(small)["conv1"] == 5 and pc.channels(small)["layer1.0.conv1"] == 7


def test_the_slimming_penalty_is_the_l1_norm_of_every_bn_scale():
    model = pc.build_model("vgg8")
    _set_gammas(model, -0.5)
    l1 = methods.BNScaleL1(model)
    assert l1.penalty().item() == pytest.approx(0.5 * (64 + 128 + 256 + 512 + 512))
    l1.penalty().backward()
    g = dict(model.named_modules())["features.1"].weight.grad
    assert torch.equal(g, -torch.ones(64))                       # the subgradient s·sign(γ) at s = 1
