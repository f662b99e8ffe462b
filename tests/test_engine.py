"""The engine: coupling from the traced graph, group lasso, λ, reconfiguration, FLOPs, arch data."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torchvision
from torch import nn

import prunetrain_core as pc
from prunetrain_core.graph import ChannelGraph
from prunetrain_core.plan import Plan

PROJECT_MODELS = ["resnet20", "resnet32", "resnet56", "resnet110", "resnet50", "vgg8", "vgg11", "vgg13", "vgg16"]
TORCHVISION_MODELS = ["resnet18", "resnet34", "resnet50", "resnet101", "wide_resnet50_2", "vgg11_bn", "vgg16_bn"]


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so that BN shifts of dead channels are not zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 2 - 1)
    return model


def _zero_channel(model: nn.Module, graph: ChannelGraph, sid: int, channel: int, roles=None) -> None:
    """Zero one channel's slice in every voting layer of a space (or only in ``roles``)."""
    space = graph.spaces[sid]
    with torch.no_grad():
        for m in space.members:
            if m.role not in (roles or ("conv_out", "conv_in", "linear_out", "linear_in")):
                continue
            w = model.get_submodule(m.module).weight
            if m.role in ("conv_out", "linear_out"):
                w[channel] = 0
            elif m.role == "conv_in":
                w[:, channel] = 0
            elif m.role == "linear_in":
                w[:, channel * m.positions:(channel + 1) * m.positions] = 0


def _torchvision(name: str) -> nn.Module:
    return getattr(torchvision.models, name)(weights=None, num_classes=10)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


# --------------------------------------------------------------------------- coupling
def test_resnet32_channel_spaces_match_the_original_stage_tables():
    model = pc.build_model("resnet32", 10)
    graph = pc.analyse(model, torch.randn(2, 3, 32, 32))
    stage1 = graph.space_of("conv1", "out")
    writers = {m.module for m in stage1.members if m.role == "conv_out"}
    readers = {m.module for m in stage1.members if m.role == "conv_in"}
    # node 0 of the reference table: conv1 and every block's last conv write; first convs + shortcut read
    assert writers == {"conv1"} | {f"layer1.{b}.conv2" for b in range(5)}
    assert readers == {f"layer1.{b}.conv1" for b in range(5)} | {"layer2.0.conv1", "layer2.0.shortcut.0"}
    stage3 = graph.space_of("layer3.0.shortcut.0", "out")
    assert {m.module for m in stage3.members if m.role == "linear_in"} == {"fc"}
    inner = graph.space_of("layer2.3.conv1", "out")
    assert {(m.module, m.role) for m in inner.members} == {
        ("layer2.3.conv1", "conv_out"), ("layer2.3.bn1", "bn"), ("layer2.3.conv2", "conv_in")}
    assert not graph.space_of("conv1", "in").prunable  # the image
    assert not graph.space_of("fc", "out").prunable    # the logits
    assert len(graph.prunable_spaces()) == 3 + 15


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_torchvision_models_are_analysed(name):
    model = _torchvision(name)
    graph = pc.analyse(model, torch.randn(1, 3, 64, 64))
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        assert graph.space_of(conv, "out").size == model.get_submodule(conv).out_channels
    if name.startswith("vgg"):
        fc1 = graph.space_of("classifier.0", "in")
        member = next(m for m in fc1.members if m.module == "classifier.0")
        assert member.positions == 49  # AdaptiveAvgPool2d(7) then flatten: 49 columns per channel
        assert graph.space_of("classifier.0", "out").prunable  # hidden FC rows are grouped


class _Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3)
        self.b = nn.Conv2d(8, 8, 3, groups=4)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.b(self.a(x)).mean((2, 3)))


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)
        self.c = nn.Conv2d(8, 4, 3)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], 1))


class _Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.a(x) * torch.sigmoid(self.b(x))


class _Slice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return self.a(x)[:, :4]


