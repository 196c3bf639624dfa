"""The evaluation protocol (docs/method.md section 8) as SB3 callbacks plus evaluation on fixed users.

- Validation and test users are fixed: user ``i`` of the validation set is the
  user a SlateRec env creates on ``reset(seed=VALIDATION_SEED + i)``, test user
  ``i`` on ``reset(seed=TEST_SEED + i)``. Both sets are identical for every method
  and every training seed, and disjoint from the training users
  (:func:`training_seed`).
- :func:`evaluate_agent` plays the deterministic policy on such a set (all users
  at once, one batched vector env) and returns the return statistics plus clicks
  per turn, boredom (fraction of turns with a bored topic), intra-slate diversity
  and catalogue coverage (fraction of the catalogue recommended at least once).
- :class:`ProtocolCallback` counts episodes, logs training scalars, validates
  every ``val_every`` episodes (keeping the best checkpoint), writes periodic
  checkpoints, and shows a progress bar with the running return.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from gym_slaterec.policies import simulator_of
from gym_slaterec.rollouts import return_stats

VALIDATION_SEED = 1_000_000_000
TEST_SEED = 2_000_000_000
#: Training users of run seed s are TRAIN_SEED_BASE + s * 2**24 + episode: above every
#: validation and test user, and 16.7M episodes apart between run seeds.
TRAIN_SEED_BASE = 2**33
MAX_RUN_SEED = 2**32 - 1


def training_seed(seed: int, episodes_done: int = 0) -> int:
    """First user seed of the training env of run seed ``seed`` (after ``episodes_done`` episodes).

    Run seeds are any integer in [0, 2**32 - 1]; training users never coincide with
    a validation or test user, nor with another run seed's users.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_RUN_SEED:
        raise ValueError(f"seed must be an integer in [0, {MAX_RUN_SEED}], got {seed!r}")
    return TRAIN_SEED_BASE + int(seed) * 2**24 + episodes_done % 2**24


@dataclass
class EvalResult:
    returns: np.ndarray
    clicks_per_turn: float
    boredom: float
    diversity: float
    coverage: float

    def summary(self) -> dict[str, Any]:
        stats = return_stats(self.returns).to_dict()
        return {
            **stats,
            "clicks_per_turn": self.clicks_per_turn,
            "boredom": self.boredom,
            "diversity": self.diversity,
            "coverage": self.coverage,
        }


def evaluate_agent(
    agent: Any,
    make_base_env: Callable[[int], Any],
    users: int,
    first_seed: int,
    batch_size: int = 500,
    on_turn: Optional[Callable[[dict], None]] = None,
) -> EvalResult:
    """Play ``agent``'s deterministic policy on users ``first_seed .. first_seed + users - 1``.

    ``on_turn(info)``, when given, sees each turn's info (with ``analysis_info``: the
    scores, boredom and topics of the shown slates; used for figures).

    ``agent`` has ``wrap_env(vector_env)`` and ``predict(obs, state, episode_start,
    deterministic)`` (a :class:`sb3_slate.runs.RunAgent`); ``make_base_env(n)`` builds the native
    vector env of ``n`` users with ``analysis_info=True``.
    """
    if users < 1:
        raise ValueError(f"users must be a positive integer, got {users}")
    returns = np.zeros(users)
    bored_turns = div_sum = turns = 0.0
    seen: Optional[np.ndarray] = None
    for start in range(0, users, batch_size):
        b = min(batch_size, users - start)
        env = agent.wrap_env(make_base_env(b))
        sim = simulator_of(env)
        if seen is None:
            seen = np.zeros(sim.num_items, dtype=bool)
        obs, _ = env.reset(seed=first_seed + start)
        done = np.zeros(b, dtype=bool)
        state, episode_start = None, np.ones(b, dtype=bool)  # recurrent agents carry their belief in state
        while not done.all():
            action, state = agent.predict(obs, state=state, episode_start=episode_start, deterministic=True)
            episode_start[:] = False
            obs, reward, terminated, truncated, info = env.step(action)
            if on_turn is not None:
                on_turn(info)
            returns[start : start + b] += reward
            seen[sim.last_slate.ravel()] = True
            turns += b
            if "bored" in info:
                bored_turns += float(np.asarray(info["bored"]).any(axis=1).sum())
            if "diversity" in info:
                div_sum += float(np.asarray(info["diversity"]).sum())
            done |= np.asarray(terminated) | np.asarray(truncated)
        env.close()
    assert seen is not None
    return EvalResult(
        returns=returns,
        clicks_per_turn=float(returns.sum() / max(turns, 1)),
        boredom=bored_turns / max(turns, 1),
        diversity=div_sum / max(turns, 1),
        coverage=float(seen.mean()),
    )


