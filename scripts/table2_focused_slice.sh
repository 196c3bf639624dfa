#!/usr/bin/env bash
# The Table 2 slice this 2-core machine affords in one session (FocusedTopDown, default
# matrix): SAC+GeMS and SAC+TopK (ideal) x 3 seeds on a fixed episode budget (window regime), the
# short-term oracle and random x 3 seeds. Two chains, one per core.
#   bash scripts/table2_focused_slice.sh [ROOT] [EPISODES]
# Then: slaterec table ROOT --paper ; slaterec plot curves ROOT --out curve.png
set -euo pipefail
ROOT=${1:-runs/table2}
EPISODES=${2:-1500}
ENV=SlateRec/FocusedTopDown-v0
S=${SLATEREC:-slaterec}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$ROOT"
COMMON=(--preset window --episodes "$EPISODES" --set checkpoint_every=500 --no-progress --workspace "$ROOT/runs")
chain_gems() {
  [ -e "$ROOT/logged" ] || $S generate $ENV --episodes 100000 --seed 0 --out "$ROOT/logged"
  [ -e "$ROOT/gems.pt" ] || $S pretrain-gems "$ROOT/logged" --out "$ROOT/gems.pt" --max-steps 20000 \
      --eval-every 2000 --val-max-samples 50000 --threads 1
  for seed in 0 1 2; do
    $S train sac-gems $ENV --gems "$ROOT/gems.pt" --seed $seed "${COMMON[@]}" --tag slice
  done
}
chain_topk() {
  for seed in 0 1 2; do
    $S train sac-topk-ideal $ENV --seed $seed "${COMMON[@]}" --tag slice
  done
  for seed in 0 1 2; do
    $S train oracle $ENV --seed $seed --no-progress --workspace "$ROOT/runs" --tag slice
    $S train random $ENV --seed $seed --no-progress --workspace "$ROOT/runs" --tag slice
  done
}
chain_gems > "$ROOT/chain_gems.log" 2>&1 &
chain_topk > "$ROOT/chain_topk.log" 2>&1 &
wait
