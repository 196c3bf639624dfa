"""Each mechanism of docs/method.md section 3, tested directly on TopicRecSimulator.

Most tests use hand-crafted item matrices and user states so that the expected
value follows from the spec's formulas; ``test_batched_core_matches_naive``
replays whole episodes against the naive one-user implementation in
``naive_reference.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_sim, one_topic_items
from naive_reference import NaiveUser

from gym_slaterec.core.config import SimulatorConfig
from gym_slaterec.core.embeddings import load_item_embeddings
from gym_slaterec.core.simulator import TopicRecSimulator

NO_BOREDOM = {"boredom_threshold": 1000}  # the log holds at most 10 entries: never bored


def spec_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def per_topic_norm_sum(x: np.ndarray, m: int) -> np.ndarray:
    x = np.atleast_2d(x)
    return np.linalg.norm(x.reshape(len(x), -1, m), axis=2).sum(axis=1)


def main_topics(items: np.ndarray, m: int) -> np.ndarray:
    return np.argmax(np.linalg.norm(items.reshape(len(items), -1, m), axis=2), axis=1)


def examination(model: str, k: int) -> np.ndarray:
    r = np.arange(k)
    if model == "TopDown":
        return 0.85**r
    return 0.5 * 0.85**r + 0.5 * 0.85 ** (k - 1 - r)


def random_users(rng, n, K, m):
    u = rng.uniform(0, 1, size=(n, K * m))
    return u / per_topic_norm_sum(u, m)[:, None]


# --------------------------------------------------------------------- relevance
@pytest.mark.parametrize("click_model", ["TopDown", "Mixed"])
def test_scores_relevance_and_click_probabilities(rng, click_model):
    # Rows of different norms: scores are divided by the largest row norm (2 here).
    items = rng.uniform(0.01, 1, size=(40, 6)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    items[7] *= 2.0
    items[3] *= 0.5
    n, k = 50, 4
    sim = make_sim(items, n, slate_size=k, click_model=click_model, **NO_BOREDOM)
    sim.reset()
    users = random_users(rng, n, 3, 2)
    sim.user[:] = users
    slates = rng.integers(0, 40, size=(n, k))
    slates[0] = [7, 3, 0, 1]
    turn = sim.step(slates)
    e = items.astype(np.float64)
    s = np.einsum("bkd,bd->bk", e[slates], users) / 2.0
    np.testing.assert_allclose(turn.scores, s, rtol=1e-6, atol=1e-9)
    rel = spec_sigmoid((s - 0.28) * 100.0)
    np.testing.assert_allclose(turn.click_probs, rel * examination(click_model, k)[None, :], rtol=1e-6, atol=1e-9)


def test_relevance_uses_offset_and_slope_overrides(rng):
    items = rng.uniform(0.01, 1, size=(30, 4)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    sim = make_sim(items, 20, slate_size=3, offset=0.1, slope=7.0, **NO_BOREDOM)
    sim.reset()
    users = random_users(rng, 20, 2, 2)
    sim.user[:] = users
    slates = rng.integers(0, 30, size=(20, 3))
    turn = sim.step(slates)
    s = np.einsum("bkd,bd->bk", items.astype(np.float64)[slates], users)
    np.testing.assert_allclose(turn.click_probs, spec_sigmoid((s - 0.1) * 7.0) * 0.85 ** np.arange(3), rtol=1e-6)


@pytest.mark.parametrize("click_model", ["TopDown", "Mixed"])
def test_empirical_click_rates_match_the_click_model(click_model):
    # offset -1: every item is relevant (rel = sigmoid(>= 100) = 1), so P(click at rank r) = E_r.
    n, turns, k = 4000, 5, 10
    sim = TopicRecSimulator(SimulatorConfig(click_model=click_model, offset=-1.0, **NO_BOREDOM), n)
    sim.seed(np.arange(n) + 777)
    sim.reset()
    clicks = []
    slates = np.tile(np.arange(k), (n, 1))
    for _ in range(turns):
        clicks.append(sim.step(slates).clicks)
    clicks = np.concatenate(clicks).astype(np.float64)  # (n * turns, k)
    e = examination(click_model, k)
    rate = clicks.mean(axis=0)
    tol = 4.5 * np.sqrt(e * (1 - e) / len(clicks)) + 1e-9
    assert np.all(np.abs(rate - e) <= tol), f"click rates {rate.round(4)} vs {click_model} {e.round(4)}"
    # ranks are clicked independently (several clicks per slate are possible)
    joint = (clicks[:, 0] * clicks[:, 1]).mean()
    assert abs(joint - e[0] * e[1]) <= 4.5 * np.sqrt(e[0] * e[1] * (1 - e[0] * e[1]) / len(clicks))
    assert clicks.sum(axis=1).max() >= 5


def test_empirical_click_rate_at_intermediate_relevance():
    # One topic, user (1,0) after overwrite: item (cos a, sin a) scores cos a; offset at cos a -> rel 0.5.
    items = np.array([[np.cos(0.3), np.sin(0.3)], [1.0, 0.0]], dtype=np.float32)
    n = 20000
    sim = make_sim(items, n, slate_size=1, offset=float(np.cos(np.float32(0.3))), position_decay=0.85, **NO_BOREDOM)
    sim.reset()
    sim.user[:] = [1.0, 0.0]
    turn = sim.step(np.zeros((n, 1), dtype=np.int64))
    np.testing.assert_allclose(turn.click_probs, 0.5, atol=1e-6)
    assert abs(turn.clicks.mean() - 0.5) < 4.5 * np.sqrt(0.25 / n)


# -------------------------------------------------------------- diversity penalty
def _crowded_slates(topics: np.ndarray, k: int, counts: list[int]) -> np.ndarray:
    """Slates whose most frequent main topic (topic 0) occurs ``c`` times, other ranks on distinct topics."""
    by_topic = {t: np.flatnonzero(topics == t) for t in range(topics.max() + 1)}
    slates = []
    for c in counts:
        slate = list(by_topic[0][:c])
        for t in range(1, k - c + 1):
            slate.append(by_topic[t][0])
        slates.append(slate)
    return np.array(slates, dtype=np.int64)


@pytest.mark.parametrize("penalty,threshold", [(3.0, 4), (3.0, 2), (1.0, 4), (2.5, 6)])
def test_diversity_penalty(rng, penalty, threshold):
    sim0 = TopicRecSimulator(SimulatorConfig(), 1)
    items = sim0.items
    topics = main_topics(items.astype(np.float64), 2)
    counts = [1, 2, 3, 4, 5, 6]
    n = len(counts)
    sim = TopicRecSimulator(
        SimulatorConfig(click_model="Mixed", diversity_penalty=penalty, diversity_threshold=threshold, **NO_BOREDOM), n
    )
    sim.seed(np.arange(n))
    sim.reset()
    users = random_users(rng, n, 10, 2)
    sim.user[:] = users
    slates = _crowded_slates(topics, 10, counts)
    turn = sim.step(slates)
    # scores are divided by the largest row norm (1 up to float32 rounding, which slope 100 magnifies)
    s = np.einsum("bkd,bd->bk", items.astype(np.float64)[slates], users) / sim.max_score
    rel = spec_sigmoid((s - 0.28) * 100.0)
    crowded = np.array(counts) >= threshold
    expected = np.where(crowded[:, None], rel / penalty, rel) * examination("Mixed", 10)
    np.testing.assert_allclose(turn.click_probs, expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(turn.slate_topics, topics[slates])


# ----------------------------------------------------------------------- boredom
def _one_topic_run(turns: int = 24, **overrides):
    """Slate [item 2] every turn: clicked surely unless bored (see ``one_topic_items``)."""
    sim = make_sim(one_topic_items(), 1, slate_size=1, position_decay=1.0, **overrides)
    reset = sim.reset()
    assert reset.clicks.all(), "the reset slate must be clicked (it is logged with stamp 0)"
    clicks, bored, scores = [], [], []
    for _ in range(turns):
        turn = sim.step(np.array([[2]]))
        clicks.append(bool(turn.clicks[0, 0]))
        bored.append(bool(turn.bored[0, 0]))
        scores.append(float(turn.scores[0, 0]))
    return np.array(clicks), np.array(bored), np.array(scores), sim


def test_boredom_onset_and_release():
    # Derived by hand from docs/method.md section 3 (threshold 5, window 5, timeout 5, maxlen 10):
    # the reset click (stamp 0) and the clicks of turns 1-4 make 5 live entries at the
    # start of turn 5 -> bored for turns 5..9 (timeout 5, 4, 3, 2, 1, released at turn 10
    # when only the stamp-4 entry is still live). The clicks of turns 10..14 make the
    # topic bored again for turns 15..19, and so on.
    clicks, bored, scores, sim = _one_topic_run(24)
    turn = np.arange(1, 25)
    expected_bored = ((turn - 5) % 10 < 5) & (turn >= 5)
    np.testing.assert_array_equal(bored, expected_bored)
    np.testing.assert_array_equal(clicks, ~expected_bored)
    # the bored topic's block is zeroed in e'_u: the item scores 0 while bored
    assert np.all(scores[bored] == 0.0) and np.all(scores[~bored] >= np.sqrt(0.5) - 1e-6)
    # ... but not in e_u (the hidden user embedding keeps its interests)
    assert per_topic_norm_sum(sim.user[0], 2)[0] == pytest.approx(1.0)


def test_boredom_timeout_counts_down_from_onset():
    _, bored, _, _ = _one_topic_run(12, boredom_timeout=2)
    # onset at turn 5, bored for 2 turns, released at turn 7 (4 live entries then)
    np.testing.assert_array_equal(np.flatnonzero(bored)[:2] + 1, [5, 6])
    assert not bored[6]


@pytest.mark.parametrize(
    "overrides,onset",
    [
        ({}, 5),
        ({"boredom_threshold": 3}, 3),
        ({"boredom_moving_window": 4}, 5),  # entries stamped >= t - 5 count: 0..4 at turn 5
        ({"boredom_moving_window": 3}, None),  # at most 4 live entries
        ({"recent_items_maxlen": 5}, 5),
        ({"recent_items_maxlen": 4}, None),  # the log never holds 5 entries
        ({"boredom_threshold": 3, "recent_items_maxlen": 2}, None),
        ({"boredom_threshold": 3, "boredom_moving_window": 2}, 3),  # stamps 0, 1, 2 live at turn 3
        ({"boredom_threshold": 3, "boredom_moving_window": 1}, None),  # 2 live entries at most
        ({"boredom_threshold": 1, "boredom_moving_window": 0}, 1),  # the reset click alone
    ],
)
def test_boredom_window_threshold_and_maxlen(overrides, onset):
    _, bored, _, _ = _one_topic_run(30, **overrides)
    first = int(np.argmax(bored)) + 1 if bored.any() else None
    assert first == onset


@pytest.mark.parametrize("maxlen,ever_bored", [(4, False), (5, True)])
def test_log_keeps_only_the_newest_entries_with_several_clicks_per_turn(maxlen, ever_bored):
    # Three certain clicks per turn on topic 0 (slate [2, 2, 2]); a log of 4 entries never reaches 5.
    sim = make_sim(one_topic_items(), 1, slate_size=3, position_decay=1.0, recent_items_maxlen=maxlen)
    sim.reset()
    bored = [bool(sim.step(np.array([[2, 2, 2]])).bored[0, 0]) for _ in range(20)]
    assert any(bored) == ever_bored


def test_bored_topic_is_released_even_if_clicked_elsewhere():
    # Two topics; the user is bored of topic 0 by state, clicks only topic 1: released after the timeout.
    items = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0.5, 0.5, 0.5, 0.5]], dtype=np.float32)
    sim = make_sim(items, 1, slate_size=1, position_decay=1.0)
    sim.reset()
    sim.user[:] = [0.0, 0.0, 1.0, 0.0]
    sim.bored[0] = [True, False]
    sim.bored_timeout[0] = [3, 5]
    seen = [bool(sim.step(np.array([[1]])).bored[0, 0]) for _ in range(5)]
    # timeout 3 -> 2, 1 (bored in turns 1-2), 0 at turn 3: released
    assert seen[:3] == [True, True, False]


# --------------------------------------------------------------------- influence
def _expected_influence(user, item_vecs, clicks, omega=0.9, m=2):
    u = user.copy()
    for r in np.flatnonzero(clicks):
        u = omega * u + (1 - omega) * item_vecs[r]
        u = u / per_topic_norm_sum(u, m)[0]
    return u


@pytest.mark.parametrize("omega", [0.9, 0.5])
def test_influence_in_rank_order_with_topic_norm_renormalisation(rng, omega):
    sim = TopicRecSimulator(SimulatorConfig(omega=omega, offset=0.1, **NO_BOREDOM), 300)
    sim.seed(np.arange(300))
    sim.reset()
    users = random_users(rng, 300, 10, 2)
    sim.user[:] = users
    slates = rng.integers(0, 1000, size=(300, 10))
    turn = sim.step(slates)
    assert turn.clicks.sum(axis=1).max() >= 3  # several clicks per slate occur
    items = sim.items.astype(np.float64)
    for b in range(300):
        expected = _expected_influence(users[b], items[slates[b]], turn.clicks[b], omega)
        np.testing.assert_allclose(sim.user[b], expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(per_topic_norm_sum(sim.user, 2), 1.0, rtol=1e-12)


def test_influence_order_matters_and_acts_on_e_u_not_e_prime_u():
    items = np.array(
        [[0.9, 0.3, 0, 0, 0, 0], [0, 0, 0.2, 0.8, 0, 0], [0, 0, 0, 0, 0.6, 0.6]], dtype=np.float32
    )
    u0 = np.array([0.3, 0.1, 0.1, 0.2, 0.3, 0.3])
    u0 = u0 / per_topic_norm_sum(u0, 2)[0]
    results = {}
    for order in ([0, 1], [1, 0]):
        sim = make_sim(items, 1, slate_size=2, position_decay=1.0, offset=-1.0, **NO_BOREDOM)
        sim.reset()
        sim.user[:] = u0
        sim.bored[0] = [False, False, True]  # topic 2 bored: zeroed in e'_u only
        sim.bored_timeout[0, 2] = 5
        turn = sim.step(np.array([order]))
        assert turn.clicks.all() and turn.bored[0, 2]
        expected = _expected_influence(u0, items.astype(np.float64)[order], np.array([True, True]))
        np.testing.assert_allclose(sim.user[0], expected, rtol=1e-9)
        assert sim.user[0, 4:].min() > 0  # the bored block of e_u survived the update
        results[tuple(order)] = sim.user[0].copy()
    assert not np.allclose(results[(0, 1)], results[(1, 0)])


def test_no_click_no_influence():
    items = one_topic_items()
    sim = make_sim(items, 1, slate_size=1, position_decay=1.0, offset=2.0)  # nothing is relevant
    sim.reset()
    before = sim.user.copy()
    turn = sim.step(np.array([[2]]))
    assert not turn.clicks.any()
    np.testing.assert_array_equal(sim.user, before)


# ------------------------------------------------------------------- reset, users
def test_reset_slate_is_the_best_item_per_topic():
    for kind in ("focused", "diffuse"):
        sim = TopicRecSimulator(SimulatorConfig(item_embeddings=kind), 3)
        emb, _ = load_item_embeddings(kind, 2)
        norms = np.linalg.norm(emb.reshape(1000, 10, 2).astype(np.float64), axis=2)
        expected = np.argmax(norms, axis=0)
        np.testing.assert_array_equal(sim.initial_slate, expected)
        sim.seed(np.arange(3))
        turn = sim.reset()
        np.testing.assert_array_equal(turn.slates, np.tile(expected, (3, 1)))
        np.testing.assert_array_equal(sim.last_slate, np.tile(expected, (3, 1)))
        assert (sim.t == 0).all() and not sim.bored.any()


@pytest.mark.parametrize("num_users", [1, 50])  # the one-user fast path and the batched path
def test_reset_clicks_are_logged_but_do_not_move_the_user(num_users):
    # Same seeds, so the same sampled users: with offset 5 nothing is clicked at reset,
    # with the default offset item 2 is clicked surely. As in the reference
    # implementation, the reset click enters the click log (stamp 0) and leaves e_u as
    # sampled; the first step's clicks do move it.
    items = one_topic_items()
    plain = make_sim(items, num_users, slate_size=1, position_decay=1.0, offset=5.0)
    assert not plain.reset().clicks.any()
    sim = make_sim(items, num_users, slate_size=1, position_decay=1.0)
    assert sim.reset().clicks.all()
    np.testing.assert_array_equal(sim.user, plain.user)
    assert (sim.log_stamp == 0).sum(axis=1).tolist() == [1] * num_users
    np.testing.assert_array_equal(sim.log_topic[sim.log_stamp == 0], 0)
    before = sim.user.copy()
    turn = sim.step(np.full((num_users, 1), 2))
    assert turn.clicks.all()
    for b in range(num_users):
        expected = _expected_influence(before[b], items.astype(np.float64)[[2]], np.array([True]))
        np.testing.assert_allclose(sim.user[b], expected, rtol=1e-9)


def test_sampled_users_are_nonnegative_with_unit_topic_norm_sum():
    sim = TopicRecSimulator(SimulatorConfig(offset=5.0), 5000)  # offset 5: no reset click moves the user
    sim.seed(np.arange(5000) + 3)
    sim.reset()
    u = sim.user
    assert u.min() >= 0.0
    np.testing.assert_allclose(per_topic_norm_sum(u, 2), 1.0, rtol=1e-12)
    # w_t = U^3 normalised: the dominant topic holds on average well over 1/K of the mass
    shares = np.linalg.norm(u.reshape(-1, 10, 2), axis=2)
    assert 0.3 < shares.max(axis=1).mean() < 0.8
    # different users differ
    assert len(np.unique(u.round(8), axis=0)) == 5000


def test_episode_is_exactly_episode_length_turns():
    for length in (100, 7):
        sim = TopicRecSimulator(SimulatorConfig(episode_length=length), 2)
        sim.seed(np.arange(2))
        sim.reset()
        slates = np.tile(np.arange(10), (2, 1))
        for t in range(1, length + 1):
            assert not sim.terminated().any()
            sim.step(slates)
            assert (sim.t == t).all()
        assert sim.terminated().all()


# --------------------------------------------------- exact agreement with naive
CONFIGS = [
    {},
    {"click_model": "Mixed"},
    {"click_model": "Mixed", "diversity_penalty": 3.0, "item_embeddings": "diffuse"},
    {"click_model": "Mixed", "recent_items_maxlen": 3, "boredom_threshold": 2, "boredom_moving_window": 2,
     "boredom_timeout": 3, "omega": 0.6},
    {"boredom_threshold": 3, "boredom_moving_window": 1, "diversity_penalty": 3.0, "diversity_threshold": 3,
     "episode_length": 40, "offset": 0.2},
]


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_batched_core_matches_naive(overrides):
    cfg = SimulatorConfig().replace(**overrides)
    n, seed = 6, 1000
    sim = TopicRecSimulator(cfg, n)
    sim.seed(np.arange(n) + seed)
    items = sim.items
    naive = [NaiveUser(cfg, items, seed + i) for i in range(n)]
    # populations of one user take their own code path: pin them to the same trajectories
    singles = [TopicRecSimulator(cfg, 1) for _ in range(n)]
    for i, single in enumerate(singles):
        single.seed(np.array([seed + i]))
    rng = np.random.default_rng(5)
    topics = sim.item_topics
    crowd = np.flatnonzero(topics == 3)
    total_clicks, total_bored = 0, 0
    for episode in range(2):  # the second episode continues the same random streams
        turn = sim.reset()
        single_turns = [single.reset() for single in singles]
        for i, u in enumerate(naive):
            slate, clicks = u.reset()
            np.testing.assert_array_equal(single_turns[i].clicks[0], clicks)
            np.testing.assert_array_equal(turn.slates[i], slate)
            np.testing.assert_array_equal(turn.clicks[i], clicks, err_msg=f"reset clicks of user {i}")
            np.testing.assert_allclose(sim.user[i], u.user, rtol=1e-10, atol=1e-13)
        for t in range(1, cfg.episode_length + 1):
            mode = t % 3
            if mode == 0:
                slates = sim.oracle_slates()
            elif mode == 1:
                slates = rng.integers(0, sim.num_items, size=(n, cfg.slate_size))
            else:  # crowded slates (repeats allowed) to trigger the diversity penalty
                slates = rng.choice(crowd[:6], size=(n, cfg.slate_size))
            turn = sim.step(slates)
            for i, u in enumerate(naive):
                clicks, reward = u.step(slates[i])
                where = f"episode {episode} turn {t} user {i}"
                one = singles[i].step(slates[i : i + 1])
                np.testing.assert_array_equal(one.clicks[0], clicks, err_msg=where + " (one-user simulator)")
                np.testing.assert_array_equal(one.bored[0], u.bored, err_msg=where + " (one-user simulator)")
                np.testing.assert_allclose(one.scores[0], turn.scores[i], rtol=1e-12, atol=1e-15, err_msg=where)
                np.testing.assert_allclose(singles[i].user[0], u.user, rtol=1e-9, atol=1e-12, err_msg=where)
                np.testing.assert_array_equal(turn.clicks[i], clicks, err_msg=where)
                assert turn.rewards[i] == reward, where
                np.testing.assert_array_equal(sim.bored[i], u.bored, err_msg=where)
                np.testing.assert_allclose(sim.user[i], u.user, rtol=1e-9, atol=1e-12, err_msg=where)
            total_clicks += int(turn.clicks.sum())
            total_bored += int(sim.bored.sum())
        assert sim.terminated().all() and all(single.terminated()[0] for single in singles)
    assert total_clicks > 0 and total_bored > 0  # the comparison exercised clicks and boredom


def test_stepping_and_resetting_a_subset_of_users_matches_separate_simulators():
    # The vector env steps some users while it resets others: a user's trajectory must
    # depend only on its own seed and slates, whatever the selection.
    cfg = SimulatorConfig(click_model="Mixed", diversity_penalty=3.0, episode_length=12, offset=0.2)
    n = 5
    sim = TopicRecSimulator(cfg, n)
    sim.seed(np.arange(n) + 50)
    alone = [TopicRecSimulator(cfg, 1) for _ in range(n)]
    for i, a in enumerate(alone):
        a.seed(np.array([50 + i]))
    rng = np.random.default_rng(0)
    turns = {i: [] for i in range(n)}
    sim.reset()
    for a in alone:
        a.reset()
    schedule = [np.array([0, 2, 4]), np.arange(n), np.array([1]), np.array([3, 4]), np.arange(n)] * 6
    for step, sel in enumerate(schedule):
        slates = rng.integers(0, sim.num_items, size=(len(sel), 10))
        if step % 7 == 6:  # reset a subset mid-way, as autoreset does
            turn = sim.reset(sel)
            single = [alone[i].reset() for i in sel]
        else:
            live = sel[~sim.terminated(sel)]
            slates = slates[: len(live)]
            sel = live
            if len(sel) == 0:
                continue
            turn = sim.step(slates, sel)
            single = [alone[i].step(slates[j : j + 1]) for j, i in enumerate(sel)]
        for j, i in enumerate(sel):
            np.testing.assert_array_equal(turn.clicks[j], single[j].clicks[0], err_msg=f"step {step} user {i}")
            np.testing.assert_allclose(sim.user[i], alone[i].user[0], rtol=1e-12, atol=1e-15)
            np.testing.assert_array_equal(sim.bored[i], alone[i].bored[0])
            turns[i].append(int(turn.clicks[j].sum()))
    np.testing.assert_array_equal(sim.t, [a.t[0] for a in alone])
    assert sum(map(sum, turns.values())) > 0
