"""The report's view of a study (``bench sweep``): one row per varied setting, and a Pareto view.

A study keeps dense and each PruneTrain setting in run folders of their own
(dense is trained once per repeat, not once per setting).  Here every
PruneTrain run is paired with its dense run into one dense+PruneTrain record,
so the study's rows use exactly the numbers (and definitions) of the main
table, and the paired records join the main table as well.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from matplotlib import colormaps, rc_context
from matplotlib.figure import Figure

from ..errors import RecordError
from .. import fmt
from ..runfolder.study import STUDY_FILE, dense_partner, read_study
from .aggregate import _summarise, _summarise_methods, method_rows, pair_problem, run_keys, run_record, train_time
from .load import Run
from .pairing import joined
from .plots import STYLE, Plot, _png, _wrap


@dataclass
class StudyView:
    """One study as the report shows it."""

    folder: Path
    data: dict
    table: pd.DataFrame                           # aggregate-style rows, "settings" = the setting's label
    pairs: list[tuple[str, Run]] = field(default_factory=list)   # (setting label, dense+PruneTrain record)
    method_pairs: list[Run] = field(default_factory=list)        # dense + a competing method's record
    methods: pd.DataFrame = field(default_factory=pd.DataFrame)  # every method against dense (aggregate.methods)
    missing: list[str] = field(default_factory=list)             # entries without a complete pair yet

    @property
    def varied(self) -> dict[str, list[Any]]:
        return self.data["varied"]


def find_studies(paths: Sequence[Path], warnings: list[str]) -> list[tuple[Path, dict]]:
    """Study folders (with study.json) among or under ``paths``; an unreadable record becomes a warning."""
    found: dict[Path, dict] = {}
    for p in map(Path, paths):
        if p.is_file():
            p = p.parent
        if not p.is_dir():
            continue
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if STUDY_FILE in files:
                folder = Path(root)
                try:
                    found.setdefault(folder.resolve(), read_study(folder / STUDY_FILE))
                except RecordError as exc:
                    warnings.append(f"{exc}; that study's section is left out")
    return [(folder, data) for folder, data in found.items()]


def _label(setting: dict[str, Any]) -> str:
    return ", ".join(f"{k} {('on' if v else 'off') if isinstance(v, bool) else v}"
                     for k, v in setting.items()) or "base"


def study_views(studies: Sequence[tuple[Path, dict]], runs: Sequence[Run],
                warnings: list[str]) -> tuple[list[StudyView], set[Path]]:
    """Pair each study's runs; returns the views and the run folders the pairs replace."""
    by_path = {r.path.resolve(): r for r in runs}
    views: list[StudyView] = []
    members: set[Path] = set()
    for folder, data in studies:
        entries = data["entries"]
        for e in entries:
            if e["run"]:
                members.add((folder / e["run"]).resolve())
        view = StudyView(folder=folder, data=data, table=pd.DataFrame())
        per_run: list[dict[str, Any]] = []
        method_frames: list[dict[str, Any]] = []
        for e in entries:
            if e["mode"] == "dense":
                continue
            d = dense_partner(entries, e)
            own = by_path.get((folder / e["run"]).resolve()) if e["run"] else None
            dense_run = by_path.get((folder / d["run"]).resolve()) if d and d["run"] else None
            if own is None or dense_run is None:
                view.missing.append(f"{e['id']}: {'not run yet' if own is None else 'its dense run is missing'}")
                continue
            pair = joined(dense_run, own)
            label = _label(e["setting"])
            rows = method_rows(pair)
            method_frames += [{**run_keys(pair, settings=label), "setting_parts": (label,), "run_id": pair.run_id,
                               **row} for row in rows]
            if e["mode"] != "prunetrain":   # a competing method: compared with dense in the method table only
                view.method_pairs.append(pair)
                if not rows:
                    view.missing.append(f"{e['id']}: not finished beside its dense run")
                continue
            view.pairs.append((label, pair))
            problem = pair_problem(pair)
            if problem is None:
                per_run.append(run_record(pair, settings=label))
            else:
                view.missing.append(f"{e['id']}: {problem}")
        view.methods = _summarise_methods(pd.DataFrame(method_frames))
        if view.missing:
            warnings.append(f"study {data['study_id']}: {len(view.missing)} run(s) without a complete pair "
                            f"({'; '.join(view.missing[:3])}{'; …' if len(view.missing) > 3 else ''})")
        if per_run:
            order = [_label(e["setting"]) for e in entries if e["mode"] == "prunetrain"]
            table = _summarise(pd.DataFrame(per_run))
            table["order"] = table["settings"].map(lambda s: order.index(s) if s in order else len(order))
            view.table = table.sort_values("order").reset_index(drop=True)
            view.table["pareto"] = pareto_front(view.table)
        views.append(view)
    return views, members


