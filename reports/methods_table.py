"""The tables of reports/cifar10-cpu-methods/README.md, generated from its raw records (never typed by hand).

Usage: python reports/methods_table.py METHODS_DIR DENSE_DIR [--readme README.md]
       (rewrites every generated block of METHODS_DIR/README.md, and with --readme the verdict block of that
       README too; DENSE_DIR: the folder dense is borrowed from)

METHODS_DIR/runs/ holds one run folder per seed: PruneTrain and its two controls (small-dense, thin-dense) as
the evidence study ran them, and Network Slimming, Early-Bird and random pruning added later with
``bench run --methods-of``.  Dense is DENSE_DIR's folder of the same seed, the same computation (seed, device
and every setting dense reads: bench.report.pairing), as in the evidence study.

Which clock.  The modes of one seed were trained in three sessions, each under other load (2-core machine,
two or three one-thread runs side by side): their wall-clock times compare the sessions' load, not the
methods.  Every epoch row also records the training process's own CPU seconds (``cpu_time_s``: one thread,
so the work done, nearly free of the other processes' load), so the comparison here is in CPU seconds of
training; the wall-clock times are listed beside them, with the count of epochs timed under contention.

"Accuracy per unit of training time" is read as a method's final test accuracy against what dense had
reached within the same CPU seconds (the last dense epoch finished within them, as bench report's
accuracy at equal training time): the gain over dense at equal training time, paired per seed.  The method
with the largest gain gave the most accuracy for its training time; a gap between two methods is called
only where the 95 % interval of their paired per-seed difference excludes 0.
tests/test_report_readmes.py regenerates every block and fails when the README states anything else.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report.aggregate import acc_at_time, contended_flags  # noqa: E402
from bench.report.stats import mean_ci  # noqa: E402

from evidence_table import compared_runs, replace_block  # noqa: E402

TABLE_START, TABLE_END = "<!-- methods:start -->", "<!-- methods:end -->"
SEEDS_START, SEEDS_END = "<!-- methods-per-seed:start -->", "<!-- methods-per-seed:end -->"
VERDICT_START, VERDICT_END = "<!-- methods-verdict:start -->", "<!-- methods-verdict:end -->"

#: every mode of the comparison, in the table's order, with its name in the tables
MODES = {"dense": "dense", "prunetrain": "PruneTrain", "small-dense": "small-dense (control)",
         "thin-dense": "thin-dense (control)", "slimming": "Network Slimming", "earlybird": "Early-Bird",
         "random": "random pruning"}
#: the pruning methods ranked in the verdict (the controls are not pruning methods: they need PruneTrain's run)
RANKED = ("prunetrain", "slimming", "earlybird", "random")


def _acc_within(dense, cpu_seconds: float) -> float:
    """Dense's test accuracy at the end of its last epoch finished within ``cpu_seconds`` (NaN: none): bench
    report's accuracy at equal training time, read on the CPU-seconds clock."""
    return acc_at_time(dense, cpu_seconds, per_epoch=dense["cpu_time_s"])


def _narrowest(channels) -> int | None:
    """The fewest channels of any layer but the classifier (``fc``), from a recorded architecture's channels."""
    items = channels.items() if isinstance(channels, dict) else (channels or [])
    return min((int(n) for name, n in items if name != "fc"), default=None)


def per_seed(runs) -> dict[int, dict[str, dict]]:
    """seed → mode → that mode's figures (finished modes only)."""
    out: dict[int, dict[str, dict]] = {}
    for run in runs:
        seed = int(run.config["seed"])
        dense = run.mode_epochs("dense")
        dense_flops = float(dense["train_flops"].sum())
        for mode in MODES:
            df = run.mode_epochs(mode)
            if run.mode_status(mode) != "finished" or df.empty or int(df["epoch"].max()) != run.expected_epochs:
                continue
            cpu = float(df["cpu_time_s"].sum())
            archs = run.architectures(mode)
            pruned = [a["epoch"] for a in archs[1:] if a.get("params") is not None
                      and a["params"] < archs[0].get("params", math.inf)]
            out.setdefault(seed, {})[mode] = {
                "cpu_s": cpu, "wall_s": float(df["epoch_time_s"].sum() + df["reconfig_time_s"].fillna(0).sum()),
                "contended": sum(contended_flags(run, df)), "epochs": len(df),
                "flops_saved": 100 * (1 - float(df["train_flops"].sum()) / dense_flops),
                "final_acc": float(df["test_acc"].iloc[-1]),
                "gain": float(df["test_acc"].iloc[-1]) - _acc_within(dense, cpu),
                "pruned": pruned, "params": archs[-1].get("params") if archs else None,
                "drawn": mode != "earlybird" or bool(pruned),
                # the narrowest channel space after the last pruning (the classifier's outputs left out)
                "narrowest": _narrowest(archs[-1].get("channels")) if archs else None,
                "method": run.mode_info(mode).get("method") or MODES[mode],
                "data": tuple(run.meta.get("data", {}).get(k) for k in ("train_size", "val_size", "test_size")),
            }
    return out