class ProtocolCallback(BaseCallback):
    """Episode counting, training scalars, validation, checkpoints and progress.

    :param run: the :class:`sb3_slate.runs.Run` being trained (provides
        ``validate()``, ``save_checkpoint(name)`` and the bookkeeping state).
    :param total_episodes: the episode budget (for the progress bar).
    """

    def __init__(self, run: Any, total_episodes: int, progress: bool = True) -> None:
        super().__init__()
        self.run = run
        self.total_episodes = total_episodes
        self.progress = progress
        self.bar = None
        self._recent: list[float] = []
        self._t0 = time.time()

    def _on_training_start(self) -> None:
        from gym_slaterec.progress import progress

        self.bar = progress(self.progress, total=self.total_episodes, initial=self.run.state["episodes"], unit="ep",
                            desc=f"{self.run.config.method}", dynamic_ncols=True)

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", [])
        finished = [info["episode"] for info in infos if "episode" in info]
        if not finished:
            return True
        state = self.run.state
        before = state["episodes"]
        state["episodes"] += len(finished)
        state["turns"] = int(self.num_timesteps)
        rets = [ep["r"] for ep in finished]
        self._recent = (self._recent + rets)[-100:]
        for key, name in (("r", "return"), ("clicks_per_turn", "clicks_per_turn"), ("boredom", "boredom"), ("diversity", "diversity")):
            self.logger.record(f"train_episode/{name}", float(np.mean([ep[key] for ep in finished])))
        self.logger.record("train_episode/episodes", state["episodes"])
        wall = time.time() - self.run._t0 + state.get("wall_s_before", 0.0)
        self.logger.record("time/wall_s", wall)
        episodes = state["episodes"]
        cfg = self.run.config
        if cfg.val_every and episodes // cfg.val_every > before // cfg.val_every:
            summary = self.run.validate()
            for key in ("mean", "clicks_per_turn", "boredom", "diversity", "coverage"):
                self.logger.record(f"validation/{'return' if key == 'mean' else key}", summary[key])
        if cfg.checkpoint_every and episodes // cfg.checkpoint_every > before // cfg.checkpoint_every:
            self.run.save_checkpoint(f"ep{episodes:07d}")
            self.run.save_checkpoint("last")
        self.logger.dump(self.num_timesteps)
        if self.bar is not None:
            self.bar.update(len(finished))
            best = state.get("best_validation")
            self.bar.set_postfix(ret=f"{np.mean(self._recent):.1f}", best_val=f"{best:.1f}" if best is not None else "-")
        if getattr(self.run, "stop_request", None) is not None and self.run.stop_request.requested:
            if not (cfg.checkpoint_every and episodes // cfg.checkpoint_every > before // cfg.checkpoint_every):
                self.run.save_checkpoint("last")  # the resume point (unless just written above)
            return False  # the runner raises KeyboardInterrupt: the run is marked interrupted, resumable from here
        if cfg.max_wall_s is not None and wall >= cfg.max_wall_s:
            state["stopped_by_wall_budget"] = True
            return False  # SB3 ends learn(); the runner validates and tests
        if episodes >= self.total_episodes and isinstance(self.model, OnPolicyAlgorithm):
            return False  # a rollout would run past the budget (off-policy learn() stops on its own, after its update)
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
