#!/usr/bin/env bash
# Each SAC method in its two regimes (--preset window / paper) at equal wall time, side by
# side (one run per core, one thread each), FocusedTopDown, seed 0 (BENCHMARKS.md, issue #11).
#   bash scripts/compare_regimes.sh [OUT] [SECONDS]
#   METHODS="sac-wknn" bash scripts/compare_regimes.sh OUT 3000     # some of the methods only
# Then: slaterec table OUT ; slaterec plot curves OUT/sac-* --x wall_s --out regimes.png
set -euo pipefail
OUT=${1:-runs/regimes}
W=${2:-720}
ENV=FocusedTopDown-v0
S=${SLATEREC:-slaterec}
METHODS=${METHODS:-sac-topk-ideal sac-topk-mf sac-wknn}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"
run() {  # METHOD PRESET [extra args]
  local m=$1 p=$2; shift 2
  case " $METHODS " in *" $m "*) ;; *) return 0 ;; esac
  $S train "$m" $ENV --preset "$p" --seed 0 --episodes 100000 --set max_wall_s="$W" \
      --out "$OUT/${m}_${p}_s0" --no-progress "$@" > "$OUT/${m}_${p}_s0.log" 2>&1
}
mf() {
  [ -e "$OUT/logged10k" ] || $S generate $ENV --out "$OUT/logged10k" --episodes 10000 --policy epsilon-greedy \
      --epsilon 0.5 --seed 0
  [ -e "$OUT/mf.npz" ] || $S train-mf "$OUT/logged10k" --out "$OUT/mf.npz" --lr 1e-3 --epochs 10 --seed 0
}
window_side() {
  run sac-topk-ideal window
  while [ ! -e "$OUT/mf.npz" ]; do sleep 5; done
  run sac-topk-mf window --mf "$OUT/mf.npz"
  run sac-wknn window --mf "$OUT/mf.npz"
}
paper_side() {
  mf > "$OUT/mf.log" 2>&1
  run sac-topk-ideal paper
  run sac-topk-mf paper --mf "$OUT/mf.npz"
  run sac-wknn paper --mf "$OUT/mf.npz"
}
window_side & paper_side & wait
