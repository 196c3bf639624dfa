"""Time the reference MF recipe's optimiser step at the paper's table size (100,000 episode rows,
1,000 items, dim 20, batch 256): torch's fused Adam against its per-tensor loop, one thread.

    .venv/bin/python scripts/bench_mf_reference.py [--episodes 100000] [--rounds 3]

Each round runs one validation pass of the recipe (10 % of the episodes' clicks, each batch an
optimiser step) with each optimiser in turn and prints milliseconds per step. That first pass
starts from fresh moments; later ones ran ~7x slower before the recipe flushed denormals
(:func:`gym_slaterec.mf_reference.flushed_denormals`): time whole validation records with
``slaterec train-mf DATA --recipe reference --max-minutes M`` to see that part.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from gym_slaterec.mf_reference import train_reference_recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=100_000)
    ap.add_argument("--clicks-per-episode", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(args.episodes), args.clicks_per_episode)
    items = rng.integers(0, 1000, size=len(users))
    steps = -(-int((users < int(args.episodes * 0.1)).sum()) // 256)  # one validation pass
    print(f"{args.episodes:,} user rows x 20, 1,000 items; {steps} steps per validation pass")
    for r in range(args.rounds):
        line = []
        for fused in (False, True):
            t = time.perf_counter()
            train_reference_recipe(users, items, args.episodes, 1000, seed=r, epochs=1, patience=3, dim=20, lr=1e-4,
                                   batch_size=256, val_fraction=0.1, device="cpu", report=lambda rec: None,
                                   max_seconds=1e-9, fused=fused)
            line.append(f"{'fused' if fused else 'per-tensor'} {1e3 * (time.perf_counter() - t) / steps:.2f} ms/step")
        print(f"round {r + 1}: " + ", ".join(line))


if __name__ == "__main__":
    main()
