"""What the agents with their own collection loop (:class:`~sb3_slate.agents.EpisodeSAC`,
:class:`~sb3_slate.agents.EpisodeREINFORCE`, :class:`~sb3_slate.agents.EpisodeSlateQ`) share:
the collection loop of the episode-replay agents, the per-batch bookkeeping of the episodes
they collect, the report to the logger and the callback, and the random states their
checkpoints keep."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch


class OwnLoopPlumbing:
    """Logger and env plumbing of an agent that steps a gymnasium vector env itself."""

    logger: Any = None
    env: Any = None
    num_timesteps: int = 0
    first_user_seed: Callable[[int], int] = staticmethod(lambda episodes: episodes)

    def set_logger(self, logger: Any) -> None:
        self.logger = logger

    def get_env(self) -> Any:
        return self.env

    def start_learning(self, total_timesteps: int, callback: Any, reset_num_timesteps: bool) -> int:
        """Check the env, reset the turn count if asked, start ``callback``; returns the turn count to reach."""
        if self.env is None:
            raise ValueError("no environment: call set_env(env) before learn()")
        if reset_num_timesteps:
            self.num_timesteps = 0
        if callback is not None:
            callback.init_callback(self)
            callback.on_training_start({"total_timesteps": total_timesteps}, {})
        return self.num_timesteps + int(total_timesteps)

    def set_env(self, env: Any, first_user_seed: Optional[Callable[[int], int]] = None) -> None:
        """``env``: a gymnasium vector env; ``first_user_seed(episodes_done)`` gives the seed of
        the first user of each new batch of episodes."""
        self.env = env
        if first_user_seed is not None:
            self.first_user_seed = first_user_seed


def reset_where(state: Optional[torch.Tensor], episode_start: Optional[np.ndarray]) -> Optional[torch.Tensor]:
    """Recurrent states (n, H) zeroed for the users whose episode starts now."""
    if state is None or episode_start is None:
        return state
    keep = torch.as_tensor(~np.asarray(episode_start, dtype=bool), dtype=state.dtype, device=state.device)
    return state * keep[:, None]


class BatchStats:
    """Boredom and diversity of a batch of ``n`` episodes, turn by turn from the env's infos."""

    def __init__(self, n: int) -> None:
        self.bored, self.diversity = np.zeros(n), np.zeros(n)

    def add(self, info: dict[str, Any]) -> None:
        if "bored" in info:
            self.bored += np.asarray(info["bored"]).any(axis=1)
        if "diversity" in info:
            self.diversity += np.asarray(info["diversity"])


def report_batch(model: Any, rewards: np.ndarray, stats: BatchStats, metrics: dict[str, float], callback: Any) -> bool:
    """Log ``metrics``, the update count and the time split of ``model``, and pass the batch's
    finished episodes to ``callback``; returns whether the callback asks to stop."""
    if model.logger is not None:
        for key, value in metrics.items():
            model.logger.record(f"train/{key}", value)
        model.logger.record("train/n_updates", model.n_updates)
        for key, value in model.seconds.items():
            model.logger.record(f"time/{key}_s", value)
    if callback is None:
        return False
    T = rewards.shape[1]
    returns = rewards.sum(axis=1)
    infos = [{"episode": {"r": float(returns[i]), "l": T, "clicks_per_turn": float(returns[i] / T),
                          "boredom": float(stats.bored[i] / T), "diversity": float(stats.diversity[i] / T)}}
             for i in range(len(returns))]
    callback.update_locals({"infos": infos})
    return not callback.on_step()


def rng_tensor(rng: np.random.Generator) -> torch.Tensor:
    """A numpy generator's state as a uint8 tensor (a checkpoint holds tensors only)."""
    return torch.from_numpy(np.frombuffer(json.dumps(rng.bit_generator.state).encode(), dtype=np.uint8).copy())


def restore_rng(rng: np.random.Generator, state: torch.Tensor) -> None:
    rng.bit_generator.state = json.loads(bytes(state.numpy()).decode())


def loop_state(model: Any) -> dict[str, torch.Tensor]:
    """The counters, time split and random states a checkpoint keeps besides the weights."""
    return {"counters": torch.tensor([model.num_timesteps, model.episodes_done, model.n_updates], dtype=torch.int64),
            "rng": rng_tensor(model.rng), "generator": model.generator.get_state(),
            "seconds": torch.tensor([model.seconds["collect"], model.seconds["train"]], dtype=torch.float64)}


