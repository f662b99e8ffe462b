#!/usr/bin/env bash
# Rebuild reports/cifar10-cpu-example: the `cpu` profile's recipe on real CIFAR-10 (dense + PruneTrain),
# then the published method and each lever alone on the same model, data, schedule and seed
# (PruneTrain only, compared with the recipe's dense run).  About 60-70 minutes on an idle 2-core CPU.
# Usage: reports/make_example.sh CIFAR10_DIR   (image folders train/ and test/)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
DATA=${1:?usage: reports/make_example.sh CIFAR10_DIR}
OUT=reports/cifar10-cpu-example
RESULTS=$(mktemp -d)
bench run --profile cpu --data-dir "$DATA" --results-dir "$RESULTS/recipe" --quiet
lever() { name=$1; shift; bench run --profile cpu --data-dir "$DATA" --mode prunetrain --results-dir "$RESULTS/$name" --quiet "$@"; }
lever paper --lasso paper
lever budget --lasso paper --change-budget 0.01
lever proximal --lasso proximal --liveness union --change-budget 0
lever readers --lasso paper --liveness readers
lever ratio --lpr 0.9
lever window --lpr 0.9 --lasso-until 0.3 --interval 1     # penalty window: prune hard early, then train on
lever window2 --lpr 0.8 --lasso-until 0.5 --interval 1
mkdir -p "$OUT" && find "$OUT" -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +   # the README is written by hand
mkdir -p "$OUT/runs"
for run in "$RESULTS"/*/*/; do            # keep the records (small), not checkpoints or models
  name=$(basename "$(dirname "$run")")-$(basename "$run"); mkdir -p "$OUT/runs/$name"
  cp "$run/epochs.csv" "$run/run.json" "$OUT/runs/$name/"
done
python reports/scrub_paths.py "$OUT/runs" "$DATA=CIFAR10" "$RESULTS=results" "$PWD=."
bench report "$OUT/runs"/recipe-* --out "$OUT" --title "PruneTrain on CIFAR-10 (ResNet-20): the cpu recipe on a 2-core CPU"
r() { ls -d "$OUT/runs/$1"-*; }
python reports/lever_table.py "$(r recipe)" "paper=$(r paper)" "budget only=$(r budget)" \
    "proximal only=$(r proximal)" "readers only=$(r readers)" "recipe (all three)=$(r recipe)" \
    "recipe at penalty ratio 0.9=$(r ratio)" "penalty window: ratio 0.9 for 30 % of the epochs=$(r window)" \
    "penalty window: ratio 0.8 for 50 % of the epochs=$(r window2)" > "$OUT/levers.md"
rm -rf "$RESULTS"
