"""The core comparison: what PruneTrain saves over dense training, per hardware.

Training time of a mode = Σ epoch_time_s + Σ reconfig_time_s over its epochs.
Reconfiguration (removing channels, rebuilding the optimiser) is part of what
PruneTrain costs, so it is counted; dense training never reconfigures, so its
reconfig_time_s is 0 and the same formula applies to both.  Evaluation
(eval_time_s) and torch.compile (compile_time_s) are not training and are left
out of both; their totals are reported separately.

A replayed shape that does not fit the target card even at batch 1 has epochs
with ``fits`` 0 and no time: that mode's training time is unknown (never a
partial sum), so no time saved is computed from it, and ``fit_note`` says in
words what did not fit, by how much, and from which epoch each mode fits.

Only runs with a complete pair are compared: both modes, neither failed,
epochs 1..E recorded for both with the same E (the configured number when
run.json gives it).  The controls (small-dense, thin-dense), where a run holds
them, are compared with PruneTrain on final accuracy and on accuracy at
PruneTrain's training time.  Every pruning mode a run holds (PruneTrain and the competing methods
slimming, earlybird, random) is also compared with the run's dense mode alone (:func:`method_rows`), so the
method comparison counts a folder of dense and slimming too (the report still needs one dense + PruneTrain
pair).  Repeated runs of one configuration (seeds) are
summarised as the mean with a 95 % confidence interval and n (bench.report.stats);
a difference between modes is taken per run, on one seed, so its interval is
the paired one.

(Over 400 lines on purpose, for now: the per-run metrics of the pair, its controls, the competing methods
and the device's peak share one set of helpers — time, sums, time to accuracy — and one summary.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd

from ..config import CONTROLS, METHODS
from ..fmt import missing
from .load import Run
from .settings import setting_parts, settings_text, varied_settings
from .stats import mean_ci

#: the modes every compared run holds
MODES = ("dense", "prunetrain")

TRAINING_TIME_DEFINITION = (
    "training time = Σ epoch_time_s + Σ reconfig_time_s over all epochs of a mode "
    "(dense training never reconfigures); evaluation and torch.compile time are excluded"
)

#: a reconfiguration whose measured logit change (max |Δlogit| / max |logit| on the held-out batch,
#: eval or train mode) exceeds this "changed the function"; a pruner of dead channels stays near 1e-6
FUNCTION_CHANGE_TOLERANCE = 0.01
#: time to accuracy: the first time a mode reaches the dense run's final accuracy minus this many points
TIME_TO_ACCURACY_MARGIN = 1.0

# Group key columns of the table, in order.
KEY_COLUMNS = ["device", "model", "dataset", "epochs", "settings"]

#: the controls' column prefix (a mode name with a hyphen is not a column name)
CONTROL_KEYS = {mode: mode.replace("-", "_") for mode in CONTROLS}
CONTROL_METRICS = [f"{c}_{m}" for c in CONTROL_KEYS.values()
                   for m in ("time_s", "train_flops", "final_acc", "best_acc", "acc_at_prunetrain_time", "params",
                             "flops_vs_prunetrain_pct", "train_flops_saved_pct", "final_acc_gap",
                             "acc_at_prunetrain_time_gap", "time_to_acc_s")]

# Per-run numbers that are aggregated (mean and 95 % confidence interval over repeats) per table row.
METRICS: list[str] = [
    "dense_time_s", "prunetrain_time_s", "time_saved_pct",
    "dense_train_flops", "prunetrain_train_flops", "train_flops_saved_pct",
    "time_per_flops_saved",
    "dense_inference_flops", "prunetrain_inference_flops", "inference_flops_saved_pct",
    "dense_peak_memory_bytes", "prunetrain_peak_memory_bytes",
    "dense_final_acc", "prunetrain_final_acc", "dense_best_acc", "prunetrain_best_acc",
    "dense_reconfig_time_s", "prunetrain_reconfig_time_s",
    "dense_eval_time_s", "prunetrain_eval_time_s",
    "dense_compile_time_s", "prunetrain_compile_time_s",
    "dense_params", "prunetrain_params",
    "reconfigurations", "max_function_change", "flagged_reconfigurations", "min_function_acc_delta",
    "accuracy_target", "dense_time_to_acc_s", "prunetrain_time_to_acc_s", "saved_with_larger_batch_pct",
    "final_acc_gap", "dense_acc_at_prunetrain_time", "acc_at_prunetrain_time_gap",
    "device_peak_flops_per_s", "dense_flops_per_s", "prunetrain_flops_per_s",
    "dense_peak_fraction_pct", "prunetrain_peak_fraction_pct",
    *CONTROL_METRICS,
]


@dataclass
class Aggregation:
    """The report's data: one row per configuration, the epochs behind it, the runs seen."""

    table: pd.DataFrame     # KEY_COLUMNS, n, run_ids, batch_sizes, <metric> (mean), <metric>_lo, <metric>_hi (95 % CI)
    epochs: pd.DataFrame    # long per-epoch rows of the compared runs (for plots)
    runs: pd.DataFrame      # one row per run read: compared or why not
    compared: list[Run] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    methods: pd.DataFrame = field(default_factory=pd.DataFrame)  # pruning methods against dense (method_rows)


