"""Checkpoint write and read times: SlateRec's weights-only format against SB3's own
(cloudpickle) format, for the SAC model of a window-regime run and its replay buffer.

    python scripts/bench_checkpoints.py --repeats 20

Reading a SlateRec checkpoint rebuilds the model from the run's configuration and loads
the weights; SB3's ``load`` unpickles the model description instead (which can run code).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--buffer-turns", type=int, default=20_000, help="turns stored in the replay buffer")
    args = parser.parse_args()

    import numpy as np
    import torch

    from sb3_slate.agents import SlateSAC
    from sb3_slate.checkpoints import load_replay_buffer, save_checkpoint, save_replay_buffer
    from sb3_slate.envs import SB3VecEnv
    from sb3_slate.methods import Artifacts, build_model, resolve_config, wrap_env
    from sb3_slate.runs import base_env, rebuild_model

    torch.set_num_threads(1)
    cfg = resolve_config("sac-topk-ideal", "SlateRec/FocusedTopDown-v0", preset="window")
    wrapped = wrap_env(cfg, Artifacts(), base_env(cfg, cfg.n_envs, analysis=False))
    venv = SB3VecEnv(wrapped, seed=0)
    model = build_model(cfg, Artifacts(), venv, wrapped)
    rb = model.replay_buffer
    n = min(args.buffer_turns // rb.n_envs, rb.buffer_size)
    rng = np.random.default_rng(0)
    for name, arr in {**rb.observations, **{f"next_{k}": v for k, v in rb.next_observations.items()}}.items():
        arr[:n] = rng.integers(0, 2, size=arr[:n].shape)
    rb.actions[:n] = rng.uniform(-1, 1, size=rb.actions[:n].shape)
    rb.pos = n
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ours, sb3 = d / "ours.zip", d / "sb3.zip"
        res = {
            "write_ours_s": timed(lambda: save_checkpoint(model, ours), args.repeats),
            "write_sb3_s": timed(lambda: model.save(sb3), args.repeats),
            "read_ours_s (rebuild + weights)": timed(lambda: rebuild_model(cfg, Artifacts(), ours), args.repeats),
            "read_sb3_s (unpickle)": timed(lambda: SlateSAC.load(sb3, device="cpu"), args.repeats),
            "buffer_write_ours_s": timed(lambda: save_replay_buffer(rb, d / "rb.npz"), max(3, args.repeats // 4)),
            "buffer_write_sb3_s": timed(lambda: model.save_replay_buffer(d / "rb.pkl"), max(3, args.repeats // 4)),
            "buffer_read_ours_s": timed(lambda: load_replay_buffer(rb, d / "rb.npz"), max(3, args.repeats // 4)),
            "buffer_read_sb3_s": timed(lambda: model.load_replay_buffer(d / "rb.pkl"), max(3, args.repeats // 4)),
            "size_ours_kb": ours.stat().st_size / 1e3, "size_sb3_kb": sb3.stat().st_size / 1e3,
            "buffer_size_ours_mb": (d / "rb.npz").stat().st_size / 1e6,
            "buffer_size_sb3_mb": (d / "rb.pkl").stat().st_size / 1e6, "buffer_turns": n * rb.n_envs,
        }
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}, indent=2))


if __name__ == "__main__":
    main()
