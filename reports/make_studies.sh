#!/usr/bin/env bash
# Rebuild reports/cifar10-cpu-studies: the four study questions (interval, penalty ratio, dynamic batch,
# union vs gating) at reduced scale on real CIFAR-10 -- ResNet-20, a class-balanced 2,000-image subset,
# 8 epochs, batch 64, one torch thread -- then the batch and structure studies replayed under the
# gtx750ti and gtx1070 profiles (memory rule only: emulated on this CPU).  About 20-25 minutes on an
# idle 2-core CPU.   Usage: reports/make_studies.sh CIFAR10_DIR [RESULTS_DIR]   (image folders train/ and
# test/; a study already in RESULTS_DIR/<name> is kept, not trained again, and RESULTS_DIR is kept)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
DATA=${1:?usage: reports/make_studies.sh CIFAR10_DIR [RESULTS_DIR]} OUT=reports/cifar10-cpu-studies
RESULTS=${2:-$(mktemp -d)}
sweep() { name=$1; shift; [ -d "$RESULTS/$name" ] && return; bench sweep --profile cpu --data-dir "$DATA" --subset 2000 --epochs 8 --quiet \
              --results-dir "$RESULTS/$name" "$@"; }
sweep interval --lpr 0.9 --vary interval=1,2,4
sweep lpr --vary lpr=0.5,0.7,0.9
sweep batch --lpr 0.9 --lasso-until 0.3 --interval 1 --vary adjust_batch=on,off
sweep structure --lpr 0.9 --lasso-until 0.3 --interval 1 --vary structure=union,gating
# the same at equal batch (the freed-memory rule lowered gating's batch to 32 above), with the settings of then
sweep structure-equal-batch --model resnet20 --test-size 500 --val 1000 --penalise all --no-keep-bn-scale \
      --group-weight uniform --lpr 0.9 --lasso-until 0.3 --interval 1 --no-adjust-batch --vary structure=union,gating
for study in batch structure; do
  for profile in gtx750ti gtx1070; do
    [ -d "$RESULTS/replay-$study-$profile" ] || bench replay "$RESULTS/$study"/study-* --profile "$profile" --data-dir "$DATA" --budget 3 --quiet \
        --results-dir "$RESULTS/replay-$study-$profile" > /dev/null
  done
done
mkdir -p "$OUT" && find "$OUT" -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +   # the README is written by hand
for d in "$RESULTS"/*/; do   # the records (small), not checkpoints or exported models
  (cd "$d" && find . \( -name epochs.csv -o -name run.json -o -name study.json \) -print0 |
     while IFS= read -r -d '' f; do mkdir -p "$OLDPWD/$OUT/$(basename "$d")/$(dirname "$f")"; cp "$f" "$OLDPWD/$OUT/$(basename "$d")/$f"; done)
done
python reports/scrub_paths.py "$OUT" "$DATA=CIFAR10" "$RESULTS=results" "$PWD=."
bench report "$OUT" --out "$OUT/report" --title "PruneTrain studies on CIFAR-10 (ResNet-20, reduced scale) on a 2-core CPU"
rm "$OUT/report/report.html"   # 11 MB of embedded plots; report.md and the PNGs say the same
[ -n "${2:-}" ] || rm -rf "$RESULTS"
