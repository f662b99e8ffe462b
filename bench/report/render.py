"""Write report.md, a self-contained report.html and the PNGs into the out folder.

Both documents are rendered from one block structure, so they say the same.
Every piece of text taken from the records is escaped (HTML, and Markdown
punctuation) because records are copied between machines and are input, not
trusted markup.  Files are written atomically, plots first and report.html
last, so a crash leaves the previous report or a complete new one per file.

(Over 400 lines on purpose: the report's blocks and their two renderings, Markdown
and HTML, stay together so that both always show the same content.)
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import pandas as pd

from ..runfolder.atomic import atomic_write_bytes
from . import faithful
from .. import fmt
from .aggregate import BY_DESIGN, BY_DESIGN_RANDOM, CONTROL_KEYS, FUNCTION_CHANGE_TOLERANCE, \
    TRAINING_TIME_DEFINITION, Aggregation
from .settings import shared_settings
from .load import Run
from .plots import PLOT_NAMES, Plot

DEFAULT_TITLE = "PruneTrain training-time gain across hardware"

EMULATION_TEXT = (
    "A run marked “emulating <profile>” trained on the device named, with its memory budget "
    "capped at the profile's (on a GPU through torch.cuda.set_per_process_memory_fraction), so "
    "the batch sizes PruneTrain chooses and the out-of-memory retries follow the emulated card. "
    "Emulation does not model the emulated card's compute speed, memory bandwidth, cache sizes, "
    "kernel choices or driver: its times are the host device's times, and only the memory "
    "behaviour is the profile's."
)

# --------------------------------------------------------------------------
# Document blocks


@dataclass
class Para:
    text: str
    kind: str = "p"          # p | note (highlighted)


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: set[int] | None = None  # column indices to right-align


@dataclass
class Items:
    items: list[str]


@dataclass
class Image:
    plot: Plot


@dataclass
class Section:
    title: str
    blocks: list["Block"]
    level: int = 2


Block = Union[Para, Table, Items, Image, Section]


# --------------------------------------------------------------------------
# Content

TIME_HEADERS = ["Device", "Model / data", "n", "Dense time", "PruneTrain time",
                "Time saved (%)", "Training FLOPs saved (%)", "Time saved ÷ FLOPs saved",
                "Inference FLOPs saved (%)"]
MEM_HEADERS = ["Device", "Model / data", "n", "Peak memory dense", "Peak memory PruneTrain", "Peak memory is",
               "PruneTrain batch sizes", "Final acc. dense (%)", "Final acc. PruneTrain (%)",
               "Best acc. dense (%)", "Best acc. PruneTrain (%)"]


def _row_names(r: pd.Series) -> tuple[str, str]:
    device = str(r["device"]) + (" (in progress)" if r.get("in_progress") else "")
    where = f"{r['model']} / {r['dataset']}, {int(r['epochs'])} epochs"
    if r.get("varied"):
        where += f" ({r['varied']})"
    return device, where


def core_tables(table: pd.DataFrame) -> tuple[Table, Table]:
    """The core table, split in two so each fits a printed page."""
    time_rows, mem_rows = [], []
    for _, r in table.iterrows():
        device, where = _row_names(r)
        n = str(int(r["n"]))
        mem_unit = pd.Series([r["dense_peak_memory_bytes"], r["prunetrain_peak_memory_bytes"]]).max()
        time_rows.append([device, where, n,
                          fmt.cell(r, "dense_time_s", "time", r["dense_time_s"]),
                          fmt.cell(r, "prunetrain_time_s", "time", r["dense_time_s"]),
                          fmt.cell(r, "time_saved_pct", "pct"),
                          fmt.cell(r, "train_flops_saved_pct", "pct"),
                          fmt.ratio_cell(r),
                          fmt.cell(r, "inference_flops_saved_pct", "pct")])
        mem_rows.append([device, where, n,
                         fmt.cell(r, "dense_peak_memory_bytes", "bytes", mem_unit),
                         fmt.cell(r, "prunetrain_peak_memory_bytes", "bytes", mem_unit),
                         str(r.get("peak_memory_source", "unknown")),
                         str(r["batch_sizes"]),
                         fmt.cell(r, "dense_final_acc", "acc"),
                         fmt.cell(r, "prunetrain_final_acc", "acc"),
                         fmt.cell(r, "dense_best_acc", "acc"),
                         fmt.cell(r, "prunetrain_best_acc", "acc")])
    return (Table(TIME_HEADERS, time_rows, numeric=set(range(2, 9))),
            Table(MEM_HEADERS, mem_rows, numeric={2, 3, 4, 7, 8, 9, 10}))




def _more_or_less(saved_pct: Any) -> str:
    """'12.3 % less time' or, when PruneTrain was slower, '7.3 % more time' (never '-7.3 % less')."""
    if fmt.missing(saved_pct):
        return "time saved unknown"
    return f"{abs(saved_pct):.1f} % {'less' if saved_pct >= 0 else 'more'} time"


def _method_of(r: pd.Series) -> str:
    return str(r.get("method") or "PruneTrain")


def _mean_time(r: pd.Series, metric: str) -> str:
    """A mean time in the unit of dense's mean, without its interval."""
    div, unit = fmt.duration_unit(r["dense_time_s"])
    return fmt.DASH if fmt.missing(r[metric]) else f"{fmt.sig(r[metric] / div)} {unit}"


