"""Seeding: same seed same trajectories, single env seeded s+i == user i of a vector env seeded s."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from conftest import ENV_IDS

from gym_slaterec.policies import make_policy

FOCUSED = "SlateRec/FocusedTopDown-v0"


def _actions(turns: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, size=(turns, n, 10))


def _single_run(env_id, seed, actions, **kwargs):
    env = gymnasium.make(env_id, **kwargs)
    obs, _ = env.reset(seed=seed)
    out = [(obs["slate"], obs["clicks"], 0.0)]
    for a in actions:
        obs, r, *_ = env.step(a)
        out.append((obs["slate"], obs["clicks"], r))
    return out, env


def test_same_seed_same_trajectory_different_seed_differs():
    acts = _actions(100, 1)[:, 0]
    a, env_a = _single_run(FOCUSED, 7, acts)
    b, env_b = _single_run(FOCUSED, 7, acts)
    c, _ = _single_run(FOCUSED, 8, acts)
    for (sa, ca, ra), (sb, cb, rb) in zip(a, b):
        np.testing.assert_array_equal(sa, sb)
        np.testing.assert_array_equal(ca, cb)
        assert ra == rb
    np.testing.assert_array_equal(env_a.unwrapped.user_embedding, env_b.unwrapped.user_embedding)
    assert any(not np.array_equal(x[1], y[1]) for x, y in zip(a, c))


def test_reset_with_same_seed_replays_the_episode_in_the_same_env():
    env = gymnasium.make(FOCUSED)
    acts = _actions(30, 1, seed=3)[:, 0]
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=11)
        clicks = [obs["clicks"]] + [env.step(a)[0]["clicks"] for a in acts]
        runs.append(np.array(clicks))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_unseeded_envs_differ():
    users = [gymnasium.make(FOCUSED) for _ in range(2)]
    for env in users:
        env.reset()
    assert not np.array_equal(users[0].unwrapped.user_embedding, users[1].unwrapped.user_embedding)


@pytest.mark.parametrize("env_id", [FOCUSED, "SlateRec/DiffuseDivPen-v0"])
def test_single_env_seeded_s_plus_i_is_user_i_of_vector_env(env_id):
    n, s, length = 4, 100, 20
    # short episodes so that two autoreset boundaries are crossed
    venv = gymnasium.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", episode_length=length)
    turns = 2 * (length + 1) + 5
    acts = _actions(turns, n, seed=9)
    obs, _ = venv.reset(seed=s)
    vec = [(obs["slate"].copy(), obs["clicks"].copy(), np.zeros(n), np.zeros(n, bool))]
    for a in acts:
        obs, r, term, _, _ = venv.step(a)
        vec.append((obs["slate"].copy(), obs["clicks"].copy(), r.copy(), term.copy()))
    for i in range(n):
        env = gymnasium.make(env_id, episode_length=length)
        obs, _ = env.reset(seed=s + i)
        np.testing.assert_array_equal(obs["slate"], vec[0][0][i])
        np.testing.assert_array_equal(obs["clicks"], vec[0][1][i])
        done = False
        for t, a in enumerate(acts, start=1):
            if done:  # the vector env autoresets on this step, ignoring the action
                obs, _ = env.reset()
                r, term = 0.0, False
            else:
                obs, r, term, _, _ = env.step(a[i])
            done = term
            slate, clicks, vr, vterm = (x[i] for x in vec[t])
            where = f"user {i}, vector step {t}"
            np.testing.assert_array_equal(obs["slate"], slate, err_msg=where)
            np.testing.assert_array_equal(obs["clicks"], clicks, err_msg=where)
            assert r == vr and term == vterm, where


@pytest.mark.parametrize("policy", ["random", "oracle", "epsilon-greedy"])
def test_reference_policies_agree_on_single_and_vector_env(policy):
    n, s, ps = 3, 40, 900
    venv = gymnasium.make_vec(FOCUSED, num_envs=n, vectorization_mode="vector_entry_point")
    vpol = make_policy(policy, venv, seed=ps, epsilon=0.5)
    obs, _ = venv.reset(seed=s)
    vec_actions, vec_clicks = [], []
    for _ in range(100):
        a = vpol(obs)
        assert a.shape == (n, 10)
        obs, *_ = venv.step(a)
        vec_actions.append(a.copy())
        vec_clicks.append(obs["clicks"].copy())
    for i in range(n):
        env = gymnasium.make(FOCUSED)
        pol = make_policy(policy, env, seed=ps + i, epsilon=0.5)
        obs, _ = env.reset(seed=s + i)
        for t in range(100):
            a = pol(obs)
            assert a.shape == (10,)
            np.testing.assert_array_equal(a, vec_actions[t][i], err_msg=f"user {i} turn {t + 1}")
            obs, *_ = env.step(a)
            np.testing.assert_array_equal(obs["clicks"], vec_clicks[t][i])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_every_env_is_reproducible_from_its_seed(env_id):
    acts = _actions(10, 1, seed=1)[:, 0]
    a, _ = _single_run(env_id, 3, acts)
    b, _ = _single_run(env_id, 3, acts)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))


def test_portability_check_names_the_kernel_that_rounds_otherwise(tmp_path, capsys):
    """scripts/check_training_portability.py --compare: of two machines' records, the operations whose
    inputs agree and whose output does not, not those downstream of them."""
    import gzip
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "check_training_portability.py"
    spec = importlib.util.spec_from_file_location("check_training_portability", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    def record(mm_out: str, add_out: str, weight: str) -> dict:
        ops = [["aten.mm.default", [[2, 3], [3, 4]], ["a", "b"], [mm_out]],
               ["aten.add.Tensor", [[2, 4], [2, 4]], [mm_out, "d"], [add_out]],
               ["aten.tanh.default", [[2, 4]], ["d"], ["t"]]]
        return {"info": {"processor": "cpu", "torch": "2"}, "inference": ops,
                "steps": [{"update": 0, "params": {"w": "w0"}, "metrics": {"critic_loss": 0.0}},
                          {"update": 1, "params": {"w": weight}, "metrics": {"critic_loss": 1.0}, "ops": ops}]}

    a, b, c = tmp_path / "a.json.gz", tmp_path / "b.json", tmp_path / "c.json"
    with gzip.open(a, "wt") as f:
        json.dump(record("c", "e", "w1"), f)
    b.write_text(json.dumps(record("c2", "e2", "w2")))
    c.write_text(json.dumps(record("c", "e", "w1")))
    assert tool.compare(a, b) == 1
    out = capsys.readouterr().out
    assert "update 1: 1 of 1 parameters differ (w)" in out
    assert "kernels that round otherwise): operation 0 aten.mm.default [[2, 3], [3, 4]]" in out
    assert "aten.add" not in out and "aten.tanh" not in out
    assert tool.compare(a, c) == 0
    out = capsys.readouterr().out
    assert "agree bit for bit" in out and "update 1: all 3 operations agree" in out
