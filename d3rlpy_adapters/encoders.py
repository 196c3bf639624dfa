"""A d3rlpy ``EncoderFactory`` for history windows: item embeddings + GRU belief.

Same belief as the online agents (docs/method.md section 7): each turn's input is
``concat(item embeddings of the slate, clicks)`` (``k * (d + 1)`` values), a GRU
runs over the window's real turns (padding rows, mask 0, are ignored), and one hidden layer
of ``feature_size`` units with ReLU follows. The state-action variant concatenates the action
to the belief before that layer. Windows are left-aligned (:mod:`.window`), so one GRU pass
over all rows followed by the output at the last real turn is exact: on a CPU
:func:`sb3_slate.agents.gru_sequence.slate_gru` (the same function, computed for a CPU), on
CUDA ``nn.GRU`` (cuDNN).
Each d3rlpy network (actor, every critic, value function, imitator) gets its own
encoder and item table, as the paper separates actor and critic encoders, unless
:func:`share_beliefs` ties them after the learner is built (``shared_encoder``): one belief
trained by the critics' losses, read without gradient by the actor (and BCQ's imitator), one
Polyak copy of it for every target network; each network keeps its own output layer.

Register once (importing this module does it) and pass
``SlateHistoryEncoderFactory(num_items, slate_size, window)`` as any
``*_encoder_factory`` of a d3rlpy algorithm config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch
from d3rlpy.models.encoders import EncoderFactory, register_encoder_factory
from d3rlpy.models.torch import Encoder, EncoderWithAction
from torch import nn

from sb3_slate.agents.gru_sequence import slate_gru

from .repeats import repeat_origin, track_repeats
from .window import WindowLayout


class _Belief(nn.Module):
    """Window (B, W * (2k + 1)) -> GRU belief (B, hidden)."""

    def __init__(self, layout: WindowLayout, item_dim: int, hidden: int) -> None:
        super().__init__()
        self.layout = layout
        self.items = nn.Embedding(layout.num_items, item_dim)
        self.gru = nn.GRU(layout.slate_size * (item_dim + 1), hidden)  # time-major (W, B, ...)
        self.hidden = hidden
        #: recent results for the same input tensor and weights (see :meth:`enable_cache`)
        self._cache: Optional[list] = None

    def enable_cache(self, size: int = 4) -> None:
        """Return the previous result when the same input tensor (unchanged) is encoded again
        with unchanged weights: when networks share this belief, the critics of one update
        (and the actor and its critic, or a target actor and its target critics) read the
        same batch, and the GRU then runs once for all of them."""
        self._cache = []
        self._cache_size = size

    def train(self, mode: bool = True) -> "_Belief":
        super().train(mode)
        # One GRU layer has no dropout, so its training and evaluation modes compute the same
        # function; it stays in training mode because cuDNN refuses a backward pass in
        # evaluation mode (seen on a GPU when d3rlpy's actor updates backpropagated through
        # critics in evaluation mode; they no longer do, below, but any caller may).
        self.gru.train(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The belief of each window of ``x`` (B, hidden)."""
        return _spread(*self.distinct(x))

    def distinct(self, x: torch.Tensor) -> "tuple[torch.Tensor, Rows]":
        """``(beliefs, inverse)``: the beliefs of the distinct windows of ``x`` and which rows of
        ``x`` they are (:data:`Rows`). CQL and BCQ repeat each observation for many sampled
        actions; the GRU runs once per distinct window.

        With the cache on, a request without gradient also takes the result the critics computed
        with gradient for the same batch before their optimiser step (the actor's, or IQL's
        advantage weights), as DrQ-v2's actor reads the encoding of the critic's update and
        IQL's reference code the advantages of its value update; anything else needs unchanged
        weights."""
        origin = repeat_origin(x)
        if origin is not None:  # d3rlpy's repeats of a batch, known from where they were made
            source, n = origin
            beliefs, rows = self.distinct(source)
            return beliefs, _repeated(rows, n)
        if self._cache is None:
            return self._distinct_beliefs(x)
        weights = tuple(p._version for p in self.parameters())
        grad = torch.is_grad_enabled()

        def usable(seen: torch.Tensor, seen_version: int, seen_weights: tuple, beliefs: torch.Tensor):
            if seen._version != seen_version:
                return None
            if not grad and beliefs.requires_grad:
                return beliefs.detach()
            if seen_weights == weights:
                if not grad:
                    return beliefs.detach()
                if beliefs.requires_grad:  # a result without its graph cannot serve a backward pass
                    return beliefs
            return None

        # an entry: (input, its version, the weights' versions, the rows encoded, (beliefs, inverse))
        for seen, seen_version, seen_weights, _, (beliefs, inverse) in reversed(self._cache):
            if seen is x and (out := usable(seen, seen_version, seen_weights, beliefs)) is not None:
                return out, inverse
        n = _repeat_count(x) if x.shape[0] > 512 else None
        found = _distinct_rows(x) if n is None and x.shape[0] > 512 else None
        if n is not None:  # each window n times in a row (d3rlpy's repeats), maybe encoded already
            firsts = x[::n]
            for seen, seen_version, seen_weights, seen_rows, (beliefs, _) in reversed(self._cache):
                if seen_rows.shape == firsts.shape and _equal(seen_rows, firsts):
                    if (out := usable(seen, seen_version, seen_weights, beliefs)) is not None:
                        return out, n
            encoded = firsts.contiguous()
            result = (self._belief(encoded), n)
        elif found is None:
            encoded, result = x, (self._belief(x), None)
        else:
            unique, inverse = found
            # repeated observations of windows already encoded (CQL's and BCQ's sampled actions)
            for seen, seen_version, seen_weights, seen_rows, (beliefs, _) in reversed(self._cache):
                if (out := usable(seen, seen_version, seen_weights, beliefs)) is not None:
                    rows = _rows_in(unique, seen_rows)
                    if rows is not None:
                        return out, rows[inverse]
            encoded, result = unique, (self._belief(unique), inverse)
        self._cache = [*self._cache[-(self._cache_size - 1):], (x, x._version, weights, encoded, result)]
        return result

    def _distinct_beliefs(self, x: torch.Tensor) -> "tuple[torch.Tensor, Rows]":
        if x.shape[0] > 512:
            n = _repeat_count(x)
            if n is not None:
                return self._belief(x[::n].contiguous()), n
            found = _distinct_rows(x)
            if found is not None:
                unique, inverse = found
                return self._belief(unique), inverse
        return self._belief(x), None

    def _belief(self, x: torch.Tensor) -> torch.Tensor:
        L = self.layout
        k = L.slate_size
        # time-major from the start: the GRU's input is built in its own layout, not transposed
        # after (a copy of the whole input per pass, ~10 % of an offline step)
        rows = x.reshape(x.shape[0], L.window, L.row).transpose(0, 1)  # (W, B, row)
        # ids arrive as float32; rounding recovers them exactly (< 2**24), clamping
        # keeps d3rlpy's random shape probes inside the table.
        ids = rows[..., :k].round().long().clamp_(0, L.num_items - 1)
        clicks = rows[..., k : 2 * k]
        mask = rows[..., 2 * k]
        # Windows are left-aligned (real turns, then padding): one GRU pass over all rows, then
        # the output at the last real turn; padding after it cannot influence it.
        if x.device.type == "cpu":
            outputs = slate_gru(self.items.weight, self.gru, ids, clicks)  # (W, B, hidden)
        else:  # cuDNN's fused GRU
            inputs = torch.cat([_Lookup.apply(self.items.weight, ids).flatten(2), clicks], dim=-1)  # (W, B, k*(d+1))
            outputs, _ = self.gru(inputs)
        last = (mask.round().sum(0).long() - 1).clamp_(0, L.window - 1)
        return outputs[last, torch.arange(x.shape[0], device=x.device)]