def _time_sentence(r: pd.Series) -> str:
    """How much training time the method saved, with its interval over seeds (or "a single run")."""
    n = int(r.get("time_saved_pct_n", r.get("n", 1)) or 0)
    if n > 1 and not fmt.missing(r.get("time_saved_pct_lo")):
        lo, hi = r["time_saved_pct_lo"], r["time_saved_pct_hi"]
        means = f"mean {_mean_time(r, 'prunetrain_time_s')} vs {_mean_time(r, 'dense_time_s')} dense"
        if lo <= 0 <= hi:
            return (f"its training time is not distinguishable from dense's (time saved {lo:.1f} to {hi:.1f} %, "
                    f"95 % CI over {n} seeds; {means})")
        if lo > 0:
            return f"saved {lo:.1f}–{hi:.1f} % of the training time (95 % CI over {n} seeds; {means})"
        return f"took {-hi:.1f}–{-lo:.1f} % more training time (95 % CI over {n} seeds; {means})"
    return (f"trained in {fmt.cell(r, 'prunetrain_time_s', 'time', r['dense_time_s'])} instead of "
            f"{fmt.cell(r, 'dense_time_s', 'time', r['dense_time_s'])} ({_more_or_less(r['time_saved_pct'])}; "
            "a single run: no interval)")


def _gap_sentence(r: pd.Series, metric: str, what: str) -> str:
    """'+1.2 points (−0.4 to 2.8, 95 % CI over 3 seeds; not distinguishable)' for a paired accuracy gap."""
    mean, lo, hi = r.get(metric), r.get(f"{metric}_lo"), r.get(f"{metric}_hi")
    n = int(r.get(f"{metric}_n", 0) or 0)
    if fmt.missing(mean):
        return f"{what} unknown"
    if n > 1 and not fmt.missing(lo):
        verdict = ("not distinguishable" if lo <= 0 <= hi else "PruneTrain better" if lo > 0 else "PruneTrain worse")
        return f"{what} {mean:+.1f} points ({lo:+.1f} to {hi:+.1f}, 95 % CI over {n} seeds: {verdict})"
    return f"{what} {mean:+.1f} points (a single run)"


def _contention_caveat(r: Any) -> str:
    """The finding's own warning when the contention rule flagged epochs of its row ("" otherwise): the times
    then measure the other processes as much as PruneTrain, so the comparison must not be read as a result."""
    flagged = r.get("contended_epochs")
    if fmt.missing(flagged) or not flagged:
        return ""
    total = r.get("epochs_with_load")
    of = f" of {int(total)}" if not fmt.missing(total) and total else ""
    return (f" This time comparison is not trustworthy: {int(flagged)}{of} epochs were timed while other "
            "processes competed for the machine, so their wall times include waiting and dense and PruneTrain "
            "met different loads; compare on a quiet machine, with --interleave, or with “bench replay” there.")


def _findings(table: pd.DataFrame) -> Items:
    items = []
    for _, r in table.iterrows():
        ratio, why = r["time_per_flops_saved"], fmt.no_ratio_reason(r)
        conv = ("" if fmt.missing(ratio) or why == "no time saved" else
                ", too few to say how much of a FLOP saving becomes time" if why else
                f", i.e. {fmt.cell(r, 'time_per_flops_saved', 'ratio')} of the FLOP saving became time saved")
        who = f"{r['label']}, {_method_of(r)}"
        if r.get("fit_note"):
            items.append(f"{who}: {r['fit_note']}; no time saved is computed from a mode that did not fit "
                         f"(training FLOPs {fmt.cell(r, 'train_flops_saved_pct', 'pct')} % fewer).")
        else:
            items.append(f"{who}: {_time_sentence(r)} with "
                         f"{fmt.interval_text(r, 'train_flops_saved_pct')} fewer training FLOPs{conv}; "
                         + ("accuracy is the original run's (a replay does not train)." if r.get("source") == "replay"
                            else f"final accuracy {fmt.cell(r, 'prunetrain_final_acc', 'acc')} % vs "
                                 f"{fmt.cell(r, 'dense_final_acc', 'acc')} % dense (on {r.get('test_size', '?')} test "
                                 f"images), "
                                 + _gap_sentence(r, "final_acc_gap", "a gap of") + ".")
                         + _contention_caveat(r))
        sentence = faithful.finding(r)
        if sentence is not None:
            items.append(sentence)
        for mode, key in CONTROL_KEYS.items():
            if fmt.missing(r.get(f"{key}_final_acc")):
                continue
            items.append(f"{r['label']}: {_method_of(r)} against {mode} ({CONTROL_WHAT[mode]}): "
                         + _gap_sentence(r, f"{key}_final_acc_gap", "final accuracy") + "; "
                         + _gap_sentence(r, f"{key}_acc_at_prunetrain_time_gap",
                                         "accuracy at PruneTrain's training time") + ".")
    return Items(items)


