"""Did pruning keep the network's function, and what did the time saved cost in accuracy?

Rows of the report's "Faithfulness and time to accuracy" table and the
finding sentences about them, from the aggregated metrics
(:func:`bench.report.aggregate.faithfulness`, ``time_to_accuracy``,
``saved_with_larger_batch``).
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from .. import fmt
from .aggregate import FUNCTION_CHANGE_TOLERANCE, TIME_TO_ACCURACY_MARGIN

HEADERS = ["Device", "Model / data", "Reconfigurations", "Largest function change",
           f"Flagged (> {FUNCTION_CHANGE_TOLERANCE:g})", "Worst Δacc. on held-out batch (points)",
           "Accuracy target (%)", "Dense reaches it after", "PruneTrain reaches it after",
           "Time saved with a larger batch (%)"]
EXPLANATION = (
    "At every reconfiguration a fixed batch of validation images (held out of the training images; in runs "
    "made before the validation split, test images) runs through the model before "
    "and after the surgery, in eval mode and in train mode; the function change is the largest "
    "absolute logit change divided by the largest absolute logit before it. A reconfiguration above "
    f"{FUNCTION_CHANGE_TOLERANCE:g} is flagged as having changed the function; removing only dead "
    "channels stays at float rounding (about 1e-6). The accuracy target is the dense run's final "
    f"accuracy minus {TIME_TO_ACCURACY_MARGIN:g} point; each mode's time is its cumulative training "
    "time at the end of the first epoch that reached it (– : not reached). The last column is the "
    "share of the time saved that came in epochs where PruneTrain trained with a larger batch than "
    "dense.")


def _sci(x: Any) -> str:
    return fmt.DASH if fmt.missing(x) else f"{x:.2g}"


def _count(x: Any) -> str:
    return fmt.DASH if fmt.missing(x) else str(int(x))


def rows(table: pd.DataFrame, names) -> list[list[str]]:
    out = []
    for _, r in table.iterrows():
        device, where = names(r)
        flagged = r["flagged_reconfigurations"]
        out.append([device, where, _count(r["reconfigurations"]), _sci(r["max_function_change"]),
                    _count(flagged) + (" changed the function" if not fmt.missing(flagged) and flagged else ""),
                    fmt.cell(r, "min_function_acc_delta", "acc"), fmt.cell(r, "accuracy_target", "acc"),
                    fmt.cell(r, "dense_time_to_acc_s", "time", r["dense_time_s"]),
                    fmt.cell(r, "prunetrain_time_to_acc_s", "time", r["dense_time_s"]),
                    fmt.cell(r, "saved_with_larger_batch_pct", "pct")])
    return out


def finding(r: pd.Series) -> str | None:
    """One sentence: function change at reconfiguration, time to accuracy, the batch's share.

    None for a replayed row: nothing was trained there, so neither is known (the original run's row says both).
    """
    if r.get("source") == "replay":
        return None
    n, worst, flagged = r["reconfigurations"], r["max_function_change"], r["flagged_reconfigurations"]
    if fmt.missing(n):
        text = "no reconfiguration was measured"
    elif flagged:
        text = (f"{int(flagged)} of {int(n)} reconfigurations changed the function (largest logit change "
                f"{_sci(worst)} > {FUNCTION_CHANGE_TOLERANCE:g})")
    else:
        text = f"none of {int(n)} reconfigurations changed the function (largest logit change {_sci(worst)})"
    unit = r["dense_time_s"]

    def reached(metric: str) -> str:  # a dash alone means never reached; a dash inside is a min–max range
        cell = fmt.cell(r, metric, "time", unit)
        return "not reached" if cell.startswith(fmt.DASH) else cell
    tta = "" if fmt.missing(r["accuracy_target"]) else (f"; to reach {fmt.cell(r, 'accuracy_target', 'acc')} % dense needed "
           f"{reached('dense_time_to_acc_s')}, PruneTrain {reached('prunetrain_time_to_acc_s')}")
    batch = r["saved_with_larger_batch_pct"]
    share = ("" if fmt.missing(batch) else
             f"; {batch:.0f} % of the time saved came in epochs where PruneTrain used a larger batch than dense")
    return f"{r['label']}: {text}{tta}{share}."
