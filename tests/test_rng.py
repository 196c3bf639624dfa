"""Per-user counter-based random streams (gym_slaterec.core.rng)."""

from __future__ import annotations

import numpy as np
import pytest

from gym_slaterec.core.rng import BatchRNG, distinct_integers, seed_to_key


def test_draws_depend_only_on_the_users_own_seed_and_count():
    full = BatchRNG(np.arange(50) + 7)
    part = BatchRNG(np.array([7 + 3, 7 + 40]))
    for n in (1, 5, 2000):  # 2000 x 50 draws go through the chunked path
        a, b = full.uniform(n), part.uniform(n)
        np.testing.assert_array_equal(a[[3, 40]], b)
        assert a.shape == (50, n) and (a >= 0).all() and (a < 1).all()
    # the same stream on its own, addressed by index, continues identically
    sub = BatchRNG(np.arange(50) + 7)
    sub.uniform(1), sub.uniform(5), sub.uniform(2000)
    idx = np.array([3, 40])
    np.testing.assert_array_equal(sub.integers(1000, 9, idx), part.integers(1000, 9))


def test_uniforms_look_uniform_and_streams_differ():
    u = BatchRNG(np.arange(200)).uniform(500)
    hist = np.histogram(u, bins=20, range=(0, 1))[0]
    expected = u.size / 20
    assert ((hist - expected) ** 2 / expected).sum() < 60  # chi-square, 19 dof: p ~ 1e-6
    assert abs(np.corrcoef(u[0], u[1])[0, 1]) < 0.2
    assert not np.array_equal(seed_to_key(5, 0), seed_to_key(5, 1))


def test_distinct_integers_are_distinct_uniform_and_per_user():
    rng = BatchRNG(np.arange(3000))
    out = distinct_integers(rng, 12, 10)  # 10 of 12: nearly every row needs redraws
    assert out.shape == (3000, 10) and out.min() >= 0 and out.max() < 12
    assert all(len(set(r)) == 10 for r in out.tolist())
    counts = np.bincount(out[:, 0], minlength=12)  # the first position is uniform over 12 values
    assert ((counts - 250) ** 2 / 250).sum() < 45  # chi-square, 11 dof
    again = distinct_integers(BatchRNG(np.arange(3000)), 12, 10, np.array([5, 2999]))
    np.testing.assert_array_equal(again, out[[5, 2999]])


def test_distinct_integers_in_sets_are_independent_rows():
    rng = BatchRNG(np.arange(500))
    out = distinct_integers(rng, 12, 10, sets=3)  # most rows need the redraw loop, 3 per user
    assert out.shape == (500, 3, 10)
    assert all(len(set(r)) == 10 for r in out.reshape(-1, 10).tolist())
    # rows of one user are independent draws, not copies of each other
    same = (out[:, 0] == out[:, 1]).all(axis=1) | (out[:, 1] == out[:, 2]).all(axis=1)
    assert same.mean() < 0.01  # two rows of 10 distinct values of 12 coincide with probability ~4e-8
    counts = np.bincount(out[:, :, 3].ravel(), minlength=12)
    assert ((counts - 125) ** 2 / 125).sum() < 45  # chi-square, 11 dof
    # a user's rows depend only on its own stream
    part = distinct_integers(BatchRNG(np.arange(500)), 12, 10, np.array([7, 400]), sets=3)
    np.testing.assert_array_equal(part, out[[7, 400]])
    with pytest.raises(ValueError, match="sets"):
        distinct_integers(rng, 12, 10, sets=0)


def test_uniform_at_reads_any_part_of_a_consumed_block():
    rng = BatchRNG(np.arange(6) + 11)
    rng.uniform(3)  # block 0
    blocks = rng.counters.copy()
    whole = rng.uniform(40)  # block 1, all 40 positions
    assert (rng.counters == blocks + 1).all()
    offsets = np.array([0, 5, 30, 7, 0, 12])
    part = rng.uniform_at(blocks, offsets, 10)
    np.testing.assert_array_equal(part, np.stack([whole[i, o : o + 10] for i, o in enumerate(offsets)]))
    assert (rng.counters == blocks + 1).all()  # reading moved no counter
    np.testing.assert_array_equal(rng.uniform_at(blocks[[4]], offsets[[4]], 10, np.array([4])), part[[4]])


def test_rows_with_repeats_agree_for_few_and_many_rows():
    from gym_slaterec.core.rng import _rows_with_repeats

    values = np.random.default_rng(3).integers(0, 40, (3000, 7))
    want = np.flatnonzero([len(set(r)) < 7 for r in values.tolist()])
    assert 0 < len(want) < 3000
    np.testing.assert_array_equal(_rows_with_repeats(values), want)  # column comparisons
    few = _rows_with_repeats(values[:200])  # per-row sorts
    np.testing.assert_array_equal(few, want[want < 200])
