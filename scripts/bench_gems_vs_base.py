"""GeMS training throughput of this checkout against another commit's, side by side.

Whole processes alternate (this code, the base code, this code, ...), each timing
``--steps`` optimiser steps (forward, backward, Adam) of the default GeMS (latent 32,
item dim 20, 1000 items, slates of 10) on the same synthetic batches of 256 slates, with
``--threads`` CPU threads (this code: ``TrainingStep``, the step ``train_gems`` runs, on
torch's intra-op threads, or with ``--mode shards|processes`` on CPU workers taking shares of
each batch, as threads or as processes;
a commit without it: its training loop on torch's intra-op threads);
the base code is imported from ``--base`` (a checkout of,
e.g., commit 2093ee2: ``git worktree add --detach ../base2093 2093ee2``). Prints the
median slates/s of each and their ratio.

    python scripts/bench_gems_vs_base.py --base ../base2093 --pairs 5 --steps 30 --threads 1
    python scripts/bench_gems_vs_base.py --base ../base2093 --pairs 5 --steps 30 --threads 2 --base-threads 1 [--mode shards|processes]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time, torch
threads, steps, mode, chunk = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
from gym_slaterec.gems import GeMS, GeMSConfig
torch.manual_seed(0)
model = GeMS(1000, 10)
g = torch.Generator().manual_seed(0)
batches = [(torch.randint(0, 1000, (256, 10), generator=g), (torch.rand(256, 10, generator=g) < 0.2).float())
           for _ in range(steps)]
try:  # the training step of train_gems, where the commit has one (threads = its CPU workers)
    from gym_slaterec.gems.train import TrainingStep
    train_step = TrainingStep(model, GeMSConfig(lambda_kl=1.0, lambda_click=0.5, lr=1e-3),
                              workers=1 if mode == "ops" else threads, **({"chunk": chunk} if chunk else {}),
                              **({"shards": "processes"} if mode == "processes" else {}))
except ImportError:  # commits before it: the loop their train_gems ran, on torch's intra-op threads
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    def train_step(s, k, generator, accuracy):
        terms = model.loss(s, k, 1.0, 0.5, generator=generator, accuracy=accuracy)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        return terms
def run(n):
    t0 = time.perf_counter()
    for i, (s, k) in enumerate(batches[:n]):
        train_step(s, k, generator=g, accuracy=i % 10 == 0)
    return time.perf_counter() - t0
run(5)
print(json.dumps({"slates_per_s": steps * 256 / run(steps)}))
"""


def measure(code_dir: Path, threads: int, steps: int, mode: str = "ops", chunk: int = 0) -> float:
    env = dict(os.environ, PYTHONPATH=str(code_dir), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(steps), mode, str(chunk)], env=env, capture_output=True,
                         text=True, check=True, cwd=str(code_dir))
    return json.loads(out.stdout.strip().splitlines()[-1])["slates_per_s"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="checkout of the base commit")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--base-threads", type=int, help="threads of the base code (default: --threads)")
    ap.add_argument("--mode", choices=["ops", "shards", "processes"], default="ops",
                    help="this code's threads: torch's intra-op threads (ops), or CPU workers taking shares of each "
                         "batch on threads (shards) or in processes (processes)")
    ap.add_argument("--chunk", type=int, default=0,
                    help="this code's cross-entropy rows per chunk (default: TrainingStep's own choice)")
    args = ap.parse_args()
    here = Path(__file__).resolve().parents[1]
    rates: dict[str, list[float]] = {"this": [], "base": []}
    for _ in range(args.pairs):
        rates["this"].append(measure(here, args.threads, args.steps, args.mode, args.chunk))
        rates["base"].append(measure(args.base.resolve(), args.base_threads or args.threads, args.steps))
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    ratios = sorted(a / b for a, b in zip(rates["this"], rates["base"]))
    print(f"threads {args.threads} (base {args.base_threads or args.threads}): this {med['this']:.0f} slates/s, base {med['base']:.0f} slates/s, "
          f"ratio of medians x{med['this'] / med['base']:.2f}, pair ratios {', '.join(f'{r:.2f}' for r in ratios)}")
    print(json.dumps({"threads": args.threads, "base_threads": args.base_threads or args.threads, "rates": rates, "median": med, "ratio": med["this"] / med["base"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
