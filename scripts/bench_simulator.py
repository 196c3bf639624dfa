"""Simulator throughput: single env through gymnasium.make and the native vector env.

    .venv/bin/python scripts/bench_simulator.py                 # full run (~1.5 min on an idle machine)
    .venv/bin/python scripts/bench_simulator.py --quick         # a few seconds, smoke test

Targets (issue 2, 2-core machine): single env >= 10,000 turns/s; vector env with the
random policy >= 500,000 turns/s at 1,024 users. Prints a markdown table and one
JSON line. Runs on one thread (OMP/MKL/OPENBLAS threads and torch threads = 1).

Each setting is timed as ``--repeats`` consecutive segments of equal length; the table
gives the median segment (judged against the targets) and the best one. The speed of
this shared VM drifts by up to +-25 % between minutes; the best segment shows what the
code does when the machine is not slowed down, the spread how much it was.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402

import gym_slaterec  # noqa: E402
from gym_slaterec.policies import make_policy  # noqa: E402

ENV_ID = "SlateRec/FocusedTopDown-v0"


@dataclass
class Result:
    setting: str
    users: int
    turns: int  # per segment
    seconds: list[float]  # wall time of each segment
    cpu_seconds: list[float]  # process time of each segment

    @property
    def turns_per_s(self) -> float:
        """Median over segments (wall clock)."""
        return self.turns / statistics.median(self.seconds)

    @property
    def best_turns_per_s(self) -> float:
        return self.turns / min(self.seconds)

    @property
    def turns_per_cpu_s(self) -> float:
        return self.turns / statistics.median(self.cpu_seconds)


def timed_segments(segment, repeats: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``repeats`` calls of ``segment()``."""
    wall, cpu = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        segment()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return wall, cpu


def bench_single(policy: str, turns: int, repeats: int) -> Result:
    """Turns/s of one gymnasium.make env (with its wrappers), fixed action or random policy."""
    env = gymnasium.make(ENV_ID)
    pol = make_policy("random", env, seed=0) if policy == "random" else None
    action = np.arange(10, dtype=np.int64)
    state = {"obs": env.reset(seed=0)[0]}
    episodes = max(1, turns // 100)

    def segment() -> None:
        obs = state["obs"]
        for _ in range(episodes):
            for _ in range(100):
                obs, _, terminated, _, _ = env.step(action if pol is None else pol(obs))
            assert terminated
            obs, _ = env.reset()
        state["obs"] = obs

    wall, cpu = timed_segments(segment, repeats)
    return Result(f"single env, {'fixed action' if pol is None else 'random policy'}", 1, episodes * 100, wall, cpu)


def bench_vector(users: int, turns: int, repeats: int) -> Result:
    """Turns/s (users x steps) of the native vector env driven by the random policy."""
    venv = gymnasium.make_vec(ENV_ID, num_envs=users, vectorization_mode="vector_entry_point")
    pol = make_policy("random", venv, seed=0)
    state = {"obs": venv.reset(seed=0)[0]}
    for _ in range(5):  # warm-up
        state["obs"], *_ = venv.step(pol(state["obs"]))
    steps = max(20, -(-turns // users))

    def segment() -> None:
        obs = state["obs"]
        for _ in range(steps):
            obs, *_ = venv.step(pol(obs))
        state["obs"] = obs

    wall, cpu = timed_segments(segment, repeats)
    return Result("vector env, random policy", users, steps * users, wall, cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small budgets, for a smoke test")
    parser.add_argument("--users", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=5, help="timed segments per setting (default 5)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    single_turns = 1_000 if args.quick else 20_000  # per segment
    vector_turns = 40_000 if args.quick else 800_000
    results = [bench_single("fixed", single_turns, args.repeats), bench_single("random", single_turns, args.repeats)]
    results += [bench_vector(u, vector_turns, args.repeats) for u in args.users]

    print(f"\nslaterec {gym_slaterec.__version__}, numpy {np.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs visible, 1 thread, {args.repeats} segments per setting\n")
    print("| setting | users | turns per segment | turns/s (median segment) | turns/s (best segment) | turns/s (CPU, median) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.setting} | {r.users:,} | {r.turns:,} | {r.turns_per_s:,.0f} | {r.best_turns_per_s:,.0f} "
              f"| {r.turns_per_cpu_s:,.0f} |")
    targets = {"single_fixed": (results[0].turns_per_s, 10_000)}
    for r in results[2:]:
        if r.users == 1024:
            targets["vector_1024_random"] = (r.turns_per_s, 500_000)
    print()
    for name, (value, target) in targets.items():
        print(f"{name}: {value:,.0f} turns/s, median segment (target >= {target:,}) "
              f"{'OK' if value >= target else 'BELOW TARGET'}")
    print(json.dumps({
        "benchmark": "simulator",
        "quick": args.quick,
        "results": [{**asdict(r), "turns_per_s": r.turns_per_s, "best_turns_per_s": r.best_turns_per_s,
                     "turns_per_cpu_s": r.turns_per_cpu_s} for r in results],
        "targets_met": {name: value >= target for name, (value, target) in targets.items()},
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
