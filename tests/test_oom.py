"""Out of memory and new shapes in the training paths (issue 10, defects 3, 7 and 9), on real small models.

CUDA's out-of-memory error is a plain exception class, so a model or optimizer that
raises ``torch.cuda.OutOfMemoryError`` above a batch size reproduces what a full card
does, without one.  The GradScaler is torch's own (its "cpu" flavour).
"""
from __future__ import annotations

import gc
import sys
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunetrain_core as pc
from bench.training.batching import is_out_of_memory, run_with_oom_retry
from bench.training.step import EpochMeter, TrainStep, new_scaler
from trainlib import make_trainer


def cuda_oom() -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class FailsAbove(nn.Module):
    """``inner``, but out of memory for batches above ``limit`` (as a full card is)."""

    def __init__(self, inner: nn.Module, limit: int):
        super().__init__()
        self.inner, self.limit, self.calls = inner, limit, []

    def forward(self, x):
        self.calls.append(len(x))
        out = self.inner(x)
        if len(x) > self.limit:
            raise cuda_oom()
        return out


# ---------------------------------------------------------------------------- defect 3

def test_the_retry_runs_after_the_failed_step_is_freed():
    """Inside the except block the traceback holds the failed step's tensors; the retry must not run there."""
    seen = []
    batch = {"n": 8}

    def step(x, y):
        activations = torch.ones(len(x), 1000)      # what a failed forward leaves behind
        seen.append(weakref.ref(activations))
        if len(x) > 2:
            raise cuda_oom()

    def lower(why):
        assert sys.exc_info() == (None, None, None), "retried while handling the error"
        assert "OutOfMemoryError" in why
        assert seen[-1]() is None, "the failed step's tensors are still alive"
        batch["n"] //= 2

    x, y = torch.zeros(8, 3), torch.zeros(8)
    run_with_oom_retry(step, x, y, chunk=lambda: batch["n"], lower=lower)
    assert batch["n"] == 2 and len(seen) == 2 + 4     # 8 and 4 failed, then four steps of 2


def test_cudnn_and_cublas_allocation_failures_count_as_out_of_memory():
    assert is_out_of_memory(cuda_oom())
    # torch's AT_CUDNN_CHECK (aten/src/ATen/cudnn/Exceptions.h) raises "cuDNN error: " + cudnnGetErrorString(status);
    # cuDNN 9 (cudnn_graph.h) names a device allocation failure 4004 CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED
    assert is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"))
    # 4003, host memory: a smaller batch on the card does not help
    assert not is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED"))
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be ..."))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


class FailingSGD(torch.optim.SGD):
    """SGD whose first ``fail`` steps run out of memory (inside GradScaler.step, after unscale_)."""

    def __init__(self, params, fail: int = 1, **kw):
        super().__init__(params, **kw)
        self.fail = fail

    def step(self, closure=None):
        if self.fail:
            self.fail -= 1
            raise cuda_oom()
        return super().step(closure)


def _lasso_step(opt_fail: int, scaler=None):
    torch.manual_seed(0)
    model = pc.build_model("resnet20", 10)
    x = torch.randn(16, 3, 32, 32)
    y = torch.randint(0, 10, (16,))
    opt = FailingSGD(model.parameters(), fail=opt_fail, lr=0.05, momentum=0.9)
    step = TrainStep(model, opt, device=torch.device("cpu"), lasso=pc.GroupLasso(model, x[:2]), lpr=0.2,
                     scaler=scaler)
    return step, x, y


def test_a_failed_attempt_leaves_no_trace_in_the_sums_or_lambda():
    step, x, y = _lasso_step(opt_fail=1)
    meter, batch = EpochMeter(torch.device("cpu")), {"n": 16}

    def lower(why):
        step.recover()
        batch["n"] //= 2

    run_with_oom_retry(lambda a, b: step(a, b, meter), x, y, chunk=lambda: batch["n"], lower=lower)
    assert meter.steps == 2 and meter.samples == 16
    # λ comes from the first step that happened (the first half batch), where the ratio is exactly lpr
    ref, _, _ = _lasso_step(opt_fail=0)
    ref(x[:8], y[:8])
    assert step.lam == pytest.approx(ref.lam, rel=1e-6)
    assert meter.ratio_sum.item() / meter.steps == pytest.approx(0.2, abs=0.02)   # 3 ratios / 2 steps would be ~0.3


