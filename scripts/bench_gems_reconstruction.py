"""GeMS reconstruction after a short training, for several configurations.

Trains one GeMS per configuration on a small epsilon-greedy dataset and prints the
fraction of logged items that encode-then-decode gives back, on held-out episodes and
on training episodes:

    .venv/bin/python scripts/bench_gems_reconstruction.py latent_dim=32 \\
        latent_dim=256,lambda_kl=0.01,lr=0.003 latent_dim=128,steps=300

Each argument is a comma-separated list of GeMSConfig fields (plus ``steps``, the
number of optimiser steps, default 600). Results in BENCHMARKS.md (GeMS section).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from gym_slaterec.gems import GeMSConfig, train_gems
from gym_slaterec.rollouts import generate_logged_data


def reconstruction(ckpt, ds, episodes: np.ndarray) -> float:
    s = np.asarray(ds.slates[episodes]).reshape(-1, ds.slate_size).astype(np.int64)
    c = np.asarray(ds.clicks[episodes]).reshape(-1, ds.slate_size)
    return float((ckpt.decode_latent(ckpt.encode_latent(s, c)) == s).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="+", help="e.g. latent_dim=256,lambda_kl=0.01,lr=0.003,steps=600")
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--data-seed", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="gems_recon_"))
    ds = generate_logged_data("SlateRec/FocusedTopDown-v0", work / "logged", episodes=args.episodes,
                              seed=args.data_seed, progress=False)
    print("| configuration | held-out | training | wall s |\n|---|---:|---:|---:|")
    for i, spec in enumerate(args.configs):
        kw = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in spec.split(","))}
        steps = int(kw.pop("steps", 600))
        config = GeMSConfig(**{"epochs": 100, "seed": 0, "eval_every": 10**6, "val_max_samples": 3000, **kw})
        train_eps, val_eps = ds.split(config.val_fraction, config.seed)
        t0 = time.time()
        ckpt = train_gems(ds, config, out=work / f"gems{i}.pt", progress=False, max_steps=steps)
        print(f"| {spec} ({steps} steps) | {reconstruction(ckpt, ds, val_eps):.3f} | "
              f"{reconstruction(ckpt, ds, train_eps[:30]):.3f} | {time.time() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
