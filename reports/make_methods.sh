#!/usr/bin/env bash
# Rebuild reports/cifar10-cpu-methods: Network Slimming, Early-Bird and random pruning added (bench run
# --methods-of) to copies of the evidence study's recipe folders (PruneTrain + both controls per seed, made by
# reports/make_evidence.sh with the same RESULTS=DIR); dense is the evidence study's first-recipe/ run of the
# same seed.  About 1.5 h per seed on one thread of a 2-core CPU.
# Usage: RESULTS=DIR reports/make_methods.sh CIFAR10_DIR [SEEDS]   (JOBS=N trains N seeds at once)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
DATA=${1:?usage: RESULTS=DIR reports/make_methods.sh CIFAR10_DIR [SEEDS]} SEEDS=${2:-3} JOBS=${JOBS:-1}
: "${RESULTS:?RESULTS=DIR: the folder reports/make_evidence.sh trained into}"
OUT=reports/cifar10-cpu-methods
methods_run() {  # a copy of the seed's recipe folder, the three methods added (resumed where interrupted)
  local src dir; src=$(ls -d "$RESULTS/runs/seed$1"/*/ | head -n 1)
  if [ ! -d "$RESULTS/methods/seed$1" ]; then mkdir -p "$RESULTS/methods/seed$1" && cp -r "$src" "$RESULTS/methods/seed$1/"; fi
  dir=$(ls -d "$RESULTS/methods/seed$1"/*/ | head -n 1)
  local st; st=$(python -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m["status"], *m["modes"])' "$dir/run.json")
  case " $st " in
    *" random "*) [ "${st%% *}" = finished ] || bench run --resume "$dir" --data-dir "$DATA" --quiet;;
    *) bench run --methods-of "$dir" --data-dir "$DATA" --quiet;;
  esac
}
for seed in $(seq 0 $((SEEDS - 1))); do
  methods_run "$seed" &
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
done
for pid in $(jobs -p); do wait "$pid"; done
rm -rf "${OUT:?}/runs"
for run in "$RESULTS/methods"/*/*/; do   # the records (small), not checkpoints or models
  dest="$OUT/runs/$(basename "$(dirname "$run")")-$(basename "$run")"
  mkdir -p "$dest" && cp "$run/epochs.csv" "$run/run.json" "$dest/"
done
python reports/scrub_paths.py "$OUT" "$DATA=CIFAR10" "$RESULTS=results" "$PWD=."
bench report "$OUT/runs" reports/cifar10-cpu-evidence/first-recipe --out "$OUT/report" \
  --title "PruneTrain, Network Slimming, Early-Bird and random pruning on CIFAR-10 (VGG-8), this CPU"
python reports/methods_table.py "$OUT" reports/cifar10-cpu-evidence/first-recipe