@pytest.mark.parametrize("model,needle", [
    (_Grouped(), "layer 'b' (Conv2d): grouped convolution"),
    (_Concat(), "'cat'"),
    (_Gate(), "tensor-by-tensor"),
    (_Slice(), "slicing"),
    (torchvision.models.mobilenet_v2(), "depthwise convolution"),
])
def test_unsupported_operations_are_refused_naming_the_layer(model, needle):
    with pytest.raises(pc.UnsupportedModelError) as err:
        pc.analyse(model, torch.randn(1, 3, 32, 32))
    assert needle in str(err.value)


def test_untraceable_model_is_refused():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else x

    with pytest.raises(pc.UnsupportedModelError, match="cannot trace Dynamic"):
        pc.analyse(Dynamic(), torch.randn(1, 3, 4, 4))


# --------------------------------------------------------------------------- group lasso
def _reference_penalty(model: nn.Module, graph: ChannelGraph, sized: bool = False) -> tuple[float, int]:
    """The penalty with a Python loop over every group: the definition, slowly (``sized``: × √elements)."""
    total, count = 0.0, 0
    seen = set()
    for space in graph.prunable_spaces():
        for m in space.members:
            if m.role not in ("conv_out", "conv_in", "linear_out", "linear_in") or (m.module, m.role) in seen:
                continue
            seen.add((m.module, m.role))
            w = model.get_submodule(m.module).weight.detach().double()
            for c in range(space.size):
                if m.role in ("conv_out", "linear_out"):
                    g = w[c]
                elif m.role == "conv_in":
                    g = w[:, c]
                else:
                    g = w[:, c * m.positions:(c + 1) * m.positions]
                total += math.sqrt((g * g).sum().item() + 1e-8) * (math.sqrt(g.numel()) if sized else 1.0)
                count += 1
    return total, count


@pytest.mark.parametrize("name", ["resnet32", "vgg8"])
@pytest.mark.parametrize("weighting", ["uniform", "size"])
def test_group_lasso_equals_the_per_group_definition(name, weighting):
    model = pc.build_model(name, 10)
    x = torch.randn(2, 3, 32, 32)
    lasso = pc.GroupLasso(model, x, weighting=weighting)
    ref, count = _reference_penalty(model, lasso.graph, sized=weighting == "size")
    assert lasso.group_count == count
    assert lasso.penalty().item() == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError, match="weighting must be one of uniform, size"):
        pc.GroupLasso(model, x, weighting="sqrt")


def test_group_lasso_groups_of_resnet32():
    model = pc.build_model("resnet32", 10)
    lasso = pc.GroupLasso(model, torch.randn(2, 3, 32, 32))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    expected = sum(c.out_channels for c in convs) + sum(c.in_channels for c in convs[1:]) + 64
    assert lasso.group_count == expected
    # G0 at this init: in expectation every conv input group has norm ≈ √2, every output group √(2·C_in/C_out)
    assert lasso.penalty().item() == pytest.approx(3.25e3, rel=0.03)


def test_group_lasso_on_flattened_linear_groups_whole_channels():
    model = torchvision.models.vgg11_bn(weights=None, num_classes=10)
    for weighting in ("uniform", "size"):  # a column block is out × 7·7 elements; a hidden row, all its inputs
        lasso = pc.GroupLasso(model, torch.randn(1, 3, 32, 32), weighting=weighting)
        ref, count = _reference_penalty(model, lasso.graph, sized=weighting == "size")
        assert lasso.group_count == count
        assert lasso.penalty().item() == pytest.approx(ref, rel=1e-5)


def test_penalty_gradient_is_w_over_norm():
    model = pc.build_model("vgg8", 10)
    lasso = pc.GroupLasso(model, torch.randn(2, 3, 32, 32))
    lasso.penalty().backward()
    fc = model.fc.weight
    col = fc.detach()[:, 0]
    # the fc input column belongs to one group only (fc rows are the logits)
    assert torch.allclose(fc.grad[:, 0], col / col.norm(), atol=1e-5)


