"""Collect offline datasets from any policy: a reference policy or a trained agent run.

The result is a :class:`~gym_slaterec.logged_data.LoggedDataset` folder (the
logged-data format) with extra per-turn arrays:

- ``rewards.npy`` (E, T) float32: the reward of every turn (= its clicks);
- ``actions.npy`` (E, T, A) float32: the policy's own action when it has one
  (e.g. a SAC+GeMS agent's normalised GeMS latent), absent for reference policies;

and a provenance that names the environment, the policy (reference name and
epsilon, or run directory, checkpoint, its fingerprint and method), the GeMS the
policy acted through, and the seed. Episode ``j`` is played by user
``seed + j``; every episode has the environment's full length (the session ends
after ``T`` turns), so episode boundaries are the dataset's first axis.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from gym_slaterec.logged_data import DatasetWriter, LoggedDataset
from gym_slaterec.policies import POLICY_NAMES, simulator_of
from gym_slaterec.provenance import (
    DATASET_KINDS,
    PathLike,
    ProvenanceMismatchError,
    check_writable,
    provenance,
    sha256_file,
)
from gym_slaterec.rollouts import DEFAULT_BATCH, make_vector_env, rollout_reference_policy
from gym_slaterec.progress import progress as progress_bar

COLLECT_KIND = "collected_dataset"


def _check_positive(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _env_probe(env_id: str, env_kwargs: dict):
    from gym_slaterec.core.config import preset

    env_id = preset(env_id).env_id  # accepts short names, raises on unknown ones
    sim = make_vector_env(env_id, 1, **env_kwargs).simulator
    return env_id, sim


def is_reference_policy(policy: Union[str, Path]) -> bool:
    return isinstance(policy, str) and policy in POLICY_NAMES + ("epsilon_greedy", "egreedy")


def checkpoint_episodes(name: str) -> Optional[int]:
    """The episode count in a checkpoint name (``"ep5000"``, ``"checkpoint_5000_episodes"``...), if any."""
    numbers = re.findall(r"\d+", Path(str(name)).stem)
    return int(numbers[-1]) if numbers else None


def resolve_checkpoint(available: list[str], wanted: str) -> str:
    """Pick a checkpoint by name: ``best``, ``last``, an exact name, or ``episodes:N``/``N``
    (the periodic checkpoint whose episode count is closest to N)."""
    wanted = str(wanted)
    if wanted in available or wanted in ("best", "last"):
        return wanted
    m = re.fullmatch(r"(?:episodes?:|ep)?(\d+)", wanted)
    if m:
        target = int(m.group(1))
        counted = [(abs(n - target), n, name) for name in available if (n := checkpoint_episodes(name)) is not None]
        if counted:
            return min(counted)[2]
    raise ValueError(f"no checkpoint {wanted!r} in the run; available: {available} (or best, last, episodes:N)")


def load_policy_agent(run_dir: PathLike, checkpoint: str = "best"):
    """Load an agent run (``sb3_slate``); returns ``(agent, checkpoint name)``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(
            f"--policy must be one of {', '.join(POLICY_NAMES)} or an agent run directory; {run_dir} is neither"
        )
    from gym_slaterec.provenance import identify_artifact
    from gym_slaterec.run_dirs import list_checkpoints

    if identify_artifact(run_dir)[0] == "offline_run":
        from .offline import load_offline_policy

        name = resolve_checkpoint(list_checkpoints(run_dir), checkpoint)
        agent = load_offline_policy(run_dir, checkpoint=name)
        return agent, agent.checkpoint
    from sb3_slate.runs import load_agent

    available = list_checkpoints(run_dir)
    name = resolve_checkpoint(available, checkpoint) if available else str(checkpoint)
    agent = load_agent(run_dir, checkpoint=name)
    return agent, getattr(agent, "checkpoint", name)