PEAK_HEADERS = ["Device", "Model / data", "n", "Measured peak (matmul)", "Dense achieved", "Dense, % of peak",
                "PruneTrain achieved", "PruneTrain, % of peak"]


def peak_table(table: pd.DataFrame) -> Table | None:
    """The hardware axis: each mode's achieved training rate as a share of the device's measured peak."""
    rows = []
    for _, r in table.iterrows():
        if fmt.missing(r.get("device_peak_flops_per_s")):
            continue
        device, where = _row_names(r)
        rate = lambda k: fmt.DASH if fmt.missing(r.get(k)) else f"{r[k] / 1e9:,.1f} GFLOP/s"  # noqa: E731
        rows.append([device, where, str(int(r["n"])), rate("device_peak_flops_per_s"), rate("dense_flops_per_s"),
                     fmt.cell(r, "dense_peak_fraction_pct", "pct"), rate("prunetrain_flops_per_s"),
                     fmt.cell(r, "prunetrain_peak_fraction_pct", "pct")])
    return Table(PEAK_HEADERS, rows, numeric=set(range(2, 8))) if rows else None


#: what each control is, in a finding
CONTROL_WHAT = {"small-dense": "its final architecture trained from scratch",
                "thin-dense": "dense uniformly thinned to its training FLOPs"}
CONTROL_HEADERS = ["Device", "Model / data", "Mode", "n", "Training time", "Training FLOPs vs PruneTrain (%)",
                   "Final acc. (%)", "Acc. at PruneTrain's time (%)", "PruneTrain − mode, final (points)",
                   "PruneTrain − mode, at PruneTrain's time (points)", "Time to dense final − 1 point"]


def controls_table(table: pd.DataFrame) -> Table | None:
    """PruneTrain against dense and each control: final accuracy and accuracy at PruneTrain's training time."""
    rows = []
    for _, r in table.iterrows():
        if all(fmt.missing(r.get(f"{k}_final_acc")) for k in CONTROL_KEYS.values()):
            continue
        device, where = _row_names(r)
        n = str(int(r["n"]))
        unit = r["dense_time_s"]
        rows.append([device, where, _method_of(r), n, fmt.cell(r, "prunetrain_time_s", "time", unit), "0",
                     fmt.cell(r, "prunetrain_final_acc", "acc"), fmt.cell(r, "prunetrain_final_acc", "acc"),
                     fmt.DASH, fmt.DASH, _reached(r, "prunetrain_time_to_acc_s", unit)])
        rows.append([device, where, "dense", n, fmt.cell(r, "dense_time_s", "time", unit),
                     fmt.cell({"v": -100 * (1 - 1 / (1 - r["train_flops_saved_pct"] / 100))
                               if not fmt.missing(r["train_flops_saved_pct"]) else float("nan"), "n": 1}, "v", "pct"),
                     fmt.cell(r, "dense_final_acc", "acc"), fmt.cell(r, "dense_acc_at_prunetrain_time", "acc"),
                     fmt.cell(r, "final_acc_gap", "acc"), fmt.cell(r, "acc_at_prunetrain_time_gap", "acc"),
                     _reached(r, "dense_time_to_acc_s", unit)])
        for mode, k in CONTROL_KEYS.items():
            if fmt.missing(r.get(f"{k}_final_acc")):
                continue
            rows.append([device, where, mode, str(int(r.get(f"{k}_final_acc_n", 0) or 0)),
                         fmt.cell(r, f"{k}_time_s", "time", unit), fmt.cell(r, f"{k}_flops_vs_prunetrain_pct", "pct"),
                         fmt.cell(r, f"{k}_final_acc", "acc"), fmt.cell(r, f"{k}_acc_at_prunetrain_time", "acc"),
                         fmt.cell(r, f"{k}_final_acc_gap", "acc"),
                         fmt.cell(r, f"{k}_acc_at_prunetrain_time_gap", "acc"),
                         _reached(r, f"{k}_time_to_acc_s", unit)])
    return Table(CONTROL_HEADERS, rows, numeric=set(range(3, 11))) if rows else None


