"""Gradient-step and acting time of SlateQ in the paper regime, corrected against reference, one
thread, paper sizes: 20 episodes of 100 turns per step, 1,000 items, 10 ranks; acting (belief
step, item values, relevance, top-k, env step) for 100 users at once.

    python scripts/bench_slateq_variants.py          # BENCHMARKS.md "Issue #23: SlateQ"
    python scripts/bench_slateq_variants.py --click-rate 0.3 --variants corrected --no-act

``--click-rate``: the probability of a click on each shown item of the replayed episodes (the
loss regresses clicked items only, so its cost follows it; 0.3 is a return of ~300).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sb3_slate import runs
from sb3_slate.methods import Artifacts, build_model, resolve_config, wrap_env

ENV, T, USERS = "SlateRec/FocusedTopDown-v0", 100, 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--click-rate", type=float, default=0.5)
    parser.add_argument("--variants", nargs="+", default=["corrected", "reference"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-act", action="store_true", help="time gradient steps only")
    args = parser.parse_args()
    from gym_slaterec.core.allocator import keep_freed_memory

    torch.set_num_threads(1)
    keep_freed_memory()  # as slaterec train
    print("| SlateQ (paper regime, 1 thread) | gradient step (ms) | act + env step, 100 users (ms) |")
    print("|---|---:|---:|")
    for variant in args.variants:
        cfg = resolve_config("slateq", ENV, {"variant": variant, "n_envs": USERS}, preset="paper")
        wrapped = wrap_env(cfg, Artifacts(), runs.base_env(cfg, USERS))
        model = build_model(cfg, Artifacts(), wrapped, wrapped)
        rng = np.random.default_rng(0)
        for _ in range(2):
            model.replay_buffer.add(rng.integers(0, 1000, (USERS, T + 1, 10)),
                                    (rng.random((USERS, T + 1, 10)) < args.click_rate).astype(np.uint8),
                                    rng.normal(0, 0.1, (USERS, T, 20)).astype(np.float32), np.zeros((USERS, T), np.float32))
        model.train_step()
        steps = args.steps
        start = time.perf_counter()
        for _ in range(steps):
            model.train_step()
        step_ms = (time.perf_counter() - start) / steps * 1e3
        if args.no_act:
            print(f"| {variant} | {step_ms:.1f} | - |")
            continue
        obs, _ = wrapped.reset(seed=0)
        state = None
        start = time.perf_counter()
        for _ in range(20):
            action, state = model.predict(obs, state)
            obs, *_ = wrapped.step(action)
        act_ms = (time.perf_counter() - start) / 20 * 1e3
        print(f"| {variant} | {step_ms:.0f} | {act_ms:.1f} |")


if __name__ == "__main__":
    main()