class _Lookup(torch.autograd.Function):
    """``table[ids]`` whose backward adds the rows with ``index_add_``: the same gradient as
    ``nn.Embedding``'s, ~4x faster on CPU for 25,600 ids (its dense backward sorts them)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.table_shape = table.shape
        return table.index_select(0, ids.reshape(-1)).reshape(*ids.shape, table.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None
        (ids,) = ctx.saved_tensors
        table_grad = grad.new_zeros(ctx.table_shape)
        return table_grad.index_add_(0, ids.reshape(-1), grad.reshape(-1, ctx.table_shape[1])), None


#: which rows of a batch a set of beliefs covers: None (one belief per row), an int ``n`` (each
#: belief is ``n`` consecutive rows, as d3rlpy's CQL and BCQ repeat observations), or each row's
#: index among the beliefs
Rows = Union[None, int, torch.Tensor]


def _spread(values: torch.Tensor, rows: Rows) -> torch.Tensor:
    """One row of ``values`` per row of the batch ``rows`` describes."""
    if rows is None:
        return values
    if isinstance(rows, int):
        return values.repeat_interleave(rows, dim=0)
    return values[rows]


def _repeated(rows: Rows, n: int) -> Rows:
    """The :data:`Rows` of a batch whose every row is repeated ``n`` times in a row."""
    if rows is None:
        return n
    if isinstance(rows, int):
        return rows * n
    return rows.repeat_interleave(n)


def _repeat_count(x: torch.Tensor) -> Optional[int]:
    """``n`` when each row of the batch ``x`` appears ``n > 1`` times in a row (d3rlpy's CQL and
    BCQ repeat an observation once per sampled action), else None; exact, at the cost of one
    comparison pass over ``x``. For repeats whose origin is not known (:mod:`.repeats`: BCQ's
    target, which repeats inline)."""
    rows = x.shape[0]
    n = 1
    for probe in (17, 1025):  # the first row's run: a few rows decide most batches
        same = (x[1:min(rows, probe)] == x[0]).all(dim=1)
        n = 1 + int(same.cumprod(0).sum())
        if n < probe:
            break
    if n < 2 or rows % n:
        return None
    return n if _equal(x, x[::n].repeat_interleave(n, dim=0)) else None


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``torch.equal``, through numpy on a CPU (~5x faster for a batch of windows)."""
    if a.device.type == "cpu" and b.device.type == "cpu" and a.dtype == b.dtype and a.shape == b.shape:
        try:
            return bool(np.array_equal(a.detach().numpy(), b.detach().numpy()))
        except TypeError:  # a dtype numpy does not have (bfloat16)
            pass
    return torch.equal(a, b)