METHOD_HEADERS = ["Device", "Model / data", "Mode", "Method", "n", "Training time", "Time saved vs dense (%)",
                  "Training FLOPs saved (%)", "Time ÷ FLOPs saved", "Final acc. (%)", "Mode − dense, final (points)",
                  "Mode − dense at the mode's time (points)", "Pruned after epoch", "Function change at pruning"]


def _function_change_text(r: pd.Series) -> str:
    """PruneTrain's change is a fault above the tolerance; a ratio method removes live channels on purpose."""
    worst = r["max_function_change"]
    if fmt.missing(worst):
        return "not pruned"
    if r["mode"] != "prunetrain":
        return f"{worst:.2g} ({BY_DESIGN_RANDOM if r['mode'] == 'random' else BY_DESIGN})"
    return f"{worst:.2g}" + (" changed the function" if worst > FUNCTION_CHANGE_TOLERANCE else "")


def methods_table(methods: pd.DataFrame) -> Table | None:
    """Every pruning method against the dense run of its own folder; None unless a competing method ran."""
    if methods.empty or (methods["mode"] == "prunetrain").all():
        return None
    rows = []
    for _, r in methods.iterrows():
        where = f"{r['model']} / {r['dataset']}, {int(r['epochs'])} epochs" + (f" ({r['varied']})" if r["varied"] else "")
        epoch = ("never" if fmt.missing(r["pruned_after_epoch"]) else str(int(r["pruned_after_epoch"]))
                 if r["pruned_after_epoch_n"] == 1 or r["pruned_after_epoch_lo"] == r["pruned_after_epoch_hi"]
                 else fmt.cell(r, "pruned_after_epoch", "acc"))
        rows.append([str(r["device"]), where, str(r["mode"]), str(r["method"]), str(int(r["n"])),
                     fmt.cell(r, "time_s", "time", r["dense_time_s"]), fmt.cell(r, "time_saved_pct", "pct"),
                     fmt.cell(r, "train_flops_saved_pct", "pct"), fmt.cell(r, "time_per_flops_saved", "ratio"),
                     fmt.cell(r, "final_acc", "acc"), fmt.cell(r, "final_acc_gap", "acc"),
                     fmt.cell(r, "acc_at_equal_time_gap", "acc"), epoch, _function_change_text(r)])
    return Table(METHOD_HEADERS, rows, numeric=set(range(4, 13)))


def _reached(r: pd.Series, metric: str, unit: float) -> str:
    """A time to accuracy, or "not reached" (a dash alone would read as unknown)."""
    return "not reached" if fmt.missing(r.get(metric)) else fmt.cell(r, metric, "time", unit)


def _gpu_text(gpus: Any) -> str:
    if not isinstance(gpus, list) or not gpus:
        return "none"
    parts = []
    for g in gpus:
        if isinstance(g, dict):
            text = str(g.get("name", "?"))
            mem = g.get("total_memory_bytes")
            if isinstance(mem, (int, float)) and mem > 0:
                text += f", {fmt.size(mem)}"
            cc = g.get("compute_capability")
            if isinstance(cc, list) and len(cc) == 2:
                text += f", sm_{cc[0]}{cc[1]}"
            parts.append(text)
        else:
            parts.append(str(g))
    return "; ".join(parts)


def _join(values: Sequence[Any]) -> str:
    vals = [str(v) for v in dict.fromkeys(values) if v not in (None, "")]
    return ", ".join(vals) or fmt.DASH


def devices_table(runs: Sequence[Run]) -> Table:
    """One row per hardware configuration: what it is and which software ran on it."""
    by_label: dict[str, list[Run]] = {}
    for run in runs:
        by_label.setdefault(run.device_label, []).append(run)
    rows = []
    for label, rs in sorted(by_label.items()):
        hw = [r.hardware for r in rs]
        ver = [r.meta.get("versions") if isinstance(r.meta.get("versions"), dict) else {}
               for r in rs]
        budgets = [fmt.size(r.meta["memory_budget_bytes"]) for r in rs
                   if isinstance(r.meta.get("memory_budget_bytes"), (int, float))]
        rows.append([label,
                     _join([h.get("kind") for h in hw]),
                     _join([_gpu_text(h.get("gpus")) for h in hw if "gpus" in h]),
                     _join([f"{h.get('cpu_model')} ({h.get('cpu_cores')} cores)"
                            if h.get("cpu_model") else None for h in hw]),
                     _join([v.get("torch") or h.get("torch_version") for v, h in zip(ver, hw)]),
                     _join([h.get("cuda_version") for h in hw]),
                     _join([v.get("python") for v in ver]),
                     _join(budgets),
                     str(len(rs))])
    return Table(["Device", "Kind", "GPUs", "CPU", "torch", "CUDA", "Python", "Memory budget",
                  "Runs"], rows, numeric={8})


