"""SAC+WkNN: SAC acting through a Wolpertinger policy (docs/method.md section 7).

The actor proposes one ``d``-dimensional target per rank (a ``k*d`` action); for
each rank the ``k'`` items whose embeddings are nearest (Euclidean) to its target
are candidates, and the critic picks among them greedily, rank after rank. The
refined action (the chosen items' embeddings) is what the env receives and what
the replay buffer stores; :class:`NearestItemPerRank` maps it back to item ids.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import VectorActionWrapper, VectorEnv
from gymnasium.vector.utils import batch_space
from stable_baselines3.sac.policies import SACPolicy

from .sac import SlateSAC


def embedding_box(table: np.ndarray, slate_size: int) -> spaces.Box:
    """Action box of per-rank targets: the table's per-dimension range, tiled over ranks."""
    low = np.tile(table.min(axis=0), slate_size).astype(np.float32)
    high = np.tile(table.max(axis=0), slate_size).astype(np.float32)
    high = np.maximum(high, low + 1e-6)
    return spaces.Box(low, high, dtype=np.float32)


def greedy_item_choice(target: torch.Tensor, items: torch.Tensor, unit_items: torch.Tensor, k_neighbours: int,
                       belief: torch.Tensor, q: torch.nn.Module) -> torch.Tensor:
    """The Wolpertinger refinement of both regimes: per-rank targets (B, k, d) in the table's
    units -> the chosen items' rows of ``unit_items`` (B, k, d).

    The candidates of a rank are the ``k_neighbours`` items nearest to its target
    (Euclidean); starting from every rank's nearest item, each rank in turn takes the
    candidate with the highest ``q(concat(belief, action))`` given the ranks already chosen.
    When ``q`` is a sequence of modules starting with a linear layer (SB3's and the episode
    agent's Q heads), its first layer is applied in parts (:func:`_greedy_split_first_layer`).
    """
    b, k, d = target.shape
    kp = min(int(k_neighbours), items.shape[0])
    cand = torch.cdist(target.reshape(b * k, d), items).topk(kp, dim=1, largest=False).indices.view(b, k, kp)
    cand_unit = unit_items[cand]  # (B, k, k', d)
    layers = list(q) if isinstance(q, torch.nn.Sequential) else []
    if layers and isinstance(layers[0], torch.nn.Linear) and layers[0].in_features == belief.shape[1] + k * d:
        return _greedy_split_first_layer(cand_unit, belief, layers[0], layers[1:])
    action = cand_unit[:, :, 0].clone()
    rows = torch.arange(b, device=target.device)
    beliefs = belief.repeat_interleave(kp, dim=0)
    for r in range(k):
        trial = action.unsqueeze(1).repeat(1, kp, 1, 1)  # (B, k', k, d)
        trial[:, :, r] = cand_unit[:, r]
        values = q(torch.cat([beliefs, trial.reshape(b * kp, k * d)], dim=1)).view(b, kp)
        action[:, r] = cand_unit[rows, r, values.argmax(dim=1)]
    return action


def _greedy_split_first_layer(cand_unit: torch.Tensor, belief: torch.Tensor, first: torch.nn.Linear,
                              rest: list[torch.nn.Module]) -> torch.Tensor:
    """:func:`greedy_item_choice`'s rank-by-rank search for ``q = rest(first(.))``.

    ``first(concat(belief, action))`` is the belief's part plus one part per rank, so each
    candidate is projected once by its rank's block of the weights, and a trial slate's
    first layer is a sum of parts instead of a (H + k*d)-wide product: about k times less
    work than evaluating ``q`` on every trial slate, with the same choices (up to the
    rounding of a different summation order).
    """
    b, k, kp, d = cand_unit.shape
    hb = belief.shape[1]
    w_action = first.weight[:, hb:].reshape(-1, k, d)  # (h, k, d)
    base = belief @ first.weight[:, :hb].T
    if first.bias is not None:
        base = base + first.bias
    proj = torch.einsum("bkjd,hkd->bkjh", cand_unit, w_action)  # (B, k, k', h): candidate j of rank r, projected
    current = proj[:, :, 0].clone()  # (B, k, h): the parts of the ranks' current items
    rows = torch.arange(b, device=cand_unit.device)
    action = cand_unit[:, :, 0].clone()
    for r in range(k):
        others = base + current.sum(dim=1) - current[:, r]  # (B, h)
        x = (others.unsqueeze(1) + proj[:, r]).reshape(b * kp, -1)
        for layer in rest:
            x = layer(x)
        best = x.view(b, kp).argmax(dim=1)
        current[:, r] = proj[rows, r, best]
        action[:, r] = cand_unit[rows, r, best]
    return action


