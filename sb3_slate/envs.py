"""History-window observations and the bridge from SlateRec vector envs to SB3.

Agents see the history of (slate, clicks) pairs. :class:`HistoryWindow` (one user)
and :class:`VectorHistoryWindow` (native batch) replace the last-turn observation
by a window of the ``window`` most recent turns:

- ``items``: item ids, shape ``(window, k)``, an integer ``Box`` (int16 when the
  catalogue fits, so a replay buffer stores ids, not one-hot vectors or floats);
- ``clicks``: ``(window, k)`` int8;
- ``mask``: ``(window,)`` int8, 1 for a real turn and 0 for padding.

Turns are left-aligned: row 0 is the oldest kept turn, real turns come first and
the padding (zeros) fills the rows after them, which is what happens at the start
of an episode. Once the episode is longer than the window, the oldest turn drops
out. ``window = episode_length + 1`` keeps the whole episode (initial slate included).

:class:`SB3VecEnv` adapts a (wrapped) native Gymnasium vector env to SB3's
``VecEnv`` API (same-step autoreset with ``terminal_observation``) and keeps the
per-episode statistics the protocol logs: return, clicks per turn, fraction of
turns with a bored topic, intra-slate diversity.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv, VectorWrapper
from gymnasium.vector.utils import batch_space
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from gym_slaterec.policies import simulator_of


def _id_dtype(num_items: int) -> type:
    return np.int16 if num_items <= np.iinfo(np.int16).max else np.int32


def history_space(num_items: int, slate_size: int, window: int) -> spaces.Dict:
    """Observation space of a history window."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive integer (number of turns), got {window!r}")
    dt = _id_dtype(num_items)
    return spaces.Dict(
        {
            "items": spaces.Box(0, num_items - 1, (window, slate_size), dtype=dt),
            "clicks": spaces.Box(0, 1, (window, slate_size), dtype=np.int8),
            "mask": spaces.Box(0, 1, (window,), dtype=np.int8),
        }
    )


class _Windows:
    """Batched left-aligned windows of (slate, clicks)."""

    def __init__(self, batch: int, num_items: int, slate_size: int, window: int) -> None:
        self.window = window
        self.items = np.zeros((batch, window, slate_size), dtype=_id_dtype(num_items))
        self.clicks = np.zeros((batch, window, slate_size), dtype=np.int8)
        self.length = np.zeros(batch, dtype=np.int64)

    def clear(self, idx: Any = slice(None)) -> None:
        self.items[idx] = 0
        self.clicks[idx] = 0
        self.length[idx] = 0

    def push(self, slates: np.ndarray, clicks: np.ndarray) -> None:
        full = self.length >= self.window
        if full.any():  # shift the oldest turn out
            self.items[full, :-1] = self.items[full, 1:]
            self.clicks[full, :-1] = self.clicks[full, 1:]
        pos = np.minimum(self.length, self.window - 1)
        rows = np.arange(len(pos))
        self.items[rows, pos] = slates
        self.clicks[rows, pos] = clicks
        self.length = np.minimum(self.length + 1, self.window)

    def obs(self) -> dict[str, np.ndarray]:
        mask = (np.arange(self.window)[None, :] < self.length[:, None]).astype(np.int8)
        return {"items": self.items.copy(), "clicks": self.clicks.copy(), "mask": mask}


