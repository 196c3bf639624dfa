"""The episode replay memory of :class:`~sb3_slate.agents.EpisodeSAC` and its typed batch samples."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Union

import numpy as np
import torch


class EpisodeBatch(NamedTuple):
    """Whole episodes sampled for one gradient step (``B`` episodes of ``T`` turns)."""

    #: item ids of the shown slates, (B, T+1, k) int64; row 0 is the reset observation's slate
    slates: torch.Tensor
    #: clicks on those slates, (B, T+1, k) float32
    clicks: torch.Tensor
    #: the actions taken, (B, T, A) float32
    actions: torch.Tensor
    #: the rewards (clicks per turn), (B, T) float32
    rewards: torch.Tensor

    def to(self, device: torch.device) -> "EpisodeBatch":
        return EpisodeBatch(*(t.to(device, non_blocking=True) for t in self))


class EpisodeReplayBuffer:
    """The newest ``capacity`` episodes as item ids (int16/int32), clicks (uint8),
    actions and rewards (float32); sampling draws whole episodes."""

    def __init__(self, capacity: int, episode_length: int, slate_size: int, action_dim: int, num_items: int) -> None:
        for name, v in (("capacity", capacity), ("episode_length", episode_length), ("slate_size", slate_size),
                        ("action_dim", action_dim), ("num_items", num_items)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.capacity, self.T, self.k = int(capacity), int(episode_length), int(slate_size)
        self.action_dim, self.num_items = int(action_dim), int(num_items)
        ids = np.int16 if num_items <= np.iinfo(np.int16).max else np.int32
        self.slates = np.zeros((self.capacity, self.T + 1, self.k), dtype=ids)
        self.clicks = np.zeros((self.capacity, self.T + 1, self.k), dtype=np.uint8)
        self.actions = np.zeros((self.capacity, self.T, self.action_dim), dtype=np.float32)
        self.rewards = np.zeros((self.capacity, self.T), dtype=np.float32)
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, slates: np.ndarray, clicks: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Append ``n`` whole episodes: (n, T+1, k), (n, T+1, k), (n, T, A), (n, T)."""
        n = len(slates)
        if slates.shape != (n, self.T + 1, self.k) or clicks.shape != slates.shape:
            raise ValueError(f"episodes must be ({n}, {self.T + 1}, {self.k}); got {slates.shape} and {clicks.shape}")
        if actions.shape != (n, self.T, self.action_dim) or rewards.shape != (n, self.T):
            raise ValueError(f"actions/rewards must be ({n}, {self.T}, {self.action_dim}) / ({n}, {self.T}); "
                             f"got {actions.shape} and {rewards.shape}")
        if not np.isfinite(actions).all():
            raise ValueError("refusing to store non-finite actions in the replay buffer")
        idx = (self.pos + np.arange(n)) % self.capacity
        self.slates[idx], self.clicks[idx] = slates, clicks
        self.actions[idx], self.rewards[idx] = actions, rewards
        self.pos = int((self.pos + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))

    def sample(self, batch_size: int, rng: np.random.Generator) -> EpisodeBatch:
        """``batch_size`` whole episodes drawn uniformly (with replacement)."""
        if self.size == 0:
            raise ValueError("the replay buffer is empty")
        idx = np.sort(rng.integers(0, self.size, size=batch_size))
        return EpisodeBatch(
            slates=torch.from_numpy(self.slates[idx].astype(np.int64)),
            clicks=torch.from_numpy(self.clicks[idx].astype(np.float32)),
            actions=torch.from_numpy(self.actions[idx]),
            rewards=torch.from_numpy(self.rewards[idx]),
        )

    def save(self, path: Union[str, Path]) -> None:
        """An ``.npz`` archive (no pickle) of the stored episodes."""
        with open(path, "wb") as f:
            np.savez(f, slates=self.slates[: self.size], clicks=self.clicks[: self.size],
                     actions=self.actions[: self.size], rewards=self.rewards[: self.size],
                     meta=np.array([self.pos, self.size, self.capacity, self.T, self.k, self.action_dim, self.num_items]))

    def load(self, path: Union[str, Path]) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                pos, size, cap, T, k, A, n = (int(x) for x in data["meta"])
                arrays = {name: data[name] for name in ("slates", "clicks", "actions", "rewards")}
        except Exception as exc:  # truncated, foreign or pickled content
            raise ValueError(f"replay buffer {path} is damaged ({type(exc).__name__}: {exc})") from exc
        if (cap, T, k, A, n) != (self.capacity, self.T, self.k, self.action_dim, self.num_items):
            raise ValueError(f"replay buffer {path} holds episodes of another shape {(cap, T, k, A, n)}")
        for name, arr in arrays.items():
            if len(arr) != size:
                raise ValueError(f"replay buffer {path} is damaged ({name} holds {len(arr)} of {size} episodes)")
            getattr(self, name)[:size] = arr
        self.pos, self.size = pos, size