def test_the_grad_scaler_is_usable_after_a_step_failed_inside_it():
    """GradScaler.step unscales, then the optimizer step runs out of memory: the scaler is left 'unscaled'
    and refuses the retry ("unscale_() has already been called") unless it is reset."""
    scaler = new_scaler("cpu", {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                "growth_interval": 100, "_growth_tracker": 7})
    step, x, y = _lasso_step(opt_fail=1, scaler=scaler)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        step(x, y)
    step.recover()
    step(x[:8], y[:8])                      # would raise RuntimeError without recover()
    assert step.scaler.get_scale() == 1024.0 and step.scaler._get_growth_tracker() == 8


def test_under_torchrun_an_oom_ends_this_rank_at_once_with_one_line(monkeypatch):
    """The other ranks may sit in a collective this rank never joins: no orderly process-group shutdown
    (it would wait for them); exit now, and torchrun stops the others as soon as one rank fails."""
    from click.testing import CliRunner

    import bench.training.distributed
    import bench.run
    from bench import cli
    from bench.errors import OutOfMemoryBudget

    closed, exits = [], []
    dist = type("Dist", (), {"rank": 1, "world_size": 2, "device": torch.device("cpu"),
                             "close": lambda self: closed.append(True)})()
    monkeypatch.setattr(bench.training.distributed, "maybe_init", lambda: dist)
    monkeypatch.setattr(cli, "build_run", lambda opts, dist=None: (None, None))

    def run_benchmark(*a, **k):
        raise OutOfMemoryBudget("prunetrain: out of memory at batch 256 under torchrun; restart with --batch-size 128")
    monkeypatch.setattr(bench.run, "run_benchmark", run_benchmark)

    def exit_now(code):
        exits.append(code)
        raise SystemExit(code)
    monkeypatch.setattr(cli, "_exit_now", exit_now)
    result = CliRunner().invoke(cli.main, ["run", "--profile", "smoke"])
    assert exits == [2] and closed == []
    assert result.output.strip().splitlines() == [
        "error: rank 1 of 2: prunetrain: out of memory at batch 256 under torchrun; restart with --batch-size 128"]


# ---------------------------------------------------------------------------- defect 7: warm-up

def test_warm_up_changes_nothing_in_training():
    """The untimed warm-up of a new shape leaves weights, BatchNorm statistics and gradients as they were."""
    runs = []
    for warm in (False, True):
        torch.manual_seed(0)
        model = pc.build_model("resnet20", 10)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        step = TrainStep(model, opt, device=torch.device("cpu"))
        g = torch.Generator().manual_seed(1)
        for n in (8, 8, 5):
            x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
            if warm:
                step.warm_up(x, y)
            step(x, y)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_every_new_shape_is_warmed_up_once_outside_the_epoch_time(tmp_path):
    trainer = make_trainer(tmp_path, "prunetrain", images=80, batch=32, threshold=0.05)
    trainer.start()
    first = trainer.train_epoch(1)          # batches 32, 32 and the short 16: two shapes
    second = trainer.train_epoch(2)
    assert first.warmup_time_s > 0 and second.warmup_time_s == 0.0
    assert trainer.step.warmed == {(32, 3, 32, 32), (16, 3, 32, 32)}
    with torch.no_grad():                   # prune for real: a new shape after the reconfiguration
        trainer.module.layer3[0].conv1.weight[:20] = 0
        trainer.module.layer3[0].bn1.weight[:20] = 0
        trainer.module.layer3[0].bn1.bias[:20] = 0
        trainer.module.layer3[0].conv2.weight[:, :20] = 0
    trainer.reconfigure(2)
    assert trainer.step.warmed == set()
    assert trainer.train_epoch(3).warmup_time_s > 0


# ---------------------------------------------------------------------------- defect 9

def test_evaluation_halves_its_batch_after_out_of_memory(tmp_path):
    trainer = make_trainer(tmp_path, "dense", images=64, test_batch=500)
    trainer.start()
    expected = trainer.evaluate()[:2]
    trainer.module = FailsAbove(trainer.module, limit=100)
    got = trainer.evaluate()[:2]
    assert got == pytest.approx(expected, rel=1e-6)     # the same sums, added in another order
    assert trainer.evaluator.batch == 62
    assert any("test batch lowered" in r for r in trainer.state.batch_reasons)


