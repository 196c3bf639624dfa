"""SlateQ in the paper's regime (sb3_slate.agents.episode_slateq): its loss under each switch is
the formula of docs/method.md section 7, its privileged user vectors are the simulator's, and
its runs train, reload and show their variant."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sb3_slate.agent_configs import SLATEQ_SWITCHES, EpisodeSlateQConfig
from sb3_slate.agents import EpisodeSlateQ, PrivilegedUserState
from sb3_slate.agents.episode_slateq import ClickModel, reference_bored_mask
from sb3_slate.methods import resolve_config

ENV = "SlateRec/FocusedTopDown-v0"
SMALL = {"episode_length": 8}
PAPER = {name: values[0] for name, values in SLATEQ_SWITCHES.items()}
REFERENCE = {name: values[1] for name, values in SLATEQ_SWITCHES.items()}


def _model(switches, N=30, k=3, T=4, d=4, penalty=1.0, gamma=0.5, seed=0):
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(N, d)).astype(np.float32)
    return EpisodeSlateQ(num_items=N, slate_size=k, episode_length=T, items=items, item_topics=np.arange(N) % 2,
                         examination=0.85 ** np.arange(k), offset=0.1, slope=2.0, max_score=3.0,
                         diversity_penalty=penalty, diversity_threshold=2, embedding_dim=5, belief_size=6,
                         net_arch=[8], gamma=gamma, batch_episodes=2, buffer_episodes=10, warmup_episodes=0,
                         seed=seed, **switches)


def _episodes(rng, B=2, T=4, k=3, N=30, d=4):
    return (torch.as_tensor(rng.integers(0, N, (B, T + 1, k))),
            torch.as_tensor(rng.integers(0, 2, (B, T + 1, k)), dtype=torch.float32),
            torch.as_tensor(rng.normal(size=(B, T, d)), dtype=torch.float32))


def _expected_loss(m, S, C, U):
    """The loss turn by turn: torch's own GRU, explicit loops over episodes, turns and ranks."""
    from sb3_slate.agents.gru_sequence import torch_gru_sequence

    g = m.belief.gru
    b = torch_gru_sequence(m.belief.inputs(S, C), g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)
    items, E = m.clicks_model.items_t.T, m.clicks_model.examination
    B, T1, k = S.shape
    targets = {}
    chosen_all = []
    for e in range(B):
        for t in range(T1 - 1):
            rel = torch.sigmoid((items @ U[e, t] / 3.0 - 0.1) * 2.0)
            ranker = m.q_target if m.next_slate_by == "target" else m.q_head
            chosen = (rel * ranker(b[e, t + 1])).topk(k).indices
            chosen_all.append(chosen)
            targets[e, t] = (rel[chosen], m.q_target(b[e, t + 1])[chosen])
    topics = m.clicks_model.item_topics
    batch_crowded = torch.bincount(topics[torch.stack(chosen_all)].flatten(), minlength=2).max() >= 2
    errs, n = 0.0, 0
    for e in range(B):
        for t in range(T1 - 1):
            a, q_next = targets[e, t]
            crowded = batch_crowded if m.penalty_check == "whole_batch" else (
                torch.bincount(topics[chosen_all[e * (T1 - 1) + t]], minlength=2).max() >= 2)
            p = a / m.clicks_model.penalty if crowded else a
            value = 0.0 if t == T1 - 2 else float((p * E * q_next).sum())
            y = 1.0 + m.gamma * value
            q = m.q_head(b[e, t])
            if m.learn_from == "shown_clicks":
                for r in range(k):
                    if C[e, t + 1, r] > 0:
                        errs += float(q[S[e, t + 1, r]] - y) ** 2
                        n += 1
            elif C[e, t].any():
                i = S[e, t, int(torch.argmax(C[e, t]))]
                errs += float(q[i] - y) ** 2
                n += 1
    return errs / max(n, 1)


@pytest.mark.parametrize("switches", [PAPER, REFERENCE, {**PAPER, "next_slate_by": "target"},
                                      {**REFERENCE, "learn_from": "shown_clicks"}])