def test_lambda_from_ratio():
    lam = pc.lambda_from_ratio(0.2, ce0=2.3, g0=3250.0)
    assert lam == pytest.approx(0.2 * 2.3 / (0.8 * 3250.0))
    assert lam * 3250.0 / (2.3 + lam * 3250.0) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        pc.lambda_from_ratio(1.0, 2.3, 1.0)


# --------------------------------------------------------------------------- reconfiguration
def _kill_random_channels(model, graph, rng, fraction=0.3):
    killed = {}
    for space in graph.prunable_spaces():
        n = int(space.size * fraction)
        channels = torch.randperm(space.size, generator=rng)[:n].tolist()
        for c in channels:
            _zero_channel(model, graph, space.id, c)
        killed[space.id] = set(channels)
    return killed


def _check_preserved(model, x, **kw):
    model.eval()
    with torch.no_grad():
        before = model(x)
    pruned = pc.reconfigure(model, x, **kw)
    pruned.eval()
    with torch.no_grad():
        after = pruned(x)
    assert _relative_error(after, before) < 1e-5
    return pruned


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", PROJECT_MODELS)
def test_reconfiguration_preserves_function_project_models(name):
    torch.manual_seed(0)
    model = _randomise_bn(pc.build_model(name, 10))
    x = torch.randn(3, 3, 32, 32)
    graph = pc.analyse(model, x)
    killed = _kill_random_channels(model, graph, torch.Generator().manual_seed(1))
    pruned = _check_preserved(model, x)
    assert _params(pruned) < _params(model)
    new_graph = pc.analyse(pruned, x)
    assert sum(s.size for s in new_graph.prunable_spaces()) == sum(
        s.size - len(killed[s.id]) for s in graph.prunable_spaces())


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_reconfiguration_preserves_function_torchvision_models(name):
    torch.manual_seed(0)
    model = _randomise_bn(_torchvision(name))
    x = torch.randn(2, 3, 64, 64)
    graph = pc.analyse(model, x)
    _kill_random_channels(model, graph, torch.Generator().manual_seed(2), fraction=0.25)
    pruned = _check_preserved(model, x)
    assert _params(pruned) < _params(model)
    assert not any(isinstance(m, type(None)) for m in pruned.modules())


def test_dead_residual_branches_are_removed_with_their_constant():
    torch.manual_seed(0)
    model = _randomise_bn(pc.build_model("resnet20", 10))
    x = torch.randn(3, 3, 32, 32)
    graph = pc.analyse(model, x)
    for block in ("layer1.1", "layer3.0"):  # an identity block and a downsampling block
        sid = graph.module_spaces[f"{block}.conv1"]["out"]
        for c in range(graph.spaces[sid].size):
            _zero_channel(model, graph, sid, c)
    pruned = _check_preserved(model, x)
    names = dict(pruned.named_modules())
    for gone in ("layer1.1.conv1", "layer1.1.conv2", "layer1.1.bn2", "layer3.0.conv1", "layer3.0.conv2"):
        assert gone not in names
    assert "layer3.0.shortcut.0" in names  # only the projection survives
    consts = [m for n, m in pruned.named_modules() if n.startswith("pt_const_")]
    assert len(consts) == 2
    # in training mode the constant is the branch's last BN shift β
    assert torch.allclose(consts[0].train_value.flatten(), model.layer1[1].bn2.bias.detach(), atol=1e-5)
    assert all(c.eval_value.abs().max() > 0.1 for c in consts)  # far from zero with random BN statistics
    # ... and the function is preserved in training mode too
    model.train()
    pruned.train()
    torch.manual_seed(1)
    batch = torch.randn(4, 3, 32, 32)
    assert _relative_error(pruned(batch), model(batch)) < 1e-4


def test_dead_bottleneck_branch_is_removed_torchvision():
    torch.manual_seed(0)
    model = _randomise_bn(_torchvision("resnet50"))
    x = torch.randn(2, 3, 64, 64)
    graph = pc.analyse(model, x)
    sid = graph.module_spaces["layer2.1.conv1"]["out"]
    for c in range(graph.spaces[sid].size):
        _zero_channel(model, graph, sid, c)
    pruned = _check_preserved(model, x)
    assert "layer2.1.conv3" not in dict(pruned.named_modules())


