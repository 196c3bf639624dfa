"""Throughput of the paper regime's episode-replay SAC (sb3_slate.agents.EpisodeSAC).

Gradient steps per second at the paper's batch (20 episodes x 101 turns, latent 32,
one hidden layer of 256, beliefs of 20), with 1 and 2 torch threads; and collection
turns per second (belief step + actor + GeMS decoding + simulator, all users at once).

    python scripts/bench_episode_sac.py --gems runs/exp/gems.pt --steps 60 --users 100
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from gym_slaterec.core.allocator import keep_freed_memory
from gym_slaterec.gems import GeMSCheckpoint
from gym_slaterec.rollouts import make_vector_env
from gym_slaterec.wrappers import GeMSAction
from sb3_slate.agents.episode_sac import EpisodeSAC
from sb3_slate.agents.gru_sequence import gru_sequence, torch_gru_sequence


def gradient_steps_per_s(threads: int, steps: int, latent: int) -> float:
    torch.set_num_threads(threads)
    keep_freed_memory()  # as `slaterec train`
    m = EpisodeSAC(1000, 10, 100, latent, batch_size=20, buffer_size=200, warmup_episodes=0, seed=0)
    rng = np.random.default_rng(0)
    m.replay_buffer.add(rng.integers(0, 1000, (200, 101, 10)), rng.integers(0, 2, (200, 101, 10)).astype(np.uint8),
                        rng.uniform(-1, 1, (200, 100, latent)).astype(np.float32),
                        rng.integers(0, 4, (200, 100)).astype(np.float32))
    for _ in range(3):
        m.train_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        m.train_step()
    return steps / (time.perf_counter() - t0)


def ab_unroll(latent: int, rounds: int = 6, steps: int = 15) -> None:
    """Gradient steps with the default unroll (per-slot input projections, hand-written recurrence),
    the hand-written GRU on the concatenated inputs, and torch.nn.GRU, alternating in one process."""
    import sb3_slate.agents.episode_sac as module

    torch.set_num_threads(1)
    keep_freed_memory()
    m = EpisodeSAC(1000, 10, 100, latent, batch_size=20, buffer_size=200, warmup_episodes=0, seed=0)
    rng = np.random.default_rng(0)
    m.replay_buffer.add(rng.integers(0, 1000, (200, 101, 10)), rng.integers(0, 2, (200, 101, 10)).astype(np.uint8),
                        rng.uniform(-1, 1, (200, 100, latent)).astype(np.float32),
                        rng.integers(0, 4, (200, 100)).astype(np.float32))
    original = module.unroll_pair.__defaults__
    rates: dict[str, list[float]] = {"slot projection": [], "hand-written": [], "nn.GRU": []}
    try:
        for r in range(rounds):
            for name, fn in (("slot projection", None), ("hand-written", gru_sequence), ("nn.GRU", torch_gru_sequence)):
                module.unroll_pair.__defaults__ = (fn,)
                t0 = time.perf_counter()
                for _ in range(steps):
                    m.train_step()
                if r:  # round 0 warms up
                    rates[name].append(steps / (time.perf_counter() - t0))
    finally:
        module.unroll_pair.__defaults__ = original
    for name, v in rates.items():
        print(f"{name:15s} median {sorted(v)[len(v) // 2]:.1f} steps/s  ({', '.join(f'{x:.1f}' for x in v)})")


def collection_turns_per_s(gems: str, users: int, episodes: int) -> float:
    torch.set_num_threads(1)
    ckpt = GeMSCheckpoint.load(gems, allow_env_mismatch=True)
    env = GeMSAction(make_vector_env("SlateRec/FocusedTopDown-v0", users), ckpt)
    m = EpisodeSAC(1000, 10, 100, ckpt.latent_dim, warmup_episodes=0, seed=0)
    turns = 0
    t0 = time.perf_counter()
    for e in range(episodes):
        obs, _ = env.reset(seed=e * users)
        state = None
        for _ in range(100):
            action, state = m.predict(obs, state, deterministic=False)
            obs, *_ = env.step(action)
            turns += users
    return turns / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gems", required=True, help="a GeMS checkpoint (for the decoder and the latent size)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--batches", type=int, default=5, help="batches of --users episodes collected")
    ap.add_argument("--ab-unroll", action="store_true", help="only the A/B/C of the GRU unroll (slot projections, hand-written on the inputs, torch.nn.GRU)")
    args = ap.parse_args()
    latent = GeMSCheckpoint.load(args.gems, allow_env_mismatch=True).latent_dim
    if args.ab_unroll:
        ab_unroll(latent)
        return 0
    for threads in (1, 2):
        print(f"gradient steps/s, {threads} thread(s): {gradient_steps_per_s(threads, args.steps, latent):.1f}", flush=True)
    rate = collection_turns_per_s(args.gems, args.users, args.batches)
    print(f"collection, {args.users} users at once: {rate:,.0f} turns/s (10M turns: {1e7 / rate / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
