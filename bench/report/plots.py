"""The report's figures, as PNG bytes.

Figures are drawn on the Agg canvas directly (no pyplot), so nothing here
touches the process-wide backend or needs a display.

Figures are meant to be printed: 11 pt+ text, the Okabe–Ito colour-blind-safe
palette, and dense vs PruneTrain told apart by line style and marker as well
as colour.  Repeated runs are drawn as the median line with a min–max band.
"""
from __future__ import annotations

import io
import math
import textwrap
from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .. import fmt
from .aggregate import Aggregation
from .load import MODES, Run

DPI = 120
# Okabe & Ito (2008), colour-blind-safe.
OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
MODE_STYLE = {
    "dense": dict(color="#0072B2", linestyle="-", marker="o", label="dense"),
    "prunetrain": dict(color="#D55E00", linestyle="--", marker="s", label="PruneTrain"),
    "small-dense": dict(color="#009E73", linestyle="-.", marker="^", label="small-dense (control)"),
    "thin-dense": dict(color="#CC79A7", linestyle=":", marker="v", label="thin-dense (control)"),
    "slimming": dict(color="#E69F00", linestyle="--", marker="D", label="Network Slimming"),
    "earlybird": dict(color="#56B4E9", linestyle="--", marker="P", label="Early-Bird"),
    "random": dict(color="#000000", linestyle=":", marker="x", label="random pruning"),
}
MODE_HATCH = {"dense": "", "prunetrain": "//", "small-dense": "..", "thin-dense": "xx"}
STYLE = {
    "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
    "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 14,
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "lines.linewidth": 2.0, "lines.markersize": 5, "savefig.dpi": DPI,
}


@dataclass
class Plot:
    """One figure of the report."""

    name: str       # file name, e.g. "epoch_time.png"
    title: str
    caption: str    # one sentence: what it shows and how to read it
    png: bytes


# --------------------------------------------------------------------------
# helpers

def _wrap(text: str, width: int = 42) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _panel_title(table: pd.DataFrame, row: int, band: bool = True) -> str:
    r = table.iloc[row]
    where = f"{r['model']} / {r['dataset']}"
    if r["label"] != f"{r['device']} · {where}":
        where = r["label"].split(" · ", 1)[1]
    n = int(r["n"])
    runs = ""
    if n > 1:
        runs = f", n={n} (median, min–max band)" if band else f", one of n={n} runs"
    return _wrap(str(r["device"])) + "\n" + _wrap(where + runs, 60)


def _grid(n: int, *, width: float = 6.4, height: float = 4.3, rows_per: int = 1,
          max_cols: int = 2) -> tuple[Figure, list[list[Axes]]]:
    """A figure with one column of ``rows_per`` axes per panel, wrapped after ``max_cols``."""
    cols = min(n, max_cols)
    panel_rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * panel_rows * rows_per), layout="constrained")
    grid = fig.add_gridspec(panel_rows * rows_per, cols)
    panels = []
    for i in range(n):
        pr, c = divmod(i, cols)
        panels.append([fig.add_subplot(grid[pr * rows_per + k, c]) for k in range(rows_per)])
    return fig, panels


def _stats(epochs: pd.DataFrame, row: int, mode: str, col: str) -> pd.DataFrame:
    """Median/min/max of ``col`` per epoch over the runs of one table row and mode."""
    d = epochs[(epochs["row"] == row) & (epochs["mode"] == mode)]
    d = d[["epoch", col]].dropna()
    if d.empty:
        return pd.DataFrame(columns=["epoch", "med", "lo", "hi"])
    g = d.groupby("epoch")[col]
    return pd.DataFrame({"med": g.median(), "lo": g.min(), "hi": g.max()}).reset_index()


