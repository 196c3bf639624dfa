"""The short trainings behind tests/test_learning.py, one function per check and seed.

Shared by the tests and by ``scripts/learning_spread.py`` (which measures their spread
across seeds and CPU kernels, the source of the tests' margins). Each returns the
trained policy's test return, random's test return on the same users and their
difference (``gain``).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from sb3_slate.methods import resolve_config
from sb3_slate.runs import train_run

ENV = "SlateRec/FocusedTopDown-v0"
SHORT = {"episode_length": 10}
#: torch threads of the learning checks (the suite is also run with 2 to show the margins hold)
THREADS = int(os.environ.get("SLATEREC_TEST_THREADS", "1"))


def over_seeds(check: Callable[[Path, int], dict[str, Any]], root: Path, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """``check(root / f"s{seed}", seed)`` for every seed, the seeds side by side in processes of
    their own (one per core, one torch thread each: the same runs as one after the other)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # under pytest-xdist the suite's workers already share the cores
    workers = min(len(seeds), cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    if workers <= 1:
        return [check(root / f"s{seed}", seed) for seed in seeds]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(check, [root / f"s{seed}" for seed in seeds], seeds))


def random_test_return(out: Path, env_kwargs: dict[str, Any], test_users: int = 100) -> float:
    cfg = resolve_config("random", ENV, {"val_users": 10, "test_users": test_users, "env_kwargs": dict(env_kwargs)})
    return float(train_run(cfg, out, progress=False)["test"]["mean"])


def sac_learning_run(out: Path, seed: int, episodes: int = 300) -> dict[str, Any]:
    """SAC+TopK (ideal) in the paper's regime, ``episodes`` ten-turn episodes, seed ``seed``."""
    torch.set_num_threads(THREADS)
    cfg = resolve_config("sac-topk-ideal", ENV, {
        "replay": "episode", "episodes": episodes, "n_envs": 20, "val_every": 60, "checkpoint_every": 0,
        "val_users": 100, "test_users": 100, "env_kwargs": dict(SHORT), "seed": seed,
        "agent": {"batch_episodes": 16, "buffer_episodes": 400, "warmup_episodes": 40, "net_arch": [64], "updates_per_episode": 8},
    })
    res = train_run(cfg, out / "run", progress=False)
    rand = random_test_return(out / "random", SHORT)
    curve = [v["mean"] for v in res["validation"]]
    return {"test": res["test"]["mean"], "random": rand, "gain": res["test"]["mean"] - rand,
            "untrained": curve[0], "best_validation": max(curve)}


def offline_learning_run(out: Path, seed: int, episodes: int = 100, steps: int = 300) -> dict[str, Any]:
    """TD3+BC on ``episodes`` episodes of the shipped FocusedTopDown medium policy (its own GeMS
    latents, users drawn from ``seed``), ``steps`` gradient steps with seed ``seed``."""
    from d3rlpy_adapters.benchmark import shipped_policies
    from d3rlpy_adapters.collect import collect
    from d3rlpy_adapters.export import export_d3rlpy
    from d3rlpy_adapters.offline import OfflineConfig, train_offline

    torch.set_num_threads(THREADS)
    medium = shipped_policies("FocusedTopDown") / "medium"
    gems = medium / "inputs" / "gems.pt"
    data = collect(ENV, medium, episodes, 7 + seed, out / "data", progress=False)
    h5 = export_d3rlpy(data, gems, out / "data.h5", window=5)
    cfg = OfflineConfig(steps=steps, eval_every=steps // 2, val_users=50, test_users=100, seed=seed)
    res = train_offline("td3bc", h5, gems, out / "td3bc", cfg, progress=False)
    rand = random_test_return(out / "random", {})
    return {"test": res["test"]["mean"], "random": rand, "gain": res["test"]["mean"] - rand,
            "data_mean": float(data.returns().mean())}


def gems_reconstruction_run(out: Path, seed: int) -> dict[str, Any]:
    """The GeMS training of tests/conftest.py (``trained``) with training seed ``seed``: its
    validation slate accuracy (tests/test_gems.py asserts > 0.5)."""
    from gym_slaterec.gems import GeMSConfig, train_gems
    from gym_slaterec.rollouts import generate_logged_data

    torch.set_num_threads(THREADS)
    data = generate_logged_data(ENV, out / "logged", episodes=300, seed=3, progress=False)
    config = GeMSConfig(latent_dim=256, lambda_kl=0.01, lr=3e-3, epochs=20, seed=seed, eval_every=300,
                        val_max_samples=3000)
    ckpt = train_gems(data, config, out=out / "gems.pt", progress=False, max_steps=600)
    return {"slate_acc": float(ckpt.val_metrics["slate_acc"]), "gain": float(ckpt.val_metrics["slate_acc"])}


def mf_auc_run(out: Path, seed: int) -> dict[str, Any]:
    """The MF training of tests/test_mf.py with seed ``seed``: its validation AUC (asserted > 0.8)."""
    from gym_slaterec.mf import train_mf
    from gym_slaterec.rollouts import generate_logged_data

    torch.set_num_threads(THREADS)
    data = generate_logged_data(ENV, out / "train", episodes=400, seed=0, progress=False)
    mf = train_mf(data, out / "mf.npz", seed=seed, epochs=6, patience=3, lr=1e-2, progress=False)
    return {"val_auc": float(mf.metrics["val_auc"]), "gain": float(mf.metrics["val_auc"])}