def test_one_sided_zero_keeps_the_channel():
    torch.manual_seed(0)
    model = _randomise_bn(pc.build_model("resnet20", 10))
    x = torch.randn(2, 3, 32, 32)
    graph = pc.analyse(model, x)
    sid = graph.module_spaces["layer2.1.conv1"]["out"]
    _zero_channel(model, graph, sid, 5, roles={"conv_out"})  # producer dead, consumer alive
    stream = graph.module_spaces["conv1"]["out"]
    _zero_channel(model, graph, stream, 3, roles={"conv_in", "linear_in"})  # readers dead, writers alive
    pruned = _check_preserved(model, x)
    assert _params(pruned) == _params(model)
    assert pruned.get_submodule("layer2.1.conv1").out_channels == 32


def test_fully_dead_vgg_layer_keeps_its_strongest_channel():
    torch.manual_seed(0)
    model = _randomise_bn(pc.build_model("vgg8", 10))
    x = torch.randn(2, 3, 32, 32)
    graph = pc.analyse(model, x)
    sid = graph.module_spaces["features.4"]["out"]
    for c in range(graph.spaces[sid].size):
        _zero_channel(model, graph, sid, c)
    with torch.no_grad():
        model.features[4].weight[17, 0, 0, 0] = 5e-5  # below threshold but the strongest
    plan = pc.plan_reconfiguration(model, x)
    assert plan.keep[sid] == [17] and sid not in plan.emptied
    pruned = pc.reconfigure(model, x)
    assert pruned.get_submodule("features.4").out_channels == 1


def test_signed_small_weights_are_alive():
    """max|w| decides, not the signed maximum (the original code's bug)."""
    model = pc.build_model("vgg8", 10)
    x = torch.randn(2, 3, 32, 32)
    graph = pc.analyse(model, x)
    sid = graph.module_spaces["features.0"]["out"]
    _zero_channel(model, graph, sid, 0)
    with torch.no_grad():
        model.features[0].weight[0, 0, 0, 0] = -0.5
    plan = pc.plan_reconfiguration(model, x)
    assert 0 in plan.keep[sid]


def test_repeated_reconfiguration_slices_earlier_constants():
    torch.manual_seed(0)
    model = _randomise_bn(pc.build_model("resnet20", 10))
    x = torch.randn(2, 3, 32, 32)
    graph = pc.analyse(model, x)
    sid = graph.module_spaces["layer2.2.conv1"]["out"]
    for c in range(32):
        _zero_channel(model, graph, sid, c)
    first = _check_preserved(model, x)
    graph2 = pc.analyse(first, x)
    stream = graph2.module_spaces["layer2.0.shortcut.0"]["out"]
    for c in (1, 4, 9):
        _zero_channel(first, graph2, stream, c)
    second = _check_preserved(first, x)
    assert second.get_submodule("layer2.0.shortcut.0").out_channels == 29
    assert second.pt_const_0.eval_value.shape == (1, 29, 1, 1)


def test_round_to_keeps_multiples():
    torch.manual_seed(0)
    model = _randomise_bn(pc.build_model("resnet20", 10))
    x = torch.randn(2, 3, 32, 32)
    graph = pc.analyse(model, x)
    _kill_random_channels(model, graph, torch.Generator().manual_seed(3), fraction=0.4)
    plan = pc.plan_reconfiguration(model, x, round_to=8)
    assert all(len(k) % 8 == 0 or len(k) == plan.sizes[s] for s, k in plan.keep.items())
    _check_preserved(model, x, round_to=8)  # adding back dead (zero) channels keeps the function