class NearestItemPerRank(VectorActionWrapper):
    """Vector env acting with ``k*d`` per-rank targets: each rank shows its nearest item.

    The targets lie in the table's box (:func:`embedding_box`), or with ``unit=True`` in
    ``[-1, 1]``, mapped linearly onto that box first (the episode-replay agent's scale).
    """

    def __init__(self, env: VectorEnv, table: np.ndarray, unit: bool = False) -> None:
        super().__init__(env)
        self.table = torch.as_tensor(np.asarray(table, dtype=np.float32))
        self.slate_size = int(env.single_action_space.shape[0])
        if self.table.shape[0] != int(env.single_action_space.nvec[0]):
            raise ValueError(f"item table has {self.table.shape[0]} rows, the env has {int(env.single_action_space.nvec[0])} items")
        box = embedding_box(self.table.numpy(), self.slate_size)
        self.unit = bool(unit)
        self.low, self.high = torch.as_tensor(box.low), torch.as_tensor(box.high)
        self.single_action_space = spaces.Box(-1.0, 1.0, box.shape, np.float32) if self.unit else box
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def actions(self, actions: Any) -> np.ndarray:
        a = torch.as_tensor(np.asarray(actions, dtype=np.float32))
        if self.unit:
            a = self.low + (a + 1.0) * 0.5 * (self.high - self.low)
        a = a.reshape(-1, self.slate_size, self.table.shape[1])
        dist = torch.cdist(a, self.table.unsqueeze(0).expand(a.shape[0], -1, -1))
        return dist.argmin(dim=2).numpy().astype(np.int64)


class WolpertingerPolicy(SACPolicy):
    """SAC policy whose action is refined by a k'-nearest-neighbour search and the critic."""

    def __init__(self, *args: Any, item_table: Optional[np.ndarray] = None, k_neighbours: int = 10, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if item_table is None:
            raise ValueError("WolpertingerPolicy needs item_table (N, d)")
        table = torch.as_tensor(np.asarray(item_table, dtype=np.float32))
        self.register_buffer("item_table", table)
        self.k_neighbours = int(k_neighbours)
        self.item_dim = table.shape[1]
        self.slate_size = self.action_space.shape[0] // self.item_dim
        low = torch.as_tensor(self.action_space.low).reshape(self.slate_size, self.item_dim)
        high = torch.as_tensor(self.action_space.high).reshape(self.slate_size, self.item_dim)
        # candidate items' embeddings, expressed in the policy's [-1, 1] action scale
        self.register_buffer("low_", low)
        self.register_buffer("high_", high)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(item_table=self.item_table.cpu().numpy(), k_neighbours=self.k_neighbours)
        return data

    def _from_unit(self, a: torch.Tensor) -> torch.Tensor:
        return self.low_ + (a + 1.0) * 0.5 * (self.high_ - self.low_)

    def refine(self, observation: Any, proto: torch.Tensor) -> torch.Tensor:
        """Greedy per-rank choice among the k' nearest items of each rank's target."""
        b, k, d = proto.shape[0], self.slate_size, self.item_dim
        unit_items = 2.0 * (self.item_table - self.low_[0]) / (self.high_[0] - self.low_[0]) - 1.0
        feats = self.critic.extract_features(observation, self.critic.features_extractor)
        action = greedy_item_choice(self._from_unit(proto.reshape(b, k, d)), self.item_table, unit_items,
                                    self.k_neighbours, feats, self.critic.q_networks[0])
        return action.reshape(b, k * d).clamp(-1.0, 1.0)

    def _predict(self, observation: Any, deterministic: bool = False) -> torch.Tensor:
        proto = self.actor(observation, deterministic)
        with torch.no_grad():
            return self.refine(observation, proto)


class WolpertingerSAC(SlateSAC):
    """SAC trained on the Wolpertinger-refined actions (SB3 API: learn/save/load/predict)."""

    policy_aliases = {"MultiInputPolicy": WolpertingerPolicy, "WolpertingerPolicy": WolpertingerPolicy}
