"""Gymnasium environments: registration, spaces, checkers, info, episode end, bad input."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from conftest import ENV_IDS, assert_same_state, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from gym_slaterec.envs import SlateRecEnv, SlateRecVectorEnv, check_slates, intra_slate_diversity

FOCUSED = "SlateRec/FocusedTopDown-v0"

# docs/method.md section 4
PRESETS = {
    "SlateRec/FocusedTopDown-v0": ("focused", "TopDown", 1.0),
    "SlateRec/FocusedMixed-v0": ("focused", "Mixed", 1.0),
    "SlateRec/FocusedDivPen-v0": ("focused", "Mixed", 3.0),
    "SlateRec/DiffuseTopDown-v0": ("diffuse", "TopDown", 1.0),
    "SlateRec/DiffuseMixed-v0": ("diffuse", "Mixed", 1.0),
    "SlateRec/DiffuseDivPen-v0": ("diffuse", "Mixed", 3.0),
}


def test_six_environments_are_registered_with_their_presets():
    assert set(ENV_IDS) == set(PRESETS)
    for env_id, (emb, click, penalty) in PRESETS.items():
        assert env_id in gymnasium.registry
        env = gymnasium.make(env_id)
        cfg = env.unwrapped.config
        assert (cfg.item_embeddings, cfg.click_model, cfg.diversity_penalty) == (emb, click, penalty)
        # the published values shared by all six (docs/method.md section 3)
        assert (cfg.offset, cfg.slope, cfg.omega, cfg.position_decay) == (0.28, 100.0, 0.9, 0.85)
        assert (cfg.diversity_threshold, cfg.boredom_threshold, cfg.boredom_timeout) == (4, 5, 5)
        assert (cfg.boredom_moving_window, cfg.recent_items_maxlen, cfg.short_term_boost) == (5, 10, 1.0)
        assert (cfg.slate_size, cfg.episode_length) == (10, 100)
        assert env.unwrapped.__doc__ and "Click model" in type(env.unwrapped).__doc__
        sim = env.unwrapped.simulator
        assert sim.items.shape == (1000, 20) and sim.catalogue.source == emb
        venv = gymnasium.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
        assert isinstance(venv.unwrapped, SlateRecVectorEnv)
        assert venv.unwrapped.config == cfg


def test_spaces_and_observation_types():
    env = gymnasium.make(FOCUSED)
    obs, info = env.reset(seed=0)
    assert env.action_space == gymnasium.spaces.MultiDiscrete(np.full(10, 1000))
    assert obs["slate"].dtype == np.int64 and obs["slate"].shape == (10,)
    assert obs["clicks"].dtype == np.int8 and obs["clicks"].shape == (10,)
    assert obs in env.observation_space
    assert info["turn"] == 0


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_and_sb3_env_checkers_pass(env_id):
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning is a failure too
        gym_check(gymnasium.make(env_id).unwrapped, skip_render_check=True)
        sb3_check(gymnasium.make(env_id), warn=True)


def test_episode_lasts_exactly_100_turns_then_terminates_and_refuses_more_steps():
    env = gymnasium.make(FOCUSED)
    obs, _ = env.reset(seed=1)
    action = np.arange(10)
    total, reset_clicks = 0.0, int(obs["clicks"].sum())
    for t in range(1, 101):
        obs, reward, terminated, truncated, info = env.step(action)
        assert reward == obs["clicks"].sum()  # reward = clicks on the slate just shown
        assert info["turn"] == t and not truncated
        assert terminated == (t == 100)
        total += reward
    assert 0 <= total <= 1000
    with pytest.raises(RuntimeError, match="terminated"):
        env.step(action)
    env.reset()
    env.step(action)  # a new episode can start


def test_reset_clicks_earn_no_reward():
    # Users whose reset slate got clicks: their return is exactly the sum of the
    # clicks of their 100 agent turns.
    venv = gymnasium.make_vec(FOCUSED, num_envs=400, vectorization_mode="vector_entry_point")
    obs, _ = venv.reset(seed=0)
    lucky = np.flatnonzero(obs["clicks"].sum(axis=1) > 0)[:3]
    assert len(lucky) > 0
    for seed in lucky:
        env = gymnasium.make(FOCUSED)
        obs, _ = env.reset(seed=int(seed))
        assert obs["clicks"].sum() > 0
        ret, clicks = 0.0, 0
        for _ in range(100):
            obs, reward, *_ = env.step(env.unwrapped.simulator.oracle_slates()[0])
            ret += reward
            clicks += int(obs["clicks"].sum())
        assert ret == clicks


def test_step_before_reset_is_an_error():
    env = SlateRecEnv()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.arange(10))


# ------------------------------------------------------------------ analysis info
def test_analysis_info_shapes_and_values():
    env = gymnasium.make(FOCUSED, analysis_info=True)
    _, info = env.reset(seed=4)
    assert info["bored"].shape == (10,) and info["bored"].dtype == bool
    assert info["scores"].shape == (10,) and np.ndim(info["diversity"]) == 0
    sim = env.unwrapped.simulator
    for slate in (np.full(10, 17), np.arange(10) * 97, sim.initial_slate):
        user = env.unwrapped.user_embedding
        _, _, _, _, info = env.step(slate)
        eff = user * np.repeat(~info["bored"], 2)
        expected = sim.items[slate].astype(np.float64) @ eff / sim.max_score
        np.testing.assert_allclose(info["scores"], expected, rtol=1e-6, atol=1e-9)
        x = sim.items[slate] / np.linalg.norm(sim.items[slate], axis=1, keepdims=True)
        gram = x @ x.T
        div = 1.0 - (gram.sum() - np.trace(gram)) / 90.0
        assert info["diversity"] == pytest.approx(div, abs=1e-6)
        np.testing.assert_array_equal(info["slate_topics"], sim.item_topics[slate])
    _, _, _, _, info = env.step(np.full(10, 3))
    assert info["diversity"] == pytest.approx(0.0, abs=1e-6)  # identical items
    # boredom shows up in info: a long oracle run bores the user of some topic
    bored_seen = False
    for _ in range(90):
        _, _, terminated, _, info = env.step(sim.oracle_slates()[0])
        bored_seen |= bool(info["bored"].any())
        np.testing.assert_array_equal(info["bored"], env.unwrapped.bored_topics)
        if terminated:
            break
    assert bored_seen


def test_intra_slate_diversity_of_orthogonal_items_is_one():
    items = np.eye(4, dtype=np.float32)
    assert intra_slate_diversity(items, np.array([[0, 1, 2, 3]]))[0] == pytest.approx(1.0)
    assert intra_slate_diversity(items, np.array([[2, 2, 2, 2]]))[0] == pytest.approx(0.0)


def test_vector_analysis_info_is_batched():
    venv = gymnasium.make_vec(FOCUSED, num_envs=4, vectorization_mode="vector_entry_point", analysis_info=True)
    _, info = venv.reset(seed=0)
    assert info["bored"].shape == (4, 10) and info["scores"].shape == (4, 10) and info["diversity"].shape == (4,)
    _, _, _, _, info = venv.step(np.tile(np.full(10, 5), (4, 1)))
    np.testing.assert_allclose(info["diversity"], 0.0, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*render_mode")
def test_render_ansi():
    env = gymnasium.make(FOCUSED, render_mode="ansi")
    env.reset(seed=0)
    env.step(np.arange(10))
    text = env.render()
    assert "turn   1" in text and "slate" in text
    with pytest.raises(ValueError, match="render_mode"):
        gymnasium.make(FOCUSED, render_mode="human")


# -------------------------------------------------------------------- bad actions
BAD_ACTIONS = [
    (np.arange(9), "shape"),
    (np.arange(11), "shape"),
    (np.arange(10).reshape(2, 5), "shape"),
    (np.arange(10, dtype=np.float64), "integer"),
    (np.full(10, np.nan), "NaN"),
    (np.r_[np.arange(9), 1000], "1000"),
    (np.r_[-1, np.arange(9)], "-1"),
    (["a"] * 10, "item ids"),
    ([1.5] * 10, "integer"),
    (None, "action"),
]


@pytest.mark.parametrize("action,message", BAD_ACTIONS)
def test_malformed_action_raises_and_leaves_state_untouched(action, message):
    env = gymnasium.make(FOCUSED)
    env.reset(seed=2)
    env.step(np.arange(10))
    sim = env.unwrapped.simulator
    before = snapshot(sim)
    with pytest.raises(ValueError, match=message):
        env.step(action)
    assert_same_state(before, snapshot(sim))
    env.step(np.arange(10))  # still usable


@pytest.mark.parametrize(
    "action,message",
    [
        (np.arange(10), "shape"),
        (np.zeros((3, 10), dtype=np.int64), "shape"),
        (np.zeros((2, 10)), "integer"),
        (np.full((2, 10), 1000), "1000"),
    ],
)
def test_vector_env_malformed_action(action, message):
    venv = gymnasium.make_vec(FOCUSED, num_envs=2, vectorization_mode="vector_entry_point")
    venv.reset(seed=0)
    sim = venv.unwrapped.simulator
    before = snapshot(sim)
    with pytest.raises(ValueError, match=message):
        venv.step(action)
    assert_same_state(before, snapshot(sim))


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(0, 3),
    k=st.integers(1, 5),
    n=st.integers(5, 50),
    data=st.data(),
)
def test_check_slates_accepts_exactly_the_valid_actions(batch, k, n, data):
    shape = (k,) if batch == 0 else (batch, k)
    got_shape = data.draw(st.sampled_from([shape, (k + 1,), (max(batch, 1), k, 1), (batch + 1, k)]))
    values = data.draw(st.lists(st.integers(-3, n + 3), min_size=int(np.prod(got_shape)), max_size=int(np.prod(got_shape))))
    dtype = data.draw(st.sampled_from([np.int64, np.int32, np.uint16, np.float32]))
    action = np.array(values).reshape(got_shape)
    valid_values = all(0 <= v < n for v in values)
    if dtype is np.uint16 and any(v < 0 for v in values):
        action = np.abs(action)
        valid_values = all(0 <= abs(v) < n for v in values)
    action = action.astype(dtype)
    valid = got_shape == shape and valid_values and dtype is not np.float32
    if valid:
        out = check_slates(action, batch, k, n)
        assert out.dtype == np.int64 and out.shape == (max(batch, 1), k)
        np.testing.assert_array_equal(out.ravel(), action.ravel())
    else:
        with pytest.raises(ValueError):
            check_slates(action, batch, k, n)


# ------------------------------------------------------------------ bad overrides
def _emb(n=50, d=20, seed=0):
    e = np.random.default_rng(seed).uniform(0.01, 1, size=(n, d)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_overrides_are_applied():
    env = gymnasium.make(FOCUSED, slate_size=4, boredom_threshold=3, item_embeddings=_emb(30, 8))
    sim = env.unwrapped.simulator
    assert sim.slate_size == 4 and sim.num_items == 30 and sim.num_topics == 4
    assert env.unwrapped.config.boredom_threshold == 3
    obs, _ = env.reset(seed=0)
    assert obs["slate"].shape == (4,)
    assert env.action_space == gymnasium.spaces.MultiDiscrete(np.full(4, 30))


def test_embeddings_from_npy_path(tmp_path):
    path = tmp_path / "emb.npy"
    np.save(path, _emb(60))
    env = gymnasium.make(FOCUSED, item_embeddings=str(path))
    assert env.unwrapped.simulator.num_items == 60
    env2 = gymnasium.make(FOCUSED, item_embeddings=path)
    np.testing.assert_array_equal(env2.unwrapped.simulator.items, env.unwrapped.simulator.items)


def _bad(kind):
    e = _emb()
    if kind == "nan":
        e[3, 2] = np.nan
    elif kind == "inf":
        e[3, 2] = np.inf
    elif kind == "negative":
        e[4, 1] = -0.1
    elif kind == "zero_row":
        e[5] = 0
    elif kind == "odd_dim":
        e = e[:, :19]
    elif kind == "1d":
        e = e[0]
    elif kind == "3d":
        e = e.reshape(50, 10, 2)
    elif kind == "strings":
        e = np.array([["a"] * 20] * 50)
    return e


@pytest.mark.parametrize(
    "overrides,error,message",
    [
        ({"slate_size": -1}, ValueError, "slate_size"),
        ({"slate_size": 0}, ValueError, "slate_size"),
        ({"slate_size": 1001}, ValueError, "slate_size"),
        ({"episode_length": -5}, ValueError, "episode_length"),
        ({"recent_items_maxlen": 0}, ValueError, "recent_items_maxlen"),
        ({"boredom_moving_window": -1}, ValueError, "boredom_moving_window"),
        ({"slate_size": 2.5}, ValueError, "slate_size"),
        ({"omega": 1.5}, ValueError, "omega"),
        ({"offset": float("nan")}, ValueError, "offset"),
        ({"diversity_penalty": 0.0}, ValueError, "diversity_penalty"),
        ({"click_model": "Cascade"}, ValueError, "click_model"),
        ({"no_such_parameter": 1}, ValueError, "no_such_parameter"),
        ({"item_embeddings": _bad("nan")}, ValueError, "NaN"),
        ({"item_embeddings": _bad("inf")}, ValueError, "infinite"),
        ({"item_embeddings": _bad("negative")}, ValueError, "non-negative"),
        ({"item_embeddings": _bad("zero_row")}, ValueError, "all zeros"),
        ({"item_embeddings": _bad("odd_dim")}, ValueError, "multiple of topic_size"),
        ({"item_embeddings": _bad("1d")}, ValueError, "2-D"),
        ({"item_embeddings": _bad("3d")}, ValueError, "2-D"),
        ({"item_embeddings": _bad("strings")}, ValueError, "real numbers"),
        ({"item_embeddings": _emb(5)}, ValueError, "slate_size"),
        ({"item_embeddings": "embeddings.txt"}, ValueError, ".npy"),
        ({"item_embeddings": "/nonexistent/emb.npy"}, FileNotFoundError, "not found"),
        ({"item_embeddings": "sparse"}, ValueError, "focused"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_overrides_raise_clear_errors(overrides, error, message):
    with pytest.raises(error, match=message):
        gymnasium.make(FOCUSED, **overrides)
    with pytest.raises(error, match=message):
        gymnasium.make_vec(FOCUSED, num_envs=2, vectorization_mode="vector_entry_point", **overrides)


def test_corrupt_npy_file(tmp_path):
    path = tmp_path / "bad.npy"
    path.write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match="cannot read"):
        gymnasium.make(FOCUSED, item_embeddings=path)


@pytest.mark.parametrize("num_envs", [0, -3])
def test_bad_vector_sizes(num_envs):
    with pytest.raises(ValueError, match="num_users"):
        gymnasium.make_vec(FOCUSED, num_envs=num_envs, vectorization_mode="vector_entry_point")


# ------------------------------------------------------------ vector autoreset
def test_vector_env_autoresets_on_the_next_step():
    venv = gymnasium.make_vec(FOCUSED, num_envs=3, vectorization_mode="vector_entry_point", episode_length=3)
    assert venv.metadata["autoreset_mode"] == "next_step"
    obs, _ = venv.reset(seed=10)
    sim = venv.unwrapped.simulator
    actions = np.tile(np.arange(10), (3, 1))
    for t in range(1, 4):
        obs, rewards, terminated, truncated, _ = venv.step(actions)
        assert terminated.all() == (t == 3) and not truncated.any()
        np.testing.assert_array_equal(obs["slate"], actions)
    # the step after termination ignores the actions and starts new episodes, reward 0
    obs, rewards, terminated, truncated, _ = venv.step(actions + 100)
    np.testing.assert_array_equal(obs["slate"], np.tile(sim.initial_slate, (3, 1)))
    np.testing.assert_array_equal(rewards, 0.0)
    assert not terminated.any() and (sim.t == 0).all()
    obs, rewards, terminated, _, _ = venv.step(actions + 100)
    np.testing.assert_array_equal(obs["slate"], actions + 100)
    assert (sim.t == 1).all()
    np.testing.assert_array_equal(rewards, obs["clicks"].sum(axis=1))


def test_vector_env_reset_with_seed_list_and_bad_seed():
    venv = gymnasium.make_vec(FOCUSED, num_envs=3, vectorization_mode="vector_entry_point")
    obs_a, _ = venv.reset(seed=[5, 6, 7])
    user_a = venv.unwrapped.simulator.user.copy()
    venv.reset(seed=5)
    np.testing.assert_array_equal(venv.unwrapped.simulator.user, user_a)
    with pytest.raises(ValueError, match="seed"):
        venv.reset(seed=[1, 2])