def _ci(values) -> str:
    ci = mean_ci(values)
    if math.isnan(ci.mean):
        return "–"
    if ci.n < 2:
        return f"{ci.mean:.1f} (1 seed)"
    return f"{ci.mean:.1f} ({ci.lo:.1f} to {ci.hi:.1f})"


def _seconds(values) -> str:
    ci = mean_ci(values)
    return "–" if math.isnan(ci.mean) else f"{ci.mean:,.0f} ({ci.lo:,.0f} to {ci.hi:,.0f})" if ci.n > 1 \
        else f"{ci.mean:,.0f} (1 seed)"


def table_markdown(seeds: dict[int, dict[str, dict]], dense_source: str) -> str:
    sizes = sorted({g["data"] for s in seeds.values() for g in s.values()}, key=str)
    data = "; ".join(f"{t:,} training, {v:,} validation and {te:,} test images" for t, v, te in sizes)
    out = [f"Seeds {', '.join(map(str, sorted(seeds)))}; {data}; mean (95 % CI over seeds); {dense_source}.", "",
           "Each mode as it ran (run.json's `method`):", ""]
    for mode, name in MODES.items():
        named = sorted({s[mode]["method"] for s in seeds.values() if mode in s})
        if named:
            out.append(f"* {name}: {'; '.join(named)}")
    out += ["",
           "| mode | n | training CPU time (s) | wall-clock time (s; epochs under contention) | "
           "training FLOPs saved vs dense (%) | final test acc. (%) | pruned after epoch | "
           "gain over dense at equal CPU time (points) |",
           "|---|---:|---:|---:|---:|---:|---|---:|"]
    for mode, name in MODES.items():
        got = [s[mode] for s in seeds.values() if mode in s]
        if not got:
            out.append(f"| {name} | 0 | not finished in these records | | | | | |")
            continue
        contended = sum(g["contended"] for g in got)
        epochs = sum(g["epochs"] for g in got)
        pruned = "; ".join(sorted({", ".join(map(str, g["pruned"])) or "never" for g in got}))
        out.append(f"| {name} | {len(got)} | {_seconds([g['cpu_s'] for g in got])} | "
                   f"{_seconds([g['wall_s'] for g in got])}; {contended} of {epochs} | "
                   f"{_ci([g['flops_saved'] for g in got]) if mode != 'dense' else '0'} | "
                   f"{_ci([g['final_acc'] for g in got])} | {pruned if mode in RANKED else '–'} | "
                   f"{_ci([g['gain'] for g in got]) if mode != 'dense' else '0'} |")
    return "\n".join(out) + "\n"


