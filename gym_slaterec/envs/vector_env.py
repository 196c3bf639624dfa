"""Native batched vector environment: ``num_envs`` users stepped by one numpy call."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space

from ..core.embeddings import EmbeddingsLike
from ..core.simulator import Turn
from .slate_env import analysis_info, as_flag, build_simulator, check_slates


class SlateRecVectorEnv(VectorEnv):
    """``num_envs`` independent TopicRec users sharing one batched simulator.

    Spaces, rewards and episode end are those of :class:`SlateRecEnv`, batched.
    Sub-environments autoreset on the step after they terminate ("next step"
    autoreset, Gymnasium 1.0's convention): that step ignores their action and
    returns the first observation of a new episode with reward 0.

    ``reset(seed=s)`` seeds user ``i`` with ``s + i``; its trajectory is then the
    one a single :class:`SlateRecEnv` reset with seed ``s + i`` produces for the
    same actions.
    """

    metadata = {"autoreset_mode": "next_step", "render_modes": []}
    env_id: Optional[str] = None

    def __init__(
        self,
        num_envs: int = 1,
        item_embeddings: Optional[EmbeddingsLike] = None,
        analysis_info: bool = False,
        **overrides: Any,
    ) -> None:
        overrides.pop("max_episode_steps", None)  # passed by gymnasium.make_vec; episodes end by termination
        self.num_envs = int(num_envs)
        self.simulator = build_simulator(self.env_id, self.num_envs, item_embeddings, overrides)
        self.config = self.simulator.config
        self.analysis_info = as_flag("analysis_info", analysis_info)
        n, k = self.simulator.num_items, self.simulator.slate_size
        self.single_action_space = spaces.MultiDiscrete(np.full(k, n, dtype=np.int64))
        self.single_observation_space = spaces.Dict(
            {"slate": spaces.MultiDiscrete(np.full(k, n, dtype=np.int64)), "clicks": spaces.MultiBinary(k)}
        )
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._started = False

    def _obs(self) -> dict[str, np.ndarray]:
        sim = self.simulator
        return {"slate": sim.last_slate.copy(), "clicks": sim.last_clicks.astype(np.int8)}

    def _info(self, turns: Sequence[tuple[Union[slice, np.ndarray], Turn]]) -> dict[str, Any]:
        if not self.analysis_info:
            return {}
        info: dict[str, Any] = {}
        for sel, turn in turns:
            for key, value in analysis_info(self.simulator, turn).items():
                if key not in info:
                    info[key] = np.zeros((self.num_envs,) + value.shape[1:], dtype=value.dtype)
                    info[f"_{key}"] = np.zeros(self.num_envs, dtype=bool)
                info[key][sel] = value
                info[f"_{key}"][sel] = True
        return info

    def reset(self, *, seed: Optional[Union[int, Sequence[int]]] = None, options: Optional[dict] = None):
        """Reset every user; ``seed`` is one int (user i gets ``seed + i``) or one int per user."""
        if seed is not None and not isinstance(seed, (int, np.integer)):
            try:
                seeds = np.asarray(seed, dtype=np.int64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"seed must be an int or a sequence of {self.num_envs} ints, got {seed!r}") from exc
            super().reset(seed=int(seeds.ravel()[0]) if seeds.size else None)
        else:
            super().reset(seed=seed)
        if seed is not None:
            seeds = np.asarray(seed, dtype=np.int64)
            if seeds.ndim == 0:
                seeds = seeds + np.arange(self.num_envs)
            if seeds.shape != (self.num_envs,):
                raise ValueError(f"seed must be an int or a sequence of {self.num_envs} ints, got shape {seeds.shape}")
            self.simulator.seed(seeds)
        elif not self._started:
            self.simulator.seed(self.np_random.integers(0, 2**62, size=self.num_envs))
        self._started = True
        turn = self.simulator.reset()
        self._autoreset[:] = False
        return self._obs(), self._info([(slice(None), turn)])

    def step(self, actions: Any):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        sim = self.simulator
        slates = check_slates(actions, self.num_envs, sim.slate_size, sim.num_items)
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        turns = []
        if not self._autoreset.any():
            turn = sim.step(slates)
            rewards[:] = turn.rewards
            turns.append((slice(None), turn))
        else:
            going = np.flatnonzero(~self._autoreset)
            restart = np.flatnonzero(self._autoreset)
            if going.size:
                turn = sim.step(slates[going], going)
                rewards[going] = turn.rewards
                turns.append((going, turn))
            # all users restarting together (the usual case): the cheaper whole-batch path
            every = slice(None) if restart.size == self.num_envs else restart
            turns.append((every, sim.reset(every)))
        terminated = sim.terminated()
        self._autoreset = terminated.copy()
        truncated = np.zeros(self.num_envs, dtype=bool)
        return self._obs(), rewards, terminated, truncated, self._info(turns)
