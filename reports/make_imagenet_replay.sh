#!/usr/bin/env bash
# Rebuild reports/imagenet-replay: an ImageNet-shaped trajectory (224x224 images) from a short `bench run` on a
# tiny generated image folder (2 classes, 16 train + 8 test images each: not ImageNet), then its replay under
# gtx750ti (emulated: VGG-16 does not fit even at batch 1, recorded as such) and cpu, and one report.
# VGG-16 takes about 20 minutes on a 2-core CPU (one torch thread), ResNet-50 about 10 more.
# Usage: reports/make_imagenet_replay.sh [MODEL ...]   (default: vgg16-imagenet resnet50-imagenet)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
OUT=reports/imagenet-replay
WORK=$(mktemp -d)
python - "$WORK/tiny224" <<'PY'
import os, sys
import numpy as np
from PIL import Image
root, rng = sys.argv[1], np.random.default_rng(0)
for split, n in (("train", 16), ("test", 8)):
    for c, cls in enumerate(("a", "b")):
        os.makedirs(f"{root}/{split}/{cls}", exist_ok=True)
        for i in range(n):  # a tinted noise image per class
            base = np.zeros((224, 224, 3), np.uint8)
            base[..., c] = 160
            img = np.clip(base + rng.integers(0, 96, (224, 224, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(f"{root}/{split}/{cls}/{i:02d}.jpg", quality=85)
PY
mkdir -p "$OUT" && find "$OUT" -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +   # the README is written by hand
mkdir -p "$OUT/runs"
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(vgg16-imagenet resnet50-imagenet)
for m in "${MODELS[@]}"; do
  run=$(bench run --profile gtx1070 --device cpu --model "$m" --data tiny224 --data-dir "$WORK/tiny224" --epochs 2 \
        --interval 1 --batch-size 8 --max-batch 8 --lasso paper --lpr 0.9 --results-dir "$WORK/runs")  # prints its folder
  bench replay "$run" --profile gtx750ti --emulate --device cpu --data-dir "$WORK/tiny224" --budget 5 \
      --results-dir "$WORK/replays" --quiet
  bench replay "$run" --profile cpu --device cpu --data-dir "$WORK/tiny224" --budget 5 \
      --results-dir "$WORK/replays" --quiet
done
for run in "$WORK"/runs/*/ "$WORK"/replays/*/; do             # the records (small), not checkpoints or models
  mkdir -p "$OUT/runs/$(basename "$run")" && cp "$run/epochs.csv" "$run/run.json" "$OUT/runs/$(basename "$run")/"
done
python reports/scrub_paths.py "$OUT/runs" "$WORK/tiny224=tiny224" "$WORK/runs=results" "$WORK/replays=results" "$PWD=."
bench report "$OUT/runs" --out "$OUT" --title "ImageNet-shaped trajectories (224x224, a 32-image folder) replayed under gtx750ti and cpu"
rm -f "$OUT/report.html"                   # the same content as report.md with the plots inlined (MBs)
rm -rf "$WORK"
