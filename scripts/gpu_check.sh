#!/usr/bin/env bash
# The GPU proof of issue 10, as one script for a machine with an NVIDIA GPU:
#   1. install with the pinned constraints (skipped when this Python already has the pinned torch),
#   2. `bench env` and `bench check` (every path a long run takes, on this card),
#   3. `bench run --profile gtx1070 --emulate --epochs 2 --subset 4096` on the real CIFAR-10 copy,
#   4. the same run killed (kill -9) in the middle of an epoch, then `bench run --resume`,
#   5. a short table: what passed, with the figures.
# Usage: scripts/gpu_check.sh [OUT_DIR]     (env: CIFAR10_DIR=folder with train/ and test/, BENCH_PYTHON=python,
#        SUBSET=4096: images of the two runs; a smaller one only for a dry run of this script on a CPU)
# Exit status: non-zero when any step failed. Everything it prints is also under OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${1:-${OUT:-$ROOT/gpu-check}}
mkdir -p "$OUT"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
STATUS=0
declare -a SUMMARY=()
note() { SUMMARY+=("$(printf '%-34s %-6s %s' "$1" "$2" "$3")"); [ "$2" = pass ] || STATUS=1; }

# -- 1. install ----------------------------------------------------------------------------------------
PY=${BENCH_PYTHON:-python3}
want=$(sed -n 's/^torch==//p' constraints.txt)
have=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
if [ "$have" != "$want" ] || ! "$PY" -c 'import bench' 2>/dev/null; then
  "$PY" -m venv "$ROOT/.venv-gpu" && PY="$ROOT/.venv-gpu/bin/python"
  if "$PY" -m pip install -q -c constraints.txt -e . >"$OUT/install.log" 2>&1; then
    note "install (constraints.txt)" pass "torch $want"
  else
    note "install (constraints.txt)" FAIL "see $OUT/install.log"; printf '%s\n' "${SUMMARY[@]}"; exit 1
  fi
else
  note "install (constraints.txt)" pass "torch $have already installed"
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
export PRUNETRAIN_BENCH_CACHE="$ROOT/.cache"

# -- 2. env and check ------------------------------------------------------------------------------------
"${BENCH[@]}" env | tee "$OUT/env.txt"
"${BENCH[@]}" check --channels-last 2>"$OUT/check.log" | tee "$OUT/check.txt"
rc=${PIPESTATUS[0]}
note "bench check" "$([ "$rc" = 0 ] && echo pass || echo FAIL)" "$(grep -c ' pass ' "$OUT/check.txt") rows pass (table: $OUT/check.txt)"
cc=$("$PY" -c 'import torch; print("%d%d" % torch.cuda.get_device_capability())' 2>/dev/null || echo 0)
if [ "$cc" -ge 80 ]; then AMP=bf16; else AMP=fp16; fi
"${BENCH[@]}" check --amp "$AMP" 2>>"$OUT/check.log" | tee "$OUT/check-amp.txt"
rc=${PIPESTATUS[0]}
note "bench check --amp $AMP" "$([ "$rc" = 0 ] && echo pass || echo FAIL)" "table: $OUT/check-amp.txt"

if [ -z "${CIFAR10_DIR:-}" ] || [ ! -d "$CIFAR10_DIR/train" ]; then
  note "CIFAR-10 runs" FAIL "no CIFAR-10 copy: set CIFAR10_DIR (train/ and test/ image folders)"
  printf '%s\n' "" "${SUMMARY[@]}" | tee "$OUT/summary.txt"; exit 1
fi
RUN=(run --profile gtx1070 --emulate --epochs 2 --subset "${SUBSET:-4096}" --data cifar10 --data-dir "$CIFAR10_DIR" --quiet)

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
  if [ "$rows" -ge 4 ]; then
    note "kill -9 mid-epoch" FAIL "the run had finished ($rows rows) before the kill: nothing was interrupted"
  elif "${BENCH[@]}" run --resume "$dir" --quiet >"$OUT/resume.log" 2>&1; then
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
print(f"\n{'run':8} {'mode':10} {'ep':>2} {'batch':>5} {'test_acc':>8} {'epoch s':>8} {'warm-up s':>9} "
      f"{'alloc MiB':>9} {'reserved MiB':>12} {'budget MiB':>10}")
runs = {}
for name in ("full", "killed"):
    for path in sorted(glob.glob(f"{out}/{name}/*/epochs.csv")):
        rows = list(csv.DictReader(open(path)))
        runs[name] = rows
        status = json.load(open(path.replace("epochs.csv", "run.json")))["status"]
        for r in rows:
            mib = lambda k: f"{int(r[k]) / 2**20:.0f}" if r.get(k) else "-"
            print(f"{name:8} {r['mode']:10} {r['epoch']:>2} {r['batch_size']:>5} {float(r['test_acc']):8.2f} "
                  f"{float(r['epoch_time_s']):8.2f} {float(r['warmup_time_s']):9.2f} {mib('peak_memory_bytes'):>9} "
                  f"{mib('peak_memory_reserved_bytes'):>12} {mib('memory_budget_bytes'):>10}")
        print(f"{name:8} status {status}, device {rows[0]['device'] if rows else '?'}, emulated "
              f"{rows[0]['emulated'] if rows else '?'}")
if "full" in runs and "killed" in runs:
    a, b = runs["full"], runs["killed"]
    same = [(r["mode"], r["epoch"], r["batch_size"], r["params"]) for r in a] == \
           [(r["mode"], r["epoch"], r["batch_size"], r["params"]) for r in b]
    print(f"resumed run = uninterrupted run in mode, epoch, batch and shape: {same}")
    sys.exit(0 if same else 3)
PYEOF
[ "${PIPESTATUS[0]}" = 0 ] || note "resumed = uninterrupted" FAIL "see $OUT/runs.txt"
printf '%s\n' "" "${SUMMARY[@]}" | tee "$OUT/summary.txt"
exit $STATUS