# --------------------------------------------------------------------------
# One run

def pair_problem(run: Run) -> str | None:
    """Why a run cannot be compared (dense vs PruneTrain), or None when it can."""
    failed = []
    for mode in MODES:
        if run.mode_status(mode) == "failed":
            err = run.mode_info(mode).get("error")
            failed.append(f"{mode} failed" + (f" ({err})" if isinstance(err, str) and err else ""))
    if failed:
        return "; ".join(failed)
    epochs = {m: sorted(set(run.mode_epochs(m)["epoch"].astype(int))) for m in MODES}
    prefix = "in progress: " if run.in_progress else "incomplete: "
    absent = [m for m in MODES if not epochs[m]]
    if absent:
        return prefix + " and ".join(absent) + " not recorded"
    target = run.expected_epochs or max(max(e) for e in epochs.values())
    holes = {m: sorted(set(range(1, target + 1)) - set(e)) for m, e in epochs.items()}
    if any(holes.values()):
        parts = [f"{m} {target - len(h)}/{target} epochs" + _missing_text(h)
                 for m, h in holes.items()]
        return prefix + ", ".join(parts)
    return None


def _missing_text(missing: list[int]) -> str:
    if not missing:
        return ""
    shown = ", ".join(str(e) for e in missing[:6]) + (", …" if len(missing) > 6 else "")
    return f" (missing {shown})"


def _sum(df: pd.DataFrame, col: str, *, all_required: bool = False) -> float:
    """Sum of a column; NaN when all values are missing (or any, with all_required)."""
    values = df[col]
    if values.isna().all() or (all_required and values.isna().any()):
        return math.nan
    return float(values.sum())


def _max(df: pd.DataFrame, col: str) -> float:
    values = df[col].dropna()
    return float(values.max()) if not values.empty else math.nan


def _last(df: pd.DataFrame, col: str) -> float:
    value = df[col].iloc[-1] if not df.empty else math.nan
    return float(value) if pd.notna(value) else math.nan


def _saved_pct(dense: float, pt: float) -> float:
    if not (dense > 0) or math.isnan(pt):
        return math.nan
    return 100.0 * (1.0 - pt / dense)


def batch_sequence(sizes: Sequence[float]) -> str:
    """Batch sizes in the order used, consecutive repeats collapsed: '128→256→384'."""
    seq: list[int] = []
    for b in sizes:
        if pd.isna(b):
            continue
        if not seq or seq[-1] != int(b):
            seq.append(int(b))
    return "→".join(str(b) for b in seq) or "?"


def train_time(df: pd.DataFrame) -> pd.Series:
    """Per-epoch training time (see TRAINING_TIME_DEFINITION)."""
    return df["epoch_time_s"] + df["reconfig_time_s"].fillna(0.0)


