"""Reference policies (docs/method.md section 5): random, short-term oracle, epsilon-greedy oracle."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from gym_slaterec.policies import EpsilonGreedyPolicy, make_policy
from gym_slaterec.rollouts import make_vector_env

FOCUSED = "SlateRec/FocusedTopDown-v0"


def test_random_policy_draws_distinct_uniform_items():
    venv = make_vector_env(FOCUSED, 2000)
    pol = make_policy("random", venv, seed=1)
    slates = np.concatenate([pol() for _ in range(5)])  # 10,000 slates
    assert slates.shape == (10000, 10) and slates.min() >= 0 and slates.max() < 1000
    assert (np.diff(np.sort(slates, axis=1), axis=1) > 0).all(), "items of a slate must be distinct"
    counts = np.bincount(slates.ravel(), minlength=1000)
    # 100 expected per item; a chi-square with 999 dof stays well below 1200
    chi2 = ((counts - 100.0) ** 2 / 100.0).sum()
    assert chi2 < 1200, chi2
    # every rank is uniform too (no rank bias)
    assert abs(slates[:, 0].mean() - 499.5) < 4.5 * 288.7 / 100


def test_random_policy_on_a_vector_env_acts_as_on_single_envs():
    """User i of a vector env seeded s sees the slates a single env seeded s + i sees,
    over more calls than one batch of pre-drawn slates holds."""
    from gym_slaterec.policies import RandomPolicy

    calls = 2 * RandomPolicy.SETS_PER_DRAW + 3
    venv = make_vector_env(FOCUSED, 4)
    batch = make_policy("random", venv, seed=20)
    got = np.stack([batch().copy() for _ in range(calls)], axis=1)  # (users, calls, k)
    for i in range(4):
        single = make_policy("random", gymnasium.make(FOCUSED), seed=20 + i)
        np.testing.assert_array_equal(np.stack([single() for _ in range(calls)]), got[i])
    batch.seed(20)  # reseeding starts the streams and the pre-drawn slates over
    np.testing.assert_array_equal(batch(), got[:, 0])


def test_oracle_shows_the_top_k_items_of_the_turn_best_first():
    env = gymnasium.make(FOCUSED, analysis_info=True)
    pol = make_policy("oracle", env)
    obs, _ = env.reset(seed=5)
    sim = env.unwrapped.simulator
    items = sim.items.astype(np.float64)
    bored_turns = 0
    for _ in range(100):
        user = env.unwrapped.user_embedding
        slate = pol(obs)
        obs, _, _, _, info = env.step(slate)
        eff = user * np.repeat(~info["bored"], 2)  # e'_u of the turn the slate was shown in
        scores = items @ eff
        best = np.sort(scores)[::-1][:10]
        np.testing.assert_allclose(scores[slate], best, rtol=1e-5, atol=1e-7)
        bored_turns += int(info["bored"].any())
    assert bored_turns > 0  # the oracle accounted for boredom starting at the next turn


def test_epsilon_greedy_mixes_oracle_and_random_per_rank():
    venv = make_vector_env(FOCUSED, 3000)
    venv.reset(seed=0)
    oracle = make_policy("oracle", venv)()
    assert np.array_equal(make_policy("epsilon-greedy", venv, seed=3, epsilon=0.0)(), oracle)
    same = make_policy("epsilon-greedy", venv, seed=3, epsilon=0.5)() == oracle
    # P(rank keeps the oracle item) = 1 - eps + eps / N
    assert abs(same.mean() - 0.5005) < 4.5 * np.sqrt(0.25 / same.size)
    assert abs(same[:, 0].mean() - same[:, 9].mean()) < 0.05  # independent of the rank
    rand = make_policy("epsilon-greedy", venv, seed=3, epsilon=1.0)() == oracle
    assert rand.mean() < 0.01


def test_policies_are_seeded():
    venv = make_vector_env(FOCUSED, 10)
    venv.reset(seed=0)
    for name in ("random", "epsilon-greedy"):
        a = make_policy(name, venv, seed=4)()
        b = make_policy(name, venv, seed=4)()
        c = make_policy(name, venv, seed=5)()
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_policy_bad_input():
    env = gymnasium.make(FOCUSED)
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("greedy", env)
    for eps in (-0.1, 1.5):
        with pytest.raises(ValueError, match="epsilon"):
            EpsilonGreedyPolicy(env, epsilon=eps)
    with pytest.raises(TypeError, match="not a SlateRec environment"):
        make_policy("random", gymnasium.make("CartPole-v1"))


def test_oracle_float32_search_returns_the_float64_top_k():
    """The float32-candidate search gives exactly the float64 top-k, ties and near-ties
    included (those rows fall back to float64)."""
    from gym_slaterec.core.topk import top_k

    items = np.random.default_rng(0).random((300, 20)).astype(np.float32) ** 3
    items[7] = items[3]  # an exact tie
    items[8] = items[3] * np.float32(1 + 2e-7)  # closer than float32 can tell apart
    env = make_vector_env("SlateRec/FocusedTopDown-v0", 2, item_embeddings=items)
    sim = env.simulator
    eff = np.abs(np.random.default_rng(1).normal(size=(4000, 20))) ** 2
    eff[:50] = items[3].astype(np.float64) * 5  # users whose top items are the tied ones
    want = top_k(eff @ sim._items64_t, sim.slate_size)
    got = sim._exact_top_k(eff)
    np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(want, axis=1))
    # order: by float64 score; only exactly tied items may swap places
    s = np.take_along_axis(eff @ sim._items64_t, got, axis=1)
    assert (np.diff(s, axis=1) <= 0).all()
    np.testing.assert_array_equal(s, np.take_along_axis(eff @ sim._items64_t, want, axis=1))


def test_oracle_cache_follows_the_effective_user():
    env = make_vector_env("SlateRec/FocusedTopDown-v0", 64)
    pol = make_policy("epsilon-greedy", env, seed=0)
    obs, _ = env.reset(seed=0)
    sim = env.simulator
    for _ in range(30):
        fresh = sim.oracle_slates()
        want = sim._exact_top_k(sim.next_effective_user())
        np.testing.assert_array_equal(fresh, want)
        obs, *_ = env.step(pol(obs))


def test_float32_top_agrees_with_a_full_sort():
    """The block-maximum search returns the k largest float32 scores of every row,
    including rows that tie everywhere (served by the full-sort fallback)."""
    import torch

    from gym_slaterec.core import topk

    rng = np.random.default_rng(7)
    items_t = (rng.random((20, 1001)) ** 3).astype(np.float32)  # odd width: a column outside the blocks
    users = (rng.random((300, 20)) ** 2).astype(np.float32)
    users[5] = 0.0  # every score 0: all 1001 entries tie
    users[6, :] = 0.0
    users[6, 3] = 1.0  # scores = one row of items_t
    items_t[:, 1000] = 50.0  # the column left out of the block maxima is everyone's best
    scores = users.astype(np.float64) @ items_t.astype(np.float64)
    for k in (1, 11, 40):
        values, columns = topk.float32_top(users, items_t, k)
        # float32 products round differently for other batch shapes: compare to 1e-6
        want = torch.topk(torch.from_numpy(scores), k, dim=1).values.numpy()
        np.testing.assert_allclose(values, want, rtol=1e-6)
        assert (np.diff(values, axis=1) <= 0).all()
        np.testing.assert_allclose(np.take_along_axis(scores, columns, axis=1), values, rtol=1e-6)
        assert (columns[:, 0][np.arange(300) != 5] == 1000).all()
        assert all(len(set(r)) == k for r in columns.tolist())


def test_return_stats_interval_by_hand():
    from gym_slaterec.rollouts import return_stats

    # returns 1, 2, 3, 4: mean 2.5, sample std sqrt(5/3), t(0.975, 3) = 3.182446305284263
    s = return_stats(np.array([1.0, 2.0, 3.0, 4.0]))
    half = 3.182446305284263 * np.sqrt(5 / 3) / 2
    assert s.mean == 2.5 and s.episodes == 4
    np.testing.assert_allclose(s.std, np.sqrt(5 / 3), rtol=1e-12)
    np.testing.assert_allclose(s.ci95, (2.5 - half, 2.5 + half), rtol=1e-12)