def test_plan_is_plain_data_and_applies_to_a_twin():
    """What a DDP rank 0 does: plan, serialise, and every rank applies it to its own copy."""
    torch.manual_seed(0)
    model = _randomise_bn(pc.build_model("resnet20", 10)).eval()
    x = torch.randn(2, 3, 32, 32)
    graph = pc.analyse(model, x)
    _kill_random_channels(model, graph, torch.Generator().manual_seed(4))
    plan = pc.plan_reconfiguration(model, x)
    wire = json.loads(json.dumps(plan.to_dict()))
    twin = copy.deepcopy(model)
    a = pc.apply_plan_to(model, plan, x)
    b = pc.apply_plan_to(twin, Plan.from_dict(wire), x)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    other = pc.build_model("resnet32", 10)
    with pytest.raises(ValueError, match="different architecture"):
        pc.apply_plan_to(other, plan, x)


# --------------------------------------------------------------------------- optimizer state
def _kept_view(old: torch.Tensor, graph: ChannelGraph, plan: Plan, module: str, kind: str) -> torch.Tensor:
    spaces = graph.module_spaces[module]

    def keep(sid):
        return torch.tensor(plan.keep.get(sid, range(graph.spaces[sid].size)), dtype=torch.long)

    if kind == "bn":
        return old.index_select(0, keep(spaces["bn"]))
    return old.index_select(0, keep(spaces["out"])).index_select(1, keep(spaces["in"]))


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_optimizer_state_is_sliced_and_training_continues(opt_name):
    torch.manual_seed(0)
    # float64: in float32, BatchNorm's backward on near-constant channels amplifies rounding noise
    model = pc.build_model("resnet20", 10).double()
    x, y = torch.randn(8, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (8,))
    if opt_name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(model(x), y).backward()
    opt.step()
    opt.zero_grad()
    graph = pc.analyse(model, x)
    _kill_random_channels(model, graph, torch.Generator().manual_seed(5), fraction=0.25)
    # a whole branch too, so removed parameters must leave the optimizer
    sid = graph.module_spaces["layer1.2.conv1"]["out"]
    for c in range(16):
        _zero_channel(model, graph, sid, c)
    plan = pc.plan_reconfiguration(model, x)
    twin, twin_opt = copy.deepcopy(model), None
    twin_opt = type(opt)(twin.parameters(), **{k: v for k, v in opt.defaults.items() if k in ("lr", "momentum", "weight_decay")})
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    pruned = pc.apply_plan_to(twin, plan, x, optimizer=twin_opt)

    assert len(twin_opt.param_groups[0]["params"]) == len(list(pruned.parameters()))
    assert {id(p) for p in twin_opt.param_groups[0]["params"]} == {id(p) for p in pruned.parameters()}
    old_state = opt.state[model.layer2[1].conv1.weight]
    new_state = twin_opt.state[pruned.get_submodule("layer2.1.conv1").weight]
    key = "momentum_buffer" if opt_name == "sgd" else "exp_avg"
    assert torch.equal(new_state[key], _kept_view(old_state[key], graph, plan, "layer2.1.conv1", "conv"))
    if opt_name == "adamw":
        assert float(new_state["step"]) == float(old_state["step"]) == 1.0

    # one more step on both: the kept weights move identically
    model.train()
    pruned.train()
    loss_fn(model(x), y).backward()
    opt.step()
    loss_fn(pruned(x), y).backward()
    twin_opt.step()
    for name in ("layer2.1.conv1", "layer3.0.shortcut.0", "layer1.0.conv2"):
        expected = _kept_view(model.get_submodule(name).weight.detach(), graph, plan, name, "conv")
        assert torch.allclose(pruned.get_submodule(name).weight, expected, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- FLOPs and arch data
def test_flops_of_resnet32_and_after_pruning():
    model = pc.build_model("resnet32", 100)
    x = torch.randn(1, 3, 32, 32)
    flops = pc.count_flops(model, x)
    assert flops.inference_per_image == pytest.approx(138.3e6, rel=0.005)  # C·R·S·K·P² MACs × 2 over the convs, + the FC
    # forward + weight gradient + input gradient (none for the first conv): just under 3× forward
    assert 2.9 < flops.train_per_image / flops.inference_per_image < 3.0
    graph = pc.analyse(model, x)
    _kill_random_channels(model, graph, torch.Generator().manual_seed(6), fraction=0.5)
    pruned = pc.reconfigure(model, x)
    assert pc.count_flops(pruned, x).train_per_image < 0.5 * flops.train_per_image


def test_flops_of_imagenet_resnet50():
    model = pc.build_model("resnet50-imagenet", 1000)
    flops = pc.count_flops(model, torch.randn(1, 3, 224, 224))
    assert flops.inference_per_image == pytest.approx(8178.4e6, rel=0.01)


def test_describe_and_rebuild_a_pruned_model():
    torch.manual_seed(0)
    model = _randomise_bn(pc.build_model("resnet20", 10))
    x = torch.randn(2, 3, 32, 32)
    graph = pc.analyse(model, x)
    _kill_random_channels(model, graph, torch.Generator().manual_seed(7))
    sid = graph.module_spaces["layer1.1.conv1"]["out"]
    for c in range(16):
        _zero_channel(model, graph, sid, c)
    pruned = pc.reconfigure(model, x).eval()
    arch = json.loads(json.dumps(pc.describe(pruned)))
    assert arch["channels"]["layer2.0.shortcut.0"] == pruned.get_submodule("layer2.0.shortcut.0").out_channels
    assert arch["params"] == _params(pruned)
    rebuilt = pc.rebuild(arch, pruned.state_dict()).eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), pruned(x))
    # and it can be pruned further
    pc.reconfigure(rebuilt, x)


