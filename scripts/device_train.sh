#!/usr/bin/env bash
# Train configs/ner-lite.toml on a machine with an NVIDIA GPU and many CPU cores, inside a fixed wall-clock budget.
# This is how the bundled ner-lite weights were made (an H200 with 16 cores, one 10-minute session).
#
#   BUDGET_S=560 OUT=runs/device-out bash scripts/device_train.sh
#
# 1. simulates the config's training / validation recordings in parallel, one worker per core
#    (scripts/simulate_cache.py; the same files `livenight train` would simulate one after another);
# 2. keeps the longest prefix of recordings that finished in SIM_S seconds;
# 3. times a few training steps and picks the step count that fits the rest of the budget;
# 4. trains `livenight train configs/ner-lite.toml --set data.natural.count=M --set steps=N` and copies the final
#    checkpoint, the CSV log and the exact command to $OUT.
# Reproduce the shipped weights with the command written to $OUT/command.txt (also in livenight/weights/*.json).
set -uo pipefail
T0=$(date +%s)
PY=${PY:-python3}
CONFIG=${CONFIG:-configs/ner-lite.toml}
BUDGET_S=${BUDGET_S:-560}
SIM_S=${SIM_S:-200}
OUT=${OUT:-runs/device-out}
RUN_DIR=${RUN_DIR:-runs/ner-lite}
EXTRA=${EXTRA:-}
mkdir -p "$OUT" runs
export PYTHONUNBUFFERED=1
elapsed() { echo $(( $(date +%s) - T0 )); }

if ! (cd /tmp && $PY -c "import livenight.drivers.rled, livenight.training") 2>/dev/null; then
  $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/pip.log" 2>&1 || { cat "$OUT/pip.log"; exit 1; }
fi
(cd /tmp && $PY -c "import livenight.drivers.rled, livenight.training, torch, numba, h5py, skimage
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())") || exit 1

# 1. parallel simulation, one core per worker (each worker then uses one numba thread)
N=$(nproc)
pids=()
for k in $(seq 0 $((N - 1))); do
  taskset -c "$k" timeout "$SIM_S" $PY scripts/simulate_cache.py "$CONFIG" --worker "$k" --workers "$N" \
    >>"$OUT/sim.log" 2>&1 & pids+=($!)
done
taskset -c 0 timeout "$SIM_S" $PY scripts/simulate_cache.py "$CONFIG" --val >>"$OUT/sim.log" 2>&1 & pids+=($!)
wait "${pids[@]}"
# 2. the longest complete prefix of the training recordings
M=$($PY - "$CONFIG" <<'EOF'
import sys
from pathlib import Path
from livenight.training import load_config
from livenight.training.synthetic import _synthetic_key
spec = load_config(sys.argv[1]).data.natural
key, cache = _synthetic_key(spec), Path(spec.cache_dir)
m = 0
while m < spec.count and (cache / f"natural-{key}-{m:04d}.h5").is_file():
    m += 1
print(m)
EOF
)
echo "simulated $M training recordings in $(elapsed) s" | tee -a "$OUT/summary.txt"
[ "$M" -gt 0 ] || exit 1

# 3. time a few steps (the first pays one-off costs)
$PY -m livenight train "$CONFIG" --set data.natural.count="$M" --set steps=4 --set out_dir=\"runs/timing\" \
  --set val.natural.count=0 --set checkpoint_every=0 $EXTRA >"$OUT/timing.log" 2>&1 || { tail -20 "$OUT/timing.log"; exit 1; }
SPS=$($PY -c "import csv; r=list(csv.DictReader(open('runs/timing/train.csv'))); print(sum(float(x['seconds']) for x in r[2:]) / len(r[2:]))")
LEFT=$(( BUDGET_S - $(elapsed) - 45 ))
STEPS=$($PY -c "print(max(10, int($LEFT / ($SPS * 1.08) / 10) * 10))")
echo "timing: $SPS s/step; $LEFT s left -> $STEPS steps" | tee -a "$OUT/summary.txt"

# 4. the run
CMD="livenight train $CONFIG --set data.natural.count=$M --set steps=$STEPS $EXTRA"
echo "$CMD" >"$OUT/command.txt"
rm -rf "$RUN_DIR"
timeout $(( BUDGET_S - $(elapsed) - 10 )) $PY -m livenight train "$CONFIG" --set data.natural.count="$M" \
  --set steps="$STEPS" --set out_dir=\"$RUN_DIR\" $EXTRA >"$OUT/train.log" 2>&1
echo "train exit $? after $(elapsed) s" | tee -a "$OUT/summary.txt"
cp "$RUN_DIR/last.pth" "$RUN_DIR/train.csv" "$OUT/" 2>/dev/null
tail -3 "$OUT/train.log"