def _agent_record(agent: Any, run_dir: Path, name: str) -> dict[str, Any]:
    ckpt_file = getattr(agent, "checkpoint_path", None)
    if ckpt_file is None:
        found = sorted((Path(run_dir) / "checkpoints").glob(f"{name}.*"))
        ckpt_file = found[0] if found else None
    prov = getattr(agent, "provenance", {}) or {}
    record = {
        "kind": "agent",
        "run_dir": str(run_dir),
        "method": getattr(agent, "method", None),
        "checkpoint": name,
        "checkpoint_fingerprint": sha256_file(ckpt_file) if ckpt_file and Path(ckpt_file).is_file() else None,
        "run_fingerprint": prov.get("fingerprint") or _run_fingerprint(run_dir),
        "run_seed": prov.get("seed"),
    }
    return record


def _run_fingerprint(run_dir: Path) -> Optional[str]:
    for name in ("provenance.json", "config.json", "config.yaml"):
        if (run_dir / name).is_file():
            return sha256_file(run_dir / name)
    return None


def collect(
    env_id: str,
    policy: Union[str, Path],
    episodes: int,
    seed: int,
    out: PathLike,
    epsilon: float = 0.5,
    checkpoint: str = "best",
    overwrite: bool = False,
    batch_size: int = 1000,
    deterministic: bool = True,
    progress: bool = True,
    env_kwargs: Optional[dict[str, Any]] = None,
    item_embeddings: Optional[str] = None,
) -> LoggedDataset:
    """Play ``episodes`` episodes of ``policy`` on ``env_id`` and write them to ``out``.

    ``policy`` is ``random``, ``oracle``, ``epsilon-greedy`` or an agent run
    directory (``checkpoint``: ``best``, ``last``, a checkpoint name or
    ``episodes:N``). Agents act ``deterministic``-ally unless told otherwise.
    ``env_kwargs`` override environment parameters (recorded in the provenance);
    an agent run uses its own training overrides unless they are given.
    ``item_embeddings`` (a shipped name or a matrix file) replaces the item matrix.
    """
    _check_positive("episodes", episodes)
    _check_positive("batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    agent = name = None
    if not is_reference_policy(policy):
        agent, name = load_policy_agent(policy, checkpoint)
        if env_kwargs is None:
            env_kwargs = dict(getattr(agent, "env_kwargs", None) or getattr(getattr(agent, "config", None), "env_kwargs", {}) or {})
    env_kwargs = dict(env_kwargs or {})
    if item_embeddings is not None:
        from gym_slaterec.core.embeddings import normalise_matrix_spec

        env_kwargs["item_embeddings"] = normalise_matrix_spec(item_embeddings)
    env_id, sim = _env_probe(env_id, env_kwargs)
    check_writable(out, overwrite, DATASET_KINDS)
    T, k, N = sim.config.episode_length, sim.slate_size, sim.num_items
    common = dict(
        env_id=env_id,
        env_params=sim.config.to_dict(),
        item_embeddings_fingerprint=sim.catalogue.fingerprint,
        seed=seed,
        item_embeddings_source=sim.catalogue.source,
        episode_length=T,
        env_kwargs=env_kwargs,
        users={"first_seed": seed, "count": episodes, "rule": "episode j is played by user seed + j"},
    )
    if is_reference_policy(policy):
        name = "epsilon-greedy" if policy in ("epsilon_greedy", "egreedy") else str(policy)
        pol = {"kind": "reference", "name": name, **({"epsilon": epsilon} if name == "epsilon-greedy" else {})}
        prov = provenance(COLLECT_KIND, hyperparameters={"episodes": episodes}, policy=pol, gems=None, **common)
        extras = {"rewards": ((T,), np.float32)}
        with DatasetWriter(out, episodes, T, k, N, prov, overwrite, extras) as writer:
            def on_batch(start: int, slates: np.ndarray, clicks: np.ndarray) -> None:
                rewards = clicks[:, 1:].sum(-1, dtype=np.int64).astype(np.float32)
                writer.write(start, slates, clicks, rewards=rewards)

            rollout_reference_policy(
                env_id, name, episodes, seed, epsilon, batch_size=min(batch_size, DEFAULT_BATCH),
                on_batch=on_batch, progress=progress, env_kwargs=env_kwargs,
            )
        assert writer.dataset is not None
        return writer.dataset
    return _collect_agent(env_id, agent, name, Path(policy), episodes, seed, out, overwrite, batch_size,
                          deterministic, progress, common, (T, k, N), env_kwargs)


def _collect_agent(env_id, agent, name, run_dir, episodes, seed, out, overwrite, batch_size, deterministic,
                   progress, common, dims, env_kwargs) -> LoggedDataset:
    T, k, N = dims
    agent_env = (getattr(agent, "provenance", {}) or {}).get("env_id") or getattr(agent, "env_id", None)
    if agent_env is not None and agent_env != env_id:
        raise ProvenanceMismatchError(f"agent run {run_dir} was trained on {agent_env!r}, not on {env_id!r}")
    agent_items = (getattr(agent, "provenance", {}) or {}).get("item_embeddings_fingerprint")
    if agent_items is not None and agent_items != common["item_embeddings_fingerprint"]:
        raise ProvenanceMismatchError(
            f"agent run {run_dir} was trained with item embeddings {agent_items[:12]}, but the environment uses "
            f"{common['item_embeddings_fingerprint'][:12]} ({common['item_embeddings_source']}); "
            "pass the run's matrix with --item-embeddings, or none to use the run's own"
        )
    pol = _agent_record(agent, run_dir, name)
    pol["deterministic"] = bool(deterministic)
    gems_fp = getattr(agent, "gems_fingerprint", None)
    gems = {"fingerprint": gems_fp, "path": str(getattr(agent, "gems_path", None))} if gems_fp else None
    inputs = {"policy_checkpoint": pol["checkpoint_fingerprint"] or pol["run_fingerprint"] or ""}
    if gems_fp:
        inputs["gems"] = gems_fp
    # Probe the action shape on a one-user env (the wrapped env's action space).
    probe = agent.wrap_env(make_vector_env(env_id, 1, **env_kwargs))
    space = getattr(probe, "single_action_space", None)
    probe.close()
    shape = getattr(space, "shape", None)
    has_action = space is not None and shape is not None and np.issubdtype(space.dtype, np.floating)
    extras = {"rewards": ((T,), np.float32)}
    if has_action:
        extras["actions"] = ((T,) + tuple(shape), np.float32)
    prov = provenance(
        COLLECT_KIND, hyperparameters={"episodes": episodes, "checkpoint": name, "deterministic": deterministic},
        inputs=inputs, policy=pol, gems=gems, **common,
    )
    bar = progress_bar(progress, total=episodes, unit="ep", desc=f"collect {pol['method']}:{name}")
    with contextlib.closing(bar), DatasetWriter(out, episodes, T, k, N, prov, overwrite, extras) as writer:
        for start in range(0, episodes, batch_size):
            b = min(batch_size, episodes - start)
            env = agent.wrap_env(make_vector_env(env_id, b, **env_kwargs))
            sim = simulator_of(env)
            slates = np.empty((b, T + 1, k), dtype=np.int64)
            clicks = np.empty((b, T + 1, k), dtype=np.uint8)
            rewards = np.empty((b, T), dtype=np.float32)
            actions = np.empty((b, T) + tuple(shape), dtype=np.float32) if has_action else None
            obs, _ = env.reset(seed=seed + start)
            slates[:, 0], clicks[:, 0] = sim.last_slate, sim.last_clicks
            state, episode_start = None, np.ones(b, dtype=bool)
            for t in range(T):
                action, state = agent.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
                episode_start[:] = False
                obs, reward, terminated, truncated, _ = env.step(action)
                slates[:, t + 1], clicks[:, t + 1] = sim.last_slate, sim.last_clicks
                rewards[:, t] = reward
                if actions is not None:
                    actions[:, t] = np.asarray(action, dtype=np.float32).reshape((b,) + tuple(shape))
            if not np.asarray(terminated).all():
                raise RuntimeError(f"episodes did not end after {T} turns")
            extra = {"rewards": rewards, **({"actions": actions} if actions is not None else {})}
            writer.write(start, slates, clicks, **extra)
            env.close()
            bar.update(b)
    assert writer.dataset is not None
    return writer.dataset


def collect_replay(run_dir: PathLike, checkpoint: str, out: PathLike, overwrite: bool = False,
                   progress: bool = True) -> LoggedDataset:
    """The episodes of the replay memory an agent run kept with periodic checkpoint ``checkpoint``
    (``RunConfig.replay_snapshots``), oldest first: D4RL's medium-replay. The actions are kept
    when they are the policy's own GeMS actions (an episode-regime SAC acting through GeMS)."""
    from gym_slaterec.run_dirs import list_checkpoints
    from sb3_slate.runs import REPLAY_SNAPSHOT_PREFIX, read_run

    run_dir, cfg, prov = read_run(run_dir)
    name = resolve_checkpoint(list_checkpoints(run_dir), checkpoint)
    path = run_dir / "checkpoints" / f"{REPLAY_SNAPSHOT_PREFIX}{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} kept no replay memory with checkpoint {name} (train with --set "
                                f"replay_snapshots=[N], N a periodic checkpoint's episode count; kept: "
                                f"{sorted(p.stem for p in (run_dir / 'checkpoints').glob(REPLAY_SNAPSHOT_PREFIX + '*.npz')) or 'none'})")
    check_writable(out, overwrite, DATASET_KINDS)
    try:
        with np.load(path, allow_pickle=False) as data:
            pos, size, cap, T, k, A, N = (int(x) for x in data["meta"])
            slates, clicks = data["slates"], data["clicks"]
            actions, rewards = data["actions"], data["rewards"]
    except Exception as exc:  # truncated, foreign or pickled content
        raise ValueError(f"replay memory {path} is damaged ({type(exc).__name__}: {exc})") from exc
    if size < 1 or len(slates) != size:
        raise ValueError(f"replay memory {path} holds {len(slates)} of {size} episodes")
    order = np.roll(np.arange(size), -pos) if size == cap else np.arange(size)  # a full ring starts at pos
    gems_fp = (prov.get("inputs") or {}).get("gems")
    own_actions = (cfg.regime.model == "EpisodeSAC" and "gems" in cfg.spec.needs(cfg.agent) and gems_fp is not None)
    extras = {"rewards": ((T,), np.float32), **({"actions": ((T, A), np.float32)} if own_actions else {})}
    pol = {"kind": "replay", "run_dir": str(run_dir), "method": cfg.method, "checkpoint": name,
           "checkpoint_fingerprint": sha256_file(path), "run_fingerprint": _run_fingerprint(run_dir),
           "run_seed": cfg.seed}
    record = provenance(
        COLLECT_KIND, env_id=prov.get("env_id"), env_params=prov.get("env_params"),
        item_embeddings_fingerprint=prov.get("item_embeddings_fingerprint"), seed=None,
        hyperparameters={"episodes": size, "checkpoint": name, "source": "replay memory"},
        inputs={"replay_memory": pol["checkpoint_fingerprint"], **({"gems": gems_fp} if own_actions else {})},
        policy=pol, gems={"fingerprint": gems_fp, "path": cfg.gems} if own_actions else None,
        episode_length=T, env_kwargs=dict(cfg.env_kwargs),
        users={"rule": f"the training users of run seed {cfg.seed} whose episodes the replay memory held"},
    )
    bar = progress_bar(progress, total=size, unit="ep", desc=f"replay {cfg.method}:{name}")
    with contextlib.closing(bar), DatasetWriter(out, size, T, k, N, record, overwrite, extras) as writer:
        for a in range(0, size, 2048):
            idx = order[a:a + 2048]
            writer.write(a, slates[idx], clicks[idx], rewards=rewards[idx],
                         **({"actions": actions[idx]} if own_actions else {}))
            bar.update(len(idx))
    assert writer.dataset is not None
    return writer.dataset
