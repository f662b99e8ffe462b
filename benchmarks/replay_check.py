"""Does a replay predict what `bench run` measured?  Measured against replayed, per mode and per epoch.

Two clocks are compared.  Wall time is what the benchmark reports, but on a
shared machine it mostly measures the neighbours (the same dense epoch took
9 s to 37 s here while others ran).  CPU time of the training process is what
the epochs cost this process, whatever else ran (with one thread, wall − CPU
is time spent waiting for a core); it covers the training epochs only, as the
reconfigurations are timed by wall clock alone.  Wall time is comparable only
on epochs measured without contention (``quiet_*``).
"""
from __future__ import annotations

import math
from pathlib import Path

from bench.machine.contention import is_contended
from bench.replay.trajectory import load_trajectory

MODES = ("dense", "prunetrain")


def _rows(run_dir: Path) -> tuple[list[dict], dict]:
    traj = load_trajectory(run_dir)
    return traj.rows, traj.meta


def _total(rows: list[dict], col: str) -> float:
    """Σ col, plus the reconfigurations' wall time for wall clocks (their CPU time is not recorded)."""
    values = [r.get(col) for r in rows]
    if any(v is None for v in values):
        return math.nan
    return sum(values) + (sum(r.get("reconfig_time_s") or 0.0 for r in rows) if col == "epoch_time_s" else 0.0)


def _saved(d: float, p: float) -> float:
    return 100.0 * (1.0 - p / d) if d and not math.isnan(d) and not math.isnan(p) else math.nan


def compare(measured_dir: Path, replay_dir: Path) -> dict:
    """Totals per mode (wall and CPU, reconfiguration included), time saved, and per-epoch pairs."""
    measured, meta = _rows(measured_dir)
    replayed, _ = _rows(replay_dir)
    cores = (meta.get("hardware") or {}).get("cpu_cores")
    threads = meta.get("torch_threads")
    out: dict = {"measured": str(measured_dir), "replay": str(replay_dir), "modes": {}, "epochs": []}
    by_key = {(r["mode"], r["epoch"]): r for r in replayed}
    for m in measured:
        r = by_key.get((m["mode"], m["epoch"]))
        if r is None:
            continue
        on_cpu = str(m.get("device") or "").startswith("cpu")
        busy = is_contended(m.get("other_cpu_cores"), m.get("busy_processes"), cores, threads,
                            m.get("cpu_time_s") if on_cpu else None, m["epoch_time_s"])
        out["epochs"].append({"mode": m["mode"], "epoch": m["epoch"], "contended": busy,
                              "measured_s": m["epoch_time_s"], "replayed_s": r["epoch_time_s"],
                              "measured_cpu_s": m.get("cpu_time_s"), "replayed_cpu_s": r.get("cpu_time_s")})
    for mode in MODES:
        ms = [m for m in measured if m["mode"] == mode]
        rs = [r for r in replayed if r["mode"] == mode]
        if not ms or len(ms) != len(rs):
            continue
        quiet = [(e["measured_s"], e["replayed_s"]) for e in out["epochs"] if e["mode"] == mode and not e["contended"]]
        out["modes"][mode] = {
            "measured_s": _total(ms, "epoch_time_s"), "replayed_s": _total(rs, "epoch_time_s"),
            "measured_cpu_s": _total(ms, "cpu_time_s"), "replayed_cpu_s": _total(rs, "cpu_time_s"),
            "epochs": len(ms), "contended_epochs": sum(e["contended"] for e in out["epochs"] if e["mode"] == mode),
            "quiet_measured_s": sum(a for a, _ in quiet) if quiet else math.nan,
            "quiet_replayed_s": sum(b for _, b in quiet) if quiet else math.nan,
        }
        d = out["modes"][mode]
        for clock in ("", "cpu_", "quiet_"):
            key = f"{clock}error_pct"
            a, b = d[f"{clock}measured_s" if clock != "cpu_" else "measured_cpu_s"], \
                d[f"{clock}replayed_s" if clock != "cpu_" else "replayed_cpu_s"]
            d[key] = 100.0 * (b / a - 1.0) if a and not math.isnan(a) and not math.isnan(b) else math.nan
    if all(m in out["modes"] for m in MODES):
        dm, pm = out["modes"]["dense"], out["modes"]["prunetrain"]
        out["time_saved"] = {
            "measured_pct": _saved(dm["measured_s"], pm["measured_s"]),
            "replayed_pct": _saved(dm["replayed_s"], pm["replayed_s"]),
            "measured_cpu_pct": _saved(dm["measured_cpu_s"], pm["measured_cpu_s"]),
            "replayed_cpu_pct": _saved(dm["replayed_cpu_s"], pm["replayed_cpu_s"]),
        }
    return out


def format_comparison(c: dict) -> str:
    lines = ["mode        measured  replayed  error | CPU measured  CPU replayed  error | contended epochs"]
    for mode, d in c["modes"].items():
        lines.append(f"{mode:<11} {d['measured_s']:8.1f}s {d['replayed_s']:8.1f}s {d['error_pct']:+6.1f}% | "
                     f"{d['measured_cpu_s']:11.1f}s {d['replayed_cpu_s']:12.1f}s {d['cpu_error_pct']:+6.1f}% | "
                     f"{d['contended_epochs']} of {d['epochs']}")
    if "time_saved" in c:
        t = c["time_saved"]
        lines.append(f"time saved: wall {t['measured_pct']:.1f}% measured vs {t['replayed_pct']:.1f}% replayed; "
                     f"CPU {t['measured_cpu_pct']:.1f}% vs {t['replayed_cpu_pct']:.1f}%")
    lines.append("per epoch (s): mode epoch measured replayed | CPU measured replayed | contended")
    for e in c["epochs"]:
        mc = e["measured_cpu_s"]
        lines.append(f"  {e['mode']:<10} {e['epoch']:3d} {e['measured_s']:7.2f} {e['replayed_s']:7.2f} | "
                     f"{mc if mc is None else round(mc, 2)} {e['replayed_cpu_s']:.2f} | {'yes' if e['contended'] else ''}")
    return "\n".join(lines)
