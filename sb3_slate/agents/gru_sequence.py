"""A GRU unrolled over whole sequences with a hand-written backward pass.

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
"""

from __future__ import annotations

from typing import Any, Optional

import torch


class _GRUSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                b_ih: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        hidden = w_hh.shape[1]
        xt = x.transpose(0, 1).contiguous()  # time-major: one turn is a contiguous block
        gi = torch.addmm(b_ih, xt.view(length * batch, -1), w_ih.t()).view(length, batch, 3 * hidden)
        out = x.new_empty(length, batch, hidden)
        rz = x.new_empty(length, batch, 2 * hidden)
        n = x.new_empty(length, batch, hidden)
        ghn = x.new_empty(length, batch, hidden)
        w_hh_t = w_hh.t()
        h = h0
        for t in range(length):
            gh = torch.addmm(b_hh, h, w_hh_t)
            torch.add(gi[t, :, :2 * hidden], gh[:, :2 * hidden], out=rz[t]).sigmoid_()
            ghn[t].copy_(gh[:, 2 * hidden:])
            torch.addcmul(gi[t, :, 2 * hidden:], rz[t, :, :hidden], ghn[t], out=n[t]).tanh_()
            torch.lerp(n[t], h, rz[t, :, hidden:], out=out[t])
            h = out[t]
        ctx.save_for_backward(xt, h0, w_ih, w_hh, out, rz, n, ghn)
        return out.transpose(0, 1)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        xt, h0, w_ih, w_hh, out, rz, n, ghn = ctx.saved_tensors
        length, batch, hidden = out.shape
        g = grad_out.transpose(0, 1).contiguous()
        r, z = rz[..., :hidden], rz[..., hidden:]
        h_prev = torch.cat([h0[None], out[:-1]])
        # d/dh_t of each gate pre-activation's hidden part, per turn, (L, B, 3, H)
        a_n = (1.0 - z) * (1.0 - n * n)  # d a_n / d h_t
        coef = torch.stack([a_n * ghn * r * (1.0 - r), (h_prev - n) * z * (1.0 - z), a_n * r], dim=2)
        dgh = torch.empty_like(coef)  # gradients of (W_hr h + b_hr, W_hz h + b_hz, W_hn h + b_hn)
        dh_all = torch.empty_like(g)
        carry = torch.zeros_like(g[0])
        for t in range(length - 1, -1, -1):
            dh = torch.add(g[t], carry, out=dh_all[t])
            torch.mul(coef[t], dh[:, None, :], out=dgh[t])
            carry = torch.addmm(dh * z[t], dgh[t].view(batch, 3 * hidden), w_hh)
        dgh = dgh.view(length * batch, 3 * hidden)
        dgi = torch.cat([dgh[:, :2 * hidden], (dh_all * a_n).view(length * batch, hidden)], dim=1)
        need = ctx.needs_input_grad
        dx = dh0 = dw_ih = dw_hh = db_ih = db_hh = None
        if need[0]:
            dx = (dgi @ w_ih).view(length, batch, -1).transpose(0, 1)
        if need[1]:
            dh0 = carry
        if need[2]:
            dw_ih = dgi.t() @ xt.view(length * batch, -1)
        if need[3]:
            dw_hh = dgh.t() @ h_prev.view(length * batch, hidden)
        if need[4]:
            db_ih = dgi.sum(0)
        if need[5]:
            db_hh = dgh.sum(0)
        return dx, dh0, dw_ih, dw_hh, db_ih, db_hh


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
    return _GRUSequence.apply(x, h0, w_ih, w_hh, b_ih, b_hh)


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
