"""Time of one offline gradient step (batch 256, GRU window encoders) per algorithm, one thread.

A synthetic dataset of 200 episodes x 100 turns (random slates, 10 % clicks, left-aligned
10-turn windows as the exporter writes them, 32-d latent actions) feeds each algorithm of
``d3rlpy_adapters.offline.make_algorithm``; after 3 warm-up updates, N updates are timed on
pre-sampled batches. ``--profile`` prints torch's operator table for 10 updates instead.
``--floor`` counts the matrix-product work of an update (torch's FLOP counter) and times this
core's own products of the same shapes as the update's, giving the fastest update that
arithmetic alone allows here (no overhead, no element-wise work): an upper bound on steps/s.
``--with-sampling`` times whole training steps (draw a batch, update) with d3rlpy's
per-transition sampler and with the vectorised one (:mod:`d3rlpy_adapters.sampler`) side by
side, in alternating rounds.

    .venv/bin/python scripts/bench_offline_step.py td3bc iql cql bcq bc --steps 20
    .venv/bin/python scripts/bench_offline_step.py td3bc iql cql bcq bc --steps 20 --with-sampling
    .venv/bin/python scripts/bench_offline_step.py td3bc iql cql bcq --steps 20 --shared --rounds 3
    .venv/bin/python scripts/bench_offline_step.py td3bc iql cql bcq bc --floor
    .venv/bin/python scripts/bench_offline_step.py td3bc iql cql bcq bc --steps 30 --adam --rounds 5

The other modes time the package's default learner (one belief shared by the networks).
``--shared`` times one encoder per network (``shared_encoder=false``) against the shared belief
side by side, in alternating rounds, each on its own learner fed the same batches; ``--adam``
times the optimisers on torch's per-tensor Adam (as before) against fused Adam the same way.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def synthetic_dataset(episodes: int = 200, turns: int = 100, seed: int = 0):
    import d3rlpy

    from d3rlpy_adapters.export import episode_windows
    from d3rlpy_adapters.window import WindowLayout

    layout = WindowLayout(10, 10, 1000)
    rng = np.random.default_rng(seed)
    slates = rng.integers(0, layout.num_items, (episodes, turns + 1, layout.slate_size))
    clicks = (rng.random((episodes, turns + 1, layout.slate_size)) < 0.1).astype(np.uint8)
    obs = episode_windows(slates, clicks, layout.window, layout.num_items).reshape(-1, layout.size)
    actions = rng.standard_normal((len(obs), 32)).astype(np.float32)
    rewards = rng.random((len(obs), 1)).astype(np.float32)
    terminals = np.zeros(len(obs))
    terminals[turns - 1 :: turns] = 1
    return layout, d3rlpy.dataset.MDPDataset(obs.astype(np.float32), actions, rewards, terminals)


def arithmetic_floor(algo: str, learner, batches) -> str:
    """GFLOP of the matrix products in one update, and the time this core takes for exactly
    those products (each recorded shape replayed alone, best of 5), as a line of text."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    shapes: Counter = Counter()
    products = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default}

    class Shapes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in products:
                mats = args[1:3] if func is torch.ops.aten.addmm.default else args[:2]
                shapes[(func.__name__.split(".")[0],) + tuple(tuple(m.shape) for m in mats)] += 1
            return func(*args, **(kwargs or {}))

    with FlopCounterMode(display=False) as counter, Shapes():
        for batch in batches:
            learner.update(batch)
    gflop = counter.get_total_flops() / len(batches) / 1e9
    seconds = 0.0
    for (_, a, b), count in shapes.items():
        x, y = torch.randn(*a), torch.randn(*b)
        reps = 20
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.matmul(x, y)
            best = min(best, (time.perf_counter() - t0) / reps)
        seconds += best * count / len(batches)
    return (f"{algo}: {gflop:.3f} GFLOP of matrix products per update, {seconds * 1e3:.1f} ms of them on this core "
            f"({gflop / seconds:.1f} GFLOP/s): at most {1 / seconds:.0f} steps/s from the products alone")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("algos", nargs="+", choices=["td3bc", "iql", "cql", "bcq", "bc"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--floor", action="store_true", help="matrix-product work per update and its time on this core")
    p.add_argument("--with-sampling", action="store_true", help="time draw + update, d3rlpy's sampler vs ours")
    p.add_argument("--shared", action="store_true", help="time separate encoders vs one shared belief")
    p.add_argument("--adam", action="store_true", help="time per-tensor Adam vs fused Adam (the default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (full float32, as the commands train)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of --with-sampling / --shared")
    args = p.parse_args()
    torch.set_num_threads(1)
    from d3rlpy_adapters.offline import OfflineConfig, fuse_optimisers, make_algorithm, tie_encoders
    from gym_slaterec.core.allocator import keep_freed_memory

    keep_freed_memory()  # as train-offline

    layout, data = synthetic_dataset()
    if args.device != "cpu":
        from gym_slaterec.devices import resolve_device

        resolve_device(args.device)
    def built(config: OfflineConfig, fused: bool = True):
        """The learner ``train-offline`` builds for ``config``, after 3 warm-up updates (``fused=False``:
        its Adams on torch's per-tensor loop, as before fused Adam)."""
        learner = make_algorithm(config, layout, args.device)
        learner.build_with_dataset(data)
        tie_encoders(learner, config)
        if fused:
            fuse_optimisers(learner)
        for _ in range(3):
            learner.update(data.sample_transition_batch(256))
        return learner

    for algo in args.algos:
        learner = built(OfflineConfig(algo=algo))  # the package's defaults
        if args.shared or args.adam:
            learners = ({"one encoder per network": built(OfflineConfig(algo=algo, shared_encoder=False)),
                         "shared belief": built(OfflineConfig(algo=algo, shared_encoder=True))} if args.shared else
                        {"per-tensor Adam": built(OfflineConfig(algo=algo), fused=False),
                         "fused Adam": built(OfflineConfig(algo=algo))})
            batches = [data.sample_transition_batch(256) for _ in range(args.steps)]
            times = {k: [] for k in learners}
            for _ in range(args.rounds):
                for name, lrn in learners.items():
                    t0 = time.perf_counter()
                    for batch in batches:
                        lrn.update(batch)
                    times[name].append((time.perf_counter() - t0) / len(batches) * 1e3)
            for name, ts in times.items():
                ms = float(np.median(ts))
                print(f"{algo} ({name}): {ms:.1f} ms/step, {1e3 / ms:.1f} steps/s (median of {args.rounds} rounds)", flush=True)
            continue
        if args.with_sampling:
            from d3rlpy_adapters.sampler import TransitionSampler

            draws = {"d3rlpy sampler": data.sample_transition_batch, "vectorised sampler": TransitionSampler.from_episodes(data.episodes).sample}
            times: dict[str, list[float]] = {k: [] for k in draws}
            for _ in range(args.rounds):
                for name, draw in draws.items():
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        learner.update(draw(256))
                    times[name].append((time.perf_counter() - t0) / args.steps * 1e3)
            for name, ts in times.items():
                ms = float(np.median(ts))
                print(f"{algo} ({name}): {ms:.1f} ms/step, {1e3 / ms:.1f} steps/s (median of {args.rounds} rounds)", flush=True)
            continue
        if args.floor:
            print(arithmetic_floor(algo, learner, [data.sample_transition_batch(256) for _ in range(4)]), flush=True)
            continue
        batches = [data.sample_transition_batch(256) for _ in range(10 if args.profile else args.steps)]
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                for batch in batches:
                    learner.update(batch)
            print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=20))
            continue
        t0 = time.perf_counter()
        for batch in batches:
            learner.update(batch)
        ms = (time.perf_counter() - t0) / len(batches) * 1e3
        print(f"{algo}: {ms:.1f} ms/step, {1e3 / ms:.1f} steps/s", flush=True)


if __name__ == "__main__":
    main()
