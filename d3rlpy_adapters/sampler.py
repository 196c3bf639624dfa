"""Mini-batches of transitions drawn from flat arrays: d3rlpy's batches, without its per-transition loop.

d3rlpy's ``ReplayBuffer.sample_transition_batch`` picks each of the batch's transitions in Python
(a draw, an episode lookup, a ``Transition`` object, then a stack of all of them): ~5 ms for 256
transitions, as long as a whole BC update. :class:`TransitionSampler` holds the episodes' arrays
concatenated (the d3rlpy episodes it hands out are views into them, so the dataset is held once)
and gathers a batch with a few indexing operations. It draws the same indices from numpy's global
generator as d3rlpy's buffer (``np.random.randint(n, size=B)`` yields the values of ``B`` calls of
``np.random.randint(n)``) and builds the same arrays as its ``BasicTransitionPicker``: an episode
that terminated contributes its last turn with a zero next observation and terminal 1; one that
did not contributes all turns but its last. Same seed, same batches, same training.

:func:`read_d3rlpy_file` reads a d3rlpy dataset file (``MDPDataset.dump``) straight into those
arrays, without d3rlpy's one array per episode and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


class TransitionSampler:
    """Uniform transitions over episodes stored back to back: ``observations``, ``actions`` and
    ``rewards`` (one row per turn), ``sizes`` (turns per episode) and ``terminated`` (per episode)."""

    def __init__(self, observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                 sizes: Sequence[int], terminated: Sequence[bool]) -> None:
        sizes = np.asarray(sizes, dtype=np.int64)
        terminated = np.asarray(terminated, dtype=bool)
        if len(sizes) == 0:
            raise ValueError("no episodes to sample from")
        if len(terminated) != len(sizes) or (sizes < 1).any():
            raise ValueError("every episode needs one or more turns and a terminated flag")
        total = int(sizes.sum())
        if not (len(observations) == len(actions) == len(rewards) == total):
            raise ValueError(f"{len(observations)} observations, {len(actions)} actions and {len(rewards)} rewards "
                             f"for episodes of {total} turns in all")
        self.observations, self.actions = observations, actions.astype(np.float32, copy=False)
        self.rewards = rewards.astype(np.float32, copy=False).reshape(total, -1)
        self.sizes, self.terminated = sizes, terminated
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        counts = np.where(terminated, sizes, sizes - 1)  # d3rlpy's Episode.transition_count
        first = np.repeat(np.cumsum(counts) - counts, counts)
        self.rows = np.repeat(self.starts, counts) + (np.arange(counts.sum()) - first)
        self.terminal = np.zeros(len(self.rows), dtype=bool)
        self.terminal[(np.cumsum(counts) - 1)[terminated]] = True  # a terminated episode's last turn

    @classmethod
    def from_episodes(cls, episodes: Sequence[Any]) -> "TransitionSampler":
        """A sampler over copies of d3rlpy ``Episode`` objects' arrays."""
        if not episodes:
            raise ValueError("no episodes to sample from")
        return cls(np.concatenate([ep.observations for ep in episodes]), np.concatenate([ep.actions for ep in episodes]),
                   np.concatenate([np.asarray(ep.rewards).reshape(ep.size(), -1) for ep in episodes]),
                   [ep.size() for ep in episodes], [bool(ep.terminated) for ep in episodes])

    @property
    def transition_count(self) -> int:
        return len(self.rows)

    def episodes(self) -> list[Any]:
        """d3rlpy ``Episode`` objects whose arrays are views into the sampler's."""
        from d3rlpy.dataset import Episode

        return [Episode(observations=self.observations[s:s + n], actions=self.actions[s:s + n],
                        rewards=self.rewards[s:s + n], terminated=bool(t))
                for s, n, t in zip(self.starts, self.sizes, self.terminated)]

    def sample(self, batch_size: int) -> Any:
        """A ``TransitionMiniBatch`` of ``batch_size`` transitions drawn uniformly with replacement."""
        from d3rlpy.dataset import TransitionMiniBatch

        idx = np.random.randint(self.transition_count, size=batch_size)
        rows = self.rows[idx]
        terminal = self.terminal[idx]
        nxt = np.minimum(rows + 1, len(self.actions) - 1)  # a terminal's next row is zeroed below
        keep = (~terminal)[:, None]
        return TransitionMiniBatch(
            observations=self.observations[rows].astype(np.float32), actions=self.actions[rows],
            rewards=self.rewards[rows], next_observations=self.observations[nxt].astype(np.float32) * keep,
            next_actions=self.actions[nxt] * keep, terminals=terminal.astype(np.float32)[:, None],
            intervals=np.ones((batch_size, 1), dtype=np.float32), transitions=[])


def read_d3rlpy_file(path: Path) -> TransitionSampler:
    """The episodes of a d3rlpy dataset file (columns observations, actions, rewards, terminated;
    one HDF5 dataset per episode and column) read into one sampler's arrays."""
    import h5py

    with h5py.File(path, "r") as h5:
        version = h5["version"][()]
        version = version.decode() if isinstance(version, bytes) else str(version)
        columns = sorted(c.decode() if isinstance(c, bytes) else str(c) for c in h5["columns"][()])
        if version == "2.0" or columns != ["actions", "observations", "rewards", "terminated"]:
            raise ValueError(f"a d3rlpy dataset of version {version} with columns {columns} (expected one "
                             "observation array per episode)")
        n = int(h5["num_episodes"][()])
        if n < 1:
            raise ValueError("no episodes")
        sizes = np.array([h5[f"actions_{i}"].shape[0] for i in range(n)], dtype=np.int64)
        obs0, act0, rew0 = (h5[f"{c}_0"] for c in ("observations", "actions", "rewards"))
        total = int(sizes.sum())
        obs = np.empty((total, *obs0.shape[1:]), dtype=obs0.dtype)
        act = np.empty((total, *act0.shape[1:]), dtype=np.float32)
        rew = np.empty((total, int(np.prod(rew0.shape[1:], dtype=np.int64))), dtype=np.float32)
        terminated = np.empty(n, dtype=bool)
        start = 0
        for i, size in enumerate(sizes):
            for column, out in (("observations", obs), ("actions", act), ("rewards", rew)):
                d = h5[f"{column}_{i}"]
                if d.shape[0] != size or int(np.prod(d.shape[1:])) != int(np.prod(out.shape[1:])):
                    raise ValueError(f"episode {i}: {column} of shape {d.shape}, expected {size} rows like episode 0's")
                out[start:start + size] = d[()].reshape(size, *out.shape[1:])
            terminated[i] = bool(h5[f"terminated_{i}"][()])
            start += size
    return TransitionSampler(obs, act, rew, sizes, terminated)
