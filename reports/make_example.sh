#!/usr/bin/env bash
# Rebuild reports/cifar10-cpu-example: the `cpu` profile's recipe on real CIFAR-10 (dense + PruneTrain),
# then the published method, the proximal step alone and the recipe less one lever, on the same model,
# data, schedule and seed (PruneTrain only, compared with the recipe's dense run).  The ResNet-20 record
# in reports/cifar10-cpu-resnet20 (this script at 5cccd75) also has the reader rule and the threshold
# budget alone, the recipe less --keep-bn-scale and with --penalise all.  About 2.5 hours on an idle
# 2-core CPU, one run after another; the lever runs' times are comparable only if each ran alone.
# Usage: reports/make_example.sh CIFAR10_DIR   (image folders train/ and test/)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
DATA=${1:?usage: reports/make_example.sh CIFAR10_DIR}
OUT=reports/cifar10-cpu-example
if [ -z "${RESULTS:-}" ]; then RESULTS=$(mktemp -d); trap 'rm -rf "$RESULTS"' EXIT; fi  # RESULTS=DIR reuses its runs
run() { name=$1; shift; [ -d "$RESULTS/$name" ] || bench run --profile cpu --data-dir "$DATA" --results-dir "$RESULTS/$name" --quiet "$@"; }
run recipe                                                            # both modes: time it on an idle machine
lever() { run "$@" --mode prunetrain; }
lever paper --lasso paper                                             # the published step, at the recipe's ratio
lever published --lasso paper --lpr 0.2                               # the published method (ratio 0.2 too)
lever proximal --lasso proximal --liveness union --penalise all --no-keep-bn-scale --change-budget 0 --lasso-until 1 --group-weight uniform
lever nowindow --lasso-until 1                                        # the recipe less one lever each
lever uniform --group-weight uniform
lever window2 --lpr 0.8 --lasso-until 0.2                             # half the penalty over two epochs
mkdir -p "$OUT" && find "$OUT" -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +   # the README is written by hand
mkdir -p "$OUT/runs"
for run in "$RESULTS"/*/*/; do            # keep the records (small), not checkpoints or models
  name=$(basename "$(dirname "$run")")-$(basename "$run"); mkdir -p "$OUT/runs/$name"
  cp "$run/epochs.csv" "$run/run.json" "$OUT/runs/$name/"
done
python reports/scrub_paths.py "$OUT/runs" "$DATA=CIFAR10" "$RESULTS=results" "$PWD=."
MODEL=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["config"]["model"])' "$OUT"/runs/recipe-*/run.json)
bench report "$OUT/runs"/recipe-* --out "$OUT" --title "PruneTrain on CIFAR-10 ($MODEL): the cpu recipe on a 2-core CPU"
r() { ls -d "$OUT/runs/$1"-*; }
python reports/lever_table.py "$(r recipe)" "published method (PruneTrain (published), ratio 0.2)=$(r published)" \
    "published step at the recipe's ratio 0.89 (not the published method)=$(r paper)" "proximal only=$(r proximal)" \
    "recipe without the window (--lasso-until 1)=$(r nowindow)" \
    "recipe with uniform group weights (--group-weight uniform)=$(r uniform)" \
    "recipe with ratio 0.8 for two epochs (--lpr 0.8 --lasso-until 0.2)=$(r window2)" \
    "recipe=$(r recipe)" > "$OUT/levers.md"
