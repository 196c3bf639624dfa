"""GRU belief encoder over a history window (docs/method.md section 7).

Each turn of the window becomes ``concat(E[slate] flattened, clicks)`` (``k*(d+1)``
values, ``E`` an item table); a GRU (hidden size 20) reads the real turns of the
window and its last hidden state is the belief. Padding rows (mask 0) are skipped
exactly (packed sequences), so they cannot change the belief.

Use it through ``policy_kwargs``::

    SAC("MultiInputPolicy", env, policy_kwargs=dict(
        features_extractor_class=GRUBeliefExtractor,
        features_extractor_kwargs=dict(item_embeddings=table, freeze=False),
        share_features_extractor=False))

With ``share_features_extractor=False`` (SB3's default for SAC/TD3) actor and
critic each get their own GRU and their own item table, as in the paper.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


def item_table(num_items: int, table: Optional[np.ndarray], embedding_dim: int, freeze: bool,
               name: str = "item_embeddings", scratch_std: Optional[float] = None) -> nn.Embedding:
    """The belief's item table: a copy of ``table`` (N, d), or a scratch table of
    ``embedding_dim`` (normal, std ``scratch_std``, default 1/sqrt(d)); trainable unless ``freeze``."""
    if table is not None:
        t = torch.as_tensor(np.asarray(table), dtype=torch.float32)
        if t.ndim != 2 or t.shape[0] != num_items:
            raise ValueError(f"{name} must have shape ({num_items}, d), got {tuple(t.shape)}")
        return nn.Embedding.from_pretrained(t.clone(), freeze=freeze)
    items = nn.Embedding(num_items, int(embedding_dim))
    nn.init.normal_(items.weight, std=1.0 / np.sqrt(embedding_dim) if scratch_std is None else float(scratch_std))
    items.weight.requires_grad_(not freeze)
    return items


class GRUBeliefExtractor(BaseFeaturesExtractor):
    """Belief state from a history window ``{"items", "clicks", "mask"}``.

    :param observation_space: the :func:`sb3_slate.envs.history_space` of the env.
    :param item_embeddings: initial item table ``(N, d)`` (MF, ideal, GeMS...);
        ``None`` initialises a scratch table of dimension ``embedding_dim``.
    :param embedding_dim: dimension of a scratch table (ignored when a table is given).
    :param freeze: keep the item table fixed during training.
    :param hidden_size: GRU hidden size = belief dimension (20 in the paper).
    :param scratch_std: standard deviation of a scratch table (None: 1/sqrt(embedding_dim)).
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        item_embeddings: Optional[np.ndarray] = None,
        embedding_dim: int = 20,
        freeze: bool = False,
        hidden_size: int = 20,
        scratch_std: Optional[float] = None,
    ) -> None:
        for key in ("items", "clicks", "mask"):
            if not isinstance(observation_space, spaces.Dict) or key not in observation_space.spaces:
                raise ValueError(
                    f"GRUBeliefExtractor needs a history-window observation with 'items', 'clicks' and 'mask'; got {observation_space}"
                )
        super().__init__(observation_space, features_dim=int(hidden_size))
        items_space = observation_space["items"]
        window, slate_size = items_space.shape
        num_items = int(items_space.high.max()) + 1
        self.items = item_table(num_items, item_embeddings, embedding_dim, freeze, scratch_std=scratch_std)
        dim = self.items.embedding_dim
        self.window, self.slate_size, self.num_items = window, slate_size, num_items
        self.gru = nn.GRU(slate_size * (dim + 1), int(hidden_size), batch_first=True)

    def turn_inputs(self, items: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
        """(B, W, k) ids and clicks -> (B, W, k*(d+1)) GRU inputs."""
        b, w, k = items.shape
        emb = self.items(items.long()).reshape(b, w, -1)
        return torch.cat([emb, clicks.float()], dim=2)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.turn_inputs(observations["items"], observations["clicks"])
        lengths = observations["mask"].float().sum(dim=1).long().clamp_(min=1)
        if bool((lengths == x.shape[1]).all()):
            _, h = self.gru(x)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, h = self.gru(packed)
        return h[-1]


class TurnFeatures(BaseFeaturesExtractor):
    """The last turn of a one-turn history window, ``concat(E[slate] flattened, clicks)``, for
    policies that carry their own recurrent belief (sb3-contrib's RecurrentPPO: its LSTM reads
    these features turn by turn). Before the first turn (mask 0) the features are zeros.

    :param item_embeddings: initial item table ``(N, d)``; ``None``: scratch of ``embedding_dim``.
    :param freeze: keep the item table fixed during training.
    """

    def __init__(self, observation_space: spaces.Dict, item_embeddings: Optional[np.ndarray] = None,
                 embedding_dim: int = 20, freeze: bool = False, scratch_std: Optional[float] = None) -> None:
        if not isinstance(observation_space, spaces.Dict) or observation_space["items"].shape[0] != 1:
            raise ValueError(f"TurnFeatures needs a one-turn history window observation; got {observation_space}")
        items_space = observation_space["items"]
        slate_size = items_space.shape[1]
        num_items = int(items_space.high.max()) + 1
        table = item_table(num_items, item_embeddings, embedding_dim, freeze, scratch_std=scratch_std)
        super().__init__(observation_space, features_dim=slate_size * (table.embedding_dim + 1))
        self.items = table

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        items, clicks = observations["items"][:, 0], observations["clicks"][:, 0]
        x = torch.cat([self.items(items.long()).flatten(1), clicks.float()], dim=1)
        return x * observations["mask"].float()[:, :1]


class FlatGRUBeliefExtractor(GRUBeliefExtractor):
    """:class:`GRUBeliefExtractor` over a flattened history window (:class:`sb3_slate.envs.VectorFlatWindow`).

    :param window: turns in the window; :param slate_size: items per slate;
    :param num_items: catalogue size. The other parameters as :class:`GRUBeliefExtractor`.
    """

    def __init__(self, observation_space: spaces.Box, window: int, slate_size: int, num_items: int,
                 item_embeddings: Optional[np.ndarray] = None, embedding_dim: int = 20, freeze: bool = False,
                 hidden_size: int = 20, scratch_std: Optional[float] = None) -> None:
        if observation_space.shape != (window * (2 * slate_size + 1),):
            raise ValueError(f"a flat window of {window} turns of {slate_size} items has "
                             f"{window * (2 * slate_size + 1)} values, got shape {observation_space.shape}")
        from .envs import history_space

        super().__init__(history_space(num_items, slate_size, window), item_embeddings, embedding_dim, freeze,
                         hidden_size, scratch_std)
        self._observation_space = observation_space

    def forward(self, observations: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, n = observations.shape[0], self.window * self.slate_size
        items = observations[:, :n].round().long().reshape(b, self.window, self.slate_size)
        clicks = observations[:, n:2 * n].reshape(b, self.window, self.slate_size)
        mask = observations[:, 2 * n:]
        return super().forward({"items": items, "clicks": clicks, "mask": mask})