def _kill_ten_channels(trainer) -> None:
    """Ten dead channels in layer2.1's inner space: the next reconfiguration removes them."""
    with torch.no_grad():
        trainer.module.layer2[1].conv1.weight[:10] = 0
        trainer.module.layer2[1].bn1.weight[:10] = 0
        trainer.module.layer2[1].bn1.bias[:10] = 0
        trainer.module.layer2[1].conv2.weight[:, :10] = 0


def test_reconfiguration_falls_back_to_surgery_on_the_cpu(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, "prunetrain", threshold=0.05)
    trainer.start()
    trainer.train_epoch(1)
    _kill_ten_channels(trainer)
    real, calls = pc.apply_plan_to, []

    def apply_plan_to(*a, **k):
        calls.append(k["optimizer"] is not None)
        if len(calls) == 1:
            raise cuda_oom()          # the card could not hold old and new model at once
        return real(*a, **k)
    monkeypatch.setattr(pc, "apply_plan_to", apply_plan_to)
    before = pc.channels(trainer.module)["layer2.1.conv1"]
    trainer.reconfigure(1)
    assert len(calls) == 2 and pc.channels(trainer.module)["layer2.1.conv1"] < before
    assert any("surgery done on the CPU" in r for r in trainer.state.batch_reasons)
    trainer.train_epoch(2)            # and training goes on with the optimizer pointing at the new weights
    assert all(p in trainer.optimizer.state for p in trainer.module.parameters())


def test_the_memory_probe_halves_on_a_card_too_small_for_it(tmp_path, monkeypatch):
    import bench.training.trainable

    real, sizes = bench.training.trainable.measure_training_memory, []

    def measure(model, batch, **kw):
        sizes.append(len(batch))
        if len(batch) > 4:
            raise cuda_oom()
        return real(model, batch, **kw)
    monkeypatch.setattr(bench.training.trainable, "measure_training_memory", measure)
    trainer = make_trainer(tmp_path, "dense")
    trainer.start()
    assert sizes == [16, 8, 4] and trainer.memory.batch_size == 4 and trainer.memory.per_sample_activations > 0


def test_peak_reserved_is_left_empty_on_the_cpu(tmp_path):
    trainer = make_trainer(tmp_path, "dense")
    trainer.start()
    stats = trainer.train_epoch(1)
    assert stats.peak_reserved_bytes is None and stats.peak_memory_bytes > 0


def test_a_retried_step_counts_its_images_once_in_batchnorms_running_statistics():
    """The failed forward pass had updated BatchNorm's running mean and batch counter; the retry must start
    from the values before it, as if the failed attempt had never run."""
    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 3))

    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 3, (8,))
    reference = build()
    ref_step = TrainStep(reference, torch.optim.SGD(reference.parameters(), lr=0.1), device=torch.device("cpu"))
    for i in (0, 4):
        ref_step(x[i:i + 4], y[i:i + 4])

    inner = build()
    model = FailsAbove(inner, limit=4)
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), device=torch.device("cpu"))
    batch = {"n": 8}

    def lower(why):
        step.recover()
        batch["n"] = 4
    run_with_oom_retry(step, x, y, chunk=lambda: batch["n"], lower=lower)
    bn, ref_bn = inner[1], reference[1]
    assert int(bn.num_batches_tracked) == int(ref_bn.num_batches_tracked) == 2
    assert torch.equal(bn.running_mean, ref_bn.running_mean) and torch.equal(bn.running_var, ref_bn.running_var)


@pytest.mark.parametrize("budget, failing", [(0.0, "outputs"), (0.5, "outputs"), (0.5, "plan_within_budget")])
def test_held_out_passes_and_budget_trials_fall_back_to_the_cpu(tmp_path, monkeypatch, budget, failing):
    """The held-out forward passes (before and after) and the change-budget search's trial surgeries."""
    trainer = make_trainer(tmp_path, "prunetrain", threshold=0.05, change_budget=budget)
    trainer.start()
    trainer.train_epoch(1)
    _kill_ten_channels(trainer)
    real, calls = getattr(pc, failing), []

    def first_fails(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise cuda_oom()
        return real(*a, **k)
    monkeypatch.setattr(pc, failing, first_fails)
    before = pc.channels(trainer.module)["layer2.1.conv1"]
    trainer.reconfigure(1)
    assert pc.channels(trainer.module)["layer2.1.conv1"] < before
    assert any("out of memory" in r and "done on the CPU" in r for r in trainer.state.batch_reasons)
    assert trainer.last_change["train_rel"] >= 0
    trainer.train_epoch(2)