@pytest.mark.parametrize("penalty", [1.0, 3.0])
def test_slateq_loss_is_the_stated_formula(switches, penalty):
    m = _model(switches, penalty=penalty)
    with torch.no_grad():  # the target network apart from the online one
        for p in m.q_target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    S, C, U = _episodes(np.random.default_rng(5))
    with torch.no_grad():
        expect = _expected_loss(m, S, C, U)
        got = float(m.loss(S, C, U))
    assert got == pytest.approx(expect, rel=1e-4, abs=1e-6)


def test_item_values_and_their_gradients_are_the_whole_heads_gathered():
    from sb3_slate.agents.episode_slateq import item_values

    torch.manual_seed(3)
    last = torch.nn.Linear(8, 30)
    hidden = torch.randn(2, 5, 8, requires_grad=True)
    items = torch.randint(0, 30, (2, 5, 4))
    items[0, 0] = 7  # one item four times in a turn: its gradients add up
    weights = torch.randn(2, 5, 4)
    got = item_values(last, hidden, items)
    grads = torch.autograd.grad((got * weights).sum(), [last.weight, last.bias, hidden])
    expect = last(hidden).gather(-1, items)
    expect_grads = torch.autograd.grad((expect * weights).sum(), [last.weight, last.bias, hidden])
    assert torch.allclose(got, expect, atol=1e-6)
    for g, e in zip(grads, expect_grads):
        assert torch.allclose(g, e, atol=1e-5)
    assert grads[0][7].abs().sum() > 0 and grads[0][items.unique()].ne(0).any(dim=1).all()


@pytest.mark.parametrize("learn_from", SLATEQ_SWITCHES["learn_from"])
def test_loss_over_regressed_pairs_has_the_gradients_of_the_masked_dense_loss(learn_from):
    """The loss computes only the regressed (turn, item) pairs; its value and gradients are those
    of the errors of every shown item (or every turn's first clicked item), masked by clicks."""
    from sb3_slate.agents.episode_slateq import head_hidden, item_values

    m = _model({**PAPER, "learn_from": learn_from})
    S, C, U = _episodes(np.random.default_rng(8), B=3)
    C[1, 2, :] = 0.0  # a turn without clicks
    C[2, 3, :] = 1.0  # one where all are clicked
    C[0, 1, :] = torch.tensor([0.0, 1.0, 1.0])  # a first click after the first rank
    params = [*m.belief.parameters(), *m.q_head.parameters()]
    got = m.loss(S, C, U)
    got_grads = torch.autograd.grad(got, params)

    b = m.belief.unroll(S, C)
    hidden = head_hidden(m.q_head, b)
    with torch.no_grad():  # the target as the loss computes it, through the online ranking
        rel = m.clicks_model.relevance(U)
        chosen = m.greedy(m.q_head[-1](hidden[:, 1:]), rel)
        q_next = item_values(m.q_target[-1], head_hidden(m.q_target, b[:, 1:]), chosen)
        value = (m.clicks_model.click_probs(rel.gather(2, chosen), chosen) * q_next).sum(dim=2)
        value[:, -1] = 0.0
        y = 1.0 + m.gamma * value
    if learn_from == "shown_clicks":
        err = (item_values(m.q_head[-1], hidden[:, :-1], S[:, 1:]) - y[..., None]) ** 2
        mask = C[:, 1:]
    else:
        first = C[:, :-1].argmax(dim=2, keepdim=True)
        err = (item_values(m.q_head[-1], hidden[:, :-1], S[:, :-1].gather(2, first)).squeeze(2) - y) ** 2
        mask = C[:, :-1].amax(dim=2)
    expect = (err * mask).sum() / mask.sum()
    expect_grads = torch.autograd.grad(expect, params)
    assert float(got.detach()) == pytest.approx(float(expect.detach()), rel=1e-6)
    for g, e in zip(got_grads, expect_grads):
        assert torch.allclose(g, e, rtol=1e-5, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in got_grads)