def test_rebuild_rejects_foreign_data():
    with pytest.raises(ValueError, match="format"):
        pc.rebuild({"format": 99, "nodes": [], "modules": {}})


def test_reconfiguration_keeps_channels_last_for_parameters_and_their_optimizer_state():
    """A channels_last model stays channels_last through the surgery, and each momentum buffer keeps its
    parameter's strides: one mismatched pair sends SGD's whole foreach list to the per-tensor path
    (ATen/native/ForeachUtils.h, check_fast_path_restrictions: equal sizes and strides)."""
    torch.manual_seed(0)
    model = pc.build_model("resnet20", 10).to(memory_format=torch.channels_last)
    x, y = torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last), torch.randint(0, 10, (4,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    nn.CrossEntropyLoss()(model(x), y).backward()
    opt.step()
    graph = pc.analyse(model, x)
    _kill_random_channels(model, graph, torch.Generator().manual_seed(5), fraction=0.25)

    pruned = pc.reconfigure(model, x, optimizer=opt)

    convs = [m.weight for m in pruned.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                         for w in convs)
    mismatched = [n for n, p in pruned.named_parameters() if opt.state[p]["momentum_buffer"].stride() != p.stride()]
    assert mismatched == []


def test_one_rule_per_layer_type_and_a_handler_for_every_role():
    """prunetrain_core.rules is the one table of layer types: the graph builder has a handler per role, the
    surgery slices every role that holds channel tensors, the architecture record describes and rebuilds every
    type from the rule's arguments, and a subclass of a supported type follows its base's rule."""
    from prunetrain_core import arch, surgery
    from prunetrain_core.graph import _Analyser
    from prunetrain_core.rules import RULES, ROLES, rule_of

    assert all(callable(getattr(_Analyser, f"_module_{role}", None)) for role in ROLES)
    assert set(surgery._SLICERS) == {"conv", "linear", "bn", "const"}
    for t, rule in RULES.items():
        assert arch._MODULE_TYPES[t.__name__] is t and all(isinstance(a, str) for a in rule.args)

    class MyConv(nn.Conv2d):
        pass
    assert rule_of(MyConv(3, 4, 3)).role == "conv" and rule_of(nn.Conv3d(3, 4, 3)) is None
    with pytest.raises(pc.UnsupportedModelError, match="this layer type is not supported"):
        pc.analyse(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Upsample(scale_factor=2)), torch.randn(1, 3, 8, 8))
