"""The evidence table of a report README, generated from its raw records (never typed by hand).

Usage: python reports/evidence_table.py RUNS_DIR [README [SELECTION_DIR]]
       python reports/evidence_table.py RUNS_DIR README.md --summary   (the project README's verdict block)

Prints the table — per mode, the mean and 95 % confidence interval over seeds of training time,
training FLOPs saved against dense, final test accuracy and test accuracy at PruneTrain's training
time — with the sizes of the splits and the seeds, as ``bench report`` computes them (one aggregation,
bench.report.aggregate).  With README, the block between ``<!-- evidence:start -->`` and
``<!-- evidence:end -->`` is replaced in place; tests/test_report_readmes.py regenerates it from the
committed records and fails when the README states anything else.

With SELECTION_DIR (PruneTrain-only runs of candidate ratios), the block between ``<!-- selection:start -->``
and ``<!-- selection:end -->`` gets the recipe-choice table: for every PruneTrain run in RUNS_DIR and
SELECTION_DIR, its ratio and seed, the training FLOPs per image it kept after its first reconfiguration, and
its *validation* accuracy at its last epoch against dense's at the same epoch and seed (dense from RUNS_DIR).
The choice reads the validation split only; no test accuracy enters this table.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import fmt  # noqa: E402
from bench.config import PUBLISHED_METHOD, method_words  # noqa: E402
from bench.report.aggregate import CONTROL_KEYS, aggregate  # noqa: E402
from bench.report.load import load_runs  # noqa: E402
from bench.runfolder.records import read_epochs  # noqa: E402

START, END = "<!-- evidence:start -->", "<!-- evidence:end -->"
SELECTION_START, SELECTION_END = "<!-- selection:start -->", "<!-- selection:end -->"
ABLATION_START, ABLATION_END = "<!-- ablations:start -->", "<!-- ablations:end -->"
#: a ratio holds on the validation split when every seed ends within this many points of dense's accuracy there
ACC_TARGET_POINTS = 2.0


#: the recipe's targets: (metric, what it must be at least, in words); each judged on its 95 % interval
#: (metric, what it must be at least, in words, decimals, unit)
TARGETS = [("train_flops_saved_pct", 40.0, "training FLOPs saved ≥ 40 %", 1, " %"),
           ("final_acc_gap", -2.0, "final accuracy within 2 points of dense", 1, " points"),
           ("time_per_flops_saved", 0.6, "time saved ≥ 0.6 × FLOPs saved", 2, "")]


def verdict(row, metric: str, at_least: float) -> str:
    """'holds' when the whole 95 % interval is at or above ``at_least``, 'misses' when it is wholly below, and
    'not decided by these seeds' when it straddles (a single run decides nothing: it has no interval)."""
    mean, lo, hi = row.get(metric), row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    if fmt.missing(mean):
        return "not measured"
    if fmt.missing(lo) or fmt.missing(hi):
        return "a single run: no interval decides it"
    return "holds" if lo >= at_least else "misses" if hi < at_least else "not decided by these seeds"


def targets_lines(r) -> list[str]:
    lines = [f"* {words}: {fmt.interval_text(r, metric, decimals, unit)} → **{verdict(r, metric, at_least)}**."
             for metric, at_least, words, decimals, unit in TARGETS]
    for mode, k in CONTROL_KEYS.items():
        for metric, words in ((f"{k}_final_acc_gap", "final accuracy"),
                              (f"{k}_acc_at_prunetrain_time_gap", "accuracy at PruneTrain's training time")):
            if fmt.missing(r.get(metric)):
                continue
            v = verdict(r, metric, 0.0)
            said = {"holds": "PruneTrain is ahead", "misses": f"{mode} is ahead"}.get(v, v)
            lines.append(f"* PruneTrain − {mode}, {words}: {fmt.interval_text(r, metric, 1, ' points')} → "
                         f"**{'not distinguishable' if v == 'not decided by these seeds' else said}**.")
    return lines


def evidence_markdown(runs_dir: Path) -> str:
    loaded = load_runs([runs_dir])
    agg = aggregate(loaded.runs)
    if agg.table.empty:
        raise SystemExit(f"{runs_dir}: no compared run")
    out: list[str] = []
    for _, r in agg.table.iterrows():
        runs = [run for run in agg.compared if run.run_id in r["run_ids"].split(", ")]
        data = {k: sorted({run.meta.get("data", {}).get(k) for run in runs}) for k in ("train_size", "val_size",
                                                                                      "test_size")}
        out.append(f"**{r['label']}** — {r.get('method', 'PruneTrain')}; seeds {r.get('seeds', '?')} "
                   f"(n = {int(r['n'])}); {', '.join(map(str, data['train_size']))} training images, "
                   f"{', '.join(map(str, data['val_size']))} validation images (every reconfiguration measured "
                   f"on them), test accuracy on {', '.join(map(str, data['test_size']))} test images; "
                   f"{int(r['contended_epochs'])} of {int(r['epochs_with_load'])} epochs timed under contention.")
        out.append("")
        out.append("| mode | training time | training FLOPs saved vs dense (%) | final test acc. (%) | "
                   "test acc. at PruneTrain's training time (%) | PruneTrain − mode, final (points) | "
                   "PruneTrain − mode, at PruneTrain's time (points) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        unit = r["dense_time_s"]
        out.append(f"| dense | {fmt.cell(r, 'dense_time_s', 'time', unit)} | 0 | "
                   f"{fmt.cell(r, 'dense_final_acc', 'acc')} | {fmt.cell(r, 'dense_acc_at_prunetrain_time', 'acc')} | "
                   f"{fmt.cell(r, 'final_acc_gap', 'acc')} | {fmt.cell(r, 'acc_at_prunetrain_time_gap', 'acc')} |")
        out.append(f"| PruneTrain | {fmt.cell(r, 'prunetrain_time_s', 'time', unit)} | "
                   f"{fmt.cell(r, 'train_flops_saved_pct', 'pct')} | {fmt.cell(r, 'prunetrain_final_acc', 'acc')} | "
                   f"{fmt.cell(r, 'prunetrain_final_acc', 'acc')} | – | – |")
        for mode, k in CONTROL_KEYS.items():
            if fmt.missing(r.get(f"{k}_final_acc")):
                out.append(f"| {mode} | not finished in these records | | | | | |")
                continue
            out.append(f"| {mode} (n = {int(r[f'{k}_final_acc_n'])}) | {fmt.cell(r, f'{k}_time_s', 'time', unit)} | "
                       f"{fmt.cell(r, f'{k}_train_flops_saved_pct', 'pct')} | {fmt.cell(r, f'{k}_final_acc', 'acc')} | "
                       f"{fmt.cell(r, f'{k}_acc_at_prunetrain_time', 'acc')} | "
                       f"{fmt.cell(r, f'{k}_final_acc_gap', 'acc')} | "
                       f"{fmt.cell(r, f'{k}_acc_at_prunetrain_time_gap', 'acc')} |")
        out.append("")
        out.append(f"Time saved by PruneTrain: {fmt.interval_text(r, 'time_saved_pct')}; training FLOPs saved: "
                   f"{fmt.interval_text(r, 'train_flops_saved_pct')}; time saved ÷ FLOPs saved: "
                   f"{fmt.interval_text(r, 'time_per_flops_saved', 2, '')}; final accuracy gap to dense: "
                   f"{fmt.interval_text(r, 'final_acc_gap', 1, ' points')}.")
        out.append("")
        out.append("The targets and the controls, each judged on its 95 % interval (holds: the whole interval on the "
                   "target's side; misses: wholly on the other):")
        out.append("")
        out.extend(targets_lines(r))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _run_folders(*parents: Path) -> list[Path]:
    return [f for parent in parents for f in sorted(parent.iterdir()) if (f / "run.json").is_file()]


def _changes(meta: dict, recipe: dict) -> str:
    """The method settings in which a run differs from the recipe's run, in the method name's words."""
    changed = [method_words(k, meta["config"][k]) for k in PUBLISHED_METHOD
               if meta["config"].get(k) != recipe["config"].get(k)]
    return "; ".join(changed) or "the recipe"


def selection_markdown(runs_dir: Path, *candidate_dirs: Path) -> str:
    """The recipe-choice table: every PruneTrain run's validation accuracy against dense's, same seed and epoch.

    Candidates are named by what they change from the recipe of ``runs_dir`` (same seed)."""
    dense: dict[int, dict[int, float]] = {}
    recipe: dict[int, dict] = {}
    found = []
    for folder in _run_folders(runs_dir, *candidate_dirs):
        meta, rows = _folder_records(folder)
        seed = int(meta["config"]["seed"])
        if any(r.mode == "dense" for r in rows):
            dense[seed] = {r.epoch: r.val_acc for r in rows if r.mode == "dense"}
            recipe[seed] = meta
        found.append((meta, [r for r in rows if r.mode == "prunetrain"]))
    candidates = []
    for meta, pt in found:
        seed = int(meta["config"]["seed"])
        if not pt or seed not in recipe:
            continue
        archs = meta["modes"]["prunetrain"]["architectures"]
        first = next((a for a in archs if a["epoch"] > 0), None)
        kept = first["train_flops_per_image"] / archs[0]["train_flops_per_image"] if first else 1.0
        candidates.append((_changes(meta, recipe[seed]), seed, kept, pt[-1], int(meta["config"]["epochs"])))
    out = ["| changed from the recipe | seed | training FLOPs per image kept after epoch 1 (× dense) | epochs trained | "
           "validation acc. (%) | dense's, same seed and epoch (%) | gap (points) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    verdict: dict[str, list[bool]] = {}
    for label, seed, kept, last, epochs in sorted(candidates, key=lambda c: (c[0] != "the recipe", c[0], c[1])):
        ref = dense[seed].get(last.epoch)
        gap = None if ref is None else last.val_acc - ref
        trained = f"{last.epoch} of {epochs}" + ("" if last.epoch == epochs else " (stopped)")
        out.append(f"| {label} | {seed} | {kept:.3f} | {trained} | {last.val_acc:.2f} | "
                   f"{'–' if ref is None else f'{ref:.2f}'} | {'–' if gap is None else f'{gap:+.2f}'} |")
        verdict.setdefault(label, []).append(gap is not None and last.epoch == epochs and gap >= -ACC_TARGET_POINTS)
    held = [f"{label} ({len(ok)} seeds)" for label, ok in verdict.items() if all(ok)]
    out.append("")
    out.append(f"Within {ACC_TARGET_POINTS:g} points of dense on the validation split at the last epoch of every "
               f"seed: {', '.join(held) if held else 'none of those measured'}.")
    return "\n".join(out) + "\n"


def _folder_records(folder: Path) -> tuple[dict, list]:
    return json.loads((folder / "run.json").read_text()), [r for _, r in read_epochs(folder / "epochs.csv", strict=True)]


def ablations_markdown(runs_dir: Path, ablations_dir: Path) -> str:
    """Each ablation (a PruneTrain-only run) against the recipe's PruneTrain and dense of the same seed."""
    recipe = {}
    for folder in _run_folders(runs_dir):
        meta, rows = _folder_records(folder)
        recipe[int(meta["config"]["seed"])] = (meta, rows)
    out = ["| changed from the recipe | seed | training FLOPs saved vs dense (%) | final test acc. (%) | "
           "the recipe's (%) | dense's (%) | test images |", "|---|---:|---:|---:|---:|---:|---:|"]
    for folder in _run_folders(ablations_dir):
        meta, rows = _folder_records(folder)
        seed = int(meta["config"]["seed"])
        pt = [r for r in rows if r.mode == "prunetrain"]
        if seed not in recipe or not pt:
            continue
        ref_meta, ref_rows = recipe[seed]
        changed = _changes(meta, ref_meta)
        dense_flops = sum(r.train_flops for r in ref_rows if r.mode == "dense")
        final = {m: [r for r in ref_rows if r.mode == m][-1].test_acc for m in ("dense", "prunetrain")}
        epochs = int(meta["config"]["epochs"])
        status = "" if pt[-1].epoch == epochs else f" (epoch {pt[-1].epoch} of {epochs}: not finished)"
        saved = 100 * (1 - sum(r.train_flops for r in pt) / dense_flops) if not status else None
        out.append(f"| {changed}{status} | {seed} | "
                   f"{'–' if saved is None else f'{saved:.1f}'} | {pt[-1].test_acc:.1f} | {final['prunetrain']:.1f} | "
                   f"{final['dense']:.1f} | {meta['data']['test_size']} |")
    return "\n".join(out) + "\n"


