"""Seed-to-seed spread of the short learning checks of tests/test_learning.py.

The learning tests assert on the mean over a few seeds, with margins taken from this
spread (several seeds and CPU kernels), not from one machine's single outcome. Run it
under other kernels to see how they move the figures::

    ATEN_CPU_CAPABILITY=default python scripts/learning_spread.py --check sac --seeds 0 1 2 3 4 5
    MKL_ENABLE_INSTRUCTIONS=AVX2 python scripts/learning_spread.py --check offline-medium --seeds 0 1 2

Prints one JSON line per seed and a summary (mean and sample standard deviation of the
gain over random; for ``gems`` and ``mf``, of the slate accuracy and the AUC).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", choices=("sac", "offline-medium", "gems", "mf"), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=300, help="training budget of the SAC check")
    args = parser.parse_args()
    import learning_checks as lc  # torch threads: $SLATEREC_TEST_THREADS (default 1)

    gains = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            if args.check == "sac":
                res = lc.sac_learning_run(Path(tmp) / f"s{seed}", seed, args.episodes)
            else:
                run = {"offline-medium": lc.offline_learning_run, "gems": lc.gems_reconstruction_run, "mf": lc.mf_auc_run}
                res = run[args.check](Path(tmp) / f"s{seed}", seed)
            gains.append(res["gain"])
            print(json.dumps({"check": args.check, "seed": seed, **({"episodes": args.episodes} if args.check == "sac" else {}), **res,
                              "aten": os.environ.get("ATEN_CPU_CAPABILITY", ""), "threads": lc.THREADS,
                              "mkl": os.environ.get("MKL_ENABLE_INSTRUCTIONS", "")}), flush=True)
    sd = statistics.stdev(gains) if len(gains) > 1 else float("nan")
    print(json.dumps({"check": args.check, "seeds": args.seeds, "gain_mean": statistics.fmean(gains), "gain_sd": sd,
                      "gain_min": min(gains)}))


if __name__ == "__main__":
    main()
