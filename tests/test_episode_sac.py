"""The episode-replay recurrent SAC (the paper's regime): buffer, beliefs, fused unroll,
save/load, and a run directory that trains, resumes and reproduces its validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sb3_slate.agents.episode_sac import EpisodeReplayBuffer, EpisodeSAC, SlateBelief, unroll_pair
from sb3_slate.agents.gru_sequence import gru_sequence, torch_gru_sequence
from sb3_slate.methods import resolve_config
from sb3_slate.runs import load_agent, train_run

ENV = "SlateRec/FocusedTopDown-v0"


def random_episodes(rng, n, T=6, k=3, A=2, N=50):
    return (rng.integers(0, N, (n, T + 1, k)), rng.integers(0, 2, (n, T + 1, k)).astype(np.uint8),
            rng.uniform(-1, 1, (n, T, A)).astype(np.float32), rng.integers(0, k + 1, (n, T)).astype(np.float32))


def test_replay_buffer_keeps_the_newest_whole_episodes_as_ids():
    rng = np.random.default_rng(0)
    buf = EpisodeReplayBuffer(capacity=5, episode_length=6, slate_size=3, action_dim=2, num_items=50)
    assert buf.slates.dtype == np.int16 and buf.clicks.dtype == np.uint8  # ids, not float vectors
    first = random_episodes(rng, 4)
    buf.add(*first)
    second = random_episodes(rng, 3)
    buf.add(*second)
    assert len(buf) == 5 and buf.pos == 2
    # the two oldest episodes were overwritten by the last two of the second batch
    np.testing.assert_array_equal(buf.slates[[0, 1]], second[0][[1, 2]])
    np.testing.assert_array_equal(buf.slates[[2, 3, 4]], np.concatenate([first[0][2:], second[0][:1]]))
    batch = buf.sample(64, np.random.default_rng(1))
    assert batch.slates.shape == (64, 7, 3) and batch.actions.shape == (64, 6, 2)
    stored = {buf.slates[i].tobytes(): i for i in range(5)}
    for s, a, r in zip(batch.slates.numpy(), batch.actions.numpy(), batch.rewards.numpy()):
        i = stored[s.astype(np.int16).tobytes()]  # every sample is one stored episode, whole
        np.testing.assert_array_equal(a, buf.actions[i])
        np.testing.assert_array_equal(r, buf.rewards[i])
    with pytest.raises(ValueError, match="non-finite"):
        bad = random_episodes(rng, 1)
        bad[2][0, 0, 0] = np.nan
        buf.add(*bad)
    with pytest.raises(ValueError, match="episodes must be"):
        buf.add(rng.integers(0, 50, (1, 5, 3)), np.zeros((1, 5, 3), np.uint8), np.zeros((1, 6, 2), np.float32),
                np.zeros((1, 6), np.float32))


def test_buffer_save_load_and_damage(tmp_path):
    rng = np.random.default_rng(0)
    buf = EpisodeReplayBuffer(8, 6, 3, 2, 50)
    buf.add(*random_episodes(rng, 5))
    buf.save(tmp_path / "rb.npz")
    other = EpisodeReplayBuffer(8, 6, 3, 2, 50)
    other.load(tmp_path / "rb.npz")
    assert (other.pos, other.size) == (5, 5)
    np.testing.assert_array_equal(other.actions[:5], buf.actions[:5])
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="damaged"):
        other.load(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="another shape"):
        EpisodeReplayBuffer(8, 6, 3, 4, 50).load(tmp_path / "rb.npz")


def test_unrolled_belief_at_turn_t_equals_the_belief_of_the_first_t_turns():
    torch.manual_seed(0)
    belief = SlateBelief(50, 3, hidden_size=5)
    rng = np.random.default_rng(2)
    S = torch.from_numpy(rng.integers(0, 50, (4, 9, 3)))
    C = torch.from_numpy(rng.integers(0, 2, (4, 9, 3)).astype(np.float32))
    with torch.no_grad():
        whole = belief(S, C)
        for t in range(9):
            alone = belief(S[:, : t + 1], C[:, : t + 1])[:, -1]  # that episode's first t+1 turns only
            torch.testing.assert_close(whole[:, t], alone, rtol=1e-5, atol=1e-6)
        h = None
        for t in range(9):  # the acting path: one step at a time from a carried state
            h = belief.step(S[:, t], C[:, t], h)
            torch.testing.assert_close(whole[:, t], h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("unroll", [None, gru_sequence], ids=["slot projections", "concatenated inputs"])
def test_fused_unroll_equals_two_separate_unrolls_in_values_and_gradients(unroll):
    """The pair's one unroll (on a CPU by default from each belief's per-slot projection table;
    or a GRU over both beliefs' concatenated inputs) is the two beliefs' own ``nn.GRU``s."""
    torch.manual_seed(0)
    a, c = SlateBelief(50, 3, hidden_size=4), SlateBelief(50, 3, hidden_size=6, embedding_dim=7)
    rng = np.random.default_rng(3)
    S = torch.from_numpy(rng.integers(0, 50, (5, 8, 3)))
    C = torch.from_numpy(rng.integers(0, 2, (5, 8, 3)).astype(np.float32))
    wa, wc = torch.randn(5, 8, 4), torch.randn(5, 8, 6)
    fa, fc = unroll_pair(a, c, S, C, unroll)
    ((fa * wa).sum() + (fc * wc).sum()).backward()
    fused_grads = {name: p.grad.clone() for m in (a, c) for name, p in m.named_parameters(prefix=str(id(m)))}
    for m in (a, c):
        m.zero_grad()
    sa, sc = a(S, C), c(S, C)
    torch.testing.assert_close(fa, sa, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fc, sc, rtol=1e-5, atol=1e-6)
    ((sa * wa).sum() + (sc * wc).sum()).backward()
    for m in (a, c):
        for name, p in m.named_parameters(prefix=str(id(m))):
            torch.testing.assert_close(fused_grads[name], p.grad, rtol=1e-4, atol=1e-6)


def test_an_earlier_runs_arithmetic_is_repeated_exactly_inside_arithmetic_of():
    """A run written before the arithmetic record (medium-replay retrains the shipped policies)
    unrolls from the concatenated inputs, bit for bit; runs record how they rounded."""
    from gym_slaterec.provenance import arithmetic, arithmetic_of, runtime_record

    torch.manual_seed(0)
    a, c = SlateBelief(50, 3, hidden_size=4), SlateBelief(50, 3, hidden_size=6)
    S, C = torch.randint(0, 50, (4, 7, 3)), torch.randint(0, 2, (4, 7, 3)).float()
    inputs_path = unroll_pair(a, c, S, C, gru_sequence)
    assert runtime_record()["arithmetic"] == arithmetic() == {"belief_unroll": "slot_projections"}
    with arithmetic_of(None):
        assert runtime_record()["arithmetic"] == {"belief_unroll": "inputs"}
        before = unroll_pair(a, c, S, C)
        alone = a.unroll(S, C)
    for x, y in zip(before, inputs_path):
        assert torch.equal(x, y)
    g = a.gru
    assert torch.equal(alone, gru_sequence(a.inputs(S, C), g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0))
    assert arithmetic() == {"belief_unroll": "slot_projections"}  # restored after the block
    with pytest.raises(ValueError, match="not one this version computes"):
        with arithmetic_of({"belief_unroll": "fused"}):
            pass


def test_belief_unroll_from_slot_projections_equals_its_gru():
    """REINFORCE's and SlateQ's unroll: the belief's ``nn.GRU`` in values and gradients."""
    torch.manual_seed(1)
    belief = SlateBelief(40, 4, hidden_size=5, embedding_dim=6)
    S, C = torch.randint(0, 40, (3, 9, 4)), torch.randint(0, 2, (3, 9, 4)).float()
    w = torch.randn(3, 9, 5)
    grads = []
    for compute in (belief.unroll, belief.forward):
        belief.zero_grad()
        out = compute(S, C)
        (out * w).sum().backward()
        grads.append([out.detach()] + [p.grad.clone() for p in belief.parameters()])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("with_h0", [False, True])
