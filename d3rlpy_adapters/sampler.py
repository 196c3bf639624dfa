"""Mini-batches of transitions drawn from flat arrays: d3rlpy's batches, without its per-transition loop.

d3rlpy's ``ReplayBuffer.sample_transition_batch`` picks each of the batch's transitions in Python
(a draw, an episode lookup, a ``Transition`` object, then a stack of all of them): ~5 ms for 256
transitions, as long as a whole BC update. :class:`TransitionSampler` holds the episodes' arrays
concatenated (the episodes keep views into them, so nothing is stored twice) and gathers a batch
with a few indexing operations. It draws the same indices from numpy's global generator as
d3rlpy's buffer (``np.random.randint(n, size=B)`` yields the values of ``B`` calls of
``np.random.randint(n)``) and builds the same arrays as its ``BasicTransitionPicker``: an
episode that terminated contributes its last turn with a zero next observation and terminal 1;
one that did not contributes all turns but its last. Same seed, same batches, same training.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class TransitionSampler:
    """Uniform transitions over ``episodes`` (d3rlpy ``Episode`` objects, one observation array each)."""

    def __init__(self, episodes: Sequence[Any]) -> None:
        from d3rlpy.dataset import Episode

        if not episodes:
            raise ValueError("no episodes to sample from")
        sizes = np.array([ep.size() for ep in episodes], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.observations = np.concatenate([ep.observations for ep in episodes])
        self.actions = np.concatenate([ep.actions for ep in episodes]).astype(np.float32, copy=False)
        self.rewards = np.concatenate([ep.rewards for ep in episodes]).astype(np.float32, copy=False).reshape(len(self.actions), -1)
        counts = np.array([ep.transition_count for ep in episodes], dtype=np.int64)
        self.rows = np.repeat(starts, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
        terminal = np.zeros(int(counts.sum()), dtype=bool)
        ends = np.cumsum(counts) - 1
        done = np.array([bool(ep.terminated) for ep in episodes]) & (counts > 0)
        terminal[ends[done]] = True
        self.terminal = terminal
        # the episodes keep views into the flat arrays: the dataset is held once
        self.episodes = [Episode(observations=self.observations[s:s + n], actions=self.actions[s:s + n],
                                 rewards=self.rewards[s:s + n], terminated=ep.terminated)
                         for ep, s, n in zip(episodes, starts, sizes)]

    @property
    def transition_count(self) -> int:
        return len(self.rows)

    def sample(self, batch_size: int) -> Any:
        """A ``TransitionMiniBatch`` of ``batch_size`` transitions drawn uniformly with replacement."""
        from d3rlpy.dataset import TransitionMiniBatch

        idx = np.random.randint(self.transition_count, size=batch_size)
        rows = self.rows[idx]
        terminal = self.terminal[idx]
        nxt = np.minimum(rows + 1, len(self.actions) - 1)  # a terminal's next row is masked below
        keep = (~terminal)[:, None]
        observations = self.observations[rows].astype(np.float32)
        next_observations = self.observations[nxt].astype(np.float32) * keep
        next_actions = self.actions[nxt] * keep
        return TransitionMiniBatch(
            observations=observations, actions=self.actions[rows], rewards=self.rewards[rows],
            next_observations=next_observations, next_actions=next_actions,
            terminals=terminal.astype(np.float32)[:, None], intervals=np.ones((batch_size, 1), dtype=np.float32),
            transitions=[])
