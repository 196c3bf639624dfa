"""The CPU GRU kernel over turns of (slate, clicks): nn.GRU's function and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sb3_slate.agents.gru_sequence import slate_gru


def _reference(items: torch.Tensor, gru: nn.GRU, ids: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
    outputs, _ = gru(torch.cat([items[ids].flatten(2), clicks], dim=-1))
    return outputs


@pytest.mark.parametrize("freeze_items", [False, True])
def test_slate_gru_computes_the_outputs_and_gradients_of_nn_gru(freeze_items):
    """Float64, so that the two orders of summation agree to ~1e-12: every output of every turn
    and the gradients of the item table and of each GRU weight, from a loss that reads different
    turns of different rows (as the belief at each window's last real turn does)."""
    torch.manual_seed(0)
    T, B, k, d, H, n_items = 6, 33, 4, 5, 7, 40
    ids = torch.randint(0, n_items, (T, B, k))
    ids[:, 0] = ids[:, 1]  # repeated items within a turn and across rows
    clicks = (torch.rand(T, B, k) < 0.3).double()
    grads = []
    for compute in (_reference, slate_gru):
        torch.manual_seed(1)
        items = nn.Parameter(torch.randn(n_items, d, dtype=torch.float64), requires_grad=not freeze_items)
        gru = nn.GRU(k * (d + 1), H).double()
        out = compute(items, gru, ids, clicks)
        last = torch.randint(0, T, (B,), generator=torch.Generator().manual_seed(2))
        weights = torch.randn(B, H, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        (out[last, torch.arange(B)] * weights).sum().backward()
        params = [items, *gru.parameters()]
        grads.append([out.detach()] + [p.grad for p in params])
    ref, got = grads
    assert (got[1] is None) == freeze_items
    for a, b in zip(ref, got):
        if a is None:
            assert b is None
        else:
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_slate_gru_without_gradients_and_in_float32():
    torch.manual_seed(0)
    items, gru = torch.randn(30, 4), nn.GRU(3 * 5, 6)
    ids, clicks = torch.randint(0, 30, (5, 8, 3)), (torch.rand(5, 8, 3) < 0.5).float()
    with torch.no_grad():
        torch.testing.assert_close(slate_gru(items, gru, ids, clicks), _reference(items, gru, ids, clicks),
                                   rtol=1e-5, atol=1e-6)


def test_slate_gru_recomputes_its_item_table_after_the_weights_change():
    """The per-slot table is reused while the item table and GRU weights are unchanged; an
    in-place update of either (an optimiser or Polyak step) or other tensors give fresh results."""
    torch.manual_seed(0)
    items, gru = torch.randn(30, 4), nn.GRU(3 * 5, 6)
    ids, clicks = torch.randint(0, 30, (5, 8, 3)), (torch.rand(5, 8, 3) < 0.5).float()
    with torch.no_grad():
        first = slate_gru(items, gru, ids, clicks)
        torch.testing.assert_close(slate_gru(items, gru, ids, clicks), first, rtol=0, atol=0)
        for change in (lambda: items.mul_(1.5), lambda: gru.weight_ih_l0.add_(0.1)):
            change()
            torch.testing.assert_close(slate_gru(items, gru, ids, clicks), _reference(items, gru, ids, clicks),
                                       rtol=1e-5, atol=1e-6)
        other = items.clone().add_(1.0)  # another tensor, same version counter value
        torch.testing.assert_close(slate_gru(other, gru, ids, clicks), _reference(other, gru, ids, clicks),
                                   rtol=1e-5, atol=1e-6)
    from sb3_slate.agents.gru_sequence import _SlotTables

    tables = _SlotTables(size=1)  # bounded: one entry kept whatever is asked
    for _ in range(3):
        tables.get(torch.randn(30, 4), gru.weight_ih_l0, 3)
    assert len(tables.entries) == 1
    with torch.inference_mode():  # tensors without a version counter are never reused
        frozen = items.clone()
        torch.testing.assert_close(slate_gru(frozen, gru, ids, clicks), _reference(frozen, gru, ids, clicks),
                                   rtol=1e-5, atol=1e-6)
        frozen.mul_(2.0)
        torch.testing.assert_close(slate_gru(frozen, gru, ids, clicks), _reference(frozen, gru, ids, clicks),
                                   rtol=1e-5, atol=1e-6)


def test_slate_gru_refuses_a_gru_it_does_not_compute():
    items, ids, clicks = torch.randn(30, 4), torch.zeros(2, 3, 3, dtype=torch.long), torch.zeros(2, 3, 3)
    with pytest.raises(ValueError, match="one-layer"):
        slate_gru(items, nn.GRU(15, 6, num_layers=2), ids, clicks)
    with pytest.raises(ValueError, match="3 items of 4 values"):
        slate_gru(items, nn.GRU(16, 6), ids, clicks)