def pareto_front(table: pd.DataFrame) -> list[bool]:
    """Settings not beaten on both axes: no other setting (or dense) trains faster *and* ends more accurate."""
    points = [(r["prunetrain_time_s"], r["prunetrain_final_acc"]) for _, r in table.iterrows()]
    dense = [(r["dense_time_s"], r["dense_final_acc"]) for _, r in table.iterrows()]
    out = []
    for i, (t, a) in enumerate(points):
        if math.isnan(t) or math.isnan(a):
            out.append(False)
            continue
        others = [p for j, p in enumerate(points) if j != i] + dense
        beaten = any(ot <= t and oa >= a and (ot < t or oa > a)
                     for ot, oa in others if not (math.isnan(ot) or math.isnan(oa)))
        out.append(not beaten)
    return out


def batch_effect(view: StudyView) -> str | None:
    """For an adjust_batch on/off study: how much of the time saved came with the larger batch."""
    if "adjust_batch" not in view.varied or view.table.empty:
        return None
    t = view.table
    on = t[t["settings"].str.contains("adjust_batch on", regex=False)]
    off = t[t["settings"].str.contains("adjust_batch off", regex=False)]
    if on.empty or off.empty:
        return None
    pairs = []
    for _, r_on in on.iterrows():
        rest = r_on["settings"].replace("adjust_batch on", "adjust_batch off")
        match = off[off["settings"] == rest]
        if match.empty:
            continue
        saved_on, saved_off = r_on["time_saved_pct"], match.iloc[0]["time_saved_pct"]
        if math.isnan(saved_on) or math.isnan(saved_off):
            continue
        where = r_on["settings"].replace("adjust_batch on", "").strip(", ") or "this study"
        pairs.append(f"{where} on {r_on['device']}: {saved_on:.1f} % time saved with the dynamic mini-batch "
                     f"(batches {r_on['batch_sizes']}), {saved_off:.1f} % without it (the smaller network "
                     f"alone); the larger batch accounts for {saved_on - saved_off:+.1f} points")
    return "; ".join(pairs) + "." if pairs else None


def accuracy_time_figure(view: StudyView) -> Figure | None:
    """Test accuracy against cumulative training time: dense and every setting, Pareto settings marked."""
    if not any(pair.epochs["test_acc"].notna().any() for _, pair in view.pairs):
        return None  # replayed: nothing was trained, so there is no accuracy to plot
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    pareto = dict(zip(view.table["settings"], view.table["pareto"])) if "pareto" in view.table else {}
    labels = list(dict.fromkeys(label for label, _ in view.pairs))
    longest = max(float(train_time(pair.epochs).groupby(pair.epochs["mode"]).sum().max()) for _, pair in view.pairs)
    div, unit = fmt.duration_unit(longest)
    dense_drawn: set[str] = set()
    for label, pair in view.pairs:
        dense_id = pair.run_id.split(" vs ")[-1]
        d = pair.mode_epochs("dense")
        if dense_id not in dense_drawn and not d.empty:
            dense_drawn.add(dense_id)
            ax.plot(train_time(d).cumsum() / div, d["test_acc"], color="black", linewidth=1.5, label="dense")
        p = pair.mode_epochs("prunetrain")
        if p.empty:
            continue
        color = colormaps["viridis"](0.9 * labels.index(label) / max(1, len(labels) - 1))
        ax.plot(train_time(p).cumsum() / div, p["test_acc"], color=color, marker="o", markersize=3,
                label=_wrap(label + (" ★" if pareto.get(label) else ""), 30))
    ax.set_xlabel(f"Cumulative training time ({unit})")
    ax.set_ylabel("Test accuracy (%)")
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))  # repeats share a label: one legend entry each
    ax.legend(list(unique.values()), list(unique), loc="lower right", fontsize="small")
    return fig