def _draw_modes(ax: Axes, epochs: pd.DataFrame, row: int, col: str, scale: float = 1.0,
                drawstyle: str = "default") -> bool:
    """Dense and PruneTrain lines for one panel; False when there was nothing to draw."""
    drawn = False
    for mode in MODES:
        s = _stats(epochs, row, mode, col)
        if s.empty:
            continue
        drawn = True
        style = dict(MODE_STYLE[mode])
        every = max(1, len(s) // 15)
        ax.plot(s["epoch"], s["med"] / scale, markevery=every, drawstyle=drawstyle, **style)
        if (s["lo"] != s["hi"]).any():
            ax.fill_between(s["epoch"], s["lo"] / scale, s["hi"] / scale, color=style["color"],
                            alpha=0.18, linewidth=0, step="mid" if drawstyle != "default" else None)
    if not drawn:
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("Epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return drawn


def _figure_legend(fig: Figure, ncol: int = 3) -> None:
    """One legend under all panels (instead of one per panel, hiding data)."""
    handles: dict[str, object] = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=ncol)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white",
                metadata={"Software": None})
    return buf.getvalue()


def _per_panel(agg: Aggregation, col: str, ylabel: Callable[[str], str],
               unit_of: Callable[[float], tuple[float, str]] | None, suptitle: str,
               *, cumulative: bool = False, mark_contended: bool = False) -> Figure | None:
    """One panel per table row with dense vs PruneTrain of one per-epoch column (``mark_contended``: a cross on
    each epoch the contention rule flagged, whose time is an upper bound)."""
    epochs = agg.epochs
    if col not in epochs or epochs[col].dropna().empty:
        return None
    fig, panels = _grid(len(agg.table))
    for row, (ax,) in enumerate(panels):
        # a unit per panel: a GTX 1070 epoch in seconds, a CPU epoch in minutes
        peak = epochs.loc[epochs["row"] == row, col].max()
        div, unit = unit_of(float(peak)) if unit_of else (1.0, "")
        _draw_modes(ax, epochs, row, col, div)
        busy = epochs[(epochs["row"] == row) & epochs["contended"]] if mark_contended and "contended" in epochs \
            else epochs.iloc[:0]
        if not busy.empty:
            ax.scatter(busy["epoch"], busy[col] / div, marker="x", s=70, color="black", zorder=5,
                       label="timed under contention")
        ax.set_title(_panel_title(agg.table, row))
        ax.set_ylabel(ylabel(unit))
        if cumulative or col != "test_acc":
            ax.set_ylim(bottom=0)
    fig.suptitle(suptitle)
    _figure_legend(fig)
    return fig


# --------------------------------------------------------------------------
# the figures

def plot_epoch_time(agg: Aggregation) -> Figure | None:
    return _per_panel(agg, "train_time_s", lambda u: f"Training time per epoch ({u})",
                      fmt.duration_unit, "Training time per epoch (incl. reconfiguration)", mark_contended=True)


def plot_cumulative_time(agg: Aggregation) -> Figure | None:
    return _per_panel(agg, "cum_train_time_s", lambda u: f"Cumulative training time ({u})",
                      fmt.duration_unit, "Cumulative training time", cumulative=True)


def plot_train_flops(agg: Aggregation) -> Figure | None:
    return _per_panel(agg, "train_flops", lambda u: f"Training FLOPs per epoch ({u})",
                      fmt.flops_unit, "Training FLOPs per epoch (forward + loss + backward)")


def plot_accuracy_vs_time(agg: Aggregation) -> Figure | None:
    """Test accuracy against cumulative training time (medians per epoch), with the time-to-accuracy target."""
    epochs = agg.epochs
    if "test_acc" not in epochs or epochs["test_acc"].dropna().empty:
        return None
    fig, panels = _grid(len(agg.table))
    for row, (ax,) in enumerate(panels):
        div, unit = fmt.duration_unit(float(epochs.loc[epochs["row"] == row, "cum_train_time_s"].max()))
        for mode in MODES:
            acc, t = _stats(epochs, row, mode, "test_acc"), _stats(epochs, row, mode, "cum_train_time_s")
            if not acc.empty and not t.empty:
                ax.plot(t["med"] / div, acc["med"], **MODE_STYLE[mode])
        target = agg.table.iloc[row].get("accuracy_target")
        if not fmt.missing(target):
            ax.axhline(target, color="grey", linestyle=":", linewidth=1, label="target (dense final − 1)")
        ax.set_title(_panel_title(agg.table, row))
        ax.set_xlabel(f"Cumulative training time ({unit})")
        ax.set_ylabel("Test accuracy (%)")
        ax.set_xlim(left=0)
    fig.suptitle("Test accuracy against training time")
    _figure_legend(fig)
    return fig


