"""The networks of :class:`~sb3_slate.agents.EpisodeSAC`: the slate belief (a GRU over
(slate, clicks) turns), the paired unroll of the actor's and the critic's beliefs, the twin
Q heads, the squashed Gaussian actor and the Wolpertinger refiner of SAC+WkNN."""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gym_slaterec.provenance import arithmetic

from ...belief import item_table as make_item_table
from ..gru_sequence import gru_recurrence, slot_projection, unroll_gru
from ..wolpertinger import embedding_box, greedy_item_choice

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def _slots_on(x: torch.Tensor) -> bool:
    """Whether beliefs over ``x``'s device unroll from per-slot projections (on a CPU, unless an
    :func:`gym_slaterec.provenance.arithmetic_of` block repeats the earlier arithmetic)."""
    return x.device.type == "cpu" and arithmetic()["belief_unroll"] == "slot_projections"


class SlateBelief(nn.Module):
    """Item table + GRU over turns ``concat(E[slate], clicks)`` (``k*(d+1)`` values)."""

    def __init__(self, num_items: int, slate_size: int, item_table: Optional[np.ndarray] = None,
                 embedding_dim: int = 20, hidden_size: int = 20, freeze: bool = False,
                 scratch_std: Optional[float] = None) -> None:
        super().__init__()
        self.items = make_item_table(num_items, item_table, embedding_dim, freeze, "item table", scratch_std)
        self.slate_size = slate_size
        self.gru = nn.GRU(slate_size * (self.items.embedding_dim + 1), hidden_size, batch_first=True)

    def inputs(self, slates: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
        """(B, L, k) ids and clicks -> (B, L, k*(d+1))."""
        b, length, _ = slates.shape
        # index_select rather than the embedding op: same values, a cheaper backward (index_add)
        embedded = self.items.weight.index_select(0, slates.reshape(-1)).view(b, length, -1)
        return torch.cat([embedded, clicks], dim=2)

    def forward(self, slates: torch.Tensor, clicks: torch.Tensor, h0: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Beliefs after each turn, (B, L, H): row t has seen turns 0..t."""
        out, _ = self.gru(self.inputs(slates, clicks), None if h0 is None else h0[None].contiguous())
        return out

    def projection(self, slates: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
        """The GRU's input projections ``W_ih x_t + b_ih`` of each turn, (B, L, 3H), computed from
        a per-slot table of the items' projections (:func:`~sb3_slate.agents.gru_sequence.slot_projection`)."""
        return slot_projection(self.items.weight, self.gru.weight_ih_l0, self.gru.bias_ih_l0, slates, clicks)

    def unroll(self, slates: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
        """Beliefs after each turn from the start, (B, L, H), as :meth:`forward`: on a CPU from
        :meth:`projection` and the hand-written recurrence, elsewhere (or as the arithmetic of an earlier
        run, :func:`gym_slaterec.provenance.arithmetic_of`) from the turns' inputs (cuDNN's GRU on CUDA)."""
        if not _slots_on(slates):
            g = self.gru
            return unroll_gru(self.inputs(slates, clicks), g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)
        gi = self.projection(slates, clicks).transpose(0, 1).contiguous()  # time-major
        h0 = gi.new_zeros(slates.shape[0], self.gru.hidden_size)
        return gru_recurrence(gi, h0, self.gru.weight_hh_l0, self.gru.bias_hh_l0).transpose(0, 1)

    def step(self, slates: torch.Tensor, clicks: torch.Tensor, h: Optional[torch.Tensor]) -> torch.Tensor:
        """One turn for a batch of users: (B, k), (B, k), belief (B, H) or None -> (B, H)."""
        return self.forward(slates[:, None], clicks[:, None], h)[:, 0]


def _block_diagonal_gates(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GRU weights (3 Ha, ·) and (3 Hb, ·) -> (3 (Ha + Hb), ·), block-diagonal per gate (r, z, n)."""
    return torch.cat([torch.block_diag(x, y) for x, y in zip(a.chunk(3, 0), b.chunk(3, 0))], dim=0)


def _stack_gates(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.cat([x, y]) for x, y in zip(a.chunk(3), b.chunk(3))])


def unroll_pair(first: SlateBelief, second: SlateBelief, slates: torch.Tensor, clicks: torch.Tensor,
                unroll: Optional[Callable[..., torch.Tensor]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both beliefs over the same episodes in one GRU unroll, (B, L, H1) and (B, L, H2).

    A GRU's gates act unit by unit, so two GRUs are exactly one GRU whose hidden
    state is the concatenation of theirs and whose weights are block-diagonal per
    gate. One unroll of ``H1 + H2`` units costs about half of two unrolls (the time
    goes into the per-turn steps, not the arithmetic); gradients reach each belief's
    own parameters only (the off-diagonal blocks are constant zeros). On a CPU each
    belief's input projections come from its per-slot table (:meth:`SlateBelief.projection`,
    no block-diagonal input product, half of whose entries are zeros) and the recurrence is
    written by hand; elsewhere, or with ``unroll`` (a function of the inputs and weights, e.g.
    :func:`~sb3_slate.agents.gru_sequence.gru_sequence`), the GRU runs on the concatenated inputs
    (cuDNN's GRU on CUDA).
    """
    g1, g2 = first.gru, second.gru
    h1 = g1.hidden_size
    w_hh = _block_diagonal_gates(g1.weight_hh_l0, g2.weight_hh_l0)
    b_hh = _stack_gates(g1.bias_hh_l0, g2.bias_hh_l0)
    if unroll is None and _slots_on(slates):
        p1, p2 = first.projection(slates, clicks), second.projection(slates, clicks)
        # the pair's gates in _stack_gates' order: r1 r2 z1 z2 n1 n2
        gi = torch.cat([p1.unflatten(-1, (3, -1)), p2.unflatten(-1, (3, -1))], dim=-1).flatten(-2)
        gi = gi.transpose(0, 1).contiguous()  # time-major
        out = gru_recurrence(gi, gi.new_zeros(slates.shape[0], w_hh.shape[1]), w_hh, b_hh).transpose(0, 1)
        return out[..., :h1], out[..., h1:]
    x = torch.cat([first.inputs(slates, clicks), second.inputs(slates, clicks)], dim=2)
    out = (unroll or unroll_gru)(x, _block_diagonal_gates(g1.weight_ih_l0, g2.weight_ih_l0), w_hh,
                                 _stack_gates(g1.bias_ih_l0, g2.bias_ih_l0), b_hh)
    return out[..., :h1], out[..., h1:]


class MLP(nn.Sequential):
    """Linear layers with ReLUs between them, applied to the last dimension of any input.

    Leading dimensions are flattened first, so every layer sees a plain matrix: the
    in-place ReLUs then act on a fresh product rather than on a view of one (which
    autograd would have to copy).
    """

    def __init__(self, inp: int, hidden: list[int], out: int) -> None:
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(inp, h), nn.ReLU(inplace=True)]
            inp = h
        layers.append(nn.Linear(inp, out))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return super().forward(x.reshape(-1, x.shape[-1])).view(*lead, -1)


class TwinQ(nn.Module):
    """Two Q heads over (belief, action)."""

    def __init__(self, hidden: int, action_dim: int, net_arch: list[int]) -> None:
        super().__init__()
        self.q1 = MLP(hidden + action_dim, net_arch, 1)
        self.q2 = MLP(hidden + action_dim, net_arch, 1)

    def values(self, b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([b, a], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class SquashedGaussianActor(nn.Module):
    """The actor's belief and a tanh-Gaussian policy head."""

    def __init__(self, belief: SlateBelief, hidden: int, action_dim: int, net_arch: list[int]) -> None:
        super().__init__()
        self.belief = belief
        self.net = MLP(hidden, net_arch, 2 * action_dim)

    def distribution(self, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(b).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, b: torch.Tensor, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised tanh-Gaussian action and its log-probability (summed over dimensions)."""
        return self.sample_from(*self.distribution(b), generator)

    @staticmethod
    def sample_from(mean: torch.Tensor, log_std: torch.Tensor,
                    generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`sample` given the Gaussian's mean and log standard deviation."""
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        u = mean + log_std.exp() * noise
        # log N(u; mean, std) - sum log(1 - tanh(u)^2), the latter in a stable form
        logp = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), logp

    def act(self, b: torch.Tensor, deterministic: bool, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if deterministic:
            return torch.tanh(self.distribution(b)[0])
        return self.sample(b, generator)[0]


class WolpertingerRefiner(nn.Module):
    """SAC+WkNN's action refinement in the agent's ``[-1, 1]`` action scale.

    Each rank's target (``d`` values) is mapped to the item table's box (per-dimension
    minimum and maximum, :func:`~sb3_slate.agents.wolpertinger.embedding_box`), then
    :func:`~sb3_slate.agents.wolpertinger.greedy_item_choice` picks the items, as in the
    window regime.
    """

    def __init__(self, items: np.ndarray, slate_size: int, k_neighbours: int) -> None:
        super().__init__()
        table = torch.as_tensor(np.asarray(items, dtype=np.float32))
        if table.ndim != 2 or not torch.isfinite(table).all():
            raise ValueError(f"wolpertinger_items must be a finite (N, d) table, got shape {tuple(table.shape)}")
        if isinstance(k_neighbours, bool) or int(k_neighbours) != k_neighbours or k_neighbours < 1:
            raise ValueError(f"k_neighbours must be a positive integer, got {k_neighbours!r}")
        box = embedding_box(table.numpy(), 1)  # the box the env maps unit actions onto
        low, high = torch.as_tensor(box.low), torch.as_tensor(box.high)
        self.register_buffer("items", table)
        self.register_buffer("low", low)
        self.register_buffer("high", high)
        self.register_buffer("unit_items", 2.0 * (table - low) / (high - low) - 1.0)
        self.slate_size, self.k_neighbours = int(slate_size), int(k_neighbours)
        self.action_dim = self.slate_size * table.shape[1]

    def refine(self, proto: torch.Tensor, belief: torch.Tensor, q: nn.Module) -> torch.Tensor:
        """(B, k*d) unit targets, (B, H) critic beliefs, a Q head -> (B, k*d) unit actions of items."""
        b, k, d = proto.shape[0], self.slate_size, self.items.shape[1]
        target = self.low + (proto.reshape(b, k, d) + 1.0) * 0.5 * (self.high - self.low)
        return greedy_item_choice(target, self.items, self.unit_items, self.k_neighbours, belief, q).reshape(b, k * d)