def run_metrics(run: Run) -> dict[str, Any]:
    """The per-run numbers of the table (NaN where the records lack them)."""
    d, p = run.mode_epochs("dense"), run.mode_epochs("prunetrain")
    m: dict[str, Any] = {}
    for name, df in (("dense", d), ("prunetrain", p)):
        m[f"{name}_time_s"] = float(train_time(df).sum()) if not (df["fits"] == 0).any() else math.nan
        m[f"{name}_train_flops"] = _sum(df, "train_flops", all_required=True)
        m[f"{name}_inference_flops"] = _last(df, "inference_flops")
        m[f"{name}_params"] = _last(df, "params")
        m[f"{name}_peak_memory_bytes"] = _max(df, "peak_memory_bytes")
        m[f"{name}_final_acc"] = _last(df, "test_acc")
        m[f"{name}_best_acc"] = _max(df, "test_acc")
        for part in ("reconfig", "eval", "compile"):
            m[f"{name}_{part}_time_s"] = _sum(df, f"{part}_time_s")
    m["time_saved_pct"] = _saved_pct(m["dense_time_s"], m["prunetrain_time_s"])
    m["train_flops_saved_pct"] = _saved_pct(m["dense_train_flops"], m["prunetrain_train_flops"])
    m["inference_flops_saved_pct"] = _saved_pct(m["dense_inference_flops"],
                                                m["prunetrain_inference_flops"])
    fs = m["train_flops_saved_pct"]
    m["time_per_flops_saved"] = (m["time_saved_pct"] / fs
                                 if not math.isnan(fs) and fs > 0 else math.nan)
    m["final_acc_gap"] = m["prunetrain_final_acc"] - m["dense_final_acc"]
    pt_time = m["prunetrain_time_s"]
    m["dense_acc_at_prunetrain_time"] = acc_at_time(d, pt_time)
    m["acc_at_prunetrain_time_gap"] = m["prunetrain_final_acc"] - m["dense_acc_at_prunetrain_time"]
    m.update(control_metrics(run, m))
    m.update(peak_fraction(run, m))
    m.update(faithfulness(p))
    m.update(time_to_accuracy(d, p, m["dense_final_acc"] - TIME_TO_ACCURACY_MARGIN))
    m["saved_with_larger_batch_pct"] = saved_with_larger_batch(d, p)
    m["batch_sizes"] = batch_sequence(p["batch_size"].tolist())
    m["dense_batch_sizes"] = batch_sequence(d["batch_size"].tolist())
    m["memory_budget_bytes"] = _memory_budget(run)
    m["contended_epochs"] = contended_epochs(run)
    e = run.epochs  # epochs with any load record: a replay has CPU time per step, not the load
    m["epochs_with_load"] = int((e["other_cpu_cores"].notna() | e["cpu_time_s"].notna()
                                 | e["busy_processes"].notna()).sum()) if "cpu_time_s" in e else 0
    m["peak_memory_source"] = memory_source(pd.concat([d, p])["peak_memory_source"])
    m["fit_note"] = fit_note(run.profile or "the profile", d, p)
    return m


def acc_at_time(df: pd.DataFrame, seconds: float, per_epoch: pd.Series | None = None) -> float:
    """Test accuracy at the end of the last epoch finished within ``seconds`` of training time (NaN: none);
    ``per_epoch``: another clock's seconds per epoch (e.g. the process's CPU seconds) instead of train_time."""
    if df.empty or missing(seconds):
        return math.nan
    cum = (train_time(df) if per_epoch is None else per_epoch).cumsum()
    within = df[cum <= seconds * (1 + 1e-9)]
    return float(within["test_acc"].iloc[-1]) if not within.empty and pd.notna(within["test_acc"].iloc[-1]) \
        else math.nan


