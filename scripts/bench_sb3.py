"""Benchmark: SAC+GeMS training throughput (turns/s, gradient steps/s) on this CPU.

Usage::

    .venv/bin/python scripts/bench_sb3.py --gems runs/gems_focused_topdown.pt [--turns 4000]
        [--n-envs 4] [--batch-size 64] [--window 10] [--gradient-steps 1] [--threads 1]

Measures, on SlateRec/FocusedTopDown-v0 with the paper's SAC hyper-parameters:
environment-only turns/s of the wrapped stack (GeMS decode + history window,
random actions), warm-up collection turns/s (random actions into the replay
buffer), and training turns/s and gradient steps/s (one SB3 ``learn`` call).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gems", required=True)
    p.add_argument("--env-id", default="SlateRec/FocusedTopDown-v0")
    p.add_argument("--turns", type=int, default=4000, help="training turns measured")
    p.add_argument("--n-envs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--gradient-steps", type=int, default=1)
    p.add_argument("--train-freq", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from sb3_slate.envs import SB3VecEnv
    from sb3_slate.methods import build_model, load_artifacts, resolve_config, wrap_env
    from gym_slaterec.rollouts import make_vector_env

    cfg = resolve_config("sac-gems", args.env_id, {
        "gems": args.gems, "n_envs": args.n_envs, "window": args.window,
        "agent": {"batch_transitions": args.batch_size, "gradient_steps": args.gradient_steps,
                  "train_freq": args.train_freq, "warmup_episodes": 0},
    }, preset="window")
    base = make_vector_env(args.env_id, args.n_envs, analysis_info=True)
    art = load_artifacts(cfg, args.env_id, base.simulator.catalogue.fingerprint)
    wrapped = wrap_env(cfg, art, base)
    env = SB3VecEnv(wrapped, seed=0)

    # 1. env only (random actions)
    env.reset()
    rng = np.random.default_rng(0)
    n = 200
    t = time.perf_counter()
    for _ in range(n):
        env.step(rng.uniform(-1, 1, (args.n_envs, art.gems.latent_dim)).astype(np.float32))
    env_tps = n * args.n_envs / (time.perf_counter() - t)

    # 2. warm-up collection (random actions through SB3 into the replay buffer)
    model = build_model(cfg, art, env, wrapped)
    model.learning_starts = 10**9
    warm = 2000
    t = time.perf_counter()
    model.learn(total_timesteps=warm)
    warm_tps = warm / (time.perf_counter() - t)

    # 3. training: one gradient step per train_freq vec-env steps
    model.learning_starts = 0
    before = model._n_updates
    t = time.perf_counter()
    model.learn(total_timesteps=args.turns, reset_num_timesteps=False)
    dt = time.perf_counter() - t
    result = {
        "env_id": args.env_id, "n_envs": args.n_envs, "batch_size": args.batch_size, "window": args.window,
        "gradient_steps": args.gradient_steps, "train_freq": args.train_freq, "threads": args.threads,
        "env_only_turns_per_s": round(env_tps, 1),
        "warmup_turns_per_s": round(warm_tps, 1),
        "train_turns_per_s": round(args.turns / dt, 1),
        "gradient_steps_per_s": round((model._n_updates - before) / dt, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
