"""Does `bench replay` predict what `bench run` measured?  The issue's validation, on real CIFAR-10.

A PruneTrain run of 10 epochs with 3 reconfigurations (faithful pruning: the cpu profile's levers) on the real CIFAR-10 copy is replayed on
the same machine under its own profile; the replayed total training time of each mode must be within
±10 % of the measured one and the time saved within ±5 points.  Both clocks are reported: wall time
(what the benchmark reports, but on a shared machine it measures the neighbours too) and the training
process's CPU time (one thread: what the work cost, whatever else ran).  Contended epochs are counted.

    OMP_NUM_THREADS=1 python benchmarks/replay_validation.py [--run RESULTS/<run-id>] [--json out.json]

Without --run it first trains (about 10-15 minutes on a quiet 2-core CPU; needs $CIFAR10_DIR).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from replay_check import compare, format_comparison  # beside this script (benchmarks/)

# The cpu profile's faithful pruning (proximal step, reader-only rule, change budget 0.01, threshold 1e-4) at
# penalty ratio 0.9, the setting that prunes within this many steps; reconfigured after epochs 3, 6 and 9.
RUN_ARGS = ["--profile", "cpu", "--model", "resnet20", "--data", "cifar10", "--subset", "2560", "--epochs", "10",
            "--interval", "3", "--lpr", "0.9"]  # not --quiet: the run folder is the last line it prints
MODE_TOLERANCE_PCT = 10.0
SAVED_TOLERANCE_PTS = 5.0


def _bench(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "bench", *args], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, help="a finished bench run folder (default: train one now)")
    p.add_argument("--replay", type=Path, help="its replay (default: replay it now)")
    p.add_argument("--budget", default="15", help="bench replay --budget (seconds per shape)")
    p.add_argument("--json", type=Path, help="also write the comparison as JSON")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="replay-validation-"))
    run = a.run
    if run is None:
        data_dir = os.environ.get("CIFAR10_DIR")
        if not data_dir:
            print("error: set CIFAR10_DIR to the unpacked cifar10-jpeg copy, or pass --run", file=sys.stderr)
            return 2
        run = Path(_bench("run", *RUN_ARGS, "--data-dir", data_dir, "--results-dir", str(work / "results")))
    replay = a.replay or Path(_bench("replay", str(run), "--profile", "cpu", "--budget", a.budget, "--quiet",
                                     "--results-dir", str(work / "replays")))
    c = compare(run, replay)
    print(format_comparison(c))
    checks = []
    for clock, key in (("wall", "error_pct"), ("CPU", "cpu_error_pct")):
        for mode, d in c["modes"].items():
            checks.append((f"{clock} {mode} within ±{MODE_TOLERANCE_PCT:g}%", abs(d[key]) <= MODE_TOLERANCE_PCT))
    t = c.get("time_saved", {})
    for clock, m, r in (("wall", "measured_pct", "replayed_pct"), ("CPU", "measured_cpu_pct", "replayed_cpu_pct")):
        if t and not math.isnan(t[m]):
            checks.append((f"{clock} time saved within ±{SAVED_TOLERANCE_PTS:g} points",
                           abs(t[r] - t[m]) <= SAVED_TOLERANCE_PTS))
    for name, ok in checks:
        print(f"{'met   ' if ok else 'MISSED'} {name}")
    if a.json:
        a.json.write_text(json.dumps({**c, "checks": dict(checks)}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