def control_metrics(run: Run, m: dict[str, Any]) -> dict[str, float]:
    """Each finished control's time, FLOPs, accuracy, and its accuracy gaps to PruneTrain (PruneTrain − control),
    at the end and at PruneTrain's training time; NaN where the run holds no such control."""
    out: dict[str, float] = {}
    for mode, key in CONTROL_KEYS.items():
        df = run.mode_epochs(mode)
        done = run.mode_status(mode) == "finished" and not df.empty and \
            len(set(df["epoch"].astype(int))) == len(set(run.mode_epochs("prunetrain")["epoch"].astype(int)))
        time_s = float(train_time(df).sum()) if done else math.nan
        flops = _sum(df, "train_flops", all_required=True) if done else math.nan
        final = _last(df, "test_acc") if done else math.nan
        at_pt = acc_at_time(df, m["prunetrain_time_s"]) if done else math.nan
        out.update({
            f"{key}_time_s": time_s, f"{key}_train_flops": flops, f"{key}_final_acc": final,
            f"{key}_best_acc": _max(df, "test_acc") if done else math.nan,
            f"{key}_params": _last(df, "params") if done else math.nan,
            f"{key}_acc_at_prunetrain_time": at_pt,
            f"{key}_flops_vs_prunetrain_pct": 100.0 * (flops / m["prunetrain_train_flops"] - 1.0)
            if done and m["prunetrain_train_flops"] > 0 else math.nan,
            f"{key}_train_flops_saved_pct": _saved_pct(m["dense_train_flops"], flops),
            f"{key}_time_to_acc_s": _first_reach(df, m["dense_final_acc"] - TIME_TO_ACCURACY_MARGIN)
            if done and not math.isnan(m["dense_final_acc"]) else math.nan,
            f"{key}_final_acc_gap": m["prunetrain_final_acc"] - final,
            f"{key}_acc_at_prunetrain_time_gap": m["prunetrain_final_acc"] - at_pt,
        })
    return out


def peak_fraction(run: Run, m: dict[str, Any]) -> dict[str, float]:
    """Each mode's achieved training rate (Σ train_flops ÷ training time) and its share of the device's
    measured peak (run.json → device_peak, bench.machine.peak); NaN where a record lacks either."""
    peak = run.meta.get("device_peak") if isinstance(run.meta.get("device_peak"), dict) else {}
    rate = peak.get("flops_per_s")
    rate = float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0 else math.nan
    out = {"device_peak_flops_per_s": rate}
    for mode in MODES:
        achieved = m[f"{mode}_train_flops"] / m[f"{mode}_time_s"] if m[f"{mode}_time_s"] > 0 else math.nan
        out[f"{mode}_flops_per_s"] = achieved
        out[f"{mode}_peak_fraction_pct"] = 100.0 * achieved / rate
    return out


#: the pruning methods compared with dense in the method comparison (PruneTrain and its competitors)
PRUNING_MODES = ("prunetrain", *METHODS)
#: what a competing method's function change is: it removes live channels on purpose
BY_DESIGN = "prunes by ratio: changes the function by design"
BY_DESIGN_RANDOM = "random channels: changes the function by design"
METHOD_METRICS = ["time_s", "dense_time_s", "time_saved_pct", "train_flops_saved_pct", "time_per_flops_saved",
                  "final_acc", "dense_final_acc", "final_acc_gap", "acc_at_equal_time_gap", "pruned_after_epoch",
                  "max_function_change"]


