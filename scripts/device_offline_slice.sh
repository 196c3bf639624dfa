#!/usr/bin/env bash
# One environment's offline benchmark slice on a lent machine with many cores (the `run` tool of
# the device library), inside one call: the four shippable datasets rebuilt from the shipped
# policies (random, medium, expert, medium-expert; medium-replay needs the policies' replay
# memory, which does not ship), exported through the shipped expert's GeMS, then TD3+BC, CQL,
# IQL, BCQ and BC x SEEDS at STEPS gradient steps, JOBS runs at once (one thread each, device
# auto), the run summaries packed into $OUT/summaries.tgz (the tool brings back a few files, not
# one per run); the runs stop at DEADLINE_S seconds after the start so that the summaries of the
# finished ones still come back. On an H200 machine (16 cores) with 15 jobs, 41 of the 60 runs of
# FocusedMixed finished in 350 s (the order below puts the cheap algorithms first since).
#   ENV=FocusedMixed STEPS=1000 JOBS=15 DEADLINE_S=500 bash scripts/device_offline_slice.sh
set -u
ENV=${ENV:-FocusedMixed}; STEPS=${STEPS:-1000}; JOBS=${JOBS:-15}; SEEDS=${SEEDS:-"0 1 2"}
EPISODES=${EPISODES:-10000}; EXTRA=${EXTRA:-}
OUT=${OUT:-device_offline_out}; mkdir -p "$OUT"
source scripts/device_env.sh
W=${WORK:-/tmp/device_offline}; rm -rf "$W"; mkdir -p "$W"
cat > "$W/slaterec" <<'PY'
#!/usr/bin/env python3
import sys
from gym_slaterec.cli import main
sys.exit(main(sys.argv[1:]))
PY
chmod +x "$W/slaterec"; S="$W/slaterec"
GEMS=gym_slaterec/data/benchmark/$ENV/expert/inputs/gems.pt
QUALITIES="random medium expert medium-expert"
echo "== datasets ($SECONDS s)"
$S benchmark datasets $ENV --qualities $QUALITIES --episodes $EPISODES --out "$W/data" --allow-mismatch --no-progress > "$OUT/datasets.log" 2>&1 || { tail -20 "$OUT/datasets.log"; exit 1; }
tail -8 "$OUT/datasets.log"
echo "== exports ($SECONDS s)"
for q in $QUALITIES; do
  $S export "$W/data/$ENV/$q" --gems $GEMS --format d3rlpy --window 10 --out "$W/export/${ENV}_$q.h5" > "$OUT/export_$q.log" 2>&1 &
done
wait
ls -la "$W/export"
echo "== runs ($SECONDS s)"
for a in bc td3bc iql bcq cql; do for q in $QUALITIES; do for s in $SEEDS; do
  echo "$S train-offline $a $W/export/${ENV}_$q.h5 --gems $GEMS --seed $s --steps $STEPS --set eval_every=$((STEPS / 2)) --set checkpoint_every=$((STEPS / 2)) $EXTRA --out $W/runs/${a}_${ENV}_${q}_s$s --no-progress"
done; done; done > "$W/cmds.txt"
timeout $(( ${DEADLINE_S:-100000} - SECONDS )) xargs -P $JOBS -I{} sh -c "{} >> $OUT/runs.log 2>&1" < "$W/cmds.txt"
echo "== summaries ($SECONDS s)"
$S summaries "$W/runs" --out "$W/summaries" 2>&1 | tail -2
tar czf "$OUT/summaries.tgz" -C "$W" summaries
grep -c "test return" "$OUT/runs.log"; grep -i "error" "$OUT/runs.log" | head -5
