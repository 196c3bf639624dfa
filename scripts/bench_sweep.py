"""What Ray costs and gains for a grid of short runs on this machine.

One grid (random x N seeds and SAC+TopK (ideal) x N seeds, tiny budgets: the trials are
a few seconds to ~20 s, so the per-trial overhead shows) is run three times into fresh
sweep directories: sequentially in child processes (``--executor local``), on a local
Ray instance with 1 worker and with 2 workers. Per-trial overhead of Ray = (wall time
with 1 Ray worker - sequential wall time) / trials, start-up of the Ray instance
included; speed-up = sequential / 2 workers. Prints a markdown table and one JSON line.

    .venv/bin/python scripts/bench_sweep.py --seeds 4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def grid(seeds: int) -> dict:
    return {
        "name": "bench",
        "environments": ["FocusedTopDown-v0"],
        "seeds": list(range(seeds)),
        "set": {"val_users": 20, "test_users": 40, "n_envs": 4, "checkpoint_every": 0},
        "methods": {"random": {},
                    "sac-topk-ideal": {"episodes": 16, "preset": "window",
                                       "set": {"val_every": 8, "agent.warmup_episodes": 4}}},
        "retries": 0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()
    from slaterec_lab.sweep import run_sweep

    g = grid(args.seeds)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        grid_file = Path(tmp) / "bench.yaml"
        grid_file.write_text(json.dumps(g))
        for name, executor, workers in (("sequential", "local", None), ("ray_1_worker", "ray", 1),
                                        ("ray_2_workers", "ray", 2)):
            t0 = time.perf_counter()
            sweep = run_sweep(g, grid_file, Path(tmp) / name, executor=executor, workers=workers, progress=False)
            wall = time.perf_counter() - t0
            trials = list(sweep.trials.values())
            if any(t["status"] != "done" for t in trials):
                print(f"{name}: not every trial finished", file=sys.stderr)
                return 1
            rows[name] = {"wall_s": wall, "trials": len(trials), "trial_wall_sum_s": sum(t["wall_s"] for t in trials)}
    n = rows["sequential"]["trials"]
    overhead = (rows["ray_1_worker"]["wall_s"] - rows["sequential"]["wall_s"]) / n
    speedup = rows["sequential"]["wall_s"] / rows["ray_2_workers"]["wall_s"]
    print("| executor | trials | wall time (s) | sum of trial times (s) |")
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['trials']} | {r['wall_s']:.1f} | {r['trial_wall_sum_s']:.1f} |")
    print(f"\nRay overhead per trial (1 worker vs sequential, start-up included): {overhead:.2f} s; "
          f"speed-up with 2 workers: x{speedup:.2f}")
    print(json.dumps({"rows": rows, "overhead_per_trial_s": overhead, "speedup_2_workers": speedup}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