def method_rows(run: Run) -> list[dict[str, Any]]:
    """Each finished pruning mode of a run against its dense mode, as the main table treats PruneTrain: time and
    training FLOPs saved, time ÷ FLOPs saved, final accuracy, accuracy against dense's at the mode's training
    time, and the first epoch after which it pruned (NaN: never).  Empty where dense is not finished."""
    d = run.mode_epochs("dense")
    if run.mode_status("dense") != "finished" or d.empty or (d["fits"] == 0).any():
        return []
    dense_time, dense_flops = float(train_time(d).sum()), _sum(d, "train_flops", all_required=True)
    rows = []
    for mode in PRUNING_MODES:
        df = run.mode_epochs(mode)
        if run.mode_status(mode) != "finished" or len(df) != len(d) or (df["fits"] == 0).any():
            continue
        time_s, flops = float(train_time(df).sum()), _sum(df, "train_flops", all_required=True)
        saved, flops_saved = _saved_pct(dense_time, time_s), _saved_pct(dense_flops, flops)
        archs = run.architectures(mode)  # a reconfiguration that removed nothing is not a pruning
        pruned = [a["epoch"] for a in archs[1:] if isinstance(a.get("epoch"), int) and a.get("params") is not None
                  and a["params"] < archs[0].get("params", math.inf)]
        method = run.mode_info(mode).get("method")
        rows.append({
            "mode": mode, "method": method if isinstance(method, str) else mode,
            "time_s": time_s, "dense_time_s": dense_time, "time_saved_pct": saved,
            "train_flops_saved_pct": flops_saved,
            "time_per_flops_saved": saved / flops_saved if flops_saved > 0 else math.nan,
            "final_acc": _last(df, "test_acc"), "dense_final_acc": _last(d, "test_acc"),
            "final_acc_gap": _last(df, "test_acc") - _last(d, "test_acc"),
            "acc_at_equal_time_gap": _last(df, "test_acc") - acc_at_time(d, time_s),
            "pruned_after_epoch": float(pruned[0]) if pruned else math.nan,
            "max_function_change": faithfulness(df)["max_function_change"],
        })
    return rows


def fit_note(profile: str, dense: pd.DataFrame, pt: pd.DataFrame) -> str:
    """What did not fit the profile's memory even at batch 1, and from which epoch each mode fits ("" if all did).

    E.g. "dense does not fit gtx750ti (needs 1,695 MiB at batch 1, limit 1,567 MiB); PruneTrain fits from
    epoch 2, dense never".
    """
    parts, since = [], {}
    for label, df in (("dense", dense), ("PruneTrain", pt)):
        bad = df[df["fits"] == 0]
        ok = df[df["fits"] != 0]
        since[label] = int(ok["epoch"].min()) if not ok.empty else None
        if bad.empty:
            continue
        first = bad.iloc[0]
        limit = first["memory_limit_bytes"]
        limit_text = "limit unknown" if pd.isna(limit) else f"limit {limit / 2**20:,.0f} MiB"
        until = "" if ok.empty else f" in epoch{'s' if len(bad) > 1 else ''} {_epoch_span(bad['epoch'])}"
        parts.append(f"{label} does not fit {profile}{until} (needs {first['peak_memory_bytes'] / 2**20:,.0f} MiB "
                     f"at batch {int(first['batch_size'])}, {limit_text})")
    if not parts:
        return ""
    fits = [f"{label} fits from epoch {e}" if e and e > 1 else f"{label} fits" for label, e in since.items() if e]
    never = [label for label, e in since.items() if e is None]
    parts.append(", ".join(fits + ([f"{' and '.join(never)} never"] if never else []))
                 if fits else "neither mode fits in any epoch")
    return "; ".join(parts)


def _epoch_span(epochs: pd.Series) -> str:
    lo, hi = int(epochs.min()), int(epochs.max())
    return str(lo) if lo == hi else f"{lo}–{hi}"


def memory_source(values: pd.Series) -> str:
    """measured, predicted, both (``measured/predicted``) or unknown (records from before the column)."""
    found = sorted({v for text in values.dropna() for v in str(text).split("/") if v})
    return "/".join(found) or "unknown"


def contended_epochs(run: Run, mode: str | None = None) -> int:
    """Epochs (of ``mode``, or both) timed while other processes oversubscribed the CPU or shared the GPU."""
    e = run.epochs if mode is None else run.epochs[run.epochs["mode"] == mode]
    return int(sum(contended_flags(run, e)))