def plot_test_accuracy(agg: Aggregation) -> Figure | None:
    return _per_panel(agg, "test_acc", lambda u: "Test accuracy (%)", None,
                      "Test accuracy per epoch")


def plot_memory_batch(agg: Aggregation) -> Figure | None:
    """Peak memory (top) and batch size (bottom) per epoch: PruneTrain grows the batch as it shrinks."""
    epochs = agg.epochs
    has_mem = "peak_memory_bytes" in epochs and not epochs["peak_memory_bytes"].dropna().empty
    has_bs = not epochs["batch_size"].dropna().empty
    if not (has_mem or has_bs):
        return None
    fig, panels = _grid(len(agg.table), height=3.4, rows_per=2)
    for row, (ax_mem, ax_bs) in enumerate(panels):
        budget = agg.table.iloc[row].get("memory_budget_bytes")
        peak = epochs.loc[epochs["row"] == row, "peak_memory_bytes"].max()
        div, unit = fmt.bytes_unit(float(peak) if has_mem else math.nan)
        _draw_modes(ax_mem, epochs, row, "peak_memory_bytes", div)
        if budget is not None and not fmt.missing(budget) and budget > 0:
            ax_mem.axhline(budget / div, color="#555555", linestyle=":", linewidth=1.5,
                           label="memory budget")
        ax_mem.set_title(_panel_title(agg.table, row))
        source = agg.table.iloc[row].get("peak_memory_source") or "unknown"
        ax_mem.set_ylabel(f"Peak memory ({unit}, {source})")
        ax_mem.set_ylim(bottom=0, top=ax_mem.get_ylim()[1] * 1.05)
        ax_mem.set_xlabel("")
        _draw_modes(ax_bs, epochs, row, "batch_size", drawstyle="steps-mid")
        ax_bs.set_ylabel("Batch size (images)")
        ax_bs.set_ylim(bottom=0)
    fig.suptitle("Peak memory and batch size per epoch")
    _figure_legend(fig)
    return fig


def plot_summary(agg: Aggregation) -> Figure | None:
    """Time saved vs FLOPs saved per configuration; on the y = x line every FLOP saved is time saved."""
    t = agg.table
    ok = t["time_saved_pct"].notna() & t["train_flops_saved_pct"].notna()
    if not ok.any():
        return None
    fig = Figure(figsize=(8.5, 5.2 + 0.3 * int(ok.sum())), layout="constrained")
    ax = fig.add_subplot()
    # each axis spans its own data (square axes left most of the area empty when time saved was small or negative)
    def span(col: str) -> tuple[float, float]:
        # a single run has no interval (NaN bounds): its value bounds the axis
        lo = min(0.0, float(t.loc[ok, f"{col}_lo"].fillna(t.loc[ok, col]).min()))
        hi = max(float(t.loc[ok, f"{col}_hi"].fillna(t.loc[ok, col]).max()), 10.0)
        pad = max(2.0, 0.08 * (hi - lo))  # no marker on the frame
        return lo - pad, hi + pad

    (x_lo, x_hi), (y_lo, y_hi) = span("train_flops_saved_pct"), span("time_saved_pct")
    line = [max(x_lo, y_lo), min(x_hi, y_hi)]
    ax.plot(line, line, color="#555555", linestyle=":", linewidth=1.5,
            label="perfect conversion (time saved = FLOPs saved); below it part of the FLOP saving is lost")
    if y_lo < 0:  # region labels live in the legend: text inside the axes covered data points
        ax.axhspan(y_lo, 0, color="#D55E00", alpha=0.08, linewidth=0,
                   label="below 0: PruneTrain took more time than dense")
    for i, (idx, r) in enumerate(t[ok].iterrows()):
        x, y = r["train_flops_saved_pct"], r["time_saved_pct"]
        repeated = r["n"] > 1 and pd.notna(r["time_saved_pct_lo"]) and pd.notna(r["train_flops_saved_pct_lo"])
        xerr = [[x - r["train_flops_saved_pct_lo"]], [r["train_flops_saved_pct_hi"] - x]]
        yerr = [[y - r["time_saved_pct_lo"]], [r["time_saved_pct_hi"] - y]]
        label = _wrap(r["label"], 70) + (f"  (n={int(r['n'])} seeds, mean, 95 % CI)" if repeated else "")
        ax.errorbar([x], [y], xerr=xerr if repeated else None, yerr=yerr if repeated else None,
                    color=OKABE_ITO[i % len(OKABE_ITO)], marker=MARKERS[i % len(MARKERS)],
                    markersize=10, linestyle="none", capsize=4, label=label)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_xlabel("Training FLOPs saved by PruneTrain (%)")
    ax.set_ylabel("Training time saved by PruneTrain (%)")
    ax.set_title("How much of the FLOP saving each device turns into time")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center")
    return fig


