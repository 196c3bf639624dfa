#!/usr/bin/env bash
# More seeds of issue #11's chain on the reference matrix, one seed per core:
# one logged dataset (seed 0, as the paper logs one dataset per environment), then for each seed its own
# GeMS (20,000 steps) and SAC+GeMS in the paper regime (100,000 episodes), both on one thread.
#   bash scripts/paper_chain_seeds.sh OUT SEED...      e.g. bash scripts/paper_chain_seeds.sh runs/chain_seeds 1 2
set -euo pipefail
out=${1:?usage: paper_chain_seeds.sh OUT SEED...}; shift
items=../shared/reference/reference_item_embeddings_focused.npy
env=SlateRec/FocusedTopDown-v0
mkdir -p "$out"
stamp() { echo "$(date -u +%FT%T) $*" >> "$out/timeline.txt"; }
if [ ! -e "$out/logged" ]; then
  stamp "logged start"
  slaterec generate $env --out "$out/logged" --seed 0 --episodes 100000 --policy epsilon-greedy --epsilon 0.5 \
    --item-embeddings $items
  stamp "logged end"
fi
chain() {
  local s=$1
  if [ ! -e "$out/gems_s$s.pt" ]; then
    stamp "gems s$s start"
    slaterec pretrain-gems "$out/logged" --out "$out/gems_s$s.pt" --max-steps 20000 --eval-every 2000 \
      --val-max-samples 50000 --seed "$s" --threads 1
    stamp "gems s$s end"
  fi
  stamp "sac s$s start"
  slaterec train sac-gems $env --seed "$s" --out "$out/sac-gems_s$s" --no-progress --gems "$out/gems_s$s.pt" \
    --preset paper --item-embeddings $items --set torch_threads=1
  stamp "sac s$s end"
}
for s in "$@"; do chain "$s" > "$out/chain_s$s.log" 2>&1 & done
wait
