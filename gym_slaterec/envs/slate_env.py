"""Single-user Gymnasium environment over the batched TopicRec core."""

from __future__ import annotations

from typing import Any, Optional

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..core.config import SimulatorConfig, preset
from ..core.embeddings import EmbeddingsLike
from ..core.simulator import TopicRecSimulator, Turn


def build_simulator(
    env_id: Optional[str],
    num_users: int,
    item_embeddings: Optional[EmbeddingsLike],
    overrides: dict[str, Any],
) -> TopicRecSimulator:
    """A simulator for ``env_id``'s preset (or the defaults) with ``overrides`` applied."""
    base = preset(env_id).config if env_id else SimulatorConfig()
    if isinstance(item_embeddings, (str, bytes)) or hasattr(item_embeddings, "__fspath__"):
        overrides = {**overrides, "item_embeddings": str(item_embeddings)}
        item_embeddings = None
    config = base.replace(**overrides)
    return TopicRecSimulator(config, num_users, item_embeddings)


def check_slates(action: Any, batch: int, slate_size: int, num_items: int) -> np.ndarray:
    """Validate an action as ``batch`` slates of item ids; returns an int64 (batch, k) array.

    Raises ``ValueError`` naming the problem: wrong shape, non-integer dtype, NaN,
    ids out of range.
    """
    a = action if isinstance(action, np.ndarray) else np.asarray(action)
    expected = (slate_size,) if batch == 0 else (batch, slate_size)
    kind = a.dtype.kind
    if kind not in "iu":
        if kind == "O":
            raise ValueError(f"action must be an array of item ids of shape {expected}, got {type(action).__name__}")
        if kind in "fc" and np.isnan(a).any():
            raise ValueError("action contains NaN; expected integer item ids")
        raise ValueError(f"action must hold integer item ids, got dtype {a.dtype}")
    if a.shape != expected:
        raise ValueError(f"action must have shape {expected} (slate size {slate_size}), got {a.shape}")
    if a.dtype != np.int64:
        a = a.astype(np.int64)
    if a.size <= 64:  # one slate: plain Python min/max beat two numpy calls
        ids = a.ravel().tolist()
        out_of_range = bool(ids) and (max(ids) >= num_items or min(ids) < 0)
    else:  # one comparison checks both ends: negative ids wrap to huge unsigned values
        out_of_range = np.count_nonzero(a.view(np.uint64) >= num_items) > 0
    if out_of_range:
        bad = a[(a < 0) | (a >= num_items)].ravel()[0]
        raise ValueError(f"action contains item id {bad}, outside [0, {num_items - 1}]")
    return a.reshape(max(batch, 1), slate_size)


