#!/usr/bin/env bash
# Rebuild reports/cifar10-cpu-evidence: the `cpu` recipe under the evidence rules -- seeds 0..N-1, each
# with dense, PruneTrain and both controls (small-dense, thin-dense) in one run folder, a 2,000-image
# validation split for every data-driven decision, test accuracy on the whole 10,000-image test split --
# then the VGG-8 ablations the headline lacked (the recipe without --keep-bn-scale, and with --penalise all).
# About 1.5 h per seed for the four modes and 25 min per ablation run on one thread of a 2-core CPU.
# Usage: RESULTS=DIR reports/make_evidence.sh CIFAR10_DIR [SEEDS]   (RESULTS=DIR keeps and reuses runs:
# a finished seed is not trained again, an interrupted one resumes).  JOBS=N trains N seeds at once (one
# thread each: on a 2-core CPU, 3 jobs finish 3 seeds sooner but every epoch is then timed under contention,
# which run.json records); ABLATIONS=0 skips the ablations (the README must then say they were not run).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
DATA=${1:?usage: RESULTS=DIR reports/make_evidence.sh CIFAR10_DIR [SEEDS]} SEEDS=${2:-3}
OUT=reports/cifar10-cpu-evidence
if [ -z "${RESULTS:-}" ]; then RESULTS=$(mktemp -d); trap 'rm -rf "$RESULTS"' EXIT; fi
seed_run() {  # $1 folder name, then options; resumes an interrupted run, skips a finished one
  local name=$1; shift
  local dir; dir=$(ls -d "$RESULTS/$name"/*/ 2>/dev/null | head -n 1 || true)
  if [ -z "$dir" ]; then bench run --profile cpu --data-dir "$DATA" --results-dir "$RESULTS/$name" --quiet "$@"
  elif ! python -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["status"] != "finished")' "$dir/run.json"
  then bench run --resume "$dir" --data-dir "$DATA" --quiet; fi
}
JOBS=${JOBS:-1} ABLATIONS=${ABLATIONS:-1}
for seed in $(seq 0 $((SEEDS - 1))); do    # a seed that fails stops the script (set -e through wait -n / wait)
  seed_run "seed$seed" --mode all --interleave --seed "$seed" &
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
done
for pid in $(jobs -p); do wait "$pid"; done
if [ "$ABLATIONS" = 1 ]; then
  for seed in $(seq 0 $((SEEDS - 1))); do
    seed_run "no-keep-bn-scale-seed$seed" --mode prunetrain --no-keep-bn-scale --seed "$seed"
    seed_run "penalise-all-seed$seed" --mode prunetrain --penalise all --seed "$seed"
  done
fi
mkdir -p "$OUT/runs" "$OUT/ablations"
for run in "$RESULTS"/*/*/; do           # the records (small), not checkpoints or models
  group=$(basename "$(dirname "$run")"); dest="$OUT/runs"; case $group in seed*) ;; *) dest="$OUT/ablations";; esac
  mkdir -p "$dest/$group-$(basename "$run")"; cp "$run/epochs.csv" "$run/run.json" "$dest/$group-$(basename "$run")/"
done
python reports/scrub_paths.py "$OUT" "$DATA=CIFAR10" "$RESULTS=results" "$PWD=."
bench report "$OUT/runs" --out "$OUT/report" --title "The cpu recipe on CIFAR-10 (VGG-8): seeds, controls, the whole test split"
python reports/evidence_table.py "$OUT/runs" "$OUT/README.md"   # the README's table, from the records
