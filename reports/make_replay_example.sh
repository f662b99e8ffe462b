#!/usr/bin/env bash
# Rebuild reports/cifar10-replay-example: one recorded PruneTrain trajectory (ResNet-20 on a 2,560-image subset of
# the real CIFAR-10 copy, 12 epochs, 3 reconfigurations; its records are in runs/) replayed on this machine under
# three profiles (cpu, gtx1070 and gtx750ti emulated: their memory budgets decide the batches), then one report of
# the measured run and the three replays.  Under 10 minutes on a 2-core CPU.
# Usage: reports/make_replay_example.sh [CIFAR10_DIR]   (default .cache/cifar10, unpacked from ../shared/data)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
DATA=${1:-.cache/cifar10}
[ -d "$DATA/train" ] || { echo "error: no CIFAR-10 copy in $DATA: pass its folder (reports/make_example.sh unpacks one)" >&2; exit 2; }
OUT=reports/cifar10-replay-example
ORIG=$(ls -d "$OUT"/runs/*/ | while read -r d; do case $(basename "$d") in *-replay-*) ;; *) echo "$d";; esac; done | head -1)
# the run.json names the data folder it was recorded with; point the replay at this machine's copy
WORK=$(mktemp -d)
cp -r "$ORIG" "$WORK/orig"
python3 - "$WORK/orig/run.json" "$DATA" <<'PY'
import json, sys
p, data = sys.argv[1], sys.argv[2]
m = json.load(open(p)); m["config"]["data_dir"] = data; json.dump(m, open(p, "w"), indent=2)
PY
rm -rf "$OUT"/runs/*-replay-*
for profile in cpu gtx1070 gtx750ti; do
  run=$(bench replay "$WORK/orig" --profile "$profile" --budget 8 --results-dir "$WORK/replays" --quiet)
  mkdir -p "$OUT/runs/$(basename "$run")"
  cp "$run/epochs.csv" "$run/run.json" "$OUT/runs/$(basename "$run")/"
done
bench report "$OUT/runs" --out "$OUT" --title "One PruneTrain trajectory (ResNet-20, CIFAR-10) measured once, replayed under three profiles"
rm -rf "$WORK"