SUMMARY_START, SUMMARY_END = "<!-- cpu-evidence:start -->", "<!-- cpu-evidence:end -->"


def summary_markdown(runs_dir: Path, shown: str = "reports/cifar10-cpu-evidence/runs") -> str:
    """The project README's short form: what was run (``shown``: the records' folder as the README names it),
    and each target's and control's verdict."""
    agg = aggregate(load_runs([runs_dir]).runs)
    out = []
    for _, r in agg.table.iterrows():
        out.append(f"{r.get('method', 'PruneTrain')}, seeds {r.get('seeds', '?')} (n = {int(r['n'])}), "
                   f"from `{shown}`:")
        out.append("")
        out.extend(targets_lines(r))
    return "\n".join(out) + "\n"


def replace_block(readme: str, block: str, start: str = START, end: str = END) -> str:
    if start not in readme or end not in readme:
        raise SystemExit(f"the README has no {start} … {end} block")
    head, rest = readme.split(start, 1)
    return head + start + "\n" + block + end + rest.split(end, 1)[1]


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[2] == "--summary":   # the project README's block
        path = Path(argv[1])
        path.write_text(replace_block(path.read_text(), summary_markdown(Path(argv[0])), SUMMARY_START, SUMMARY_END))
        return
    if len(argv) not in (1, 2, 3):
        raise SystemExit(__doc__)
    block = evidence_markdown(Path(argv[0]))
    if len(argv) >= 2:
        path = Path(argv[1])
        text = replace_block(path.read_text(), block)
        if len(argv) == 3:
            text = replace_block(text, selection_markdown(Path(argv[0]), Path(argv[2]), path.parent / "ablations"),
                                 SELECTION_START, SELECTION_END)
        if ABLATION_START in text:
            text = replace_block(text, ablations_markdown(Path(argv[0]), path.parent / "ablations"),
                                 ABLATION_START, ABLATION_END)
        path.write_text(text)
    else:
        sys.stdout.write(block)


if __name__ == "__main__":
    main(sys.argv[1:])