def test_whole_batch_check_divides_every_slate_once_one_topic_crowds_the_batch():
    cm = ClickModel(np.eye(4, dtype=np.float32), np.array([0, 0, 1, 1]), np.ones(2), 0.0, 1.0, 1.0, 2.0, 2)
    slates = torch.tensor([[0, 2], [1, 3]])  # no slate crowded; topic 0 twice over the batch
    rel = torch.ones(2, 2)
    assert torch.equal(cm.click_probs(rel, slates), rel)
    assert torch.equal(cm.click_probs(rel, slates, whole_batch=True), rel / 2)
    assert torch.equal(cm.click_probs(rel, torch.tensor([[0, 1], [2, 3]])), rel / 2)  # each slate crowded


def test_privileged_user_vectors_are_the_simulators():
    from gym_slaterec.rollouts import make_vector_env
    from sb3_slate.agents.slateq import true_relevance

    env = PrivilegedUserState(make_vector_env(ENV, 6))
    obs, _ = env.reset(seed=3)
    for _ in range(7):
        obs, *_ = env.step(np.random.default_rng(0).integers(0, 1000, (6, 10)))
    sim = env.sim
    rel = ClickModel(sim.items, sim.item_topics, sim.examination, sim.config.offset, sim.config.slope,
                     sim.max_score, 1.0, 4).relevance(torch.as_tensor(obs["act_user"]))
    assert np.allclose(rel.numpy(), true_relevance(sim), atol=2e-4)
    assert np.array_equal(obs["act_user"], obs["target_user"])

    ref = PrivilegedUserState(make_vector_env(ENV, 2), "reference")
    ref.reset(seed=1)
    ref.sim.bored[:] = False
    ref.sim.bored[0, [1, 3]] = True  # the reference's slices [2, 3) and [6, 9)
    obs = ref._add({})
    zeroed = np.flatnonzero(obs["act_user"][0] != ref.sim.user[0].astype(np.float32))
    assert set(zeroed) <= {2, 6, 7, 8}
    assert np.all(obs["act_user"][0, [2, 6, 7, 8]] == 0)
    assert np.array_equal(obs["act_user"][1], ref.sim.user[1].astype(np.float32))
    assert np.array_equal(obs["target_user"], ref.sim.user.astype(np.float32))  # no boredom at all
    mask = reference_bored_mask(10, 2)
    assert mask[0].sum() == 0 and list(np.flatnonzero(mask[4])) == [8, 9, 10, 11]
    with pytest.raises(ValueError, match="relevance must be one of next_turn, reference"):
        PrivilegedUserState(make_vector_env(ENV, 1), "oracle")


def test_epsilon_decays_exponentially_and_deterministic_acting_does_not_explore():
    m = _model(PAPER)
    assert m.epsilon == pytest.approx(1.0)
    m.episodes_done = 1000
    assert m.epsilon == pytest.approx(0.01 + 0.99 * np.exp(-1))
    m.eps = (1.0, 1.0, 1000.0)  # always explore when sampling
    obs = {"slate": np.zeros((50, 3), np.int64), "clicks": np.zeros((50, 3), np.uint8),
           "act_user": np.ones((50, 4), np.float32)}
    greedy, _ = m.predict(obs, deterministic=True)
    assert (greedy == greedy[0]).all()  # same belief and relevance: same slate
    sampled, _ = m.predict(obs, deterministic=False)
    assert len({tuple(s) for s in sampled}) > 40


def test_slateq_variants_resolve_and_every_switch_names_both_readings():
    ref = resolve_config("slateq", ENV, {"variant": "reference"}, preset="paper")
    assert ref.replay == "episode" and ref.agent.switches() == REFERENCE
    assert ref.belief.item_init == "scratch" and ref.belief.scratch_std == 1.0
    assert ref.agent.tau == 0.002 and ref.agent.batch_episodes == 20 and ref.agent.buffer_episodes == 10_000
    one = resolve_config("slateq", ENV, {"variant": "reference", "agent": {"relevance": "next_turn"}}, preset="paper")
    assert one.agent.switches() == {**REFERENCE, "relevance": "next_turn"}
    assert resolve_config("slateq", ENV, {}, preset="paper").agent.switches() == PAPER
    for f in EpisodeSlateQConfig.settings():
        if f.name in SLATEQ_SWITCHES:
            assert all(value in f.metadata["doc"] for value in SLATEQ_SWITCHES[f.name])
    with pytest.raises(ValueError, match="agent.learn_from must be one of shown_clicks, observed_first_click"):
        resolve_config("slateq", ENV, {"agent": {"learn_from": "all"}}, preset="paper")


