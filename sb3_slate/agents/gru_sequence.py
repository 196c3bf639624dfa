"""A GRU unrolled over whole sequences with a hand-written backward pass, and the belief GRU
over turns of ``(slate, clicks)`` built on it.

``gru_sequence`` computes exactly what ``torch.nn.GRU`` (one layer, batch first)
computes, with the same parameters::

    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

Why: on a CPU, the paper regime's SAC step unrolls small GRUs (batch 20, 40 units)
over 101 turns, so the time goes into per-turn kernel calls and autograd
bookkeeping, not arithmetic. Here the input projections of all turns are one
matrix product, each turn of the forward pass is six kernels, and the backward
pass is a recurrence over the belief gradient alone (four kernels per turn): the
per-turn factors of the gate derivatives are computed for all turns at once, and
the weight gradients are one matrix product each after the loop.

``slate_gru`` is the GRU whose input per turn is ``concat(E[slate] flattened, clicks)`` (the
history belief): its input projection ``W_ih x + b_ih`` is a sum over the ``k`` slots of
``W_slot E[item]``, so it is computed from one table of every item's projection per slot
(``N x k`` rows, one matrix product with ``N`` rows instead of one with ``L x B`` rows) summed
per turn by ``embedding_bag``, without building the turns' inputs; its backward pass adds the
gradients per slot and item the same way (BENCHMARKS.md "Offline gradient steps").
"""

from __future__ import annotations

from typing import Any, Optional

import torch


