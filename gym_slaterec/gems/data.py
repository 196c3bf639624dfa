"""Batches of (slate, clicks) turns read straight from a logged dataset's arrays.

Every turn of every selected episode (the reset turn included, when the dataset
logged it) is one sample.
Samples are addressed by a flat index ``episode * (turns + 1) + turn`` into the
dataset's memory-mapped ``(E * (T + 1), k)`` view; a batch is one fancy-indexing
read per array, so there is no per-sample Python object and starting on a
100,000-episode dataset costs only the index arrays.
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch

from ..logged_data import LoggedDataset


class TurnSampler:
    """The (slate, clicks) samples of a subset of a dataset's episodes."""

    def __init__(self, dataset: LoggedDataset, episodes: Optional[np.ndarray] = None) -> None:
        E, T1, k = dataset.slates.shape
        self.slates = dataset.slates.reshape(E * T1, k)  # a view: stays memory-mapped
        self.clicks = dataset.clicks.reshape(E * T1, k)
        episodes = np.arange(E) if episodes is None else np.asarray(episodes)
        if episodes.size and (episodes.min() < 0 or episodes.max() >= E):
            raise ValueError(f"episode indices must lie in [0, {E - 1}]")
        dtype = np.int32 if E * T1 < 2**31 else np.int64
        turns = np.arange(dataset.first_turn, T1, dtype=dtype)
        self.index = (episodes.astype(dtype)[:, None] * T1 + turns).ravel()
        self.block = len(turns)

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, max_samples: int, seed: int) -> "TurnSampler":
        """A fixed random subset of at most ``max_samples`` samples (self if already small)."""
        if len(self) <= max_samples:
            return self
        other = object.__new__(TurnSampler)
        other.slates, other.clicks, other.block = self.slates, self.clicks, self.block
        pick = np.random.default_rng(seed).choice(len(self), size=max_samples, replace=False)
        other.index = np.sort(self.index[pick])
        return other

    def read(self, flat: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Slates (B, k) int64 and clicks (B, k) float32 at the given flat indices."""
        flat = np.sort(flat)  # sequential reads through the memory map; order within a batch is irrelevant
        slates = torch.from_numpy(np.asarray(self.slates[flat], dtype=np.int64))
        clicks = torch.from_numpy(np.asarray(self.clicks[flat], dtype=np.float32))
        return slates, clicks

    def batches(
        self,
        batch_size: int,
        rng: Optional[np.random.Generator] = None,
        drop_last: bool = False,
        chunk: int = 1 << 18,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass over the samples, shuffled when ``rng`` is given.

        Shuffling is two-level so that an epoch starts at once even with ten
        million samples (a full permutation takes seconds): the blocks of
        ``turns + 1`` consecutive samples (whole episodes) are put in random order,
        then taken ``chunk`` samples at a time and shuffled within the chunk. A
        batch therefore mixes turns of about ``chunk / (turns + 1)`` random episodes.
        """
        if rng is None:
            for start in range(0, len(self.index), batch_size):
                if drop_last and start + batch_size > len(self.index):
                    return
                yield self.read(self.index[start : start + batch_size])
            return
        n, block = len(self.index), self.block
        n_blocks = -(-n // block)
        order = rng.permutation(n_blocks)
        per_chunk = max(1, chunk // block)
        offsets = np.arange(block)
        carry = self.index[:0]
        for g in range(0, n_blocks, per_chunk):
            pos = (order[g : g + per_chunk, None] * block + offsets).ravel()
            part = self.index[pos[pos < n]]
            rng.shuffle(part)
            part = np.concatenate([carry, part])
            full = len(part) - len(part) % batch_size
            for start in range(0, full, batch_size):
                yield self.read(part[start : start + batch_size])
            carry = part[full:]
        if len(carry) and not drop_last:
            yield self.read(carry)