def runs_table(agg: Aggregation) -> Table:
    rows = []
    for _, r in agg.runs.iterrows():
        expected = r["expected_epochs"]
        of = f" of {int(expected)}" if not fmt.missing(expected) and expected is not None else ""
        status = {"running": "in progress"}.get(r["status"], r["status"])
        rows.append([r["run_id"], r["path"], r["device"], f"{r['model']} / {r['dataset']}",
                     status, f"{r['dense_epochs']} / {r['prunetrain_epochs']}{of}",
                     "yes" if r["compared"] else "no", r["note"]])
    return Table(["Run", "Folder", "Device", "Model / data", "Status",
                  "Epochs dense / PruneTrain", "Compared", "Note"], rows)


def method_section(agg: Aggregation, warnings: Sequence[str]) -> Section:
    """“How it was measured”, built from the records themselves."""
    t = agg.table
    e = agg.epochs
    totals = {f"{mode}_{part}": float(e.loc[e["mode"] == mode, f"{part}_time_s"].sum())
              for mode in ("dense", "prunetrain") for part in ("reconfig", "eval", "compile")}
    versions = [r.meta.get("versions") for r in agg.compared if isinstance(r.meta.get("versions"), dict)]
    commits = _join([r.meta.get("git_commit") for r in agg.compared])
    blocks: list[Block] = [
        Para(f"Training time: {TRAINING_TIME_DEFINITION}. Over all {len(agg.compared)} compared "
             f"run(s) together, reconfiguration added {fmt.duration(totals['prunetrain_reconfig'])} "
             f"to PruneTrain; left out were evaluation "
             f"({fmt.duration(totals['dense_eval'])} dense, "
             f"{fmt.duration(totals['prunetrain_eval'])} PruneTrain) and torch.compile "
             f"({fmt.duration(totals['dense_compile'])} dense, "
             f"{fmt.duration(totals['prunetrain_compile'])} PruneTrain)."),
        Para("Time saved (%) = 100 × (1 − PruneTrain time ÷ dense time). Training FLOPs saved (%) "
             "is the same on Σ train_flops (forward, loss and backward of every epoch, counted "
             "with torch FlopCounterMode). Time saved ÷ FLOPs saved says how much of the FLOP "
             "saving the hardware turns into time: 1 is perfect conversion, below 1 the device "
             "loses part of it (fixed per-step costs, kernels too small to fill the device, data "
             "loading), above 1 it gains more (e.g. larger batches after pruning); it is "
             f"shown only where both savings mean something (at least {fmt.MIN_FLOPS_SAVED_FOR_RATIO:g} % of "
             "the FLOPs and some time saved), else the cell says why not. Inference FLOPs saved compares the final epoch's "
             "per-image inference FLOPs. Peak memory is the largest peak_memory_bytes of any "
             "epoch; the column after it says whether that was measured (the CUDA allocator's peak) "
             "or predicted (the memory model: on a CPU, and in a replay)."),
        Para("Only runs with a complete pair are compared: both modes recorded every epoch of "
             "the same schedule and neither failed. Repeated runs of one configuration (same "
             "device, emulation, process count, model, data set and settings; seeds differ) are shown as the "
             "mean over the n runs with its 95 % confidence interval (Student's t); a difference between modes "
             "(time saved, FLOPs saved, an accuracy gap, the ratio column) is computed per run, on one seed, "
             "and its interval is over those paired differences. A single run has no interval and says so."),
        Section("Methods", [Items([f"{r['label']}: {r.get('method', 'PruneTrain')} (seeds {r.get('seeds') or '?'}; "
                                   f"test accuracy on {r.get('test_size', '?')} test images; every reconfiguration measured on a "
                                   f"fixed batch of the {r.get('val_size', '?')} validation images held out of training)"
                                   for _, r in t.iterrows()])], level=3),
        Section("Devices and software", [devices_table(agg.compared)], level=3),
        Para(f"Software: bench {_join([v.get('bench') for v in versions])}, torch "
             f"{_join([v.get('torch') for v in versions])}, torchvision "
             f"{_join([v.get('torchvision') for v in versions])}, Python "
             f"{_join([v.get('python') for v in versions])}; git commit {commits}."),
        Section("Settings", settings_blocks(t), level=3),
        Section("Emulation", [Para(EMULATION_TEXT if t["emulated"].any() else
                                   "No compared run emulated another device.")], level=3),
        Section("Replayed runs", replay_blocks(agg), level=3),
        Section("Runs read", [runs_table(agg)], level=3),
        Section("Warnings", [Items(list(warnings)) if warnings else Para(
            "None while reading the records." + (" Epochs timed under contention are a property of the timing, "
                                                 "not of the records: see the note at the top and the findings."
                                                 if (t.get("contended_epochs", pd.Series(dtype=float)) > 0).any()
                                                 else ""))], level=3),
    ]
    return Section("How it was measured", blocks)


