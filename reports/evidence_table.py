"""The evidence table of a report README, generated from its raw records (never typed by hand).

Usage: python reports/evidence_table.py RUNS_DIR [README]

Prints the table — per mode, the mean and 95 % confidence interval over seeds of training time,
training FLOPs saved against dense, final test accuracy and test accuracy at PruneTrain's training
time — with the sizes of the splits and the seeds, as ``bench report`` computes them (one aggregation,
bench.report.aggregate).  With README, the block between ``<!-- evidence:start -->`` and
``<!-- evidence:end -->`` is replaced in place; tests/test_report_readmes.py regenerates it from the
committed records and fails when the README states anything else.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import fmt  # noqa: E402
from bench.report.aggregate import CONTROL_KEYS, aggregate  # noqa: E402
from bench.report.load import load_runs  # noqa: E402

START, END = "<!-- evidence:start -->", "<!-- evidence:end -->"


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
    return "\n".join(out).rstrip() + "\n"


def replace_block(readme: str, block: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"the README has no {START} … {END} block")
    head, rest = readme.split(START, 1)
    return head + START + "\n" + block + END + rest.split(END, 1)[1]


def main(argv: list[str]) -> None:
    if len(argv) not in (1, 2):
        raise SystemExit(__doc__)
    block = evidence_markdown(Path(argv[0]))
    if len(argv) == 2:
        path = Path(argv[1])
        path.write_text(replace_block(path.read_text(), block))
    else:
        sys.stdout.write(block)


if __name__ == "__main__":
    main(sys.argv[1:])
