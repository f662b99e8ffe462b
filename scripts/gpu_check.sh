#!/usr/bin/env bash
# The GPU proof of issues 10 and 23, as one script for a machine with an NVIDIA GPU:
#   1. install the pinned torch built for this card (`python3 bench/machine/hardware.py install-line <cc>`: the CUDA 12.6
#      build for sm_50..sm_70, CUDA 13 from sm_75); skipped when this Python's torch already drives the card,
#   2. `bench env` and `bench check --device cuda` (every path a long run takes, on this card; then with AMP),
#   3. `bench run --profile gtx1070 --emulate --device cuda` on the real CIFAR-10 copy, for EPOCHS epochs with a
#      reconfiguration every INTERVAL, so that surgery and batch growth run on the card,
#   4. the same run killed (kill -9) in the middle of an epoch, then `bench run --resume DIR --data-dir ...`,
#   5. a short table: what passed, with the figures.
# Usage: scripts/gpu_check.sh [--dry-run] [OUT_DIR]
#   --dry-run: every step on the CPU (`--device cpu`, install skipped, AMP check skipped: CUDA only), to test this
#   script itself; its summary says that nothing in it ran on a GPU.
# Env: CIFAR10_DIR=folder with train/ and test/, BENCH_PYTHON=python, EPOCHS=3, INTERVAL=1, SUBSET=4096, VAL=held-out validation images (default 1,000),
#      MODEL=resnet32 (the profile's), PRUNETRAIN_BENCH_CACHE=decoded-image cache, THRESHOLD=0.2: far above the
#      method's 1e-4, so that a run of a few epochs removes channels (a third of ResNet-20's parameters at
#      initialisation) and the surgery and batch growth run on the card; these runs check paths, they are no result.
# Exit status: non-zero when any step failed. Everything it prints is also under OUT_DIR.
set -uo pipefail
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${1:-${OUT:-$ROOT/gpu-check}}
mkdir -p "$OUT"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
STATUS=0
declare -a SUMMARY=()
note() { SUMMARY+=("$(printf '%-34s %-6s %s' "$1" "$2" "$3")"); [ "$2" = pass ] || STATUS=1; }
finish() {
  if [ "$DRY" = 1 ]; then SUMMARY+=("" "DRY RUN on the CPU: every step ran, nothing here was measured on a GPU"); fi
  printf '%s\n' "" "${SUMMARY[@]}" | tee "$OUT/summary.txt"; exit $STATUS
}
if [ "$DRY" = 1 ]; then DEVICE=cpu; else DEVICE=cuda; fi

# -- 1. install: the pinned torch from the index that has this card's kernels ------------------------------
PY=${BENCH_PYTHON:-python3}
drives_card() {  # this Python has the pinned torch, bench, and (on a GPU) kernels for the card
  "$PY" - "$1" <<'PYEOF' 2>/dev/null
import sys
import torch
from bench.machine.hardware import TORCH_PIN, arch_support
if torch.__version__.split("+")[0] != TORCH_PIN:
    sys.exit(1)
if sys.argv[1] == "cpu":
    sys.exit(0)
cc = torch.cuda.get_device_capability(0) if torch.cuda.is_available() else None
sys.exit(0 if cc is not None and arch_support(cc, torch.cuda.get_arch_list()) is None else 1)
PYEOF
}
if [ "$DRY" = 1 ]; then
  if drives_card cpu; then note "install (skipped: dry run)" pass "this Python's torch $("$PY" -c 'import torch; print(torch.__version__)')"
  else note "install (skipped: dry run)" FAIL "$PY lacks the pinned torch or bench"; finish; fi
