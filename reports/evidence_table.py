"""The tables of reports/cifar10-cpu-evidence/README.md, generated from its raw records (never typed by hand).

Usage: python reports/evidence_table.py EVIDENCE_DIR            (every generated block of EVIDENCE_DIR/README.md)
       python reports/evidence_table.py EVIDENCE_DIR README.md --summary   (the project README's verdict block)

EVIDENCE_DIR holds ``runs/`` (the profile's recipe: PruneTrain and both controls per seed), ``first-recipe/``
(the recipe the study started from, with dense, PruneTrain and both controls per seed), ``selection/`` (the
PruneTrain-only runs of another ratio) and ``ablations/``.  A folder without dense is compared with the dense
mode of another folder of the same seed that computed the same thing (bench.report.pairing: same device and
every setting dense reads), here ``first-recipe/``'s; every table says where its dense came from.

The blocks: ``evidence`` (runs/) and ``first-recipe``: per mode, the mean and 95 % confidence interval over seeds
of training time, training FLOPs saved against dense, final test accuracy and test accuracy at PruneTrain's
training time, as ``bench report`` computes them (one aggregation, bench.report.aggregate), and each target's
verdict.  ``selection``: the recipe choice, from *validation* accuracy only (no test accuracy enters it).
``ablations``: each setting changed alone from the recipe, on the whole test split.
tests/test_report_readmes.py regenerates every block and fails when the README states anything else.
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
from bench.report.pairing import borrow_dense  # noqa: E402
from bench.runfolder.records import read_epochs  # noqa: E402

START, END = "<!-- evidence:start -->", "<!-- evidence:end -->"
FIRST_START, FIRST_END = "<!-- first-recipe:start -->", "<!-- first-recipe:end -->"
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


#: the targets that compare training times: judged only where dense and PruneTrain were timed alike
TIME_METRICS = ("time_per_flops_saved",)
NOT_COMPARABLE = "not judged: dense was timed in another session, under other load"


def targets_lines(r, times_comparable: bool = True) -> list[str]:
    lines = [f"* {words}: {fmt.interval_text(r, metric, decimals, unit)} → **{verdict(r, metric, at_least)}**."
             if times_comparable or metric not in TIME_METRICS else f"* {words} → **{NOT_COMPARABLE}**."
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


def compared_runs(runs_dir: Path, *dense_dirs: Path) -> tuple[list, str]:
    """The runs of ``runs_dir``, each folder without dense joined to the same dense computation in ``dense_dirs``
    (bench.report.pairing), and where their dense came from, in words."""
    loaded = load_runs([runs_dir, *dense_dirs]).runs
    where = {r.run_id: r.path.resolve().parent for r in loaded}
    inside = runs_dir.resolve()
    runs = [r for r in borrow_dense(loaded) if r.path.resolve().parent == inside]
    borrowed = [r for r in runs if r.meta.get("dense_from")]
    if not borrowed:
        return runs, "dense in the same run folders"
    donors = sorted({where[r.meta["dense_from"]].name for r in borrowed})
    return runs, (f"dense of {len(borrowed)} of {len(runs)} folders from the folder of the same seed in "
                  f"`{'/`, `'.join(donors)}/` (the same computation: seed, device and every setting dense reads)")


def evidence_markdown(runs_dir: Path, *dense_dirs: Path) -> str:
    runs, dense_source = compared_runs(runs_dir, *dense_dirs)
    agg = aggregate(runs)
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
                   f"{int(r['contended_epochs'])} of {int(r['epochs_with_load'])} epochs timed under contention; "
                   f"{dense_source}.")
        out.append("")
        out.append("| mode | training time | training FLOPs saved vs dense (%) | final test acc. (%) | "
                   "test acc. at PruneTrain's training time (%) | PruneTrain − mode, final (points) | "
                   "PruneTrain − mode, at PruneTrain's time (points) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        unit = r["dense_time_s"]
        timed_alike = _times_comparable(runs, r)   # else dense's accuracy at PruneTrain's time reads another clock
        at_time, at_time_gap = ((fmt.cell(r, 'dense_acc_at_prunetrain_time', 'acc'),
                                 fmt.cell(r, 'acc_at_prunetrain_time_gap', 'acc')) if timed_alike else
                                ("not comparable", "not comparable"))
        out.append(f"| dense | {fmt.cell(r, 'dense_time_s', 'time', unit)}{'' if timed_alike else ' (another session)'}"
                   f" | 0 | {fmt.cell(r, 'dense_final_acc', 'acc')} | {at_time} | "
                   f"{fmt.cell(r, 'final_acc_gap', 'acc')} | {at_time_gap} |")
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
        saved = (f"Time saved by PruneTrain: {fmt.interval_text(r, 'time_saved_pct')}; training FLOPs saved: "
                 f"{fmt.interval_text(r, 'train_flops_saved_pct')}; time saved ÷ FLOPs saved: "
                 f"{fmt.interval_text(r, 'time_per_flops_saved', 2, '')}; final accuracy gap to dense: "
                 f"{fmt.interval_text(r, 'final_acc_gap', 1, ' points')}.")
        if not timed_alike:
            saved = ("Dense was timed in other run folders, in another session and under other load (the count "
                     "above), so no time saved is given: it would compare those sessions, not the methods. "
                     f"Training FLOPs saved by PruneTrain: {fmt.interval_text(r, 'train_flops_saved_pct')}; final "
                     f"accuracy gap to dense: {fmt.interval_text(r, 'final_acc_gap', 1, ' points')}.")
        out.append(saved)
        out.append("")
        out.append("The targets and the controls, each judged on its 95 % interval (holds: the whole interval on the "
                   "target's side; misses: wholly on the other):")
        out.append("")
        out.extend(targets_lines(r, timed_alike))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _times_comparable(runs: list, row) -> bool:
    """Times compare only where dense ran in the same folder, or nothing was timed under contention."""
    return int(row["contended_epochs"]) == 0 or not any(r.meta.get("dense_from") for r in runs)


def _run_folders(*parents: Path) -> list[Path]:
    return [f for parent in parents for f in sorted(parent.iterdir()) if (f / "run.json").is_file()]


def _changes(meta: dict, recipe: dict, same: str = "the recipe") -> str:
    """The method settings in which a run differs from the recipe's run, in the method name's words."""
    changed = [method_words(k, meta["config"][k]) for k in PUBLISHED_METHOD
               if meta["config"].get(k) != recipe["config"].get(k)]
    return "; ".join(changed) or same


def selection_markdown(runs_dir: Path, *candidate_dirs: Path, same: str = "the recipe") -> str:
    """The recipe-choice table: every PruneTrain run's validation accuracy against dense's, same seed and epoch.

    Candidates are named by what they change from the recipe of ``runs_dir`` (same seed; ``same`` when nothing)."""
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
        candidates.append((_changes(meta, recipe[seed], same), seed, kept, pt[-1], int(meta["config"]["epochs"])))
    out = ["| changed from the recipe | seed | training FLOPs per image kept after epoch 1 (× dense) | epochs trained | "
           "validation acc. (%) | dense's, same seed and epoch (%) | gap (points) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    verdict: dict[str, list[bool]] = {}
    for label, seed, kept, last, epochs in sorted(candidates, key=lambda c: (c[0] != same, c[0], c[1])):
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


def ablations_markdown(runs_dir: Path, ablation_dirs: tuple[Path, ...], dense_dirs: tuple[Path, ...] = ()) -> str:
    """Each ablation (a PruneTrain run that changes method settings) against the recipe's PruneTrain and dense of
    the same seed (dense from the recipe's folder, else the same dense computation in ``dense_dirs``: the
    report's rule, bench.report.pairing)."""
    recipe = {int(run.config["seed"]): run for run in compared_runs(runs_dir, *dense_dirs)[0]}
    for seed, run in recipe.items():
        if run.mode_epochs("dense").empty:
            raise SystemExit(f"no dense run of seed {seed} with the same settings in "
                             f"{', '.join(map(str, dense_dirs)) or 'the run folder'}")
    out = ["| changed from the recipe | seed | training FLOPs saved vs dense (%) | final test acc. (%) | "
           "the recipe's (%) | dense's (%) | test images |", "|---|---:|---:|---:|---:|---:|---:|"]
    found = []
    for folder in _run_folders(*ablation_dirs):
        meta, rows = _folder_records(folder)
        seed = int(meta["config"]["seed"])
        pt = [r for r in rows if r.mode == "prunetrain"]
        if seed not in recipe or not pt:
            continue
        found.append((_changes(meta, recipe[seed].meta), seed, meta, pt))
    for changed, seed, meta, pt in sorted(found, key=lambda f: (f[0], f[1])):
        dense = recipe[seed].mode_epochs("dense")
        epochs = int(meta["config"]["epochs"])
        status = "" if pt[-1].epoch == epochs else f" (epoch {pt[-1].epoch} of {epochs}: not finished)"
        saved = 100 * (1 - sum(r.train_flops for r in pt) / float(dense["train_flops"].sum())) if not status else None
        recipe_final = float(recipe[seed].mode_epochs("prunetrain")["test_acc"].iloc[-1])
        out.append(f"| {changed}{status} | {seed} | "
                   f"{'–' if saved is None else f'{saved:.1f}'} | {pt[-1].test_acc:.1f} | {recipe_final:.1f} | "
                   f"{float(dense['test_acc'].iloc[-1]):.1f} | {meta['data']['test_size']} |")
    return "\n".join(out) + "\n"


SUMMARY_START, SUMMARY_END = "<!-- cpu-evidence:start -->", "<!-- cpu-evidence:end -->"


def summary_markdown(evidence: Path, shown: str = "reports/cifar10-cpu-evidence/runs") -> str:
    """The project README's short form: what was run (``shown``: the records' folder as the README names it),
    and each target's and control's verdict."""
    runs, _ = compared_runs(evidence / "runs", evidence / "first-recipe")
    agg = aggregate(runs)
    out = []
    for _, r in agg.table.iterrows():
        out.append(f"{r.get('method', 'PruneTrain')}, seeds {r.get('seeds', '?')} (n = {int(r['n'])}), "
                   f"from `{shown}`:")
        out.append("")
        out.extend(targets_lines(r, _times_comparable(runs, r)))
    return "\n".join(out) + "\n"


PER_SEED_START, PER_SEED_END = "<!-- per-seed:start -->", "<!-- per-seed:end -->"
PER_SEED_MODES = ("dense", "prunetrain", "small-dense", "thin-dense")


def per_seed_markdown(*recipes: tuple[str, Path, tuple[Path, ...]]) -> str:
    """Each recipe's seeds one by one: every mode's final test accuracy and training FLOPs saved against dense
    (``recipes``: (name, runs folder, folders its dense may come from))."""
    names = {"dense": "dense", "prunetrain": "PruneTrain", "small-dense": "small-dense", "thin-dense": "thin-dense"}
    out = ["| recipe | seed | " + " | ".join(f"{names[m]} final acc. (%)" for m in PER_SEED_MODES) +
           " | PruneTrain's training FLOPs saved (%) | small-dense's | thin-dense's |",
           "|---|---:|" + "---:|" * (len(PER_SEED_MODES) + 3)]
    for name, runs_dir, dense_dirs in recipes:
        runs, _ = compared_runs(runs_dir, *dense_dirs)
        for run in sorted(runs, key=lambda r: r.config.get("seed", 0)):
            rows = {m: run.mode_epochs(m) for m in PER_SEED_MODES}
            done = {m: not df.empty and int(df["epoch"].max()) == run.expected_epochs for m, df in rows.items()}
            acc = [f"{rows[m]['test_acc'].iloc[-1]:.1f}" if done[m] else "–" for m in PER_SEED_MODES]
            dense_flops = rows["dense"]["train_flops"].sum()
            saved = [f"{100 * (1 - rows[m]['train_flops'].sum() / dense_flops):.1f}" if done[m] and done["dense"]
                     else "–" for m in PER_SEED_MODES[1:]]
            out.append(f"| {name} | {run.config.get('seed')} | " + " | ".join(acc + saved) + " |")
    return "\n".join(out) + "\n"


def readme_blocks(evidence: Path) -> dict[tuple[str, str], str]:
    """Every generated block of EVIDENCE_DIR/README.md, keyed by its (start, end) markers."""
    runs, first, selection, ablations = (evidence / n for n in ("runs", "first-recipe", "selection", "ablations"))
    return {
        (START, END): evidence_markdown(runs, first),
        (FIRST_START, FIRST_END): evidence_markdown(first),
        (PER_SEED_START, PER_SEED_END): per_seed_markdown(("the recipe", runs, (first,)),
                                                          ("the first recipe", first, ())),
        (SELECTION_START, SELECTION_END): selection_markdown(first, selection, runs, same="the first recipe"),
        (ABLATION_START, ABLATION_END): ablations_markdown(runs, (ablations, first), (first,)),
    }


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
    if len(argv) != 1:
        raise SystemExit(__doc__)
    evidence = Path(argv[0])
    path = evidence / "README.md"
    text = path.read_text()
    for (start, end), block in readme_blocks(evidence).items():
        text = replace_block(text, block, start, end)
    path.write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])