def _architectures(runs: Sequence[Run]) -> tuple[dict[str, float], dict[str, float], int] | None:
    """(dense channels, final PruneTrain channels, final epoch) from the first run that has both."""
    for run in runs:
        pt = run.architectures("prunetrain")
        dense = run.architectures("dense") or pt[:1]
        if dense and len(pt) >= 1:
            final = max(pt, key=lambda a: a.get("epoch", 0) if isinstance(a.get("epoch"), int) else 0)
            return dense[0]["channels"], final["channels"], int(final.get("epoch") or 0)
    return None


def plot_channels(agg: Aggregation) -> Figure | None:
    """Channels per layer: dense network vs the final PruneTrain network (from run.json)."""
    by_row: dict[int, list[Run]] = {}
    row_of_path = dict(zip(agg.epochs["run_path"], agg.epochs["row"]))
    for run in agg.compared:
        by_row.setdefault(int(row_of_path[str(run.path)]), []).append(run)
    panels_data = [(row, a) for row in range(len(agg.table))
                   if (a := _architectures(by_row.get(row, []))) is not None]
    if not panels_data:
        return None
    n_layers = max(len(d) for _, (d, _, _) in panels_data)
    fig, panels = _grid(len(panels_data), width=6.4, height=max(3.5, 0.24 * n_layers + 1.8),
                        max_cols=2)
    for (row, (dense, final, epoch)), (ax,) in zip(panels_data, panels):
        layers = list(dense) + [k for k in final if k not in dense]
        ys = range(len(layers))
        h = 0.4
        for k, (mode, chans) in enumerate((("dense", dense), ("prunetrain", final))):
            style = MODE_STYLE[mode]
            ax.barh([y + (k - 0.5) * h for y in ys], [chans.get(l, 0) for l in layers], height=h,
                    color=style["color"], hatch=MODE_HATCH[mode], edgecolor="white",
                    linewidth=0.5, label=style["label"] + (" (final)" if mode != "dense" else ""))
        ax.set_yticks(list(ys), layers, fontsize=8 if len(layers) > 20 else 10)
        ax.set_ylim(len(layers) - 0.5, -0.5)
        ax.set_xlabel("Output channels")
        ax.grid(axis="y", visible=False)
        ax.set_title(_panel_title(agg.table, row, band=False) + f"\nfinal = after epoch {epoch}")
    _figure_legend(fig)
    fig.suptitle("Channels per layer: dense vs final PruneTrain model")
    return fig