def test_hand_written_gru_unroll_equals_torch_gru_in_values_and_gradients(with_h0):
    torch.manual_seed(4)
    gru = torch.nn.GRU(7, 5, batch_first=True).double()
    x = torch.randn(3, 11, 7, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 5, dtype=torch.float64, requires_grad=True) if with_h0 else None
    weights = [gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0]
    out = gru_sequence(x, *weights, h0=h0)
    ref, _ = gru(x, None if h0 is None else h0[None])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(ref)
    inputs = [x, *weights] + ([h0] if with_h0 else [])
    for mine, theirs in zip(torch.autograd.grad(out, inputs, upstream), torch.autograd.grad(ref, inputs, upstream)):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)
    # the same weights through torch's own kernel (what CUDA runs) give the same unroll
    torch.testing.assert_close(torch_gru_sequence(x, *weights, h0=h0), ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *a: gru_sequence(a[0], *a[1:5], h0=a[5] if with_h0 else None),
                                    tuple(inputs))


def test_hand_written_gru_unroll_refuses_weights_that_do_not_fit():
    gru = torch.nn.GRU(7, 5, batch_first=True)
    with pytest.raises(ValueError, match="do not fit"):
        gru_sequence(torch.randn(2, 3, 6), gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
    with pytest.raises(ValueError, match="batch, length, features"):
        gru_sequence(torch.randn(3, 7), gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)


def test_train_step_updates_actor_and_critic_but_not_the_critic_from_the_actor_loss():
    rng = np.random.default_rng(0)
    m = EpisodeSAC(50, 3, 6, 2, batch_size=4, buffer_size=16, warmup_episodes=0, net_arch=[16], seed=1)
    m.replay_buffer.add(*random_episodes(rng, 8))
    before = {k: v.clone() for k, v in m.critic.state_dict().items()}
    target_before = {k: v.clone() for k, v in m.critic_target.state_dict().items()}
    actor_before = {k: v.clone() for k, v in m.actor.state_dict().items()}
    metrics = m.train_step()
    assert set(metrics) == {"critic_loss", "actor_loss", "ent_coef", "entropy"}
    assert all(np.isfinite(v) for v in metrics.values())
    assert any(not torch.equal(before[k], v) for k, v in m.critic.state_dict().items())
    assert any(not torch.equal(actor_before[k], v) for k, v in m.actor.state_dict().items())
    # Polyak: the target moved by tau towards the new critic, no more
    for k, v in m.critic_target.state_dict().items():
        torch.testing.assert_close(v, (1 - m.tau) * target_before[k] + m.tau * m.critic.state_dict()[k])


def test_save_load_reproduces_predictions(tmp_path):
    rng = np.random.default_rng(0)
    m = EpisodeSAC(50, 3, 6, 2, batch_size=4, buffer_size=16, warmup_episodes=0, net_arch=[16], seed=1)
    m.replay_buffer.add(*random_episodes(rng, 8))
    m.train_step()
    m.save(tmp_path / "m.zip")
    m2 = EpisodeSAC.load(tmp_path / "m.zip")
    obs = {"slate": rng.integers(0, 50, (3, 3)), "clicks": rng.integers(0, 2, (3, 3))}
    a1, h1 = m.predict(obs, deterministic=True)
    a2, h2 = m2.predict(obs, deterministic=True)
    np.testing.assert_array_equal(a1, a2)
    b1, _ = m.predict(obs, h1, np.array([False, True, False]), deterministic=True)
    b2, _ = m2.predict(obs, h2, np.array([False, True, False]), deterministic=True)
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(b1[1], a1[1])  # episode_start: the belief restarts from zero
    (tmp_path / "bad.zip").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable EpisodeSAC checkpoint"):
        EpisodeSAC.load(tmp_path / "bad.zip")


SMALL = {"episode_length": 10}


def paper_config(method="sac-topk-ideal", agent=None, **extra):
    over = {"replay": "episode", "episodes": 40, "n_envs": 10, "val_every": 20, "checkpoint_every": 20,
            "val_users": 12, "test_users": 12, "env_kwargs": dict(SMALL),
            "agent": {"batch_episodes": 4, "buffer_episodes": 100, "warmup_episodes": 10, "net_arch": [32], **(agent or {})}}
    over.update(extra)
    return resolve_config(method, ENV, over)


def test_paper_regime_run_trains_resumes_and_reproduces_its_validation(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    cfg = paper_config()
    import sb3_slate.runs as runs

    calls = {"n": 0}
    original = runs.Run.save_checkpoint

    def crash_after_first_periodic(self, name):
        original(self, name)
        if name == "last":
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt  # as if Ctrl-C hit right after the episode-20 checkpoint

    monkeypatch.setattr(runs.Run, "save_checkpoint", crash_after_first_periodic)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, out, progress=False, device="cpu")  # where the replay below runs: bit-equal returns
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "interrupted" and state["episodes"] == 20
    monkeypatch.setattr(runs.Run, "save_checkpoint", original)
    res = train_run(cfg, out, progress=False, device="cpu")  # resumes from last.zip and its replay buffer
    assert res["budget"]["episodes"] == 40 and res["budget"]["turns"] == 400
    assert [v["episodes"] for v in res["validation"]] == [0, 20, 40]
    assert json.loads((out / "state.json").read_text())["resumed"] == 1
    log = (out / "train.log").read_text().splitlines()  # one line per validation, across the resume
    assert [line.split()[1] for line in log] == ["0", "20", "40"]
    # collection and update seconds are counted across the resume (checkpointed with the model)
    timed = [(v["collect_s"], v["train_s"]) for v in res["validation"]]
    assert all(c > 0 and u > 0 for c, u in timed[1:]) and timed[2][1] > timed[1][1]
    assert timed[2][0] + timed[2][1] <= res["validation"][2]["wall_s"]
    assert all("validation" in line and "best" in line and "wall" in line for line in log)
    runtime = json.loads((out / "provenance.json").read_text())["runtime"]
    assert runtime["libraries"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert isinstance(runtime["command"], list) and "python" in runtime
    # the deterministic policy of the best checkpoint replays its validation return exactly
    from sb3_slate.protocol import VALIDATION_SEED, evaluate_agent

    agent = load_agent(out, "best")
    assert agent.model.recurrent
    replay = evaluate_agent(agent, lambda n: runs.base_env(agent.config, n), cfg.val_users, VALIDATION_SEED)
    assert replay.summary()["mean"] == res["best"]["validation_return"]
    assert np.isfinite(res["test"]["mean"]) and res["test"]["episodes"] == 12


def test_paper_preset_and_regime_settings_are_checked():
    cfg = resolve_config("sac-gems", ENV, {"gems": "/nonexistent.pt"}, preset="paper")
    assert cfg.replay == "episode" and cfg.episodes == 100_000 and cfg.val_every == 1000
    assert cfg.agent.batch_episodes == 20 and cfg.agent.buffer_episodes == 10_000 and cfg.agent.warmup_episodes == 2000
    assert resolve_config("sac-topk-ideal", ENV, {}, preset="window").replay == "window"
    with pytest.raises(ValueError, match="oracle trains in regime 'window', not replay='episode'"):
        resolve_config("oracle", ENV, {"replay": "episode", "agent": {}})
    # keys say what they count: the regime's name for a batch is given in the refusal
    with pytest.raises(ValueError, match=r"agent.batch_size is now agent.batch_episodes .*whole episodes"):
        resolve_config("sac-gems", ENV, {"gems": "g.pt", "agent": {"batch_size": 4}})
    with pytest.raises(ValueError, match=r"agent.batch_size is now agent.batch_transitions .*transitions"):
        resolve_config("sac-gems", ENV, {"gems": "g.pt", "agent": {"batch_size": 4}}, preset="window")
    assert paper_config("sac-wknn", {"embeddings": "ideal", "k_neighbours": 3}).agent.k_neighbours == 3
    with pytest.raises(ValueError, match="k_neighbours"):
        paper_config("sac-wknn", {"embeddings": "ideal", "k_neighbours": 0})
    with pytest.raises(ValueError, match="unknown setting agent.train_freq"):
        paper_config(agent={"train_freq": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_config("sac-topk-ideal", ENV, {}, preset="fast")


def test_wolpertinger_refinement_takes_the_best_of_each_ranks_nearest_items():
    """With a Q value that adds up over ranks, the greedy choice of each rank is the best
    of its k' nearest items (found here by brute force in numpy); the env maps the
    refined unit action back to exactly those items."""
    from gymnasium.vector import SyncVectorEnv

    from sb3_slate.agents import NearestItemPerRank
    from sb3_slate.agents.episode_sac import WolpertingerRefiner

    rng = np.random.default_rng(3)
    N, k, d, kp, B = 1000, 10, 3, 5, 4
    table = rng.uniform(0.0, 2.0, (N, d)).astype(np.float32) * np.array([1.0, 0.5, 3.0], dtype=np.float32)
    ref = WolpertingerRefiner(table, k, kp)
    w = rng.normal(size=k * d).astype(np.float32)
    q = torch.nn.Linear(2 + k * d, 1)
    with torch.no_grad():
        q.weight.zero_()
        q.weight[0, 2:] = torch.from_numpy(w)
    proto = rng.uniform(-1, 1, (B, k * d)).astype(np.float32)
    action = ref.refine(torch.from_numpy(proto), torch.zeros(B, 2), q).numpy().reshape(B, k, d)
    low, high = table.min(0), table.max(0)
    unit = 2 * (table - low) / (high - low) - 1
    target = low + (proto.reshape(B, k, d) + 1) / 2 * (high - low)
    expect = np.empty((B, k), dtype=np.int64)
    for i in range(B):
        for r in range(k):
            near = np.argsort(((table - target[i, r]) ** 2).sum(1), kind="stable")[:kp]
            expect[i, r] = near[np.argmax(unit[near] @ w[r * d:(r + 1) * d])]
    np.testing.assert_allclose(action, unit[expect], atol=1e-6)

    import gymnasium as gym

    venv = SyncVectorEnv([lambda: gym.make(ENV) for _ in range(B)])  # 1,000 items, slates of 10
    wrapper = NearestItemPerRank(venv, table, unit=True)
    assert wrapper.single_action_space.low.min() == -1.0 and wrapper.single_action_space.high.max() == 1.0
    np.testing.assert_array_equal(wrapper.actions(action.reshape(B, k * d)), expect)


@pytest.mark.parametrize("net_arch", [[256], [32, 16]])
def test_wolpertinger_search_by_parts_chooses_what_the_whole_q_chooses(net_arch):
    """The split first layer (candidates projected once per rank) makes the same greedy
    choices as evaluating the Q head on every trial slate."""
    from sb3_slate.agents.episode_sac.policies import MLP
    from sb3_slate.agents.wolpertinger import greedy_item_choice

    class Whole(torch.nn.Module):  # not a Sequential: greedy_item_choice evaluates it whole
        def __init__(self, q):
            super().__init__()
            self.q = q

        def forward(self, x):
            return self.q(x)

    torch.manual_seed(0)
    N, k, d, kp, B, H = 1000, 10, 20, 10, 64, 20
    items = torch.randn(N, d)
    unit = torch.tanh(items)
    q = MLP(H + k * d, net_arch, 1)
    target, belief = torch.randn(B, k, d), torch.randn(B, H)
    with torch.no_grad():
        split = greedy_item_choice(target, items, unit, kp, belief, q)
        whole = greedy_item_choice(target, items, unit, kp, belief, Whole(q))
    chosen = lambda a: torch.cdist(a.reshape(-1, d), unit).argmin(dim=1)  # noqa: E731
    assert torch.equal(chosen(split), chosen(whole))
    assert not torch.equal(chosen(split), chosen(unit[torch.cdist(target.reshape(-1, d), items).argmin(1)]))


def test_wknn_paper_regime_run_reproduces_its_validation(tmp_path):
    torch.set_num_threads(1)
    cfg = paper_config("sac-wknn", {"embeddings": "ideal", "k_neighbours": 4})
    res = train_run(cfg, tmp_path / "run", progress=False)
    assert res["budget"]["episodes"] == 40 and [v["episodes"] for v in res["validation"]] == [0, 20, 40]
    from sb3_slate import runs
    from sb3_slate.protocol import VALIDATION_SEED, evaluate_agent

    agent = load_agent(tmp_path / "run", "best")
    assert agent.model.refiner is not None and agent.model.refiner.k_neighbours == 4
    replay = evaluate_agent(agent, lambda n: runs.base_env(agent.config, n), cfg.val_users, VALIDATION_SEED)
    assert replay.summary()["mean"] == res["best"]["validation_return"]
    # its actions are rows of the item table (in the unit scale) exactly
    obs = {"slate": np.zeros((2, 10), dtype=np.int64), "clicks": np.zeros((2, 10), dtype=np.uint8)}
    action, state = agent.model.predict(obs, deterministic=True)
    assert state.shape == (2, 40)  # actor and critic beliefs
    units = agent.model.refiner.unit_items.numpy()
    rows = action.reshape(2 * 10, -1)
    assert all(np.isclose(units, r, atol=1e-6).all(axis=1).any() for r in rows)
