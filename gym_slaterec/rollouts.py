"""Batched roll-outs of reference policies: evaluation and logged-data generation."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .core.config import resolve_env_id
from .core.embeddings import EmbeddingsLike
from .core.threads import single_threaded
from .envs.topicrec import VECTOR_ENVS
from .logged_data import DatasetWriter, LoggedDataset
from .policies import make_policy
from .provenance import PathLike, provenance
from .progress import progress as progress_bar

#: Users simulated at once; large batches amortise numpy's per-call overhead.
DEFAULT_BATCH = 4096


@dataclass
class ReturnStats:
    mean: float
    std: float
    ci95: tuple[float, float]
    episodes: int

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "ci95": list(self.ci95), "episodes": self.episodes}


def return_stats(returns: np.ndarray) -> ReturnStats:
    """Mean return with its 95 % Student-t confidence interval."""
    from scipy import stats

    r = np.asarray(returns, dtype=np.float64)
    n = len(r)
    if n == 0:
        raise ValueError("no episodes to summarise")
    mean = float(r.mean())
    std = float(r.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else float("nan")
    return ReturnStats(mean, std, (mean - half, mean + half), n)


def make_vector_env(env_id: str, num_envs: int, item_embeddings: Optional[EmbeddingsLike] = None, /, **overrides: Any):
    """The native vector env of ``env_id`` (same as ``gymnasium.make_vec(..., "vector_entry_point")``).

    ``env_id`` may be a short name or a reference-code alias; the item matrix may
    come as ``item_embeddings`` or among the overrides (a run's ``env_kwargs``).
    """
    env_id = resolve_env_id(env_id)
    if "item_embeddings" in overrides:
        from_overrides = overrides.pop("item_embeddings")
        if item_embeddings is None:
            item_embeddings = from_overrides
        elif from_overrides is not None and not _same_matrix_spec(item_embeddings, from_overrides):
            raise ValueError(
                f"two item-embedding matrices given: {_describe(item_embeddings)} and {_describe(from_overrides)}"
            )
    return VECTOR_ENVS[env_id](num_envs=num_envs, item_embeddings=item_embeddings, **overrides)


def recorded_env_kwargs(item_embeddings: Optional[EmbeddingsLike], env_kwargs: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The overrides that rebuild an artifact's environment later (stored in its provenance):
    ``env_kwargs`` plus the item matrix when it is a shipped name or a file (an in-memory
    array cannot be recorded; its fingerprint still is)."""
    out = dict(env_kwargs or {})
    if item_embeddings is not None and not isinstance(item_embeddings, np.ndarray):
        from .core.embeddings import normalise_matrix_spec

        out["item_embeddings"] = normalise_matrix_spec(item_embeddings)
    return out


def _describe(spec: Any) -> str:
    return f"array of shape {spec.shape}" if isinstance(spec, np.ndarray) else repr(str(spec))


def _same_matrix_spec(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is b
    return str(a) == str(b)


def _check_counts(episodes: int, batch_size: int) -> None:
    for name, v in (("episodes", episodes), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def rollout_reference_policy(
    env_id: str,
    policy: str,
    episodes: int,
    seed: int,
    epsilon: float = 0.5,
    item_embeddings: Optional[EmbeddingsLike] = None,
    batch_size: int = DEFAULT_BATCH,
    on_batch: Optional[Callable[[int, np.ndarray, np.ndarray], None]] = None,
    progress: bool = False,
    env_kwargs: Optional[dict[str, Any]] = None,
) -> np.ndarray:
    """Play ``episodes`` episodes of a reference policy; returns their returns.

    Episode ``j`` is played by user seed ``seed + j`` (policy stream likewise), so
    results do not depend on ``batch_size``. ``on_batch(start, slates, clicks)``
    receives each batch's full trajectories, shaped (b, turns + 1, k).
    """
    _check_counts(episodes, batch_size)
    with single_threaded():
        return _rollout(env_id, policy, episodes, seed, epsilon, item_embeddings, batch_size, on_batch, progress, env_kwargs)


def _rollout(env_id, policy, episodes, seed, epsilon, item_embeddings, batch_size, on_batch, progress, env_kwargs):
    returns = np.zeros(episodes, dtype=np.float64)
    env = None
    bar = progress_bar(progress, total=episodes, unit="ep", desc=f"{policy} on {env_id}")
    with contextlib.closing(bar):
        for start in range(0, episodes, batch_size):
            b = min(batch_size, episodes - start)
            if env is None or env.num_envs != b:
                env = make_vector_env(env_id, b, item_embeddings, **(env_kwargs or {}))
                pol = make_policy(policy, env, seed=seed + start, epsilon=epsilon)
            pol.seed(seed + start)
            obs, _ = env.reset(seed=seed + start)
            T = env.config.episode_length
            k = env.simulator.slate_size
            keep = on_batch is not None
            if keep:
                slates = np.empty((b, T + 1, k), dtype=np.int64)
                clicks = np.empty((b, T + 1, k), dtype=np.uint8)
                slates[:, 0], clicks[:, 0] = obs["slate"], obs["clicks"]
            ret = np.zeros(b)
            for t in range(1, T + 1):
                obs, reward, terminated, _, _ = env.step(pol(obs))
                ret += reward
                if keep:
                    slates[:, t], clicks[:, t] = obs["slate"], obs["clicks"]
            assert terminated.all()
            returns[start : start + b] = ret
            if keep:
                on_batch(start, slates, clicks)
            bar.update(b)
    return returns


def evaluate_reference_policy(env_id: str, policy: str, episodes: int, seed: int, **kwargs: Any) -> ReturnStats:
    """Mean return and 95 % interval of a reference policy."""
    return return_stats(rollout_reference_policy(env_id, policy, episodes, seed, **kwargs))


def generate_logged_data(
    env_id: str,
    out: PathLike,
    policy: str = "epsilon-greedy",
    episodes: int = 100_000,
    seed: int = 0,
    epsilon: float = 0.5,
    item_embeddings: Optional[EmbeddingsLike] = None,
    overwrite: bool = False,
    batch_size: int = DEFAULT_BATCH,
    progress: bool = True,
    env_kwargs: Optional[dict[str, Any]] = None,
) -> LoggedDataset:
    """Write a logged dataset of a reference policy (docs/method.md section 5) to ``out``."""
    _check_counts(episodes, batch_size)
    probe = make_vector_env(env_id, 1, item_embeddings, **(env_kwargs or {}))
    sim = probe.simulator
    prov = provenance(
        "logged_dataset",
        env_id=env_id,
        env_params={**sim.config.to_dict(), "item_embeddings": sim.catalogue.source},
        item_embeddings_fingerprint=sim.catalogue.fingerprint,
        seed=seed,
        hyperparameters={"episodes": episodes},
        item_embeddings_source=sim.catalogue.source,
        env_kwargs=recorded_env_kwargs(item_embeddings, env_kwargs),
        policy={"name": policy, **({"epsilon": epsilon} if policy == "epsilon-greedy" else {})},
    )
    out = Path(out)
    with DatasetWriter(out, episodes, sim.config.episode_length, sim.slate_size, sim.num_items, prov, overwrite) as writer:
        rollout_reference_policy(
            env_id, policy, episodes, seed, epsilon, item_embeddings, batch_size,
            on_batch=writer.write, progress=progress, env_kwargs=env_kwargs,
        )
    assert writer.dataset is not None
    return writer.dataset