def write_zip_checkpoint(path: Union[str, Path], fmt: str, kwargs: dict[str, Any], state: dict[str, Any]) -> None:
    """A zip of ``format.txt``, ``config.json`` (constructor arguments) and ``state.pt`` (tensors only)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("format.txt", fmt)
        z.writestr("config.json", json.dumps(kwargs))
        z.writestr("state.pt", buf.getvalue())


def read_zip_checkpoint(path: Union[str, Path], fmt: str, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(constructor arguments, tensors) of a :func:`write_zip_checkpoint` file, read weights-only;
    a damaged or foreign file is a ValueError naming ``what`` it should have been."""
    try:
        with zipfile.ZipFile(path) as z:
            found = z.read("format.txt").decode()
            if found != fmt:
                raise ValueError(f"format {found!r}, expected {fmt!r}")
            kwargs = json.loads(z.read("config.json"))
            state = torch.load(io.BytesIO(z.read("state.pt")), map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged zip, foreign file, or objects weights_only refuses to unpickle
        raise ValueError(f"{path} is not a readable {what} checkpoint ({type(exc).__name__}: {exc})") from exc
    return kwargs, state


def restore_counters(model: Any, state: dict[str, Any]) -> None:
    """Counters, time split, acting noise and numpy generator of ``model`` from its checkpoint state."""
    model.num_timesteps, model.episodes_done, model.n_updates = (int(x) for x in state["counters"])
    if "seconds" in state:  # not in checkpoints written before the timing existed
        model.seconds = dict(zip(("collect", "train"), (float(x) for x in state["seconds"])))
    restore_rng(model.rng, state["rng"])
    if state["generator"].numel() == model.generator.get_state().numel():
        model.generator.set_state(state["generator"])
    # else: saved on another kind of device; the acting noise restarts from the seed


def replay_learn(model: Any, total_timesteps: int, callback: Any, reset_num_timesteps: bool,
                 act: Callable[[dict, Any, bool], tuple[np.ndarray, Any]],
                 turn_record: Callable[[dict, np.ndarray], np.ndarray]) -> Any:
    """The episode-replay agents' loop: collect ``n_envs`` whole episodes at a time, spreading
    ``model.gradient_steps`` updates per collected episode over their turns once the warm-up
    is over and the memory holds episodes, then add the episodes to ``model.replay_buffer``.

    ``act(obs, state, warm) -> (env action, state)``; ``turn_record(obs_after, action)`` is the
    per-turn vector the memory keeps beside the slates (``replay_buffer.action_dim`` values).
    ``callback`` is an SB3 ``BaseCallback``, called once per batch with each finished
    episode's ``"episode"`` record.
    """
    target = model.start_learning(total_timesteps, callback, reset_num_timesteps)
    env, T, k = model.env, model.T, model.slate_size
    n = env.num_envs
    updates_per_turn = model.gradient_steps * n / T
    owed, metrics, stop = 0.0, {}, False
    clock = time.perf_counter
    while model.num_timesteps < target and not stop:
        batch_start, train_s = clock(), 0.0
        obs, _ = env.reset(seed=model.first_user_seed(model.episodes_done))
        slates = np.empty((n, T + 1, k), dtype=np.int64)
        clicks = np.empty((n, T + 1, k), dtype=np.uint8)
        records = np.empty((n, T, model.replay_buffer.action_dim), dtype=np.float32)
        rewards = np.empty((n, T), dtype=np.float32)
        stats = BatchStats(n)
        slates[:, 0], clicks[:, 0] = obs["slate"], obs["clicks"]
        warm = model.episodes_done < model.warmup_episodes
        state = None
        for t in range(T):
            action, state = act(obs, state, warm)
            obs, reward, terminated, truncated, info = env.step(action)
            slates[:, t + 1], clicks[:, t + 1] = obs["slate"], obs["clicks"]
            records[:, t], rewards[:, t] = turn_record(obs, action), reward
            stats.add(info)
            model.num_timesteps += n
            if len(model.replay_buffer) and not warm:
                owed += updates_per_turn
                while owed >= 1.0:
                    step_start = clock()
                    metrics = model.train_step()
                    train_s += clock() - step_start
                    owed -= 1.0
        if not np.asarray(terminated).all():
            raise RuntimeError(f"episodes did not end after {T} turns (episode_length mismatch)")
        model.replay_buffer.add(slates, clicks, records, rewards)
        model.episodes_done += n
        model.seconds["train"] += train_s
        model.seconds["collect"] += clock() - batch_start - train_s
        stop = report_batch(model, rewards, stats, metrics, callback)
    if callback is not None:
        callback.on_training_end()
    return model