def contended_flags(run: Run, e: pd.DataFrame) -> list[bool]:
    """Per row of ``e`` (epochs of ``run``): was it timed under contention (bench.machine.contention's rule)?"""
    from ..machine.contention import is_contended

    if "other_cpu_cores" not in e or "busy_processes" not in e:
        return [False] * len(e)
    cores, threads = run.hardware.get("cpu_cores"), run.meta.get("torch_threads")
    def num(v: Any) -> float | None:
        return None if v is None or pd.isna(v) else float(v)

    return [is_contended(num(o), b if isinstance(b, str) else None, cores if isinstance(cores, int) else None,
                         threads if isinstance(threads, int) else None,
                         num(c) if str(d).startswith("cpu") else None, num(w))
            for o, b, c, w, d in zip(e["other_cpu_cores"], e["busy_processes"], e["cpu_time_s"],
                                     e["epoch_time_s"], e["device"])]


def faithfulness(pt: pd.DataFrame) -> dict[str, float]:
    """How many reconfigurations, the largest measured function change, and how many exceed the tolerance."""
    cols = [c for c in ("func_change_eval", "func_change_train") if c in pt]
    change = pt[cols].apply(pd.to_numeric, errors="coerce").max(axis=1) if cols else pd.Series(dtype=float)
    measured = change.dropna()
    acc = pt[[c for c in ("func_acc_delta_eval", "func_acc_delta_train") if c in pt]]
    acc = acc.apply(pd.to_numeric, errors="coerce").min(axis=1).dropna() if not acc.empty else acc
    return {"reconfigurations": float(len(measured)) if len(measured) else math.nan,
            "max_function_change": float(measured.max()) if len(measured) else math.nan,
            "flagged_reconfigurations": float((measured > FUNCTION_CHANGE_TOLERANCE).sum())
            if len(measured) else math.nan,
            "min_function_acc_delta": float(acc.min()) if len(acc) else math.nan}


def _first_reach(df: pd.DataFrame, target: float) -> float:
    """Cumulative training time at the end of the first epoch whose test accuracy reaches ``target``."""
    cum = train_time(df).cumsum()
    hit = df["test_acc"] >= target
    return float(cum[hit].iloc[0]) if hit.any() else math.nan


def time_to_accuracy(dense: pd.DataFrame, pt: pd.DataFrame, target: float) -> dict[str, float]:
    """Wall-clock training time at which each mode first reaches ``target`` (NaN: not reached)."""
    if math.isnan(target):
        return {"accuracy_target": math.nan, "dense_time_to_acc_s": math.nan, "prunetrain_time_to_acc_s": math.nan}
    return {"accuracy_target": target, "dense_time_to_acc_s": _first_reach(dense, target),
            "prunetrain_time_to_acc_s": _first_reach(pt, target)}


def saved_with_larger_batch(dense: pd.DataFrame, pt: pd.DataFrame) -> float:
    """Share (%) of the training time saved that came in epochs where PruneTrain's batch exceeded dense's."""
    both = pd.merge(dense.assign(t=train_time(dense))[["epoch", "t", "batch_size"]],
                    pt.assign(t=train_time(pt))[["epoch", "t", "batch_size"]], on="epoch", suffixes=("_d", "_p"))
    saved = both["t_d"] - both["t_p"]
    total = float(saved.sum())
    if both.empty or not total > 0:
        return math.nan
    return 100.0 * float(saved[both["batch_size_p"] > both["batch_size_d"]].sum()) / total


def _memory_budget(run: Run) -> float:
    value = run.meta.get("memory_budget_bytes")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return _max(run.epochs, "memory_budget_bytes")


# --------------------------------------------------------------------------
# All runs

def run_keys(run: Run, settings: str | None = None) -> dict[str, Any]:
    """A run's KEY_COLUMNS (``settings`` overrides the text): what must agree for runs to be repeats."""
    return {"device": run.device_label, "model": run.model, "dataset": run.dataset,
            "epochs": int(run.mode_epochs("dense")["epoch"].max()),
            "settings": settings_text(run, _memory_budget(run)) if settings is None else settings}