class HistoryWindow(gym.Wrapper):
    """One-user SlateRec env observed through a window of its last ``window`` turns."""

    def __init__(self, env: gym.Env, window: int = 10) -> None:
        super().__init__(env)
        sim = simulator_of(env)
        self.window = int(window)
        self.observation_space = history_space(sim.num_items, sim.slate_size, self.window)
        self._w = _Windows(1, sim.num_items, sim.slate_size, self.window)

    def _push(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._w.push(np.asarray(obs["slate"])[None], np.asarray(obs["clicks"])[None])
        return {key: value[0] for key, value in self._w.obs().items()}

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._w.clear()
        return self._push(obs), info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._push(obs), reward, terminated, truncated, info


class VectorHistoryWindow(VectorWrapper):
    """Native SlateRec vector env observed through per-user history windows.

    Handles the next-step autoreset of the base env: the step that restarts a user
    clears its window before pushing the new episode's first turn.
    """

    def __init__(self, env: VectorEnv, window: int = 10) -> None:
        super().__init__(env)
        sim = simulator_of(env)
        self.window = int(window)
        self.single_observation_space = history_space(sim.num_items, sim.slate_size, self.window)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._w = _Windows(self.num_envs, sim.num_items, sim.slate_size, self.window)
        self._ended = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: Optional[Any] = None, options: Optional[dict] = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._w.clear()
        self._ended[:] = False
        self._w.push(obs["slate"], obs["clicks"])
        return self._w.obs(), info

    def step(self, actions: Any):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if self._ended.any():
            self._w.clear(self._ended)
        self._w.push(obs["slate"], obs["clicks"])
        self._ended = np.asarray(terminated) | np.asarray(truncated)
        return self._w.obs(), reward, terminated, truncated, info


class VectorFlatWindow(VectorWrapper):
    """A history window flattened into one float ``Box`` (``items``, ``clicks``, ``mask`` in that
    order), for algorithms that take array observations only (sb3-contrib's CrossQ concatenates
    observation batches); :class:`sb3_slate.belief.FlatGRUBeliefExtractor` reads it back."""

    def __init__(self, env: VectorEnv) -> None:
        super().__init__(env)
        space = env.single_observation_space
        if not isinstance(space, spaces.Dict) or set(space.spaces) != {"items", "clicks", "mask"}:
            raise ValueError(f"VectorFlatWindow flattens a history window observation, got {space}")
        self.window, self.slate_size = space["items"].shape
        n = self.window * (2 * self.slate_size + 1)
        self.single_observation_space = spaces.Box(0.0, float(space["items"].high.max()), (n,), dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)

    def _flat(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        b = obs["mask"].shape[0]
        return np.concatenate([obs["items"].reshape(b, -1), obs["clicks"].reshape(b, -1), obs["mask"]],
                              axis=1).astype(np.float32)

    def reset(self, *, seed: Optional[Any] = None, options: Optional[dict] = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._flat(obs), info

    def step(self, actions: Any):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        return self._flat(obs), reward, terminated, truncated, info


def _split(batch: Any, i: int) -> Any:
    if isinstance(batch, dict):
        return {key: value[i] for key, value in batch.items()}
    return batch[i]


class SB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` over a (wrapped) native SlateRec vector env.

    SlateRec episodes have a fixed length, so every user of the batch ends on the
    same step; the adapter then resets the whole stack at once (new users from the
    continued per-user random streams, or from ``seed()`` when one is pending) and
    returns the first observation of the new episodes, the last one going to
    ``info["terminal_observation"]`` as SB3 expects. ``info["episode"]`` carries
    ``r`` (return), ``l`` (turns), ``clicks_per_turn``, ``boredom`` (fraction of
    turns with a bored topic) and ``diversity`` (mean intra-slate diversity).
    """

    def __init__(self, venv: VectorEnv, seed: Optional[int] = None) -> None:
        self.venv = venv
        self.sim = simulator_of(venv)
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: Optional[np.ndarray] = None
        self._pending_seed = seed
        n = self.num_envs
        self._ret = np.zeros(n)
        self._len = np.zeros(n, dtype=np.int64)
        self._bored = np.zeros(n)
        self._div = np.zeros(n)
        self.episodes = 0
        self.turns = 0

    # -- VecEnv API
    def reset(self):
        seed = self._pending_seed
        self._pending_seed = None
        obs, _ = self.venv.reset(seed=seed)
        self._ret[:] = 0
        self._len[:] = 0
        self._bored[:] = 0
        self._div[:] = 0
        return obs

    def seed(self, seed: Optional[int] = None) -> Sequence[None]:
        self._pending_seed = seed
        return [None] * self.num_envs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        n = self.num_envs
        self.turns += n
        self._ret += rewards
        self._len += 1
        if "bored" in info:
            self._bored += np.asarray(info["bored"]).any(axis=1)
        if "diversity" in info:
            self._div += np.asarray(info["diversity"])
        dones = np.asarray(terminated) | np.asarray(truncated)
        infos: list[dict[str, Any]] = [{} for _ in range(n)]
        if dones.any():
            if not dones.all():
                raise RuntimeError("SB3VecEnv expects every user of the batch to end on the same step (fixed-length episodes)")
            for i in range(n):
                length = max(int(self._len[i]), 1)
                infos[i]["terminal_observation"] = _split(obs, i)
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                infos[i]["episode"] = {
                    "r": float(self._ret[i]),
                    "l": int(self._len[i]),
                    "clicks_per_turn": float(self._ret[i]) / length,
                    "boredom": float(self._bored[i]) / length,
                    "diversity": float(self._div[i]) / length,
                }
            self.episodes += n
            obs = self.reset()
        return obs, np.asarray(rewards, dtype=np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self.venv, attr_name)] * len(self._idx(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        return [getattr(self.venv, method_name)(*args, **kwargs)] * len(self._idx(indices))

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._idx(indices))

    def _idx(self, indices: Any) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)
