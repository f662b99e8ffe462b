#!/usr/bin/env bash
# Rebuild reports/cifar10-cpu-example: real CIFAR-10 (the shared JPEG copy), ResNet-20, three profiles
# emulated on this CPU, dense + PruneTrain each.  About 10 minutes on a 2-core CPU (one torch thread per run).
# Usage: reports/make_example.sh [CIFAR10_DIR]   (default .cache/cifar10, unpacked from ../shared/data)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
DATA=${1:-.cache/cifar10}
if [ ! -d "$DATA/train" ]; then
  mkdir -p .cache && tar xzf ../shared/data/cifar10-jpeg.tar.gz -C .cache
fi
OUT=reports/cifar10-cpu-example
RESULTS=$(mktemp -d)
for profile in cpu gtx750ti gtx1070; do
  bench run --profile "$profile" --model resnet20 --data cifar10 --data-dir "$DATA" --subset 2048 \
      --epochs 4 --interval 1 --batch-size 64 --max-batch 128 --lpr 0.9 --threshold 0.05 \
      --lr-milestones none --results-dir "$RESULTS" --quiet
done
rm -rf "$OUT"
mkdir -p "$OUT/runs"
for run in "$RESULTS"/*/; do            # keep the records (small), not checkpoints or models
  name=$(basename "$run"); mkdir -p "$OUT/runs/$name"
  cp "$run/epochs.csv" "$run/run.json" "$OUT/runs/$name/"
done
bench report "$OUT/runs" --out "$OUT" --title "PruneTrain on CIFAR-10 (ResNet-20), three memory profiles on a 2-core CPU"
rm -rf "$RESULTS"