def run_record(run: Run, settings: str | None = None) -> dict[str, Any]:
    """One compared run before summarising: its KEY_COLUMNS (``settings`` overrides the text), identity, metrics."""
    return {**run_keys(run, settings),
            "setting_parts": tuple(setting_parts(run, _memory_budget(run))) if settings is None else (settings,),
            "run_id": run.run_id, "in_progress": run.in_progress, "seed": run.config.get("seed", math.nan),
            "method": run.meta.get("method") if isinstance(run.meta.get("method"), str) else "PruneTrain",
            "test_size": _data_size(run, "test_size"), "val_size": _data_size(run, "val_size"),
            "emulated": run.emulated, "profile": run.profile, "source": run.source,
            "trajectory": run.replay_of or run.run_id,
            **run_metrics(run)}


def _data_size(run: Run, key: str) -> str:
    """A split's size from run.json (``data``), as text: "?" where the record does not say (older runs)."""
    data = run.meta.get("data") if isinstance(run.meta.get("data"), dict) else {}
    value = data.get(key)
    return f"{value:,}" if isinstance(value, int) else "?"


def aggregate(runs: Sequence[Run]) -> Aggregation:
    """Compare every complete pair and summarise repeats per configuration."""
    warnings: list[str] = []
    inventory: list[dict[str, Any]] = []
    per_run: list[dict[str, Any]] = []
    compared: list[Run] = []
    epoch_frames: list[pd.DataFrame] = []
    method_frames: list[dict[str, Any]] = []
    for run in runs:
        rows = method_rows(run)   # empty unless dense finished
        if rows:
            keys = {**run_keys(run), "setting_parts": tuple(setting_parts(run, _memory_budget(run))),
                    "run_id": run.run_id}
            method_frames += [{**keys, **row} for row in rows]
        problem = pair_problem(run)
        beside_dense = "prunetrain" not in run.config.get("modes", ["prunetrain"]) and any(
            m in run.config.get("modes", []) for m in METHODS)
        if problem is not None and beside_dense:   # dense and a competing method: the method comparison only
            problem = "dense and " + ", ".join(m for m in run.config["modes"] if m != "dense") + \
                " (no PruneTrain): in the method comparison only"
        counts = {m: int(run.mode_epochs(m)["epoch"].nunique()) for m in MODES}
        inventory.append({
            "run_id": run.run_id, "path": str(run.path), "device": run.device_label,
            "model": run.model, "dataset": run.dataset, "status": run.status,
            "dense_epochs": counts["dense"], "prunetrain_epochs": counts["prunetrain"],
            "expected_epochs": run.expected_epochs, "compared": problem is None,
            "note": problem or ("still running, but all epochs are recorded" if run.in_progress else
                                f"dense from run {run.meta['dense_from']}" if run.meta.get("dense_from") else ""),
        })
        if problem is not None:
            if not beside_dense:
                warnings.append(f"run {run.run_id} ({run.path}): not compared: {problem}")
            continue
        compared.append(run)
        per_run.append(run_record(run))
        e = run.epochs.copy()
        e["device_label"] = run.device_label
        e["run_path"] = str(run.path)
        e["run_index"] = len(per_run) - 1
        e["train_time_s"] = train_time(e)
        e["contended"] = contended_flags(run, e)
        e = e.sort_values(["mode", "epoch"])
        e["cum_train_time_s"] = e.groupby("mode")["train_time_s"].cumsum()
        epoch_frames.append(e)

    table = _summarise(pd.DataFrame(per_run))
    epochs_df = pd.concat(epoch_frames, ignore_index=True) if epoch_frames else pd.DataFrame()
    if not table.empty:
        label_of = {tuple(r[k] for k in KEY_COLUMNS): (i, r["label"])
                    for i, (_, r) in enumerate(table.iterrows())}
        row_of_run = [label_of[tuple(pr[k] for k in KEY_COLUMNS)] for pr in per_run]
        epochs_df["row"] = epochs_df["run_index"].map(lambda i: row_of_run[i][0])
        epochs_df["label"] = epochs_df["run_index"].map(lambda i: row_of_run[i][1])
    return Aggregation(table=table, epochs=epochs_df, runs=pd.DataFrame(inventory),
                       compared=compared, warnings=warnings, methods=_summarise_methods(pd.DataFrame(method_frames)))


