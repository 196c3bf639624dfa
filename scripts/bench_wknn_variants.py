"""Gradient-step and acting time of SAC+WkNN in the paper regime, corrected against reference
(and each reference switch alone), one thread, paper sizes: 20 episodes of 100 turns per step,
1,000 items, 10 ranks of 20-d targets, k' = 10; acting for 100 users at once.

    python scripts/bench_wknn_variants.py            # BENCHMARKS.md "SAC+WkNN variants"
    python scripts/bench_wknn_variants.py --greedy   # the greedy choice alone, both fills

Against older code: ``PYTHONPATH=WORKTREE python scripts/bench_wknn_variants.py``, alternated.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sb3_slate.agent_configs import WKNN_SWITCHES
from sb3_slate.agents.episode_sac import EpisodeSAC
from sb3_slate.agents.episode_sac.wknn import PAPER_SWITCHES, REFERENCE_SWITCHES, EpisodeWkNN

N, K, D, T, USERS = 1000, 10, 20, 100, 100


def fill(model, rng) -> None:
    for _ in range(2):
        model.replay_buffer.add(rng.integers(0, N, (USERS, T + 1, K)), rng.integers(0, 2, (USERS, T + 1, K)).astype(np.uint8),
                                rng.uniform(-1, 1, (USERS, T, model.replay_buffer.action_dim)).astype(np.float32), rng.random((USERS, T)).astype(np.float32))


def timed(model, steps: int = 8) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    model.train_step()
    t = time.perf_counter()
    for _ in range(steps):
        model.train_step()
    step_ms = (time.perf_counter() - t) / steps * 1e3
    obs = {"slate": rng.integers(0, N, (USERS, K)), "clicks": rng.integers(0, 2, (USERS, K))}
    state = None
    t = time.perf_counter()
    for _ in range(20):
        _, state = model.predict(obs, state)
    return step_ms, (time.perf_counter() - t) / 20 * 1e3


def greedy(rounds: int = 5) -> None:
    """Median time of :func:`greedy_slates` for one reference step's targets (2,000 beliefs x 10 ranks x
    10 candidates, a 256-unit Q head), both fills, and a digest of the choices (equal across versions)."""
    import hashlib

    from sb3_slate.agents.wolpertinger import greedy_slates

    torch.manual_seed(0)
    B, kp, H = 20 * T, 10, 256
    table, belief = torch.randn(N, D), torch.randn(B, 20)
    q = torch.nn.Sequential(torch.nn.Linear(20 + K * D, H), torch.nn.ReLU(), torch.nn.Linear(H, 1))
    cand = torch.randint(0, N, (B, K, kp))
    for fill in ("candidate", "nearest"):
        times = []
        with torch.no_grad():
            for _ in range(rounds):
                t = time.perf_counter()
                chosen = greedy_slates(cand, table, belief, q, fill)
                times.append(time.perf_counter() - t)
        digest = hashlib.sha256(chosen.numpy().tobytes()).hexdigest()[:12]
        print(f"greedy_slates fill={fill}: {sorted(times)[rounds // 2] * 1e3:.0f} ms (choices {digest})")


def main() -> None:
    import sys

    from gym_slaterec.core.allocator import keep_freed_memory

    torch.set_num_threads(1)
    keep_freed_memory()  # as slaterec train
    if "--greedy" in sys.argv[1:]:
        greedy()
        return
    table = np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)
    common = dict(num_items=N, slate_size=K, episode_length=T, action_dim=K * D, batch_size=20, buffer_size=300, seed=0)
    rows = [("corrected (EpisodeSAC + WolpertingerRefiner)", EpisodeSAC(wolpertinger_items=table, **common)),
            ("reference, every switch", EpisodeWkNN(switches=REFERENCE_SWITCHES, **common))]
    for name in WKNN_SWITCHES:
        one = {**PAPER_SWITCHES, name: WKNN_SWITCHES[name][1]}
        rows.append((f"paper readings but {name}={one[name]}", EpisodeWkNN(wknn_items=table, switches=one, **common)))
    print("| SAC+WkNN (paper regime, 1 thread) | gradient step (ms) | act, 100 users (ms) |")
    print("|---|---:|---:|")
    for name, model in rows:
        fill(model, np.random.default_rng(0))
        step, act = timed(model)
        print(f"| {name} | {step:.0f} | {act:.1f} |")


if __name__ == "__main__":
    main()