def _key_weights(n: int, device: torch.device) -> torch.Tensor:
    """Irrational-ratio weights: integer-valued rows that differ rarely share a key."""
    return torch.linspace(1.0, 2.0, n, dtype=torch.float64, device=device).sqrt_()


def _rows_in(rows: torch.Tensor, table: torch.Tensor) -> Optional[torch.Tensor]:
    """The index in ``table`` of each of ``rows`` (all distinct), or None if one is missing."""
    with torch.no_grad():
        w = _key_weights(table.shape[1], table.device)
        table_keys = table.detach().to(torch.float64) @ w
        order = torch.argsort(table_keys)
        pos = torch.searchsorted(table_keys[order], rows.detach().to(torch.float64) @ w).clamp_(max=len(order) - 1)
        found = order[pos]
        return found if _equal(table[found], rows) else None


def _distinct_rows(x: torch.Tensor) -> "tuple[torch.Tensor, torch.Tensor] | None":
    """``(unique rows, inverse)`` of ``x`` when at most half its rows are distinct, else None.

    ``torch.unique(dim=0)`` sorts rows element by element (~60 ms for CQL's 2,560 window rows);
    a float64 projection gives one key per row and the result is checked exactly, so a key
    collision only costs the slow path.
    """
    with torch.no_grad():
        keys = x.detach().to(torch.float64) @ _key_weights(x.shape[1], x.device)
        uniq_keys, inverse = torch.unique(keys, return_inverse=True)
        if uniq_keys.shape[0] >= x.shape[0] // 2:
            return None
        first = torch.full((uniq_keys.shape[0],), x.shape[0], dtype=torch.long, device=x.device)
        first.scatter_reduce_(0, inverse, torch.arange(x.shape[0], device=x.device), reduce="amin")
        unique = x[first]
        if not _equal(unique[inverse], x):
            unique, inverse = torch.unique(x, dim=0, return_inverse=True)
            if unique.shape[0] >= x.shape[0] // 2:
                return None
    return unique, inverse