def seeds_markdown(seeds: dict[int, dict[str, dict]]) -> str:
    out = ["| seed | " + " | ".join(f"{name}: final acc. (%), CPU s" for name in MODES.values()) + " |",
           "|---:|" + "---|" * len(MODES)]
    for seed in sorted(seeds):
        cells = [f"{seeds[seed][m]['final_acc']:.1f}, {seeds[seed][m]['cpu_s']:,.0f}" if m in seeds[seed] else "–"
                 for m in MODES]
        out.append(f"| {seed} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _paired(seeds, a: str, b: str, key: str = "gain"):
    """Per seed, ``a``'s figure minus ``b``'s, over the seeds where both finished."""
    return mean_ci([s[a][key] - s[b][key] for s in seeds.values() if a in s and b in s])


def verdict_markdown(seeds: dict[int, dict[str, dict]]) -> str:
    """Which method gave the most accuracy for its training time, and where PruneTrain stands."""
    gains = {m: mean_ci([s[m]["gain"] for s in seeds.values() if m in s]) for m in RANKED}
    ranked = sorted((m for m in RANKED if not math.isnan(gains[m].mean)), key=lambda m: -gains[m].mean)
    if not ranked:
        return "No pruning method finished in these records.\n"
    best = ranked[0]
    out = ["Ranked by the mean gain over dense at equal CPU time: "
           + ", ".join(f"{MODES[m]} {gains[m].mean:+.1f}" for m in ranked) + " points.", ""]
    for other in ranked[1:]:
        d = _paired(seeds, best, other)
        if d.n < 2:
            words = "one seed: no interval decides it"
        elif d.lo > 0:
            words = f"{MODES[best]} ahead"
        elif d.hi < 0:
            words = f"{MODES[other]} ahead"
        else:
            words = "not distinguishable"
        out.append(f"* {MODES[best]} − {MODES[other]}, gain at equal CPU time: {d.mean:+.1f} points "
                   f"(95 % CI {d.lo:+.1f} to {d.hi:+.1f}, n = {d.n}) → **{words}**.")
    tied = [MODES[o] for o in ranked[1:] if not (_paired(seeds, best, o).n >= 2 and _paired(seeds, best, o).lo > 0)]
    out.append("")
    out.append(f"**Most accuracy per unit of training time on this CPU: {MODES[best]}**"
               + (f", though these seeds do not distinguish it from {' or '.join(tied)}" if tied else "") + ".")
    if "prunetrain" in ranked:
        pt = ranked.index("prunetrain") + 1
        out.append(f"PruneTrain stands {pt} of {len(ranked)} by this measure, with a gain of "
                   f"{_ci([s['prunetrain']['gain'] for s in seeds.values() if 'prunetrain' in s])} points over "
                   "dense at equal CPU time.")
        for m in ("slimming", "earlybird", "random"):
            if m not in ranked:
                continue
            d = _paired(seeds, "prunetrain", m, "final_acc")
            f = _paired(seeds, "prunetrain", m, "flops_saved")
            out.append(f"* PruneTrain − {MODES[m]}: final accuracy {d.mean:+.1f} points (95 % CI {d.lo:+.1f} to "
                       f"{d.hi:+.1f}); training FLOPs saved {f.mean:+.1f} points (95 % CI {f.lo:+.1f} to {f.hi:+.1f}).")
    for m in ("slimming", "earlybird"):
        narrow = sorted(s[m]["narrowest"] for s in seeds.values() if m in s and s[m].get("narrowest") is not None)
        if narrow:
            out.append(f"* {MODES[m]}'s global |γ| cut left its narrowest layer with "
                       f"{', '.join(map(str, narrow))} channels (one per seed).")
    never = [s for s, ms in seeds.items() if "earlybird" in ms and not ms["earlybird"]["drawn"]]
    if never:
        out.append(f"* Early-Bird never drew its ticket on seed{'s' if len(never) > 1 else ''} "
                   f"{', '.join(map(str, sorted(never)))}: it trained dense with the sparsity penalty throughout.")
    return "\n".join(out) + "\n"


def readme_blocks(methods_dir: Path, *dense_dirs: Path) -> dict[tuple[str, str], str]:
    runs, dense_source = compared_runs(methods_dir / "runs", *dense_dirs)
    seeds = per_seed(runs)
    return {(TABLE_START, TABLE_END): table_markdown(seeds, dense_source),
            (SEEDS_START, SEEDS_END): seeds_markdown(seeds),
            (VERDICT_START, VERDICT_END): verdict_markdown(seeds)}


def main(argv: list[str]) -> None:
    readme = None
    if "--readme" in argv:
        i = argv.index("--readme")
        readme, argv = Path(argv[i + 1]), argv[:i] + argv[i + 2:]
    if len(argv) != 2:
        raise SystemExit(__doc__)
    methods_dir, dense_dir = Path(argv[0]), Path(argv[1])
    blocks = readme_blocks(methods_dir, dense_dir)
    path = methods_dir / "README.md"
    text = path.read_text()
    for (start, end), block in blocks.items():
        text = replace_block(text, block, start, end)
    path.write_text(text)
    if readme is not None:
        readme.write_text(replace_block(readme.read_text(), blocks[(VERDICT_START, VERDICT_END)], VERDICT_START,
                                        VERDICT_END))

if __name__ == "__main__":
    main(sys.argv[1:])