def plot_trajectory(agg: Aggregation) -> Figure | None:
    """Per device, from one pruning trajectory (measured or replayed): time saved and time ÷ FLOPs saved."""
    t = agg.table
    groups = [(traj, g) for traj, g in t.groupby("trajectory", sort=False) if len(g) > 1] if "trajectory" in t else []
    if not groups:
        return None
    fig, panels = _grid(len(groups), width=6.4, height=max(3.8, 0.5 * max(len(g) for _, g in groups) + 2.2),
                        rows_per=2)
    for (traj, g), (ax_time, ax_eff) in zip(groups, panels):
        labels = [_wrap(str(d), 34) for d in g["device"]]
        ys = range(len(g))
        hatch = ["//" if src == "replay" else "" for src in g["source"]]
        for ax, col, xlabel in ((ax_time, "time_saved_pct", "Training time saved (%)"),
                                (ax_eff, "time_per_flops_saved", "Time saved ÷ training FLOPs saved")):
            ax.barh(list(ys), g[col].fillna(0).tolist(), color=[OKABE_ITO[i % len(OKABE_ITO)] for i in ys],
                    hatch=hatch, edgecolor="white")
            ax.set_yticks(list(ys), labels, fontsize=9)
            ax.set_ylim(len(g) - 0.5, -0.5)
            ax.set_xlabel(xlabel)
            ax.grid(axis="y", visible=False)
        ax_eff.axvline(1.0, color="#555555", linestyle=":", linewidth=1.5)
        ax_time.set_title(_wrap(f"trajectory of run {traj}", 44) + "\n(hatched: replayed)")
    fig.suptitle("One pruning trajectory on every device")
    return fig


FIGURES: list[tuple[str, str, str, Callable[[Aggregation], Figure | None]]] = [
    ("summary.png", "Time saved vs FLOPs saved",
     "Each marker is one device and model; on the dotted line every FLOP PruneTrain saves is "
     "saved as training time, below it the device turns only part of the FLOP saving into time.",
     plot_summary),
    ("epoch_time.png", "Training time per epoch",
     "Wall-clock training time of each epoch (including the reconfiguration after it), "
     "dense vs PruneTrain; a cross marks an epoch timed under contention.", plot_epoch_time),
    ("cumulative_time.png", "Cumulative training time",
     "Training time summed up to each epoch; the gap at the last epoch is the time saved.",
     plot_cumulative_time),
    ("train_flops.png", "Training FLOPs per epoch",
     "Floating-point operations of one training epoch (forward, loss and backward).",
     plot_train_flops),
    ("memory_batch.png", "Peak memory and batch size",
     "Peak memory per epoch (top, with the memory budget) and the batch size used (bottom): "
     "PruneTrain raises the batch as the pruned model needs less memory. The axis says whether the peak was "
     "measured (the CUDA allocator's) or predicted (the memory model: on a CPU and in a replay).",
     plot_memory_batch),
    ("test_accuracy.png", "Test accuracy",
     "Test accuracy after each epoch, dense vs PruneTrain.", plot_test_accuracy),
    ("trajectory.png", "One trajectory on every device",
     "Devices that ran (or replayed, hatched) the same pruning trajectory: the time PruneTrain saves "
     "and how much of the FLOP saving each device turns into time (1 = all of it). The FLOPs are "
     "the trajectory's; only the time per step differs.", plot_trajectory),
    ("accuracy_time.png", "Test accuracy against training time",
     "Test accuracy after each epoch against the cumulative training time of that mode: what the time "
     "saved costs in accuracy. The dotted line is the time-to-accuracy target.", plot_accuracy_vs_time),
    ("channels.png", "Channels per layer",
     "Output channels of each layer in network order: the dense model vs the final PruneTrain "
     "model (from run.json).", plot_channels),
]
PLOT_NAMES = [name for name, *_ in FIGURES]


def make_plots(agg: Aggregation) -> list[Plot]:
    """All figures that the records allow (a figure without data is left out)."""
    plots: list[Plot] = []
    with rc_context(STYLE):
        for name, title, caption, make in FIGURES:
            fig = make(agg)
            if fig is not None:
                plots.append(Plot(name=name, title=title, caption=caption, png=_png(fig)))
    return plots