else
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader -i 0 2>/dev/null | head -1 | tr -d ' ')
  line=$(python3 bench/machine/hardware.py install-line "${cc:-0.0}")
  if [ -z "$cc" ]; then
    note "install" FAIL "nvidia-smi reports no GPU (driver missing?); for a test of this script: --dry-run"; finish
  elif [ -z "$line" ]; then
    note "install" FAIL "no prebuilt torch $(sed -n 's/^torch==//p' constraints.txt) has kernels for sm_${cc/./}"; finish
  elif drives_card cuda; then
    note "install" pass "torch already drives sm_${cc/./} (would be: $line)"
  else
    "$PY" -m venv "$ROOT/.venv-gpu" && PY="$ROOT/.venv-gpu/bin/python"
    # the build for the card first, then the project under the same pins (2.14.1+cu126 satisfies torch==2.14.1)
    if "$PY" -m ${line#pip } >"$OUT/install.log" 2>&1 && "$PY" -m pip install -q -c constraints.txt -e . >>"$OUT/install.log" 2>&1 \
       && drives_card cuda; then
      note "install (sm_${cc/./})" pass "$line"
    else
      note "install (sm_${cc/./})" FAIL "$line: see $OUT/install.log"; finish
    fi
  fi
fi
BENCH=("$PY" -m bench)

# -- the real CIFAR-10 copy ------------------------------------------------------------------------------
if [ -z "${CIFAR10_DIR:-}" ]; then
  for tar in "$ROOT/shared/data/cifar10-jpeg.tar.gz" "$ROOT/../shared/data/cifar10-jpeg.tar.gz"; do
    if [ -f "$tar" ]; then
      mkdir -p "$ROOT/.cache" && { [ -d "$ROOT/.cache/cifar10/train" ] || tar xzf "$tar" -C "$ROOT/.cache"; }
      CIFAR10_DIR="$ROOT/.cache/cifar10"; break
    fi
  done
fi
export PRUNETRAIN_BENCH_CACHE="${PRUNETRAIN_BENCH_CACHE:-$ROOT/.cache}"

# -- 2. env and check ------------------------------------------------------------------------------------
"${BENCH[@]}" env | tee "$OUT/env.txt"
"${BENCH[@]}" check --device "$DEVICE" --channels-last 2>"$OUT/check.log" | tee "$OUT/check.txt"
rc=${PIPESTATUS[0]}
note "bench check --device $DEVICE" "$([ "$rc" = 0 ] && echo pass || echo FAIL)" "$(grep -c ' pass ' "$OUT/check.txt") rows pass (table: $OUT/check.txt)"
if [ "$DRY" = 1 ]; then
  note "bench check --amp (skipped)" pass "dry run: mixed precision is CUDA only"
else
  cc=$("$PY" -c 'import torch; print("%d%d" % torch.cuda.get_device_capability())' 2>/dev/null || echo 0)
  if [ "$cc" -ge 80 ]; then AMP=bf16; else AMP=fp16; fi
  "${BENCH[@]}" check --device cuda --amp "$AMP" 2>>"$OUT/check.log" | tee "$OUT/check-amp.txt"
  rc=${PIPESTATUS[0]}
  note "bench check --amp $AMP" "$([ "$rc" = 0 ] && echo pass || echo FAIL)" "table: $OUT/check-amp.txt"
fi

if [ -z "${CIFAR10_DIR:-}" ] || [ ! -d "$CIFAR10_DIR/train" ]; then
  note "CIFAR-10 runs" FAIL "no CIFAR-10 copy: set CIFAR10_DIR (train/ and test/ image folders)"; finish
fi
EPOCHS=${EPOCHS:-3}; INTERVAL=${INTERVAL:-1}
DATA=(--data cifar10 --data-dir "$CIFAR10_DIR")
EMULATE=(--emulate)                                # caps the card's allocator at the profile's budget
[ "$DEVICE" = cpu ] && EMULATE=()                  # on the CPU the profile's budget decides every batch already
RUN=(run --profile gtx1070 "${EMULATE[@]}" --device "$DEVICE" --epochs "$EPOCHS" --interval "$INTERVAL"
     --threshold "${THRESHOLD:-0.2}" --subset "${SUBSET:-4096}" ${MODEL:+--model "$MODEL"} "${DATA[@]}" --quiet
     ${VAL:+--val "$VAL" --held-out "$(( VAL < 256 ? VAL : 256 ))"})   # VAL: a smaller validation split
ROWS=$(( 2 * EPOCHS ))                             # dense and PruneTrain

# -- 3. the uninterrupted run ----------------------------------------------------------------------------
rm -rf "$OUT/full" "$OUT/killed"
start=$(date +%s)
if "${BENCH[@]}" "${RUN[@]}" --results-dir "$OUT/full" >"$OUT/full.log" 2>&1; then
  note "run --profile gtx1070 --emulate" pass "$(( $(date +%s) - start )) s, $(ls "$OUT"/full)"
else
  note "run --profile gtx1070 --emulate" FAIL "$(tail -1 "$OUT/full.log")"
fi

# -- 4. killed in the middle of an epoch, then resumed ----------------------------------------------------
"${BENCH[@]}" "${RUN[@]}" --results-dir "$OUT/killed" >"$OUT/killed.log" 2>&1 &
pid=$!
csv=""
for _ in $(seq 1 6000); do                         # until the first epoch's row is written (up to 10 min)
  csv=$(ls "$OUT"/killed/*/epochs.csv 2>/dev/null | head -1)
  [ -n "$csv" ] && [ "$(wc -l <"$csv")" -ge 2 ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
sleep 0.2                                          # into epoch 2 of dense: after the checkpoint of epoch 1
if kill -9 "$pid" 2>/dev/null; then
  wait "$pid" 2>/dev/null
  rows=$(( $(wc -l <"$csv") - 1 ))
  dir=$(dirname "$csv")
  if [ "$rows" -ge "$ROWS" ]; then
    note "kill -9 mid-epoch" FAIL "the run had finished ($rows rows) before the kill: nothing was interrupted"
  elif "${BENCH[@]}" run --resume "$dir" --data-dir "$CIFAR10_DIR" --quiet >"$OUT/resume.log" 2>&1; then
    note "kill -9 mid-epoch, --resume" pass "killed after $rows row(s); resumed to $(( $(wc -l <"$csv") - 1 )) rows"
  else
    note "kill -9 mid-epoch, --resume" FAIL "$(tail -1 "$OUT/resume.log")"
  fi
else
  note "kill -9 mid-epoch" FAIL "the run ended before it could be killed: $(tail -1 "$OUT/killed.log")"
fi

# -- 5. the table ----------------------------------------------------------------------------------------
"$PY" - "$OUT" <<'PYEOF' | tee "$OUT/runs.txt"
import csv, glob, json, sys
out = sys.argv[1]
print(f"\n{'run':8} {'mode':10} {'ep':>2} {'batch':>5} {'params':>8} {'test_acc':>8} {'epoch s':>8} {'warm-up s':>9} "
      f"{'alloc MiB':>9} {'reserved MiB':>12} {'budget MiB':>10}")
runs = {}
for name in ("full", "killed"):
    for path in sorted(glob.glob(f"{out}/{name}/*/epochs.csv")):
        rows = list(csv.DictReader(open(path)))
        runs[name] = rows
        status = json.load(open(path.replace("epochs.csv", "run.json")))["status"]
        for r in rows:
            mib = lambda k: f"{int(r[k]) / 2**20:.0f}" if r.get(k) else "-"
            print(f"{name:8} {r['mode']:10} {r['epoch']:>2} {r['batch_size']:>5} {r['params']:>8} "
                  f"{float(r['test_acc']):8.2f} {float(r['epoch_time_s']):8.2f} {float(r['warmup_time_s']):9.2f} "
                  f"{mib('peak_memory_bytes'):>9} {mib('peak_memory_reserved_bytes'):>12} {mib('memory_budget_bytes'):>10}")
        print(f"{name:8} status {status}, device {rows[0]['device'] if rows else '?'}, emulated "
              f"{rows[0]['emulated'] if rows else '?'}")
code = 0 if {"full", "killed"} <= runs.keys() else 5   # a step that left no records cannot pass here
if "full" in runs:   # the card ran PruneTrain's surgery: reconfigurations happened and removed parameters
    pt = [r for r in runs["full"] if r["mode"] == "prunetrain"]
    times = [float(r["reconfig_time_s"] or 0) for r in pt]
    arch = json.load(open(glob.glob(f"{out}/full/*/run.json")[0]))["modes"]["prunetrain"]["architectures"]
    params = [a["params"] for a in arch]
    shrank = sum(t > 0 for t in times) >= 1 and len(params) > 1 and params[-1] < params[0]
    print(f"PruneTrain reconfigured {sum(t > 0 for t in times)} time(s), params {params[0] if params else '?'} -> "
          f"{params[-1] if params else '?'}, batch {pt[0]['batch_size'] if pt else '?'} -> "
          f"{arch[-1]['batch_size'] if arch else '?'}: {shrank}")
    code = code or (0 if shrank else 4)
if "full" in runs and "killed" in runs:
    a, b = runs["full"], runs["killed"]
    same = [(r["mode"], r["epoch"], r["batch_size"], r["params"]) for r in a] == \
           [(r["mode"], r["epoch"], r["batch_size"], r["params"]) for r in b]
    print(f"resumed run = uninterrupted run in mode, epoch, batch and shape: {same}")
    code = code or (0 if same else 3)
sys.exit(code)
PYEOF
case "${PIPESTATUS[0]}" in
  0) note "reconfigured; resumed = uninterrupted" pass "see $OUT/runs.txt" ;;
  4) note "PruneTrain reconfigured" FAIL "no reconfiguration shrank the model: see $OUT/runs.txt" ;;
  5) note "run records" FAIL "the uninterrupted or the killed run left no records: see $OUT/*.log" ;;
  *) note "resumed = uninterrupted" FAIL "see $OUT/runs.txt" ;;
esac
finish
