"""The reference implementation's MF recipe (``slaterec train-mf --recipe reference``;
docs/method.md section 7, "Variants"), its defects included:

- users are episodes; the first ``val_fraction`` of the episodes are the validation users and
  the rest the training users, each set re-keyed from 0, so validation episode ``e`` shares
  its user row with training episode ``n_val + e``;
- both tables start Xavier-uniform (the user table's bound is ``sqrt(6 / (users + d))``, so
  tiny), dense Adam over both;
- every 1,000 training batches (batch 0 of each epoch included) a validation pass runs over
  all validation batches, and each of its batches also steps the optimiser (the reference's
  model steps inside its forward pass): the validation clicks are trained on, through rows
  that belong to training episodes;
- early stopping after ``patience`` validations without a lower validation loss (counted
  across epochs); the item table of the best validation is kept;
- BPR loss ``-log(sigmoid(pos - neg) + 1e-7)``, one uniform negative per positive.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable

import numpy as np
import torch

from .provenance import TrainingDiverged

#: training batches between two validation passes
VALIDATE_EVERY = 1000


@contextlib.contextmanager
def flushed_denormals():
    """Denormal floats read and written as zero inside the block (the setting restored after).

    Dense Adam over a 100,000-row user table decays the moments of every row a batch does not
    touch by 0.9 / 0.999 per step, so within a few hundred steps most of the table's moments are
    denormal numbers, on which x86 arithmetic runs tens of times slower (measured: a validation
    pass 15 s before, ~100 s after). Flushing them changes an update by at most
    ``lr * 1.2e-38 / eps`` (Adam's ``eps`` 1e-8 dominates the denominator at that size).
    """
    was = bool((torch.full((1,), 1e-39) * 1.0)[0] == 0)  # no getter: a denormal that reads as zero
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was)


def train_reference_recipe(users: np.ndarray, items: np.ndarray, num_episodes: int, num_items: int, *, seed: int,
                           epochs: int, patience: int, dim: int, lr: float, batch_size: int, val_fraction: float,
                           device: str, report: Callable[[dict[str, Any]], None],
                           max_seconds: float | None = None, fused: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """The reference recipe on click pairs (episode, item); returns the best item table and metrics.

    ``epochs`` caps the passes over the training clicks (the reference has no cap);
    ``max_seconds`` stops it after the first validation pass past that time (the best table so
    far is kept; ``metrics["stopped"]`` says which limit ended it: patience, epochs or time);
    ``report(record)`` receives one record per validation pass. ``fused=False``: torch's per-tensor
    Adam loop (the same update; scripts/bench_mf_reference.py times both).
    """
    gen = torch.Generator().manual_seed(seed)
    n_val = int(num_episodes * val_fraction)
    is_val = users < n_val
    tr_u = torch.from_numpy((users[~is_val] - n_val).astype(np.int64)).to(device)
    tr_i = torch.from_numpy(items[~is_val].astype(np.int64)).to(device)
    va_u = torch.from_numpy(users[is_val].astype(np.int64)).to(device)
    va_i = torch.from_numpy(items[is_val].astype(np.int64)).to(device)
    if len(va_u) == 0 or len(tr_u) == 0:
        raise ValueError(f"the reference recipe's split of {num_episodes} episodes leaves no "
                         f"{'validation' if len(va_u) == 0 else 'training'} clicks; use more episodes")
    user_emb = torch.nn.Embedding(num_episodes, dim)
    item_emb = torch.nn.Embedding(num_items, dim)
    for emb in (user_emb, item_emb):
        torch.nn.init.xavier_uniform_(emb.weight, gain=1.0, generator=gen)
    user_emb.to(device)
    item_emb.to(device)
    # dense Adam over both tables as the reference has it (rows a batch does not touch still move
    # with their moments); torch's fused kernel does the same arithmetic ~8x faster on a 100,000-row
    # user table than its per-tensor loop (BENCHMARKS.md)
    opt = torch.optim.Adam([*user_emb.parameters(), *item_emb.parameters()], lr=lr, fused=fused)

    def step(u: torch.Tensor, i: torch.Tensor) -> float:
        neg = torch.randint(0, num_items, (len(u),), generator=gen).to(device)
        uv = user_emb(u)
        diff = (uv * item_emb(i)).sum(-1) - (uv * item_emb(neg)).sum(-1)
        loss = -torch.log(torch.sigmoid(diff) + 1e-7).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def validation_pass() -> float:
        order = torch.randperm(len(va_u), generator=gen).to(device)
        losses = [step(va_u[idx], va_i[idx]) for idx in order.split(batch_size)]
        return float(np.mean(losses))

    best = {"loss": math.inf, "items": item_emb.weight.detach().clone(), "validation": 0}
    bad, validations, epoch, started = 0, 0, 0, time.time()
    stopped: str | None = None  # patience or time, when one of them ends it before the epoch cap
    with flushed_denormals():
        for epoch in range(1, epochs + 1):
            order = torch.randperm(len(tr_u), generator=gen).to(device)
            train_losses: list[float] = []
            for n, idx in enumerate(order.split(batch_size)):
                if n % VALIDATE_EVERY == 0:
                    v = validation_pass()
                    validations += 1
                    if not math.isfinite(v):
                        raise TrainingDiverged(f"training diverged at validation {validations} (BPR loss {v}); "
                                               f"lower the learning rate (--lr, now {lr})")
                    report({"epoch": epoch, "validation": validations, "val_loss": v,
                            "train_loss": float(np.mean(train_losses)) if train_losses else None})
                    train_losses = []
                    if v < best["loss"]:
                        best.update(loss=v, items=item_emb.weight.detach().clone(), validation=validations)
                        bad = 0
                    else:
                        bad += 1
                        if bad == patience:
                            stopped = "patience"
                            break
                    if max_seconds is not None and time.time() - started > max_seconds:
                        stopped = "time"
                        break
                train_losses.append(step(tr_u[idx], tr_i[idx]))
            if stopped:
                break
    metrics = {"val_bpr_loss": best["loss"], "best_validation": best["validation"], "validations": validations,
               "epochs_run": epoch, "stopped": stopped or "epochs", "train_clicks": int(len(tr_u)),
               "val_clicks": int(len(va_u)), "seconds": time.time() - started}
    return best["items"].cpu().numpy().astype(np.float32), metrics