def settings_blocks(table: pd.DataFrame) -> list[Block]:
    """The settings every row shares, once; then per row only what it varied (rows are labelled by that)."""
    shared = shared_settings(table)
    blocks: list[Block] = [Para("Every row: " + ", ".join(shared) + ".")] if shared else []
    own = [f"{lab}: {', '.join(p for p in parts if p not in shared)}"
           for lab, parts in zip(table["label"], table["setting_parts"]) if len(parts) > len(shared)]
    return blocks + ([Items(own)] if own else [])


def replay_blocks(agg: Aggregation) -> list[Block]:
    """Which rows were timed by `bench replay`, from which trajectory, and what that cannot show."""
    replays = [r for r in agg.compared if r.source == "replay"]
    if not replays:
        return [Para("Every compared run was measured by “bench run” (none replayed).")]
    items, limits = [], []
    for run in replays:
        info = run.meta.get("replay") if isinstance(run.meta.get("replay"), dict) else {}
        of = info.get("of") if isinstance(info.get("of"), dict) else {}
        items.append(f"{run.device_label}: step times measured here for the pruning trajectory of run "
                     f"{run.replay_of} ({of.get('trajectory', 'trajectory source not recorded')}; recorded on "
                     f"{of.get('device', '?')}, profile {of.get('profile', '?')}); data {info.get('data', '?')}; "
                     + (f"shapes timed one at a time ({info.get('timing_why', 'reason not recorded')}); "
                        f"{info.get('rounds', '?')} rounds ({info.get('stopped', '?')})."
                        if info.get("timing") == "sequential" else
                        f"{info.get('rounds', '?')} interleaved rounds ({info.get('stopped', '?')})."))
        if info.get("limits") and info["limits"] not in limits:
            limits.append(str(info["limits"]))
    return [Para("Rows marked “replayed” were not trained on the device named: “bench replay” rebuilt every "
                 "architecture of a recorded run, chose each batch with the device profile's memory rule, "
                 "timed training steps in interleaved rounds and set epoch time = images ÷ batch × median "
                 "step time (+ the measured reconfiguration). Accuracy is the recorded run's."),
            Items(items), *[Para(f"Limits: {text}.", kind="note") for text in limits]]


def profile_purposes(runs: Sequence[Run]) -> dict[str, str]:
    """What each profile of the compared runs is for, where its file says so (the ``purpose`` key)."""
    out: dict[str, str] = {}
    for run in runs:
        profile = run.meta.get("profile")
        if isinstance(profile, dict) and isinstance(profile.get("purpose"), str) and profile["purpose"].strip():
            out.setdefault(str(profile.get("name", run.profile)), profile["purpose"].strip())
    return out


