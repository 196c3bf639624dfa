"""``GeMSAction``: act in GeMS's latent space, the decoder turns the action into a slate."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import VectorActionWrapper, VectorEnv
from gymnasium.vector.utils import batch_space

from ..gems.checkpoint import CheckpointLike, GeMSCheckpoint, as_checkpoint
from ._env import EnvInfo, as_action_batch, env_info


def _prepare(env: Any, checkpoint: CheckpointLike, allow_env_mismatch: bool) -> tuple[GeMSCheckpoint, EnvInfo]:
    info = env_info(env)
    ckpt = as_checkpoint(checkpoint, allow_env_mismatch=True, allow_partial=True)  # warns if partial
    if not allow_env_mismatch:
        ckpt.check_env(info.env_id, info.item_embeddings_fingerprint)
    if (ckpt.num_items, ckpt.slate_size) != (info.num_items, info.slate_size):
        raise ValueError(
            f"GeMS checkpoint decodes slates of {ckpt.slate_size} items out of {ckpt.num_items}; the environment "
            f"expects {info.slate_size} out of {info.num_items}"
        )
    return ckpt, info


class _Decoder:
    """Maps agent actions in [-1, 1] to slates with one batched torch call."""

    def __init__(self, ckpt: GeMSCheckpoint) -> None:
        self.ckpt = ckpt
        self.center = torch.from_numpy(ckpt.center.astype(np.float32))
        self.scale = torch.from_numpy(ckpt.scale.astype(np.float32))

    def __call__(self, a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            z = self.center + self.scale * torch.from_numpy(a)
            return self.ckpt.model.decode_slates(z).numpy().astype(np.int64)


class GeMSAction(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """Actions in ``Box(-1, 1, (latent_dim,))`` decoded into slates by a pre-trained GeMS.

    The action ``a`` becomes the latent code ``z = center + scale * a`` (the
    checkpoint's bounds, docs/method.md section 6) and the decoder's most likely item at each
    rank forms the slate (duplicates possible). Actions outside ``[-1, 1]`` are
    not clipped (they extrapolate beyond the bounds); NaN raises ``ValueError``.

    ``checkpoint`` is a :class:`~gym_slaterec.gems.GeMSCheckpoint` or a path. A
    checkpoint trained on data from another environment id or item-embedding
    matrix is refused (``ProvenanceMismatchError``) unless
    ``allow_env_mismatch=True``.

    Wrapping a :class:`gymnasium.vector.VectorEnv` returns a
    :class:`GeMSVectorAction` instead (batched actions ``(num_envs, latent_dim)``,
    decoded in one torch call).
    """

    def __new__(cls, env: Any, *args: Any, **kwargs: Any):
        if isinstance(env, VectorEnv):
            return GeMSVectorAction(env, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, env: gym.Env, checkpoint: CheckpointLike, allow_env_mismatch: bool = False) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, checkpoint=checkpoint, allow_env_mismatch=allow_env_mismatch)
        super().__init__(env)
        self.checkpoint, self._info = _prepare(env, checkpoint, allow_env_mismatch)
        self._decode = _Decoder(self.checkpoint)
        self.action_space = spaces.Box(-1.0, 1.0, (self.checkpoint.latent_dim,), np.float32)

    def action(self, action: Any) -> np.ndarray:
        a = as_action_batch(action, 0, self.checkpoint.latent_dim, "GeMS")
        return self._decode(a)[0]

    def decode(self, actions: np.ndarray) -> np.ndarray:
        """Slates (B, k) of a batch of actions (B, latent_dim), without stepping."""
        return self._decode(as_action_batch(actions, len(actions), self.checkpoint.latent_dim, "GeMS"))


class GeMSVectorAction(VectorActionWrapper):
    """:class:`GeMSAction` for a vector env: actions ``(num_envs, latent_dim)`` decoded in one call."""

    def __init__(self, env: VectorEnv, checkpoint: CheckpointLike, allow_env_mismatch: bool = False) -> None:
        if not isinstance(env, VectorEnv):
            raise ValueError(f"GeMSVectorAction wraps a gymnasium VectorEnv, got {type(env).__name__}; use GeMSAction")
        super().__init__(env)
        self.checkpoint, self._info = _prepare(env, checkpoint, allow_env_mismatch)
        self._decode = _Decoder(self.checkpoint)
        self.single_action_space = spaces.Box(-1.0, 1.0, (self.checkpoint.latent_dim,), np.float32)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def actions(self, actions: Any) -> np.ndarray:
        return self._decode(as_action_batch(actions, self.num_envs, self.checkpoint.latent_dim, "GeMS"))

    def decode(self, actions: np.ndarray) -> np.ndarray:
        """Slates (B, k) of a batch of actions (B, latent_dim), without stepping."""
        return self._decode(as_action_batch(actions, len(actions), self.checkpoint.latent_dim, "GeMS"))
