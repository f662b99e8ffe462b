"""The lever table of the example report: PruneTrain runs on one schedule against one dense run.

Usage: python reports/lever_table.py DENSE_RUN_DIR NAME=RUN_DIR ...   (Markdown on stdout)

Each NAME=RUN_DIR is a run folder holding a prunetrain mode trained with the
same model, data, schedule and seed as the dense mode of DENSE_RUN_DIR.
Training time = Σ epoch_time_s + Σ reconfig_time_s, as in ``bench report``.  A row whose
epochs (or the dense run's) were timed on an oversubscribed CPU (``bench report``'s rule,
bench.report.aggregate.contended_epochs) shows no time saved: its time is not comparable.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report.aggregate import contended_epochs  # noqa: E402
from bench.report.load import load_run  # noqa: E402


def _load(run: Path):
    """The run folder as ``bench report`` reads it (run.json + checked epoch rows), read once."""
    warnings: list[str] = []
    loaded = load_run(run, warnings)
    if loaded is None:
        sys.exit(f"{run}: cannot read the run ({'; '.join(warnings)})")
    return loaded


def _mode(run, mode: str):
    return run.epochs[run.epochs["mode"] == mode].sort_values("epoch")


def _sum(rows, *cols: str) -> float:
    return float(sum(rows[c].fillna(0).sum() for c in cols))


def _command(run) -> str:
    args = run.meta["command"].split(" run ", 1)[-1].split()
    keep, skip = [], False
    for a in args:  # the folders are this machine's: leave them out
        if skip:
            skip = False
            continue
        if a in ("--data-dir", "--results-dir"):
            skip = True
            continue
        keep.append(a)
    return "bench run --data-dir CIFAR10 " + " ".join(keep)


def main(dense_dir: str, *named: str) -> str:
    d_run = _load(Path(dense_dir))
    dense = _mode(d_run, "dense")
    d_contended = contended_epochs(d_run, "dense")
    d_time, d_flops = _sum(dense, "epoch_time_s", "reconfig_time_s"), _sum(dense, "train_flops")
    d_acc = dense["test_acc"].tolist()
    lines = ["| row | training FLOPs saved | final / best acc. PruneTrain | final / best acc. dense | "
             "largest function change | time saved | time ÷ FLOPs saved | command |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for item in named:
        name, path = item.split("=", 1)
        run = _load(Path(path))
        pt = _mode(run, "prunetrain")
        flops = 100 * (1 - _sum(pt, "train_flops") / d_flops)
        time = 100 * (1 - _sum(pt, "epoch_time_s", "reconfig_time_s") / d_time)
        acc = pt["test_acc"].tolist()
        changes = pt[["func_change_eval", "func_change_train"]].stack().dropna().tolist()
        change = f"{max(changes):.2g} ({len(changes) // 2} reconf.)" if changes else "–"
        ratio = f"{time / flops:.2f}" if flops >= 5 else "– (< 5 % saved)"
        time_cell = f"{time:.1f} %"
        contended = contended_epochs(run, "prunetrain")
        if contended or d_contended:
            time_cell, ratio = f"not comparable ({contended}/{len(pt)} + {d_contended}/{len(dense)} dense epochs contended)", "–"
        lines.append(f"| {name} | {flops:.1f} % | {acc[-1]:.1f} / {max(acc):.1f} % | {d_acc[-1]:.1f} / "
                     f"{max(d_acc):.1f} % | {change} | {time_cell} | {ratio} | `{_command(run)}` |")
    return "\n".join(lines)

if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: lever_table.py DENSE_RUN_DIR NAME=RUN_DIR ...")
    print(main(sys.argv[1], *sys.argv[2:]))