def build_document(agg: Aggregation, plots: Sequence[Plot], warnings: Sequence[str],
                   sources: Sequence[Path], studies: Sequence[Section] = ()) -> list[Block]:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head: list[Block] = [Para(f"Generated {now} from {len(agg.runs)} run(s) in "
                              f"{', '.join(str(s) for s in sources)}; "
                              f"{len(agg.compared)} run(s) compared.")]
    running = agg.runs[agg.runs["status"] == "running"]
    if not running.empty:
        names = "; ".join(
            f"{r['run_id']} ("
            + ("compared: all epochs recorded" if r["compared"]
               else "not compared yet: " + str(r["note"]).removeprefix("in progress: "))
            + ")" for _, r in running.iterrows())
        head.append(Para(f"{len(running)} run(s) still in progress (or stopped without "
                         f"finishing): {names}.", kind="note"))
    busy = agg.table[agg.table["contended_epochs"] > 0] if "contended_epochs" in agg.table else agg.table.iloc[:0]
    if not busy.empty:
        head.append(Para("Timed under contention (other processes oversubscribed the CPU or shared the GPU, or a "
                         "one-thread CPU epoch got under 80 % of a core; wall times are then upper bounds and "
                         "rows timed at different moments are not comparable; replay on a quiet machine): "
                         + "; ".join(f"{r['label']}: {int(r['contended_epochs'])} of {int(r['epochs_with_load'])} "
                                     "epochs" for _, r in busy.iterrows()) + ".", kind="note"))
    head += [Para(f"Profile {name}: {purpose}", kind="note") for name, purpose in profile_purposes(agg.compared).items()]
    if warnings:
        head.append(Para(f"{len(warnings)} warning(s) while reading the records: see "
                         "“Warnings” at the end.", kind="note"))
    methods = methods_table(agg.methods)
    method_comparison = [Section("Method comparison", [
        Para("PruneTrain and the methods it competes with, each against the dense run of its own folder (same "
             "data, schedule, seed and initial weights): Network Slimming and Early-Bird prune once by a ratio "
             "of BatchNorm scales, random pruning removes random channels at PruneTrain's epochs and counts. "
             "The gap at the mode's time is its final accuracy minus dense's after the last epoch dense "
             "finished within the mode's whole training time. The three competing methods remove live channels "
             f"on purpose, so their function change is a cost, not a fault; a pruning is a reconfiguration "
             f"that removed channels; {TRAINING_TIME_DEFINITION}."),
        methods])] if methods is not None else []
    if agg.table.empty:   # competing methods beside dense, and no dense + PruneTrain pair: their comparison alone
        return [*head, Para("No run holds a complete dense + PruneTrain pair: only the methods that ran beside "
                            "dense are compared.", kind="note"), *method_comparison, *studies,
                Section("How it was measured", [
                    Para(f"Definitions: {TRAINING_TIME_DEFINITION}. Mean over n runs (seeds), with its 95 % "
                         "confidence interval over per-seed differences where repeated."),
                    Section("Settings", settings_blocks(agg.methods.drop_duplicates("label")), level=3),
                    Section("Runs read", [runs_table(agg)], level=3),
                    Section("Warnings", [Items(list(warnings)) if warnings else Para("None.")], level=3)])]
    time_table, mem_table = core_tables(agg.table)
    return [
        *head,
        Section("Findings", [_findings(agg.table)]),
        Section("Training time and FLOPs", [
            Para(f"Mean over n runs (seeds), with its 95 % confidence interval (t-interval; for time saved, "
                 f"FLOPs saved and accuracy gaps the paired one, over per-seed differences) when repeated; "
                 f"{TRAINING_TIME_DEFINITION}. “PruneTrain” in a column is the method named in the findings."),
            time_table]),
        *([Section("Against the controls", [
            Para("The first two questions asked of a pruning result (Liu et al., ICLR 2019): does it beat its own "
                 "final architecture trained from scratch (small-dense), and a uniformly thinner dense network "
                 "with the same training FLOPs (thin-dense)? Both train on the same data, schedule and seed as "
                 "dense, initialised by dense's rule. Accuracy at PruneTrain's time is a mode's test accuracy "
                 "after the last epoch it finished within PruneTrain's whole training time."),
            controls])] if (controls := controls_table(agg.table)) is not None else []),
        *([Section("How much of the device each mode used", [
            Para("Achieved = Σ training FLOPs ÷ training time of a mode; the peak is a timed dense matmul at the "
                 "run's precision, measured on the device where the run ended (run.json → device_peak). A device "
                 "that runs the dense network far below its peak (small kernels, launch overhead) turns fewer "
                 "FLOPs into less time than one that runs near it: compare PruneTrain's share with dense's."),
            peak])] if (peak := peak_table(agg.table)) is not None else []),
        *method_comparison,
        Section("Memory, batch size and accuracy", [mem_table]),
        Section("Faithfulness and time to accuracy", [
            Para(faithful.EXPLANATION),
            Table(faithful.HEADERS, faithful.rows(agg.table, _row_names), numeric=set(range(2, 10)))]),
        Section("Plots", [Image(p) for p in plots]),
        *studies,
        method_section(agg, warnings),
    ]


