"""Reference policies (docs/method.md section 5): random, short-term oracle, epsilon-greedy oracle.

A policy is bound to an environment (single or vector) and called on its
observation: ``action = policy(obs)``. Random draws come from per-user streams
(seed ``s + i`` for user ``i``), so a policy on a vector env seeded ``s`` acts, for
user ``i``, exactly as the same policy on a single env seeded ``s + i``.

The oracle policies are privileged: they read the user's hidden state from the
simulator (``env.unwrapped.simulator``).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .core.rng import STREAM_POLICY, BatchRNG, distinct_integers
from .core.simulator import TopicRecSimulator

POLICY_NAMES = ("random", "oracle", "epsilon-greedy")


def simulator_of(env: Any) -> TopicRecSimulator:
    """The simulator behind a SlateRec env (single, vector, or wrapped)."""
    base = getattr(env, "unwrapped", env)
    sim = getattr(base, "simulator", None)
    if not isinstance(sim, TopicRecSimulator):
        raise TypeError(f"{type(base).__name__} is not a SlateRec environment (no .simulator)")
    return sim


class SlatePolicy:
    """Base class: a policy acting for every user of ``env``."""

    name = "policy"
    privileged = False

    def __init__(self, env: Any, seed: Optional[int] = None) -> None:
        self.env = env
        self.sim = simulator_of(env)
        self.vector = hasattr(getattr(env, "unwrapped", env), "num_envs")
        self.seed(seed)

    def seed(self, seed: Optional[int]) -> None:
        n = self.sim.num_users
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(2))
        self.rng = BatchRNG(np.arange(n, dtype=np.int64) + int(seed), stream=STREAM_POLICY)

    def slates(self) -> np.ndarray:
        """(num_users, k) slates for the next turn."""
        raise NotImplementedError

    def __call__(self, obs: Any = None) -> np.ndarray:
        s = self.slates()
        return s if self.vector else s[0]

    def config(self) -> dict[str, Any]:
        return {"name": self.name}


class RandomPolicy(SlatePolicy):
    """k distinct items drawn uniformly at random."""

    name = "random"
    #: Slates drawn per user and RNG call (served one per call after that): the
    #: per-call cost of drawing and checking is shared by this many turns. Fixed, so
    #: that a user's slates do not depend on the size of its batch.
    SETS_PER_DRAW = 8

    def seed(self, seed: Optional[int]) -> None:
        super().seed(seed)
        self._drawn: Optional[np.ndarray] = None  # (SETS_PER_DRAW, users, k), served in order
        self._next = 0

    def slates(self) -> np.ndarray:
        if self._drawn is None or self._next == len(self._drawn):
            sets = distinct_integers(self.rng, self.sim.num_items, self.sim.slate_size, sets=self.SETS_PER_DRAW)
            self._drawn = np.ascontiguousarray(sets.transpose(1, 0, 2))
            self._next = 0
        self._next += 1
        return self._drawn[self._next - 1]


class OraclePolicy(SlatePolicy):
    """Short-term oracle: the k items with the highest score for the next turn (privileged)."""

    name = "oracle"
    privileged = True

    def slates(self) -> np.ndarray:
        return self.sim.oracle_slates()


class EpsilonGreedyPolicy(SlatePolicy):
    """At each rank, with probability epsilon a uniformly random item, else the oracle's (privileged)."""

    name = "epsilon-greedy"
    privileged = True

    def __init__(self, env: Any, epsilon: float = 0.5, seed: Optional[int] = None) -> None:
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)
        super().__init__(env, seed)

    def slates(self) -> np.ndarray:
        oracle = self.sim.oracle_slates()
        u = self.rng.uniform(2 * self.sim.slate_size)
        k = self.sim.slate_size
        explore = u[:, :k] < self.epsilon
        random_items = np.minimum((u[:, k:] * self.sim.num_items).astype(np.int64), self.sim.num_items - 1)
        return np.where(explore, random_items, oracle)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "epsilon": self.epsilon}


def make_policy(name: str, env: Any, seed: Optional[int] = None, epsilon: float = 0.5) -> SlatePolicy:
    """A reference policy by name: ``random``, ``oracle`` or ``epsilon-greedy``."""
    if name == "random":
        return RandomPolicy(env, seed)
    if name == "oracle":
        return OraclePolicy(env, seed)
    if name in ("epsilon-greedy", "epsilon_greedy", "egreedy"):
        return EpsilonGreedyPolicy(env, epsilon, seed)
    raise ValueError(f"unknown policy {name!r}; choose one of {POLICY_NAMES}")
