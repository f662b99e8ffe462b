"""The report's faithfulness, time-to-accuracy and batch-share numbers, on small hand-made records."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.report import faithful
from bench.report.aggregate import (FUNCTION_CHANGE_TOLERANCE, faithfulness, saved_with_larger_batch,
                                    time_to_accuracy)


def _epochs(acc, time, batch=None, change=None):
    n = len(acc)
    return pd.DataFrame({"epoch": range(1, n + 1), "test_acc": acc, "epoch_time_s": time,
                         "reconfig_time_s": [0.0] * n, "batch_size": batch or [128] * n,
                         "func_change_eval": change or [math.nan] * n,
                         "func_change_train": [c / 2 if c == c else c for c in (change or [math.nan] * n)],
                         "func_acc_delta_eval": [0.0 if c == c else math.nan for c in (change or [math.nan] * n)],
                         "func_acc_delta_train": [-2.0 if c == c and c > 0.01 else (0.0 if c == c else math.nan)
                                                  for c in (change or [math.nan] * n)]})


def test_faithfulness_counts_measured_reconfigurations_and_flags_large_changes():
    pt = _epochs([1, 2, 3, 4], [1, 1, 1, 1], change=[2e-6, math.nan, 0.05, math.nan])
    m = faithfulness(pt)
    assert m["reconfigurations"] == 2 and m["max_function_change"] == pytest.approx(0.05)
    assert m["flagged_reconfigurations"] == 1 and m["min_function_acc_delta"] == -2.0
    assert math.isnan(faithfulness(_epochs([1], [1]))["max_function_change"])  # dense: none measured


def test_time_to_accuracy_is_the_cumulative_time_of_the_first_epoch_at_the_target():
    dense = _epochs([50, 60, 70], [10, 10, 10])
    pt = _epochs([50, 69.5, 68], [5, 5, 5])
    m = time_to_accuracy(dense, pt, 69.0)
    assert m["dense_time_to_acc_s"] == 30 and m["prunetrain_time_to_acc_s"] == 10
    assert math.isnan(time_to_accuracy(dense, pt, 71.0)["prunetrain_time_to_acc_s"])  # not reached


def test_share_of_the_time_saved_that_came_with_a_larger_batch():
    dense = _epochs([1, 2], [10, 10])
    pt = _epochs([1, 2], [8, 4], batch=[128, 256])
    assert saved_with_larger_batch(dense, pt) == pytest.approx(75.0)
    assert math.isnan(saved_with_larger_batch(dense, _epochs([1, 2], [11, 12])))  # nothing saved


def test_finding_says_when_a_reconfiguration_changed_the_function():
    row = pd.Series({"label": "cpu · resnet20 / cifar10", "reconfigurations": 3.0, "max_function_change": 0.2,
                     "flagged_reconfigurations": 1.0, "accuracy_target": 60.0, "dense_time_s": 100.0,
                     "dense_time_to_acc_s": 90.0, "prunetrain_time_to_acc_s": math.nan,
                     "saved_with_larger_batch_pct": 40.0, "n": 1})
    text = faithful.finding(row)
    assert "1 of 3 reconfigurations changed the function" in text and f"> {FUNCTION_CHANGE_TOLERANCE:g}" in text
    assert "PruneTrain not reached" in text and "40 % of the time saved" in text
    row["flagged_reconfigurations"], row["max_function_change"] = 0.0, 3e-6
    assert "none of 3 reconfigurations changed the function" in faithful.finding(row)


def test_a_repeated_time_to_accuracy_keeps_its_range_beside_not_reached():
    row = pd.Series({"label": "cpu · resnet20 / cifar10", "reconfigurations": 2.0, "max_function_change": 0.001,
                     "flagged_reconfigurations": 0.0, "accuracy_target": 31.8, "dense_time_s": 36.0,
                     "dense_time_to_acc_s": 17.8, "dense_time_to_acc_s_lo": 17.7, "dense_time_to_acc_s_hi": 18.0,
                     "prunetrain_time_to_acc_s": math.nan, "saved_with_larger_batch_pct": math.nan, "n": 2})
    assert "dense needed 17.8 (17.7–18.0) s, PruneTrain not reached." in faithful.finding(row)


def test_finding_gives_no_time_per_flops_ratio_for_a_tiny_flop_saving():
    from bench.report.render import _findings

    row = {"label": "cpu · resnet20 / cifar10", "time_per_flops_saved": -127.0, "train_flops_saved_pct": 0.4,
           "time_saved_pct": -46.0, "dense_time_s": 330.0, "prunetrain_time_s": 480.0, "prunetrain_final_acc": 41.5,
           "dense_final_acc": 49.2, "reconfigurations": 4.0, "max_function_change": 0.0069,
           "flagged_reconfigurations": 0.0, "accuracy_target": 48.2, "dense_time_to_acc_s": 200.0,
           "prunetrain_time_to_acc_s": math.nan, "saved_with_larger_batch_pct": math.nan, "n": 1}
    text = " ".join(_findings(pd.DataFrame([row])).items)
    assert "-127" not in text and "too few to say" in text
    row.update(train_flops_saved_pct=31.0, time_per_flops_saved=1.15, time_saved_pct=35.7)  # a consistent row
    assert "1.15 of the FLOP saving became time saved" in " ".join(_findings(pd.DataFrame([row])).items)
