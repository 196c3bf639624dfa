"""``TopKAction``: act in item-embedding space; the slate is the k best-matching items."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import VectorActionWrapper, VectorEnv
from gymnasium.vector.utils import batch_space

from ._env import EnvInfo, as_action_batch, env_info, env_item_matrix

EmbeddingsSpec = Union[str, Path, np.ndarray, Any]


def resolve_embeddings(env: Any, embeddings: EmbeddingsSpec, allow_env_mismatch: bool = False) -> tuple[np.ndarray, str, EnvInfo]:
    """The (N, d) table named by ``embeddings`` and a short description of its source.

    ``"ideal"``: the environment's own item embeddings (privileged); a path to an
    MF file (``train_mf``) or to a plain ``.npy``/``.pt`` matrix; an
    :class:`~gym_slaterec.mf.MFEmbeddings`; or any (N, d) array.
    """
    from ..mf import MFEmbeddings

    info = env_info(env)
    if isinstance(embeddings, str) and embeddings == "ideal":
        table, source = env_item_matrix(env), "ideal"
    elif isinstance(embeddings, (str, Path)):
        p = Path(embeddings)
        embeddings = MFEmbeddings.load(p)  # train_mf's .npz, or a plain .npy/.pt matrix
    if isinstance(embeddings, MFEmbeddings):
        if not allow_env_mismatch:
            embeddings.check_env(info.env_id, info.item_embeddings_fingerprint)
        table, source = embeddings.embeddings, f"mf:{embeddings.path}"
    elif not isinstance(embeddings, (str, Path)):
        table, source = embeddings, "array"
    try:
        table = np.asarray(table, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"embeddings must be 'ideal', an MF file, MFEmbeddings or an (N, d) array: {exc}") from exc
    if table.ndim != 2 or table.shape[0] != info.num_items or table.shape[1] < 1:
        raise ValueError(f"embeddings must have shape ({info.num_items}, d) for this environment, got {table.shape}")
    if not np.isfinite(table).all():
        raise ValueError("embeddings contain NaN or infinite values")
    if info.slate_size > info.num_items:
        raise ValueError("slate size exceeds the number of items")
    return np.ascontiguousarray(table), source, info


class _TopK:
    """Scores every item against a batch of actions and keeps the k best, best first."""

    def __init__(self, table: np.ndarray, k: int) -> None:
        self.table_t = torch.from_numpy(table).T.contiguous()
        self.k = k

    def __call__(self, a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            scores = torch.from_numpy(a) @ self.table_t
            return torch.topk(scores, self.k, dim=1, sorted=True).indices.numpy().astype(np.int64)


def _box(table: np.ndarray) -> spaces.Box:
    low, high = table.min(axis=0), table.max(axis=0)
    high = np.where(high > low, high, low + 1e-6).astype(np.float32)  # a constant column still gives a valid Box
    return spaces.Box(low.astype(np.float32), high, dtype=np.float32)


class TopKAction(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """Actions in item-embedding space; the slate is the k items with the highest dot product, best first.

    ``embeddings``: ``"ideal"`` (the environment's own matrix — privileged
    information, the paper's SAC+TopK (ideal)), a path to MF embeddings
    (``slaterec train-mf``) or an ``.npy`` matrix, an
    :class:`~gym_slaterec.mf.MFEmbeddings`, or any (N, d) array. The action space
    is a ``Box`` whose per-dimension bounds are the table's min and max. MF
    embeddings learnt on another environment are refused
    (``ProvenanceMismatchError``) unless ``allow_env_mismatch=True``.

    Wrapping a :class:`gymnasium.vector.VectorEnv` returns a
    :class:`TopKVectorAction` (batched ``(num_envs, d)`` actions, one matmul + top-k).
    """

    def __new__(cls, env: Any, *args: Any, **kwargs: Any):
        if isinstance(env, VectorEnv):
            return TopKVectorAction(env, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, env: gym.Env, embeddings: EmbeddingsSpec, allow_env_mismatch: bool = False) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, embeddings=embeddings, allow_env_mismatch=allow_env_mismatch)
        super().__init__(env)
        self.embeddings, self.source, info = resolve_embeddings(env, embeddings, allow_env_mismatch)
        self._topk = _TopK(self.embeddings, info.slate_size)
        self.action_space = _box(self.embeddings)

    def action(self, action: Any) -> np.ndarray:
        return self._topk(as_action_batch(action, 0, self.embeddings.shape[1], "TopK"))[0]

    def decode(self, actions: np.ndarray) -> np.ndarray:
        """Slates (B, k) of a batch of actions (B, d), without stepping."""
        return self._topk(as_action_batch(actions, len(actions), self.embeddings.shape[1], "TopK"))


class TopKVectorAction(VectorActionWrapper):
    """:class:`TopKAction` for a vector env: actions ``(num_envs, d)``."""

    def __init__(self, env: VectorEnv, embeddings: EmbeddingsSpec, allow_env_mismatch: bool = False) -> None:
        if not isinstance(env, VectorEnv):
            raise ValueError(f"TopKVectorAction wraps a gymnasium VectorEnv, got {type(env).__name__}; use TopKAction")
        super().__init__(env)
        self.embeddings, self.source, info = resolve_embeddings(env, embeddings, allow_env_mismatch)
        self._topk = _TopK(self.embeddings, info.slate_size)
        self.single_action_space = _box(self.embeddings)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def actions(self, actions: Any) -> np.ndarray:
        return self._topk(as_action_batch(actions, self.num_envs, self.embeddings.shape[1], "TopK"))

    def decode(self, actions: np.ndarray) -> np.ndarray:
        """Slates (B, k) of a batch of actions (B, d), without stepping."""
        return self._topk(as_action_batch(actions, len(actions), self.embeddings.shape[1], "TopK"))