def intra_slate_diversity(items: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """1 - mean pairwise cosine similarity of the items of each slate, shape (b,)."""
    x = np.take(items, slates, axis=0).astype(np.float64)
    x /= np.linalg.norm(x, axis=2, keepdims=True)
    gram = x @ x.transpose(0, 2, 1)
    k = slates.shape[1]
    if k < 2:
        return np.zeros(len(slates))
    off = (gram.sum(axis=(1, 2)) - np.trace(gram, axis1=1, axis2=2)) / (k * (k - 1))
    return 1.0 - off


def as_flag(name: str, value: Any) -> bool:
    """A keyword that must be a boolean (``analysis_info="no"`` is a mistake, not True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def analysis_info(sim: TopicRecSimulator, turn: Turn) -> dict[str, np.ndarray]:
    """Per-user analysis quantities of one turn (batched)."""
    return {
        "bored": turn.bored.copy(),
        "scores": turn.scores,
        "click_probs": turn.click_probs,
        "slate_topics": turn.slate_topics,
        "diversity": intra_slate_diversity(sim.items, turn.slates),
    }


class SlateRecEnv(gym.Env):
    """A user of the TopicRec slate recommendation simulator (docs/method.md sections 1-3).

    A user with hidden interests over topics visits for a session of
    ``episode_length`` turns. Every turn the agent recommends a slate of ``k`` items
    from a catalogue of ``N`` items; the user clicks on each item independently
    with a probability that grows with the item's relevance and falls with its
    rank. Clicks pull the user's interests towards the clicked items; too many
    recent clicks on one topic make the user bored of it for a while, which is why
    greedy recommendation is not optimal in the long run.

    ## Action space
    ``MultiDiscrete([N] * k)``: the item ids of the slate, best rank first.
    Repeated items are allowed. A malformed action raises ``ValueError`` and leaves
    the episode untouched.

    ## Observation space
    ``Dict(slate=MultiDiscrete([N] * k), clicks=MultiBinary(k))``: the slate shown
    at the last turn and which of its items were clicked. After ``reset`` it is the
    initial slate (each topic's most typical item) and the user's clicks on it.

    ## Rewards
    The number of clicks on the slate, in ``0..k``. The clicks of the initial
    slate earn nothing, so a return lies in ``0..k * episode_length``.

    ## Episode end
    The episode is ``terminated`` after ``episode_length`` (100) turns: the session
    is over. There is no truncation.

    ## Arguments
    ``gymnasium.make(env_id, **kwargs)`` accepts every field of
    :class:`~gym_slaterec.core.config.SimulatorConfig` as an override (for example
    ``boredom_threshold=4``), ``item_embeddings`` (``"focused"``, ``"diffuse"``, a
    ``.npy`` path or an ``N x d`` array), ``analysis_info=True`` to add ``bored``,
    ``scores``, ``click_probs``, ``slate_topics`` and intra-slate ``diversity`` to
    ``info``, and ``render_mode="ansi"``.

    ## Privileged state
    ``env.unwrapped.simulator`` is the underlying one-user
    :class:`~gym_slaterec.core.simulator.TopicRecSimulator` (user embedding,
    boredom, click log, ``oracle_slates()``), for analysis and privileged
    baselines only: agents must not read it.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}
    env_id: Optional[str] = None

    def __init__(
        self,
        item_embeddings: Optional[EmbeddingsLike] = None,
        analysis_info: bool = False,
        render_mode: Optional[str] = None,
        **overrides: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.simulator = build_simulator(self.env_id, 1, item_embeddings, overrides)
        self.config = self.simulator.config
        self.analysis_info = as_flag("analysis_info", analysis_info)
        self.render_mode = render_mode
        n, k = self.simulator.num_items, self.simulator.slate_size
        self.action_space = spaces.MultiDiscrete(np.full(k, n, dtype=np.int64))
        self.observation_space = spaces.Dict(
            {"slate": spaces.MultiDiscrete(np.full(k, n, dtype=np.int64)), "clicks": spaces.MultiBinary(k)}
        )
        self._started = False
        self._last_turn: Optional[Turn] = None
        self._episode_length = self.config.episode_length

    # The privileged quantities most often needed, for convenience.
    @property
    def item_embeddings(self) -> np.ndarray:
        return self.simulator.items

    @property
    def user_embedding(self) -> np.ndarray:
        return self.simulator.user[0].copy()

    @property
    def bored_topics(self) -> np.ndarray:
        return self.simulator.bored[0].copy()

    def _obs(self, turn: Turn) -> dict[str, np.ndarray]:
        return {"slate": turn.slates[0].copy(), "clicks": turn.clicks[0].astype(np.int8)}

    def _info(self, turn: Turn) -> dict[str, Any]:
        info: dict[str, Any] = {"turn": int(self.simulator.t[0])}
        if self.analysis_info:
            info.update({key: value[0] for key, value in analysis_info(self.simulator, turn).items()})
        return info

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        if seed is not None:
            self.simulator.seed(np.array([seed]))
        elif not self._started:
            self.simulator.seed(np.array([int(self.np_random.integers(0, 2**62))]))
        self._started = True
        turn = self.simulator.reset()
        self._last_turn = turn
        return self._obs(turn), self._info(turn)

    def step(self, action: Any):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        sim = self.simulator
        if sim.t[0] >= self._episode_length:
            raise RuntimeError("the episode has terminated; call reset() to start a new one")
        slate = check_slates(action, 0, sim.slate_size, sim.num_items)
        turn = sim.step(slate)
        self._last_turn = turn
        t = int(sim.t[0])
        info = self._info(turn) if self.analysis_info else {"turn": t}
        return self._obs(turn), float(turn.rewards[0]), t >= self._episode_length, False, info

    def render(self) -> Optional[str]:
        if self.render_mode != "ansi" or self._last_turn is None:
            return None
        turn = self._last_turn
        cells = [f"{i}{'*' if c else ''}" for i, c in zip(turn.slates[0], turn.clicks[0])]
        bored = np.flatnonzero(self.simulator.bored[0]).tolist()
        return f"turn {int(self.simulator.t[0]):3d} | slate {' '.join(cells)} | clicks {int(turn.clicks[0].sum())} | bored topics {bored}"
