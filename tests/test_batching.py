"""The dynamic mini-batch rule: growth, caps, lowering, LR scaling, OOM back-off."""
from __future__ import annotations

import pytest

from bench.training.batching import (
    BatchPolicy,
    BatchDecision,
    choose_batch,
    lower_after_oom,
    predicted_need,
)
from bench.config import scaled_lr
from bench.errors import OutOfMemoryBudget

MiB = 2**20


def test_grows_to_largest_multiple_within_budget():
    # fixed 100 MiB, 1 MiB/sample, 1000 MiB * 0.9 usable = 900 -> 800 samples max -> 6 x 128 = 768
    d = choose_batch(128, 100 * MiB, 1 * MiB, 1000 * MiB, headroom=0.9, max_batch=4096)
    assert d.batch == 768 and d.fits
    assert d.batch % 128 == 0
    assert d.lr_scale == pytest.approx(6.0)
    assert d.predicted_bytes == 868 * MiB <= d.usable_bytes
    assert predicted_need(d.batch + 128, 100 * MiB, MiB) > d.usable_bytes   # the next multiple would not fit
    assert "memory" in d.reason


def test_respects_max_batch():
    d = choose_batch(128, 0, 1, 10**12, headroom=1.0, max_batch=512)
    assert d.batch == 512 and d.fits and "max_batch" in d.reason
    d = choose_batch(128, 0, 1, 10**12, headroom=1.0, max_batch=500)    # not a multiple: round down
    assert d.batch == 384


def test_base_batch_when_no_room_to_grow():
    d = choose_batch(128, 0, 1 * MiB, 200 * MiB, headroom=1.0, max_batch=1024)
    assert d.batch == 128 and d.lr_scale == 1.0 and d.fits


def test_lowers_by_halving_when_base_does_not_fit():
    # usable 90 MiB, fixed 10 MiB, 1 MiB/sample -> at most 80 samples -> 128 -> 64
    d = choose_batch(128, 10 * MiB, 1 * MiB, 100 * MiB, headroom=0.9, max_batch=1024)
    assert d.batch == 64 and d.fits and d.lr_scale == 0.5
    assert d.reason.startswith("lowered")
    # max_batch below the base also lowers
    d = choose_batch(128, 0, 1, 10**12, max_batch=100)
    assert d.batch == 64 and d.fits


def test_nothing_fits():
    d = choose_batch(128, 500 * MiB, 1 * MiB, 400 * MiB, headroom=0.9, max_batch=1024)
    assert not d.fits and d.batch == 1
    assert d.predicted_bytes == 501 * MiB
    assert choose_batch(128, 0, 1, 10**9).fits


def test_a_model_too_large_for_the_budget_names_the_limit_it_missed():
    """1,695 MiB needed against 1,741 MiB usable: the limit missed is the headroom's 1,567 MiB, and the line says so."""
    policy = BatchPolicy("dense", 8, 8, 1, 1741 * MiB, 0.9, "gtx750ti")
    with pytest.raises(OutOfMemoryBudget) as err:
        policy.after_reshape(1694 * MiB, 1 * MiB, at_start=True)
    assert str(err.value) == ("dense: even batch 1 needs 1695 MiB, more than the 1567 MiB the budget allows "
                              "(1741 MiB usable × headroom 0.9, gtx750ti); choose a smaller model or a larger profile")


def test_min_batch_floor():
    d = choose_batch(128, 10 * MiB, 1 * MiB, 30 * MiB, headroom=1.0, max_batch=1024, min_batch=32)
    assert d.batch == 32 and not d.fits


def test_lr_scales_linearly():
    for k in range(1, 6):
        d = choose_batch(64, 0, 1000, 64 * k * 1000, headroom=1.0, max_batch=10**6)
        assert d.batch == 64 * k
        assert scaled_lr(0.1, d.batch, 64) == pytest.approx(0.1 * k)
        assert d.lr_scale == pytest.approx(k)


def test_to_dict_roundtrip():
    d = choose_batch(128, 1, 1, 10**6, max_batch=256)
    data = d.to_dict()
    assert data["batch"] == 256 and BatchDecision(**data) == d


def test_invalid_inputs():
    with pytest.raises(ValueError):
        choose_batch(0, 0, 1, 100)
    with pytest.raises(ValueError):
        choose_batch(8, 0, 1, 100, headroom=1.5)
    with pytest.raises(ValueError):
        choose_batch(8, 0, 1, 0)


def test_lower_after_oom_sequence():
    seq, b = [], 512
    while b is not None:
        seq.append(b)
        b = lower_after_oom(b, 128)
    assert seq == [512, 256, 128, 64, 32, 16, 8, 4, 2, 1]
    assert lower_after_oom(384, 128) == 128          # grown batches stay multiples of the base
    assert lower_after_oom(1, 128) is None
    assert lower_after_oom(32, 128, min_batch=32) is None
    assert lower_after_oom(100, 128) == 50