def _summarise_methods(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95 % interval of every METHOD_METRICS per configuration, mode and method (its settings)."""
    if per_run.empty:
        return pd.DataFrame()
    rows = []
    for key, g in per_run.groupby([*KEY_COLUMNS, "mode", "method"], sort=False, dropna=False):
        row: dict[str, Any] = {**dict(zip([*KEY_COLUMNS, "mode", "method"], key)), "n": len(g),
                               "run_ids": ", ".join(g["run_id"])}
        for name in METHOD_METRICS:
            ci = mean_ci(pd.to_numeric(g[name], errors="coerce"))
            row[name], row[f"{name}_lo"], row[f"{name}_hi"], row[f"{name}_n"] = ci.mean, ci.lo, ci.hi, ci.n
        row["setting_parts"] = g["setting_parts"].iloc[0]
        rows.append(row)
    return _labelled(pd.DataFrame(rows))


def _summarise(per_run: pd.DataFrame) -> pd.DataFrame:
    """Median / min / max per configuration (KEY_COLUMNS)."""
    if per_run.empty:
        return pd.DataFrame(columns=[*KEY_COLUMNS, "label", "n", "run_ids"])
    rows = []
    for key, g in per_run.groupby(KEY_COLUMNS, sort=True, dropna=False):
        row: dict[str, Any] = dict(zip(KEY_COLUMNS, key))
        row["n"] = len(g)
        row["run_ids"] = ", ".join(g["run_id"])
        row["setting_parts"] = g["setting_parts"].iloc[0]
        row["in_progress"] = bool(g["in_progress"].any())
        row["emulated"] = bool(g["emulated"].iloc[0])
        row["profile"] = g["profile"].iloc[0]
        row["source"] = g["source"].iloc[0]          # the device label separates replayed from measured
        row["trajectory"] = g["trajectory"].iloc[0]  # the run whose pruning trajectory these times follow
        row["method"] = "; ".join(dict.fromkeys(g["method"]))
        row["test_size"] = "/".join(dict.fromkeys(g["test_size"]))
        row["val_size"] = "/".join(dict.fromkeys(g["val_size"]))
        row["batch_sizes"] = "; ".join(dict.fromkeys(g["batch_sizes"]))
        row["dense_batch_sizes"] = "; ".join(dict.fromkeys(g["dense_batch_sizes"]))
        row["memory_budget_bytes"] = g["memory_budget_bytes"].median()
        row["peak_memory_source"] = memory_source(g["peak_memory_source"])
        row["contended_epochs"] = int(g["contended_epochs"].sum())
        row["epochs_with_load"] = int(g["epochs_with_load"].sum())
        row["fit_note"] = "; ".join(dict.fromkeys(n for n in g["fit_note"] if n))
        row["seeds"] = ", ".join(str(s) for s in sorted(dict.fromkeys(g["seed"].dropna().astype(int))))
        for mname in METRICS:
            ci = mean_ci(pd.to_numeric(g[mname], errors="coerce"))
            row[mname], row[f"{mname}_lo"], row[f"{mname}_hi"], row[f"{mname}_n"] = ci.mean, ci.lo, ci.hi, ci.n
        rows.append(row)
    return _labelled(pd.DataFrame(rows)).reset_index(drop=True)


def _labelled(table: pd.DataFrame) -> pd.DataFrame:
    """``varied`` (the settings that tell a row from the others) and ``label`` (device · model / data · varied)."""
    base = [f"{d} · {m} / {ds}" for d, m, ds in zip(table["device"], table["model"], table["dataset"])]
    table["varied"] = varied_settings(base, list(table["epochs"]), list(table["setting_parts"]))
    table["label"] = [b if not v else f"{b} · {v}" for b, v in zip(base, table["varied"])]
    return table