class _BeliefReader:
    """What both encoders share: their belief is their own (registered, saved with them) or
    another network's (:func:`share_beliefs`: not registered, so not saved, not in their
    optimiser, not synchronised twice), read with or without gradient."""

    reader: bool = False

    def current_belief(self) -> _Belief:
        own = self._modules.get("belief")  # type: ignore[attr-defined]
        return own if own is not None else self.__dict__["_shared_belief"]

    def use_belief(self, belief: _Belief, reader: bool) -> None:
        """Encode with ``belief`` from now on; a ``reader`` never backpropagates into it."""
        if self._modules.get("belief") is not belief:  # type: ignore[attr-defined]
            self._modules.pop("belief", None)  # type: ignore[attr-defined]
            self.__dict__["_shared_belief"] = belief
        self.reader = reader

    def encode(self, x: torch.Tensor, reader: bool = False) -> "tuple[torch.Tensor, Rows]":
        """``(beliefs, inverse)`` of :meth:`_Belief.distinct`, without gradient for a reader."""
        if self.reader or reader:
            with torch.no_grad():
                return self.current_belief().distinct(x)
        return self.current_belief().distinct(x)


class SlateHistoryEncoder(_BeliefReader, Encoder):
    def __init__(self, layout: WindowLayout, item_dim: int, hidden: int, feature_size: int) -> None:
        super().__init__()
        self.belief = _Belief(layout, item_dim, hidden)
        self.fc = nn.Linear(hidden, feature_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beliefs, rows = self.encode(x)
        return _spread(torch.relu(self.fc(beliefs)), rows)


class SlateHistoryEncoderWithAction(_BeliefReader, EncoderWithAction):
    def __init__(
        self, layout: WindowLayout, action_size: int, item_dim: int, hidden: int, feature_size: int, discrete: bool
    ) -> None:
        super().__init__()
        self.belief = _Belief(layout, item_dim, hidden)
        self.action_size = action_size
        self.discrete = discrete
        self.fc = nn.Linear(hidden + action_size, feature_size)

    def forward(self, x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            action = nn.functional.one_hot(action.view(-1).long(), num_classes=self.action_size).float()
        # A critic in evaluation mode is d3rlpy's actor update (TD3+BC, BCQ, CQL): the actor's
        # loss needs the gradient through the action only, and the critic's own gradients
        # from it are discarded (the critic update zeroes them first), so the history is
        # encoded without recording the GRU for a backward pass (one GRU backward fewer
        # per actor update).
        return self.head(*self.encode(x, reader=not self.training), action)

    def head(self, beliefs: torch.Tensor, rows: Rows, action: torch.Tensor) -> torch.Tensor:
        """The hidden layer on ``(beliefs, rows)`` of :meth:`_Belief.distinct` and the actions."""
        if rows is None:
            return torch.relu(self.fc(torch.cat([beliefs, action], dim=1)))
        # repeated observations: the belief's share of the layer once per distinct window
        w = self.fc.weight
        hidden = beliefs.shape[1]
        h = nn.functional.linear(beliefs, w[:, :hidden])
        out = nn.functional.linear(action, w[:, hidden:], self.fc.bias)
        if isinstance(rows, int):  # added by broadcasting, no gathered copy (nor scatter back)
            return torch.relu(out.view(h.shape[0], rows, -1) + h.unsqueeze(1)).view(out.shape)
        # (out of place: autograd's bookkeeping of in-place operations on views costs more)
        return torch.relu(out + h[rows])


#: d3rlpy's networks whose losses train the shared belief (the first one found owns it)
_TRAINERS = ("q_funcs", "value_func")


def share_beliefs(networks: "dict[str, Any]") -> bool:
    """Tie the history encoders of a built d3rlpy learner's ``networks`` (its modules by name)
    to two beliefs: the online one, owned by the first critic and trained by the critics' (and
    IQL's value function's) losses, read without gradient by every other network (actor,
    imitator); and its target copy, owned by the first target critic, read by the target
    actor. d3rlpy's soft updates then move the target belief once per synchronisation (the
    actor and critic targets are synchronised together in TD3+BC and BCQ, so a separate target
    actor belief would hold the same values). False (nothing changed) for a learner without
    critics (BC). Apply it before loading weights saved with it (the other encoders no longer
    hold belief weights)."""
    def encoders(name: str) -> list[_BeliefReader]:
        module = networks.get(name)
        if not isinstance(module, nn.Module):
            return []
        return [m for m in module.modules() if isinstance(m, _BeliefReader)]

    critics, targets = encoders("q_funcs"), encoders("targ_q_funcs")
    if not critics or not targets:
        return False
    online, target = critics[0].current_belief(), targets[0].current_belief()
    target.load_state_dict(online.state_dict())
    for belief in (online, target):
        belief.enable_cache()
    for name in networks:
        for enc in encoders(name):
            if name.startswith("targ_"):
                enc.use_belief(target, reader=name != "targ_q_funcs")
            else:
                enc.use_belief(online, reader=name not in _TRAINERS)
    return True


@dataclass()
class SlateHistoryEncoderFactory(EncoderFactory):
    """Item embedding + GRU over the history window (see the module docstring).

    Args:
        num_items: catalogue size (the item table's rows).
        slate_size: ``k``.
        window: turns per observation (``W``).
        item_dim: item embedding size (20 in the paper).
        hidden: GRU hidden size (20 in the paper).
        feature_size: units of the hidden layer after the GRU (256 in the paper).
    """

    num_items: int = 1000
    slate_size: int = 10
    window: int = 10
    item_dim: int = 20
    hidden: int = 20
    feature_size: int = 256

    def layout(self) -> WindowLayout:
        return WindowLayout(self.window, self.slate_size, self.num_items)

    def _check(self, observation_shape) -> WindowLayout:
        layout = self.layout()
        shape = tuple(observation_shape)
        if shape != (layout.size,):
            raise ValueError(
                f"SlateHistoryEncoderFactory expects flat window observations of shape ({layout.size},) "
                f"(window {self.window}, slate size {self.slate_size}); got {shape}"
            )
        return layout

    def create(self, observation_shape) -> SlateHistoryEncoder:
        return SlateHistoryEncoder(self._check(observation_shape), self.item_dim, self.hidden, self.feature_size)

    def create_with_action(
        self, observation_shape, action_size: int, discrete_action: bool = False
    ) -> SlateHistoryEncoderWithAction:
        return SlateHistoryEncoderWithAction(
            self._check(observation_shape), action_size, self.item_dim, self.hidden, self.feature_size, discrete_action
        )

    @staticmethod
    def get_type() -> str:
        return "slate_history_gru"


try:
    register_encoder_factory(SlateHistoryEncoderFactory)
except AssertionError:  # already registered (module reloaded)
    pass
track_repeats()