def test_slateq_paper_regime_runs_reload_and_show_their_variant(tmp_path):
    from sb3_slate import runs
    from sb3_slate.protocol import VALIDATION_SEED, evaluate_agent
    from sb3_slate.runs import load_agent, train_run
    from slaterec_lab.results import comparable_records

    torch.set_num_threads(1)
    base = {"replay": "episode", "episodes": 30, "n_envs": 10, "val_every": 10, "checkpoint_every": 10,
            "val_users": 8, "test_users": 8, "env_kwargs": dict(SMALL),
            "agent": {"warmup_episodes": 10, "net_arch": [16], "batch_episodes": 4, "buffer_episodes": 40,
                      "epsilon_decay_episodes": 10}}
    res = train_run(resolve_config("slateq", ENV, {**base, "variant": "reference"}), tmp_path / "ref", progress=False)
    train_run(resolve_config("slateq", ENV, base), tmp_path / "cor", progress=False)
    assert [v["episodes"] for v in res["validation"]] == [0, 10, 20, 30]
    config = json.loads((tmp_path / "ref" / "config.json").read_text())
    assert config["variant"] == "reference" and config["agent"]["learn_from"] == "observed_first_click"
    agent = load_agent(tmp_path / "ref", "best")
    assert isinstance(agent.model, EpisodeSlateQ) and agent.model.learn_from == "observed_first_click"
    assert agent.model.n_updates > 0
    replay = evaluate_agent(agent, lambda n: runs.base_env(agent.config, n), 8, VALIDATION_SEED)
    assert replay.summary()["mean"] == res["best"]["validation_return"]
    records, _ = comparable_records([tmp_path], need_test=True)
    assert sorted(r.base_method for r in records) == ["slateq (episode replay)", "slateq (episode replay, reference)"]
    # both rows name the test's own small settings (not the methods' defaults), the same in both variants
    assert len({r.method.split(") ", 1)[1] for r in records}) == 1
    assert all("warmup_episodes=10" in r.method and "learn_from" not in r.method for r in records)
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable EpisodeSlateQ checkpoint"):
        EpisodeSlateQ.load(tmp_path / "bad.zip")


def test_window_slateq_targets_divide_crowded_slates_by_the_diversity_penalty():
    from gym_slaterec.policies import simulator_of
    from sb3_slate import runs
    from sb3_slate.envs import SB3VecEnv
    from sb3_slate.methods import Artifacts, build_model, wrap_env

    cfg = resolve_config("slateq", "SlateRec/FocusedDivPen-v0", {"n_envs": 1, "agent": {"buffer_transitions": 10}},
                         preset="window")
    wrapped = wrap_env(cfg, Artifacts(), runs.base_env(cfg, 1))
    policy = build_model(cfg, Artifacts(), SB3VecEnv(wrapped, seed=0), wrapped).policy
    sim = simulator_of(wrapped)
    topics = sim.item_topics
    crowded = torch.as_tensor(np.flatnonzero(topics == 0)[:10])[None]  # ten items of one topic
    spread = torch.as_tensor([np.flatnonzero(topics == c)[0] for c in range(10)])[None]
    rel = torch.ones(1, 10)
    exam = torch.as_tensor(sim.examination, dtype=torch.float32)
    assert sim.config.diversity_penalty == 3.0
    assert torch.allclose(policy.click_probs(rel, crowded), exam / 3.0)
    assert torch.allclose(policy.click_probs(rel, spread), exam)