class _GRURecurrence(torch.autograd.Function):
    """The recurrence alone, from the input projections ``gi`` (L, B, 3H), time-major."""

    @staticmethod
    def forward(ctx: Any, gi: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
        length, batch, _ = gi.shape
        hidden = w_hh.shape[1]
        out = gi.new_empty(length, batch, hidden)
        rz = gi.new_empty(length, batch, 2 * hidden)
        n = gi.new_empty(length, batch, hidden)
        gh = gi.new_empty(length, batch, 3 * hidden)  # W_hh h_{t-1} + b_hh, kept for the backward pass
        w_hh_t = w_hh.t()
        # every turn's views made once: inside the loop, creating a view costs as much as a kernel
        gi_rz, gi_n = gi[..., :2 * hidden].unbind(0), gi[..., 2 * hidden:].unbind(0)
        gh_t, gh_rz, gh_n = gh.unbind(0), gh[..., :2 * hidden].unbind(0), gh[..., 2 * hidden:].unbind(0)
        rz_t, r_t, z_t = rz.unbind(0), rz[..., :hidden].unbind(0), rz[..., hidden:].unbind(0)
        n_t, out_t = n.unbind(0), out.unbind(0)
        h = h0
        for t in range(length):
            torch.addmm(b_hh, h, w_hh_t, out=gh_t[t])
            torch.add(gi_rz[t], gh_rz[t], out=rz_t[t]).sigmoid_()
            torch.addcmul(gi_n[t], r_t[t], gh_n[t], out=n_t[t]).tanh_()
            h = torch.lerp(n_t[t], h, z_t[t], out=out_t[t])
        ctx.save_for_backward(h0, w_hh, out, rz, n, gh)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        h0, w_hh, out, rz, n, gh = ctx.saved_tensors
        length, batch, hidden = out.shape
        g = grad_out.contiguous()
        r, z = rz[..., :hidden], rz[..., hidden:]
        h_prev = torch.cat([h0[None], out[:-1]])
        # d/dh_t of each gate pre-activation's hidden part, per turn, (L, B, 3, H)
        a_n = (1.0 - z) * (1.0 - n * n)  # d a_n / d h_t
        coef = torch.stack([a_n * gh[..., 2 * hidden:] * r * (1.0 - r), (h_prev - n) * z * (1.0 - z), a_n * r], dim=2)
        dgh = torch.empty_like(coef)  # gradients of (W_hr h + b_hr, W_hz h + b_hz, W_hn h + b_hn)
        dh_all = torch.empty_like(g)
        g_t, dh_t, z_t, coef_t = g.unbind(0), dh_all.unbind(0), z.unbind(0), coef.unbind(0)
        dgh_t, dgh_rows = dgh.unbind(0), dgh.view(length, batch, 3 * hidden).unbind(0)
        carry = torch.zeros_like(g[0])
        for t in range(length - 1, -1, -1):
            dh = torch.add(g_t[t], carry, out=dh_t[t])
            torch.mul(coef_t[t], dh.unsqueeze(1), out=dgh_t[t])
            carry = torch.addmm(dh * z_t[t], dgh_rows[t], w_hh)
        dgh = dgh.view(length * batch, 3 * hidden)
        need = ctx.needs_input_grad
        dgi = dh0 = dw_hh = db_hh = None
        if need[0]:
            dgi = torch.cat([dgh[:, :2 * hidden], (dh_all * a_n).view(length * batch, hidden)], dim=1)
            dgi = dgi.view(length, batch, 3 * hidden)
        if need[1]:
            dh0 = carry
        if need[2]:
            dw_hh = dgh.t() @ h_prev.view(length * batch, hidden)
        if need[3]:
            db_hh = dgh.sum(0)
        return dgi, dh0, dw_hh, db_hh


def gru_sequence(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor,
                 h0: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Hidden states after every step, (B, L, H), of a one-layer GRU over ``x`` (B, L, I).

    Weights as in ``torch.nn.GRU``: ``w_ih`` (3H, I), ``w_hh`` (3H, H), biases (3H,),
    gates in the order r, z, n; ``h0`` (B, H), zeros when None.
    """
    if x.dim() != 3:
        raise ValueError(f"gru_sequence: expected x of shape (batch, length, features), got {tuple(x.shape)}")
    hidden = w_hh.shape[1]
    if w_hh.shape != (3 * hidden, hidden) or w_ih.shape != (3 * hidden, x.shape[2]):
        raise ValueError(f"gru_sequence: weights {tuple(w_ih.shape)} / {tuple(w_hh.shape)} do not fit "
                         f"{x.shape[2]} inputs and {hidden} hidden units")
    if h0 is None:
        h0 = x.new_zeros(x.shape[0], hidden)
    batch, length, _ = x.shape
    xt = x.transpose(0, 1).reshape(length * batch, -1)  # time-major: one turn is a contiguous block
    gi = torch.addmm(b_ih, xt, w_ih.t()).view(length, batch, 3 * hidden)  # all turns' input projections at once
    return _GRURecurrence.apply(gi, h0, w_hh, b_hh).transpose(0, 1)


def torch_gru_sequence(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor,
                       b_hh: torch.Tensor, h0: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`gru_sequence` through ``torch.nn.GRU``'s kernel (cuDNN on CUDA, where it is the faster one)."""
    shell = torch.nn.GRU(x.shape[2], w_hh.shape[1], batch_first=True, device="meta")
    weights = {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}
    return torch.func.functional_call(shell, weights, (x, None if h0 is None else h0[None]))[0]


def unroll_gru(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor,
               h0: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The faster of the two on ``x``'s device: :func:`gru_sequence` on CPU, ``torch.nn.GRU`` elsewhere."""
    fn = gru_sequence if x.device.type == "cpu" else torch_gru_sequence
    return fn(x, w_ih, w_hh, b_ih, b_hh, h0=h0)


def _slot_weights(w_ih: torch.Tensor, k: int, d: int) -> torch.Tensor:
    """``(d, k x 3H)``: column block ``s`` is ``W_slot^T`` of slot ``s`` (``W_ih``'s item columns)."""
    g3 = w_ih.shape[0]
    return w_ih[:, :k * d].reshape(g3, k, d).permute(2, 1, 0).reshape(d, k * g3)


class _SlotTables:
    """The last few per-slot tables, reused while their item table and weights are unchanged
    (same tensors, same versions): networks that share a belief encode several batches with
    the same weights in one update (IQL: the next observations' values, then the
    observations'), and the table is the largest product of a pass. Holds at most ``size``
    tables (2.4 MB each in the paper's sizes)."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self.entries: list[tuple[torch.Tensor, int, torch.Tensor, int, int, torch.Tensor]] = []

    def get(self, items: torch.Tensor, w_ih: torch.Tensor, k: int) -> torch.Tensor:
        """The table of ``items`` and ``w_ih`` for ``k`` slots: ``(N * k, 3H)``, row ``i * k + s``
        slot ``s``'s projection of item ``i``."""
        if items.is_inference() or w_ih.is_inference():  # no version counter: never reused
            return self.compute(items, w_ih, k)
        for seen_items, items_version, seen_w, w_version, seen_k, table in self.entries:
            if (seen_items is items and seen_w is w_ih and seen_k == k
                    and items._version == items_version and w_ih._version == w_version):
                return table
        table = self.compute(items, w_ih, k)
        self.entries = [*self.entries, (items, items._version, w_ih, w_ih._version, k, table)][-self.size:]
        return table

    @staticmethod
    def compute(items: torch.Tensor, w_ih: torch.Tensor, k: int) -> torch.Tensor:
        with torch.no_grad():
            return (items @ _slot_weights(w_ih, k, items.shape[1])).view(items.shape[0] * k, w_ih.shape[0])


_tables = _SlotTables()


class _SlotProjection(torch.autograd.Function):
    """``W_ih concat(items[ids] flattened, clicks) + b_ih`` for turns of ``k`` ids and ``k`` clicks."""

    @staticmethod
    def forward(ctx: Any, items: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor, ids: torch.Tensor,
                clicks: torch.Tensor) -> torch.Tensor:
        rows, k = ids.shape
        n_items, d = items.shape
        g3 = w_ih.shape[0]
        table = _tables.get(items, w_ih, k)
        slot_ids = ids * k + torch.arange(k, device=ids.device)
        gi = torch.nn.functional.embedding_bag(slot_ids, table, mode="sum")
        ctx.save_for_backward(items, w_ih, slot_ids, clicks)
        return torch.addmm(gi.add_(b_ih), clicks, w_ih[:, k * d:].t())

    @staticmethod
    def backward(ctx: Any, dgi: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        items, w_ih, slot_ids, clicks = ctx.saved_tensors
        rows, k = slot_ids.shape
        n_items, d = items.shape
        g3 = w_ih.shape[0]
        need = ctx.needs_input_grad
        d_items = d_w_ih = d_b_ih = None
        if need[2]:
            d_b_ih = dgi.sum(0)
        if need[0] or need[1]:
            # the table's gradient, (N, k x 3H) as the table: each turn's gradient added at its
            # item of each slot, one slot at a time (no copy of the turns' gradients per slot)
            d_table = dgi.new_zeros(n_items * k, g3)
            by_slot = slot_ids.t().contiguous()
            for s in range(k):
                d_table.index_add_(0, by_slot[s], dgi)
            d_table = d_table.view(n_items, k * g3)
            if need[0]:
                d_items = (_slot_weights(w_ih, k, d) @ d_table.t()).t()
            if need[1]:
                d_w_table = items.t() @ d_table  # (d, k x 3H)
                d_w_ih = torch.cat([d_w_table.view(d, k, g3).permute(2, 1, 0).reshape(g3, k * d),
                                    (clicks.t() @ dgi).t()], dim=1)
        return d_items, d_w_ih, d_b_ih, None, None


def slot_projection(items: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor, ids: torch.Tensor,
                    clicks: torch.Tensor) -> torch.Tensor:
    """``W_ih concat(items[ids] flattened, clicks) + b_ih`` for turns ``(..., k)`` of ids and clicks
    -> ``(..., 3H)``, without building the turns' inputs (the module docstring); gradients for
    ``items``, ``w_ih`` and ``b_ih``."""
    k, d = ids.shape[-1], items.shape[1]
    if w_ih.shape[1] != k * (d + 1):
        raise ValueError(f"the GRU reads {w_ih.shape[1]} inputs per turn; {k} items of {d} values "
                         f"and {k} clicks make {k * (d + 1)}")
    lead = ids.shape[:-1]
    gi = _SlotProjection.apply(items, w_ih, b_ih, ids.reshape(-1, k).long(), clicks.reshape(-1, k).to(items.dtype))
    return gi.view(*lead, w_ih.shape[0])


def gru_recurrence(gi: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """Hidden states ``(L, B, H)`` of a one-layer GRU from its input projections ``gi``
    ``(L, B, 3H)`` (time-major, gates r, z, n) and the state ``h0`` ``(B, H)``."""
    return _GRURecurrence.apply(gi, h0, w_hh, b_hh)


def slate_gru(items: torch.Tensor, gru: torch.nn.GRU, ids: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
    """Outputs ``(L, B, H)`` of the one-layer, time-major ``gru`` from a zero state over turns
    whose input is ``concat(items[ids[t, b]] flattened, clicks[t, b])``: ``nn.GRU``'s function
    and gradients (item table included), computed for a CPU.

    Args:
        items: item table ``(N, d)``.
        gru: ``nn.GRU(k * (d + 1), H)``: one layer, unidirectional, time-major, with biases.
        ids: ``(L, B, k)`` item ids (integers).
        clicks: ``(L, B, k)`` clicks.
    """
    if gru.num_layers != 1 or gru.bidirectional or gru.batch_first or not gru.bias:
        raise ValueError("slate_gru computes a one-layer, unidirectional, time-major GRU with biases")
    gi = slot_projection(items, gru.weight_ih_l0, gru.bias_ih_l0, ids, clicks)
    return gru_recurrence(gi, gi.new_zeros(ids.shape[1], gru.hidden_size), gru.weight_hh_l0, gru.bias_hh_l0)
