#!/usr/bin/env bash
# The GPU checks of issue #22 in one call of a lent machine (`run` of the device tool):
#   A. the CUDA tests (skipped on a machine without a GPU);
#   B. fused seeds on the GPU (scripts/bench_fused_seeds.py --device cuda);
#   D. (run third) the whole suite on that machine's Python/torch/numpy (portability);
#   C. end-to-end paper-regime SAC+GeMS on FocusedTopDown for a fixed wall time: one process on
#      the CPU (one thread), one on the GPU, five seeds sharing the GPU (`train --seeds`);
#      as far as time allows (DEADLINE_S: seconds after the start by which C must end);
#   E. offline training steps on the GPU, one encoder per network and a shared belief.
# PARTS chooses (default "A B D C"; e.g. PARTS="A E D" after changes to the offline code).
# Logs go to $OUT (or ./gpu_check_out). Packages missing on that machine travel as wheels in .whl/.
set -u
OUT=${OUT:-gpu_check_out}; mkdir -p "$OUT"
WALL=${WALL:-30}
source scripts/device_env.sh
py=python3
summary() { $py -c '
import json, sys
s = json.load(open(sys.argv[1])); v = s["validation"][-1]
steps = max(v["episodes"] - 2000, 0)
print("episodes %d, wall %.0f s, collect %.1f s, train %.1f s, gradient steps/s %.1f, device %s"
      % (s["episodes"], s["wall_s"], v["collect_s"], v["train_s"], steps / max(v["train_s"], 1e-9), s["device"]))' "$1" 2>&1; }
CLI=(-c 'import sys; from gym_slaterec.cli import main; sys.exit(main(sys.argv[1:]))')
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; $py -c 'import torch, numpy, sys; print(sys.version.split()[0], torch.__version__, numpy.__version__, torch.cuda.is_available())'; nproc; } 2>&1 | tee "$OUT/machine.txt"

part() { [[ " ${PARTS:-A B D C} " == *" $1 "* ]]; }

part A && { echo "== A. CUDA tests"
timeout 240 $py -m pytest -p no:cacheprovider -q -rs tests/test_devices.py tests/test_seeds.py -k "cuda or gpu or device" 2>&1 | tee "$OUT/A_cuda_tests.log" | tail -15; }

part E && { echo "== E. offline training steps on the GPU"
timeout 150 $py scripts/bench_offline_step.py td3bc iql cql bcq --steps 20 --shared --rounds 2 --device cuda 2>&1 | grep "ms/step" | tee "$OUT/E_offline.log"; }

part B && { echo "== B. fused seeds on the GPU"
timeout 150 $py scripts/bench_fused_seeds.py --device cuda --seeds 1 5 10 20 --steps 10 --rounds 2 --gru batched 2>&1 | tee "$OUT/B_fused.log"; }

part D && { echo "== D. the whole suite"
timeout ${SUITE_S:-220} $py -m pytest -p no:cacheprovider -q -n 14 tests 2>&1 | tee "$OUT/D_suite.log" | tail -25; }
part C || exit 0

echo "== C. end-to-end, ${WALL} s of training each"
GEMS=gym_slaterec/data/benchmark/FocusedTopDown/expert/inputs/gems.pt
C=/tmp/gpu_check_runs; rm -rf $C
for d in cpu cuda; do
  [ $(( SECONDS + WALL + 40 )) -lt ${DEADLINE_S:-500} ] || { echo "$d: skipped (time)"; continue; }
  timeout $(( ${DEADLINE_S:-500} - SECONDS )) $py "${CLI[@]}" train sac-gems FocusedTopDown-v0 --gems $GEMS --device $d --no-progress --set max_wall_s=$WALL --out $C/$d > "$OUT/C_$d.log" 2>&1
  echo "$d: rc=$? $(summary $C/$d/state.json)"
done
[ $(( SECONDS + WALL + 60 )) -lt ${DEADLINE_S:-500} ] && timeout $(( ${DEADLINE_S:-500} - SECONDS )) $py "${CLI[@]}" train sac-gems FocusedTopDown-v0 --gems $GEMS --device cuda --no-progress --set max_wall_s=$WALL \
  --seeds 0 1 2 3 4 --jobs 5 --out "$C/five/s{seed}" > "$OUT/C_five.log" 2>&1
echo "five seeds on cuda: rc=$?"; for s in 0 1 2 3 4; do echo "  s$s $(summary $C/five/s$s/state.json)"; done