def study_plot(view: StudyView, index: int) -> Plot | None:
    with rc_context(STYLE):
        fig = accuracy_time_figure(view)
        if fig is None:
            return None
        return Plot(name=f"study{index + 1}_accuracy_time.png",
                    title=f"Accuracy against training time: {', '.join(view.varied)}",
                    caption="Test accuracy after each epoch against the cumulative training time, dense (black) "
                            "and each setting; ★ marks settings that no other setting (nor dense) beats on "
                            "both time and final accuracy.",
                    png=_png(fig))


STUDY_HEADERS = ["Setting", "n", "Training time", "Time saved (%)", "Training FLOPs saved (%)",
                 "Time saved ÷ FLOPs saved", "Final acc. (%)", "Best acc. (%)", "Not beaten"]


def study_section(view: StudyView, index: int) -> tuple["Section", Plot | None]:
    """The study's section of the report (and its figure, if any run finished)."""
    from .render import Image, Items, Para, Section, Table

    d = view.data
    varied = "; ".join(f"{k} = {', '.join(str(v) for v in vs)}" for k, vs in view.varied.items())
    blocks: list = [Para(f"Study {d['study_id']} varies {varied}, with {d['repeat']} repeat(s) (seeds "
                         f"{d['base_config'].get('seed', 0)}…), everything else equal; dense trains once per "
                         "repeat unless a varied setting changes dense training too. Mean over repeats (seeds), "
                         "with its 95 % confidence interval where repeated. “Not beaten”: no other setting, nor dense, trains faster "
                         "and ends more accurate (the Pareto front of time against final accuracy).")]
    if d.get("replay_of"):
        blocks.append(Para(f"Replayed (bench replay) from study {d['replay_of']}: every run's trajectory was timed "
                           "on this device instead of trained, so the times are this device's and the accuracy "
                           "columns are empty (the original study has them).", kind="note"))
    rows = []
    t = view.table
    if not t.empty:
        unit = t["dense_time_s"].median()
        for dense_key in dict.fromkeys(t["dense_time_s"]):
            r = t[t["dense_time_s"] == dense_key].iloc[0]
            rows.append(["dense" + ("" if t["dense_time_s"].nunique() == 1 else f" (for {r['settings']})"),
                         str(int(r["n"])), fmt.cell(r, "dense_time_s", "time", unit), "", "", "",
                         fmt.cell(r, "dense_final_acc", "acc"), fmt.cell(r, "dense_best_acc", "acc"), ""])
        for _, r in t.iterrows():
            rows.append([str(r["settings"]), str(int(r["n"])), fmt.cell(r, "prunetrain_time_s", "time", unit),
                         fmt.cell(r, "time_saved_pct", "pct"), fmt.cell(r, "train_flops_saved_pct", "pct"),
                         fmt.ratio_cell(r), fmt.cell(r, "prunetrain_final_acc", "acc"),
                         fmt.cell(r, "prunetrain_best_acc", "acc"), "★" if r["pareto"] else ""])
        blocks.append(Table(STUDY_HEADERS, rows, numeric={1, 2, 3, 4, 5, 6, 7}))
        devices = sorted(set(t["device"]))
        blocks.append(Para(f"Device: {', '.join(devices)}; model {t['model'].iloc[0]} on {t['dataset'].iloc[0]}, "
                           f"{int(t['epochs'].iloc[0])} epochs."))
    elif "prunetrain" in view.data["varied"].get("mode", ["prunetrain"]):
        blocks.append(Para("No setting has a complete dense + PruneTrain pair yet.", kind="note"))
    if view.methods is not None and not view.methods.empty and (view.methods["mode"] != "prunetrain").any():
        from .render import methods_table
        blocks.append(Para("The pruning methods, each against the dense run of its repeat (the report's method "
                           "comparison; a competing method removes live channels by design)."))
        blocks.append(methods_table(view.methods))
    effect = batch_effect(view)
    if effect:
        blocks.append(Para("Dynamic mini-batch: " + effect))
    if view.missing:
        blocks.append(Items([f"not in the table yet: {m}" for m in view.missing]))
    plot = study_plot(view, index)
    if plot is not None:
        blocks.append(Image(plot))
    where = sorted({str(dev).replace(" · replayed", "") for dev in ([] if t.empty else t["device"])})
    replayed = f" (replayed on {', '.join(where)})" if where else " (replayed)"
    title = f"Study: {', '.join(view.varied)}" + (replayed if d.get("replay_of") else "")
    return Section(title, blocks), plot