# --------------------------------------------------------------------------
# Markdown

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def md_escape(text: Any) -> str:
    """Record text as literal Markdown: no HTML, no emphasis, no table breaks."""
    s = html.escape(str(text), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", s).replace("\n", " ")


def _md_block(b: Block) -> list[str]:
    if isinstance(b, Section):
        out = ["#" * b.level + " " + md_escape(b.title), ""]
        for child in b.blocks:
            out += _md_block(child)
        return out
    if isinstance(b, Para):
        text = md_escape(b.text)
        return [f"> **Note:** {text}" if b.kind == "note" else text, ""]
    if isinstance(b, Items):
        return [f"- {md_escape(i)}" for i in b.items] + [""]
    if isinstance(b, Table):
        align = ["---:" if b.numeric and i in b.numeric else "---" for i in range(len(b.headers))]
        lines = ["| " + " | ".join(md_escape(h) for h in b.headers) + " |",
                 "| " + " | ".join(align) + " |"]
        lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in b.rows]
        return lines + [""]
    if isinstance(b, Image):
        return [f"### {md_escape(b.plot.title)}", "",
                f"![{md_escape(b.plot.title)}]({b.plot.name})", "",
                f"*{md_escape(b.plot.caption)}*", ""]
    raise TypeError(b)


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    lines = [f"# {md_escape(title)}", ""]
    for b in blocks:
        lines += _md_block(b)
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------
# HTML

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       max-width: 1280px; margin: 2em auto; padding: 0 1.2em; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.8em; margin-bottom: .3em; }
h2 { border-bottom: 2px solid #0072B2; padding-bottom: .2em; margin-top: 1.8em; }
h3 { margin-top: 1.4em; }
.tablewrap { overflow-x: auto; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #c8c8c8; padding: .35em .6em; vertical-align: top; }
th { background: #eef3f8; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
.note { background: #fff4e0; border-left: 4px solid #E69F00; padding: .5em .8em; }
figure { margin: 1.2em 0 2em; page-break-inside: avoid; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: .95em; color: #444; margin-top: .3em; }
@media print { body { max-width: none; } h2 { page-break-after: avoid; } }
"""

# Lets a headless browser test confirm every embedded image decoded.
IMAGES_LOADED_JS = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
  }
  document.body.dataset.imagesLoaded = ok + "/" + imgs.length;
});
"""

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_block(b: Block) -> str:
    if isinstance(b, Section):
        inner = "\n".join(_html_block(c) for c in b.blocks)
        return f"<section>\n<h{b.level}>{_e(b.title)}</h{b.level}>\n{inner}\n</section>"
    if isinstance(b, Para):
        cls = ' class="note"' if b.kind == "note" else ""
        return f"<p{cls}>{_e(b.text)}</p>"
    if isinstance(b, Items):
        return "<ul>\n" + "\n".join(f"<li>{_e(i)}</li>" for i in b.items) + "\n</ul>"
    if isinstance(b, Table):
        num = b.numeric or set()
        head = "".join(f"<th>{_e(h)}</th>" for h in b.headers)
        body = "\n".join(
            "<tr>" + "".join(f'<td{" class=num" if i in num else ""}>{_e(c)}</td>'
                             for i, c in enumerate(row)) + "</tr>"
            for row in b.rows)
        return (f'<div class="tablewrap"><table>\n<thead><tr>{head}</tr></thead>\n'
                f"<tbody>\n{body}\n</tbody></table></div>")
    if isinstance(b, Image):
        data = base64.b64encode(b.plot.png).decode("ascii")
        return (f'<figure id="{_e(b.plot.name)}"><h3>{_e(b.plot.title)}</h3>'
                f'<img src="data:image/png;base64,{data}" alt="{_e(b.plot.title)}">'
                f"<figcaption>{_e(b.plot.caption)}</figcaption></figure>")
    raise TypeError(b)


def render_html(title: str, blocks: Sequence[Block]) -> str:
    body = "\n".join(_html_block(b) for b in blocks)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{CSS}</style>
<script>{IMAGES_LOADED_JS}</script>
</head>
<body>
<h1>{_e(title)}</h1>
{body}
</body>
</html>
"""


# --------------------------------------------------------------------------
# Writing

def write_report(out_dir: Path, title: str, agg: Aggregation, plots: Sequence[Plot],
                 warnings: Sequence[str], sources: Sequence[Path],
                 studies: Sequence[tuple[Section, Plot | None]] = ()) -> list[Path]:
    """Write PNGs, report.md and report.html (each atomically); the paths written."""
    blocks = build_document(agg, plots, warnings, sources, [section for section, _ in studies])
    written: list[Path] = []
    for p in [*plots, *(plot for _, plot in studies if plot is not None)]:
        atomic_write_bytes(out_dir / p.name, p.png)
        written.append(out_dir / p.name)
    for stale in set(PLOT_NAMES) - {p.name for p in plots}:
        (out_dir / stale).unlink(missing_ok=True)  # a figure of an older report, now without data
    for name, text in (("report.md", render_markdown(title, blocks)),
                       ("report.html", render_html(title, blocks))):
        atomic_write_bytes(out_dir / name, text.encode("utf-8"))
        written.append(out_dir / name)
    return written
