"""Training-memory measurement on a real small conv net."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from bench.training.memory import (
    MemoryEstimate,
    infer_optimizer_state_factor,
    measure_cuda_peak,
    measure_training_memory,
)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        nn.Dropout(0.2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def test_params_grads_counted_exactly():
    model = small_net()
    est = measure_training_memory(model, (8, 3, 32, 32))
    assert est.params == param_bytes(model)
    assert est.grads == est.params
    assert est.optimizer_state == est.params          # default: SGD with momentum, 1x
    assert est.fixed == est.params * 3
    model[0].weight.requires_grad_(False)
    est = measure_training_memory(model, (8, 3, 32, 32))
    assert est.grads == param_bytes(model) - model[0].weight.numel() * 4
    assert est.optimizer_state == est.grads


def test_optimizer_kinds():
    model = small_net()
    p = param_bytes(model)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    adam = torch.optim.Adam(model.parameters())
    adamw = torch.optim.AdamW(model.parameters(), amsgrad=True)
    assert infer_optimizer_state_factor(sgd) == 1.0
    assert infer_optimizer_state_factor(plain) == 0.0
    assert infer_optimizer_state_factor(adam) == 2.0
    assert infer_optimizer_state_factor(adamw) == 3.0
    shape = (4, 3, 32, 32)
    assert measure_training_memory(model, shape, optimizer=adam).optimizer_state == 2 * p
    assert measure_training_memory(model, shape, optimizer=plain).optimizer_state == 0
    assert measure_training_memory(model, shape, optimizer=adam, optimizer_state_factor=0.5).optimizer_state == p // 2
    # mixed groups: momentum only on the first conv
    first, rest = list(model.parameters())[:1], list(model.parameters())[1:]
    mixed = torch.optim.SGD([{"params": first, "momentum": 0.9}, {"params": rest}], lr=0.1)
    assert infer_optimizer_state_factor(mixed) * p == pytest.approx(first[0].numel() * 4)
    with pytest.raises(ValueError):
        infer_optimizer_state_factor(torch.optim.LBFGS(model.parameters()))


def test_activations_scale_linearly_with_batch():
    model = small_net()
    e8 = measure_training_memory(model, (8, 3, 32, 32))
    e16 = measure_training_memory(model, (16, 3, 32, 32))
    assert e8.activations > 0 and e8.outputs > 0
    # the input itself (saved by the first conv) is part of the activations
    assert e8.activations >= 8 * 3 * 32 * 32 * 4
    assert e16.activations / e8.activations == pytest.approx(2.0, rel=0.02)
    assert e8.fixed == e16.fixed
    assert e8.total_for_batch(16) == pytest.approx(e16.total, rel=0.02)
    assert e8.per_sample_activations == pytest.approx(e16.per_sample_activations, rel=0.02)
    # saved tensors are far more than the input: conv outputs, BN inputs, ReLU masks ...
    assert e8.activations > 4 * 8 * 3 * 32 * 32 * 4


def test_activation_count_is_plausible():
    """Every saved tensor accounted for, each storage once, weights excluded."""
    conv = nn.Conv2d(3, 8, 3, padding=1)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(8 * 32 * 32, 10))
    x = torch.randn(4, 3, 32, 32)
    est = measure_training_memory(model, (x, torch.zeros(4, dtype=torch.long)))
    conv_in = x.numel() * 4
    linear_in = 4 * 8 * 32 * 32 * 4          # the flattened conv output (a view of it)
    log_probs = 4 * 10 * 4                   # cross_entropy's log_softmax result
    target = 4 * 8                           # int64 targets saved by nll_loss
    total_weight = 4                         # nll_loss's float scalar
    assert est.activations == conv_in + linear_in + log_probs + target + total_weight
    assert est.outputs == 4 * 10 * 4 + 4     # logits + scalar loss


def test_model_left_unchanged():
    model = small_net()
    model.eval()                          # the mode must survive as well
    model[2].train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    grads = {k: v.grad.clone() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    measure_training_memory(model, (8, 3, 32, 32))
    for k, v in model.named_parameters():
        assert torch.equal(v, params[k]) and torch.equal(v.grad, grads[k]), k
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)


def test_estimate_to_dict():
    est = MemoryEstimate(params=10, grads=10, optimizer_state=10, activations=80, outputs=20, batch_size=10)
    d = est.to_dict()
    assert d["total"] == 130 and d["fixed"] == 30 and d["per_sample_activations"] == 10.0
    assert est.total_for_batch(20) == 230


@pytest.mark.cuda
def test_cuda_peak_counts_a_step():
    model = small_net().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(64, 3, 32, 32, device="cuda")
    y = torch.zeros(64, dtype=torch.long, device="cuda")

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    allocated, reserved = measure_cuda_peak(step)
    est = measure_training_memory(model, (x, y), optimizer=opt)
    assert reserved >= allocated >= est.params + est.grads
    assert allocated >= 0.5 * est.total


_STEPS_AT = r'''
import sys, torch, torch.nn.functional as F
import prunetrain_core as pc

def status(field):  # /proc/self/status values are in KiB
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field))

def steps(b, n):
    x, y = torch.randn(b, 3, 32, 32), torch.randint(0, 10, (b,))
    for _ in range(n):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

torch.set_num_threads(1)
torch.manual_seed(0)
model = pc.build_model("resnet20", 10)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
steps(2, 1)  # lazy initialisation (kernels, optimizer state) is not what a batch costs
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak resident size (VmHWM) to the current one
steps(int(sys.argv[1]), 2)
print(status("VmHWM:") - before)
'''


@pytest.mark.slow
def test_cpu_prediction_against_measured_peak_memory():
    """The CPU prediction (peak_memory_source = predicted) against a real measurement of the same steps.

    A fresh process trains ResNet-20 for two steps at batch 64 and at 192; the growth of its peak
    resident memory during those steps (VmHWM reset just before them, the kernel's count) is what
    128 more images cost.  (The lifetime peak, ru_maxrss, can be set by the import of torch itself.)  The saved-tensor
    model must account for a real share of it and never more than all of it: it counts what autograd
    keeps, not the backward pass's temporaries (measured here at about half of the growth), which is
    why the records call it a prediction and the README gives this ratio.
    """
    import subprocess
    import sys

    import prunetrain_core as pc

    rss = {}
    for b in (64, 192):
        out = subprocess.run([sys.executable, "-c", _STEPS_AT, str(b)], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        rss[b] = int(out.stdout.split()[-1])
    measured = rss[192] - rss[64]
    predicted = measure_training_memory(pc.build_model("resnet20", 10), (64, 3, 32, 32)).per_sample_activations * 128
    assert 0.3 * measured <= predicted <= measured, (predicted, measured)


def test_measuring_keeps_nothing_alive():
    """The saved-tensor hook must not hand back the tensor it saw: a saved output (ReLU's) would hold its own
    grad_fn, a cycle the collector cannot see, and the model and every activation would outlive the call (the
    replay of VGG-16 at 224x224 grew by 2.5 GB per shape measured)."""
    import gc
    import weakref

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    measure_training_memory(model, (4, 3, 8, 8), optimizer=opt)
    gone = weakref.ref(model[0].weight)
    del model, opt
    gc.collect()
    assert gone() is None


def test_a_peak_measurement_empties_the_cache_before_it_resets_the_peaks(monkeypatch):
    """Dense left 1 GiB cached; PruneTrain's step needs 300 MiB: its reserved peak must say so, not dense's GiB."""
    from bench.training.memory import measure_cuda_peak
    from cudafake import FakeAllocator

    mib = 1 << 20
    alloc = FakeAllocator().install(monkeypatch)
    alloc.alloc(1024 * mib)
    alloc.free((1024 - 100) * mib)                   # dense is gone; 100 MiB of parameters live, the rest cached

    def step():
        alloc.alloc(300 * mib)
        alloc.free(300 * mib)

    peak, reserved = measure_cuda_peak(step, torch.device("cuda", 0))
    assert alloc.calls.index("empty_cache") < alloc.calls.index("reset_peak_memory_stats")
    assert (peak, reserved) == (400 * mib, 400 * mib)
