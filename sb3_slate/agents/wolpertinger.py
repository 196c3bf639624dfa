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
from torch import nn
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
    agent's Q heads), its first layer is applied in parts
    (:func:`greedy_slates`).
    """
    b, k, d = target.shape
    kp = min(int(k_neighbours), items.shape[0])
    cand = torch.cdist(target.reshape(b * k, d), items).topk(kp, dim=1, largest=False).indices.view(b, k, kp)
    cand_unit = unit_items[cand]  # (B, k, k', d)
    layers = list(q) if isinstance(q, torch.nn.Sequential) else []
    if layers and isinstance(layers[0], torch.nn.Linear) and layers[0].in_features == belief.shape[1] + k * d:
        return unit_items[greedy_slates(cand, unit_items, belief, q, "nearest")]
    action = cand_unit[:, :, 0].clone()
    rows = torch.arange(b, device=target.device)
    beliefs = belief.repeat_interleave(kp, dim=0)
    for r in range(k):
        trial = action.unsqueeze(1).repeat(1, kp, 1, 1)  # (B, k', k, d)
        trial[:, :, r] = cand_unit[:, r]
        values = q(torch.cat([beliefs, trial.reshape(b * kp, k * d)], dim=1)).view(b, kp)
        action[:, r] = cand_unit[rows, r, values.argmax(dim=1)]
    return action


#: rows per block of the k-NN search and the greedy choice (a block's scores fit in cache)
_ROWS = 2048


def greedy_slates(cand: torch.Tensor, table: torch.Tensor, belief: torch.Tensor, q: nn.Sequential,
                  fill: str) -> torch.Tensor:
    """Rank-by-rank choice among candidates: ids (B, k, k') of items of ``table`` (N, d), beliefs
    (B, H), a Q head whose first layer is linear over ``concat(belief, k*d)`` -> ids (B, k).

    Rank r takes the candidate with the highest Q given the ranks chosen before it and, for the
    later ranks, their nearest items (``fill="nearest"``) or the candidate itself repeated
    (``"candidate"``). The first layer is applied in parts: every item of the table is projected
    once through each rank's block of weights (N is small beside B * k * k'), and a trial slate's
    first layer is the belief's part plus its items' parts.
    """
    k, kp, d = cand.shape[1], cand.shape[2], table.shape[1]
    layers = list(q)
    first, rest = layers[0], layers[1:]
    hb = belief.shape[1]
    w = first.weight[:, hb:].reshape(-1, k, d)  # (h, k, d): the block of each rank
    parts = torch.einsum("nd,hkd->knh", table, w)  # (k, N, h): item n through rank r's block
    # "candidate": ranks r..k-1 all show the candidate, so it goes through their summed blocks
    tail = None if fill == "nearest" else torch.einsum("nd,hkd->knh", table, w.flip(1).cumsum(1).flip(1))
    base = torch.addmm(first.bias, belief, first.weight[:, :hb].T)  # (B, h)
    step = max(1, _ROWS // kp)  # blocks of beliefs, so that a block's trial slates stay in cache
    return torch.cat([_greedy_block(c, h, parts, tail, rest) for c, h in zip(cand.split(step), base.split(step))])


def _greedy_block(cand: torch.Tensor, base: torch.Tensor, parts: torch.Tensor, tail: Optional[torch.Tensor],
                  rest: list[nn.Module]) -> torch.Tensor:
    """:func:`greedy_slates` for a block of beliefs (``base``: their first-layer parts).

    Rows are gathered by ``index_select`` (a (b, k') index through ``Tensor.__getitem__`` takes
    the general indexing kernel, ~3x slower here) and, without autograd, each trial block's sum and
    ReLU are made in place: the same values bit for bit, a third of the memory traffic."""
    b, k, kp = cand.shape
    h = parts.shape[-1]
    rows = torch.arange(b, device=cand.device)
    chosen = torch.empty(b, k, dtype=torch.long, device=cand.device)
    in_place = not torch.is_grad_enabled()

    def gather(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return table.index_select(0, ids.reshape(-1)).view(*ids.shape, h)

    def best_of(trial: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """argmax over the k' trials of ``rest(offset + trial)``; ``trial`` (b, k', h) is a fresh gather."""
        x = trial.add_(offset) if in_place else trial + offset
        x = x.view(b * kp, -1)
        for layer in rest:
            x = x.relu_() if in_place and isinstance(layer, nn.ReLU) else layer(x)
        return x.view(b, kp).argmax(dim=1)

    if tail is None:  # fill "nearest"
        current = parts[torch.arange(k, device=cand.device), cand[:, :, 0]]  # (B, k, h)
        total = base + current.sum(dim=1)
        for r in range(k):
            best = best_of(gather(parts[r], cand[:, r]), (total - current[:, r]).unsqueeze(1))
            pick = cand[rows, r, best]
            total = total - current[:, r] + parts[r].index_select(0, pick)
            chosen[:, r] = pick
        return chosen
    done = base  # the belief's part + the parts of the ranks chosen so far
    for r in range(k):
        best = best_of(gather(tail[r], cand[:, r]), done.unsqueeze(1))
        chosen[:, r] = cand[rows, r, best]
        done = done + parts[r].index_select(0, chosen[:, r])
    return chosen


def nearest_items(targets: torch.Tensor, table: torch.Tensor, k: int) -> torch.Tensor:
    """Ids (M, k) of the ``k`` rows of ``table`` (N, d) nearest to each target (M, d), nearest first
    (Euclidean: the largest ``2 t.e - |e|^2``, one matrix product)."""
    sq = (table * table).sum(dim=1).neg()
    # in blocks of rows, so that each block's scores stay in cache between the product and the top-k
    return torch.cat([torch.addmm(sq, t, table.T, alpha=2.0).topk(k, dim=1).indices
                      for t in targets.split(_ROWS)])


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
