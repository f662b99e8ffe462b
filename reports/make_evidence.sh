#!/usr/bin/env bash
# Rebuild reports/cifar10-cpu-evidence: the `cpu` recipe under the evidence rules -- a 2,000-image validation
# split for every data-driven decision, test accuracy on the whole 10,000-image test split, seeds 0..N-1 -- in
# the layout its README reads:
#   first-recipe/  the recipe the study started from (--keep-bn-scale): dense, PruneTrain and both controls
#                  (small-dense, thin-dense) in one folder per seed, dense and PruneTrain interleaved;
#   runs/          the profile's recipe, chosen on the validation split: PruneTrain, then both controls added
#                  with --controls-of; dense is first-recipe/'s of the same seed (the same computation: no
#                  setting dense reads differs, bench.report.pairing);
#   ablations/     the recipe with --penalise all (seeds 0 and 1);
#   selection/     the candidate ratio 0.88 of the first recipe (validation accuracy only; 500 test images).
# About 1.5 h per seed for first-recipe/, 1 h per seed for runs/ and 25 min per ablation run on one thread of a
# 2-core CPU. Usage: RESULTS=DIR reports/make_evidence.sh CIFAR10_DIR [SEEDS]   (RESULTS=DIR keeps and reuses
# runs: a finished run is not trained again, an interrupted one resumes).  JOBS=N trains N seeds at once (one
# thread each: on a 2-core CPU every epoch is then timed under contention, which run.json records).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
DATA=${1:?usage: RESULTS=DIR reports/make_evidence.sh CIFAR10_DIR [SEEDS]} SEEDS=${2:-3} JOBS=${JOBS:-1}
OUT=reports/cifar10-cpu-evidence
if [ -z "${RESULTS:-}" ]; then RESULTS=$(mktemp -d); trap 'rm -rf "$RESULTS"' EXIT; fi
folder() { ls -d "$RESULTS/$1"/*/ 2>/dev/null | head -n 1 || true; }
status() { python -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m["status"], *m["modes"])' "$1/run.json"; }
seed_run() {  # $1 group/name, then options; resumes an interrupted run, skips a finished one
  local name=$1; shift
  local dir; dir=$(folder "$name")
  if [ -z "$dir" ]; then bench run --profile cpu --data-dir "$DATA" --results-dir "$RESULTS/$name" --quiet "$@"
  elif [ "$(status "$dir" | cut -d' ' -f1)" != finished ]; then bench run --resume "$dir" --data-dir "$DATA" --quiet; fi
}
recipe_run() {  # the profile's recipe: PruneTrain, then its controls in the same folder
  seed_run "runs/seed$1" --mode prunetrain --seed "$1"
  local dir; dir=$(folder "runs/seed$1")
  case " $(status "$dir") " in *" small-dense "*) ;; *) bench run --controls-of "$dir" --data-dir "$DATA" --quiet;; esac
}
in_parallel() {  # $1 a function, run once per seed, JOBS at a time; a seed that fails stops the script
  for seed in $(seq 0 $((SEEDS - 1))); do
    "$@" "$seed" &
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
  done
  for pid in $(jobs -p); do wait "$pid"; done
}
first_recipe() { seed_run "first-recipe/seed$1" --mode all --interleave --keep-bn-scale --seed "$1"; }
in_parallel first_recipe
in_parallel recipe_run
for seed in 0 1; do seed_run "ablations/penalise-all-seed$seed" --mode prunetrain --penalise all --seed "$seed"; done
for seed in 0 1; do seed_run "selection/lpr0.88-seed$seed" --mode prunetrain --keep-bn-scale --lpr 0.88 --test-size 500 \
  --seed "$seed"; done
for group in first-recipe runs ablations selection; do   # the records (small), not checkpoints or models
  rm -rf "${OUT:?}/$group"
  for run in "$RESULTS/$group"/*/*/; do
    dest="$OUT/$group/$(basename "$(dirname "$run")")-$(basename "$run")"
    mkdir -p "$dest" && cp "$run/epochs.csv" "$run/run.json" "$dest/"
  done
done
python reports/scrub_paths.py "$OUT" "$DATA=CIFAR10" "$RESULTS=results" "$PWD=."
bench report "$OUT/runs" "$OUT/first-recipe" --out "$OUT/report" \
  --title "The cpu recipe on CIFAR-10 (VGG-8): seeds, controls, the whole test split"
python reports/evidence_table.py "$OUT"                      # every table of the README, from the records
python reports/evidence_table.py "$OUT" README.md --summary  # and the project README's verdicts
