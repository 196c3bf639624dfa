"""The reference and corrected variants of the methods: configuration, SAC+WkNN's switches
(each computes what docs/method.md section 7 says), save/load, and tables that keep them apart."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sb3_slate.agent_configs import WKNN_SWITCHES, EpisodeWkNNConfig
from sb3_slate.agents.episode_sac import EpisodeSAC
from sb3_slate.agents.episode_sac.policies import MLP
from sb3_slate.agents.episode_sac.wknn import PAPER_SWITCHES, REFERENCE_SWITCHES, EpisodeWkNN
from sb3_slate.agents.wolpertinger import greedy_slates, nearest_items
from sb3_slate.methods import METHOD_TABLE, resolve_config

ENV = "SlateRec/FocusedTopDown-v0"
SMALL = {"episode_length": 8}


def test_reference_variant_settings_come_under_the_users_settings():
    cfg = resolve_config("sac-wknn", ENV, {"variant": "reference"})
    assert cfg.variant == "reference" and cfg.replay == "episode"
    assert cfg.agent.switches() == REFERENCE_SWITCHES and cfg.agent.alpha_loss == "alpha"
    assert cfg.belief.item_init == "scratch" and cfg.belief.scratch_std == 1.0
    assert cfg.agent.embeddings == "ideal" and not cfg.mf  # the reference's WkNN needs no MF file
    # one difference switched back alone
    one = resolve_config("sac-wknn", ENV, {"variant": "reference", "agent": {"wknn_fill": "nearest"}})
    assert one.agent.switches() == {**REFERENCE_SWITCHES, "fill": "nearest"}
    corrected = resolve_config("sac-wknn", ENV, {"mf": "x.npz"})
    assert corrected.variant == "corrected" and corrected.agent.switches() == PAPER_SWITCHES
    assert not corrected.agent.switched() and one.agent.switched()
    gems = resolve_config("sac-gems", ENV, {"variant": "reference", "gems": "g.pt"})
    assert gems.belief.item_init == "scratch" and gems.agent.alpha_loss == "alpha"
    assert resolve_config("random", ENV, {"variant": "reference"}).variant == "reference"


@pytest.mark.parametrize("over, message", [
    ({"variant": "published"}, "variant must be one of corrected, reference"),
    ({"variant": "reference", "replay": "window"}, "reference variant in the episode regime, not replay='window'"),
    ({"variant": "reference", "agent": {"wknn_fill": "sideways"}}, "agent.wknn_fill must be one of nearest, candidate"),
])
def test_bad_variants_are_refused_by_name(over, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_config("sac-wknn", ENV, over)


def test_methods_without_a_reference_variant_say_so():
    with pytest.raises(ValueError, match="tqc-gems has no reference variant yet"):
        resolve_config("tqc-gems", ENV, {"variant": "reference", "gems": "g.pt"})
    assert {m for m, spec in METHOD_TABLE.items() if spec.reference_variant} >= {
        "sac-gems", "sac-topk-ideal", "sac-topk-mf", "sac-wknn", "reinforce-softmax", "slateq", "random", "oracle"}


def _brute_force(cand, table, belief, q, fill):
    """The greedy choice by evaluating the whole Q head on every trial slate."""
    b, k, kp = cand.shape
    chosen = cand[:, :, 0].clone()
    for r in range(k):
        scores = torch.empty(b, kp)
        for j in range(kp):
            slate = chosen.clone()
            if fill == "candidate":
                slate[:, r:] = cand[:, r, j:j + 1]
            else:
                slate[:, r] = cand[:, r, j]
            scores[:, j] = q(torch.cat([belief, table[slate].flatten(1)], dim=1)).squeeze(1)
        chosen[:, r] = cand[torch.arange(b), r, scores.argmax(1)]
    return chosen


@pytest.mark.parametrize("fill", ["nearest", "candidate"])
def test_greedy_choice_by_parts_is_the_choice_of_the_whole_q_head(fill):
    torch.manual_seed(0)
    N, k, d, kp, B, H = 200, 5, 4, 6, 40, 7
    table, belief = torch.randn(N, d), torch.randn(B, H)
    q = MLP(H + k * d, [32], 1)
    cand = torch.stack([torch.randperm(N)[: k * kp].view(k, kp) for _ in range(B)])
    with torch.no_grad():
        fast = greedy_slates(cand, table, belief, q, fill)
        slow = _brute_force(cand, table, belief, q, fill)
    assert torch.equal(fast, slow)
    assert torch.equal(greedy_slates(cand, table, belief, q, fill), fast)  # with autograd on: nothing in place
    other = "nearest" if fill == "candidate" else "candidate"
    with torch.no_grad():  # the two fills are different rules
        assert not torch.equal(fast, greedy_slates(cand, table, belief, q, other))


def test_nearest_items_are_the_euclidean_nearest_in_order():
    torch.manual_seed(1)
    table, targets = torch.randn(300, 6), torch.randn(5000, 6)  # more rows than one block
    ids = nearest_items(targets, table, 4)
    assert torch.equal(ids, torch.cdist(targets, table).topk(4, dim=1, largest=False).indices)


def _model(switches, **kw):
    args = dict(num_items=60, slate_size=3, episode_length=5, action_dim=3 * 4, embedding_dim=4, belief_size=6,
                net_arch=[16], batch_size=4, buffer_size=20, warmup_episodes=2, scratch_std=1.0, seed=3)
    args.update(kw)
    table = None if switches.get("item_source") == "belief_copy" else np.random.default_rng(0).normal(size=(60, 4))
    return EpisodeWkNN(wknn_items=table, k_neighbours=5, switches=switches, **args)


def test_layout_reads_the_action_as_k_targets_or_as_d_by_k():
    m = _model(PAPER_SWITCHES)
    raw = torch.arange(12.0)[None]
    assert torch.equal(m.targets(raw)[0, 1], torch.tensor([4.0, 5, 6, 7]))  # rank 1: values 4..7
    m.switches["layout"] = "dim_major"
    assert torch.equal(m.targets(raw)[0, 1], torch.tensor([1.0, 4, 7, 10]))  # rank 1: every third value
    # the box is tiled rank after rank (k, d) in both
    assert torch.equal(m.center.view(3, 4)[0], m.center.view(3, 4)[2])


def test_belief_copy_is_a_frozen_copy_of_the_critic_beliefs_initial_table():
    m = _model(REFERENCE_SWITCHES)
    first = m.table.clone()
    assert torch.equal(first, m.critic_belief.items.weight.detach())
    assert abs(float(first.std()) - 1.0) < 0.15  # N(0, 1), as the reference's scratch tables
    rng = np.random.default_rng(0)
    for _ in range(3):
        m.replay_buffer.add(rng.integers(0, 60, (4, 6, 3)), rng.integers(0, 2, (4, 6, 3)).astype(np.uint8),
                            np.zeros((4, 5, m.replay_buffer.action_dim), np.float32), rng.random((4, 5)).astype(np.float32))
    for _ in range(3):
        m.train_step()
    assert not torch.equal(first, m.critic_belief.items.weight.detach())  # the belief's table learns
    assert torch.equal(first, m.table)  # the k-NN table does not


def test_critic_slate_switch_chooses_the_shown_or_the_observed_slate(monkeypatch):
    """shown: Q(b_t, slate of turn t) = row t+1 of the stored slates; observed: row t."""
    seen = {}
    for value in ("shown", "observed"):
        m = _model({**PAPER_SWITCHES, "critic_slate": value})
        rng = np.random.default_rng(0)
        slates = rng.integers(0, 60, (4, 6, 3))
        m.replay_buffer.add(slates, np.zeros((4, 6, 3), np.uint8), np.zeros((4, 5, m.replay_buffer.action_dim), np.float32),
                            np.zeros((4, 5), np.float32))
        calls = []
        original = m.slate_vectors
        monkeypatch.setattr(m, "slate_vectors", lambda s, o=original: (calls.append(s.clone()), o(s))[1])
        m.train_step()
        seen[value] = calls[-1]  # the critic's input (the last call of the step)
        batch_rows = {tuple(x) for x in seen[value].reshape(-1, 3).tolist()}
        expect = slates[:, 1:] if value == "shown" else slates[:, :-1]
        assert batch_rows <= {tuple(x) for x in expect.reshape(-1, 3).tolist()}
    assert not torch.equal(seen["shown"], seen["observed"])


def test_reference_alpha_is_0_2_at_the_first_step_and_its_loss_is_on_alpha():
    m = _model(REFERENCE_SWITCHES, alpha_loss="alpha")
    assert float(m.alpha) == pytest.approx(0.2)
    logp = torch.full((10,), 3.0)
    m.finish_update(logp)
    # d/d(log a) of -a (logp + target) at log a = 0: -(3 - 12) = 9 -> Adam moves log alpha down by lr
    assert float(m.log_alpha) == pytest.approx(-1e-3, rel=1e-3) and float(m.alpha) == pytest.approx(np.exp(-1e-3))
    plain = _model(REFERENCE_SWITCHES)
    assert float(plain.alpha) == 1.0


def test_item_id_wknn_saves_loads_and_acts_the_same(tmp_path):
    m = _model(REFERENCE_SWITCHES)
    obs = {"slate": np.random.default_rng(0).integers(0, 60, (5, 3)), "clicks": np.zeros((5, 3), np.uint8)}
    ids, _ = m.predict(obs, deterministic=True)
    assert ids.shape == (5, 3) and ids.dtype == np.int64 and ((ids >= 0) & (ids < 60)).all()
    m.save(tmp_path / "m.zip")
    back = EpisodeSAC.load(tmp_path / "m.zip")
    assert isinstance(back, EpisodeWkNN) and back.switches == REFERENCE_SWITCHES
    assert torch.equal(back.table, m.table)
    assert np.array_equal(back.predict(obs, deterministic=True)[0], ids)


def test_reference_wknn_run_trains_and_its_table_row_says_reference(tmp_path):
    from sb3_slate.runs import load_agent, train_run
    from slaterec_lab.results import comparable_records
    from slaterec_lab.tables import build, render

    torch.set_num_threads(1)
    base = {"replay": "episode", "episodes": 20, "n_envs": 10, "val_every": 10, "checkpoint_every": 10,
            "val_users": 8, "test_users": 8, "env_kwargs": dict(SMALL),
            "agent": {"batch_episodes": 4, "buffer_episodes": 50, "warmup_episodes": 10, "net_arch": [16],
                      "k_neighbours": 3, "embeddings": "ideal"}}
    train_run(resolve_config("sac-wknn", ENV, {**base, "variant": "reference"}), tmp_path / "ref", progress=False)
    train_run(resolve_config("sac-wknn", ENV, base), tmp_path / "cor", progress=False)
    config = json.loads((tmp_path / "ref" / "config.json").read_text())
    assert config["variant"] == "reference" and config["agent"]["wknn_layout"] == "dim_major"
    agent = load_agent(tmp_path / "ref", "best")
    assert isinstance(agent.model, EpisodeWkNN) and agent.model.switches == REFERENCE_SWITCHES
    records, _ = comparable_records([tmp_path], need_test=True)
    labels = sorted(r.base_method for r in records)
    assert labels == ["sac-wknn (episode replay)", "sac-wknn (episode replay, reference)"]
    # the variant's own settings are its defaults: only the test's settings away from them are named
    # (the reference variant's default table is already the ideal one)
    small = "batch_episodes=4, buffer_episodes=50, {}k_neighbours=3, net_arch=[16], warmup_episodes=10"
    assert sorted(r.method for r in records) == [f"{labels[0]} [{small.format('embeddings=ideal, ')}]",
                                                 f"{labels[1]} [{small.format('')}]"]
    text = render(build(records), paper=True)
    assert f"| sac-wknn (episode replay, reference) [{small.format('')}] |" in text


def test_every_switch_is_documented_with_both_readings():
    for f in EpisodeWkNNConfig.settings():
        if f.name.startswith("wknn_"):
            paper, reference = WKNN_SWITCHES[f.name.removeprefix("wknn_")]
            assert paper in f.metadata["doc"] and reference in f.metadata["doc"]


def test_finished_runs_leave_summaries_that_tables_read_like_run_directories(tmp_path):
    from sb3_slate.runs import train_run
    from slaterec_lab.results import comparable_records, find_runs, keep_summaries
    from slaterec_lab.tables import build, render

    torch.set_num_threads(1)
    for seed in (0, 1):
        cfg = resolve_config("random", ENV, {"seed": seed, "val_users": 6, "test_users": 6, "env_kwargs": dict(SMALL)})
        train_run(cfg, tmp_path / "runs" / f"random_s{seed}", progress=False)
    summary = json.loads((tmp_path / "runs" / "random_s0" / "summary.json").read_text())
    assert summary["format"] == "slaterec.run_summary/1" and summary["config"]["seed"] == 0
    assert len(json.dumps(summary)) < 20_000
    assert keep_summaries([tmp_path / "runs"], tmp_path / "results") == (2, 0, [])
    assert keep_summaries([tmp_path / "runs"], tmp_path / "results") == (0, 2, [])  # same content: kept
    assert sorted(p.name for p in find_runs([tmp_path / "results"])) == ["random_s0.json", "random_s1.json"]
    from_dirs = render(build(comparable_records([tmp_path / "runs"], need_test=True)[0]))
    from_summaries = render(build(comparable_records([tmp_path / "results"], need_test=True)[0]))
    assert from_dirs == from_summaries and "(n=2)" in from_summaries
    # another run of the same name is refused; nothing is overwritten
    other = tmp_path / "elsewhere" / "random_s0"
    train_run(resolve_config("random", ENV, {"seed": 5, "val_users": 6, "test_users": 6, "env_kwargs": dict(SMALL)}),
              other, progress=False)
    before = (tmp_path / "results" / "random_s0.json").read_bytes()
    with pytest.raises(ValueError, match="random_s0.json hold.* another run's summary; pass --overwrite"):
        keep_summaries([other], tmp_path / "results")
    assert (tmp_path / "results" / "random_s0.json").read_bytes() == before
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(ValueError, match="is not a run summary"):
        find_runs([tmp_path / "notes.json"])


def test_reference_warmup_actions_stay_in_the_middle_half_of_the_box():
    cfg = resolve_config("sac-topk-ideal", ENV, {"variant": "reference"})
    assert cfg.agent.warmup_actions == "middle_half"
    obs = {"slate": np.zeros((50, 3), np.int64), "clicks": np.zeros((50, 3), np.uint8)}
    kw = dict(num_items=60, slate_size=3, episode_length=5, action_dim=4, net_arch=[8], seed=0)
    half, _ = EpisodeSAC(warmup_scale=0.5, **kw).collect_action(obs, None, warm=True)
    full, _ = EpisodeSAC(**kw).collect_action(obs, None, warm=True)
    assert np.abs(half).max() <= 0.5 and np.abs(full).max() > 0.9
    assert np.allclose(half, full / 2)  # the same draws, scaled: the seeds' streams do not move
    with pytest.raises(ValueError, match="warmup_scale must be in"):
        EpisodeSAC(warmup_scale=0.0, **kw)


# ------------------------------------------------------------------ REINFORCE+SoftMax, paper regime
def _reinforce(loss, **kw):
    from sb3_slate.agents import EpisodeREINFORCE

    return EpisodeREINFORCE(num_items=30, slate_size=3, episode_length=4, embedding_dim=4, belief_size=5,
                            net_arch=[8], loss=loss, seed=0, **kw)


def _episodes(rng, B=2, T=4, k=3, N=30):
    return (rng.integers(0, N, (B, T + 1, k)), rng.integers(0, 2, (B, T + 1, k)).astype(np.uint8),
            rng.integers(0, N, (B, T, k)), rng.integers(0, k + 1, (B, T)).astype(np.float32))


@pytest.mark.parametrize("loss", ["sampled_slate", "first_click"])
def test_reinforce_losses_are_the_stated_formulas(loss):
    from sb3_slate.agents.gru_sequence import torch_gru_sequence

    m = _reinforce(loss, gamma=0.5)
    S, C, A, R = _episodes(np.random.default_rng(3))
    with torch.no_grad():  # the expected loss, computed turn by turn with torch's own GRU
        g = m.belief.gru
        x = m.belief.inputs(torch.as_tensor(S[:, :-1]), torch.as_tensor(C[:, :-1], dtype=torch.float32))
        b = torch_gru_sequence(x, g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)
        p = torch.softmax(m.head(b), dim=-1).numpy()
        expect = 0.0
        for e in range(2):
            for t in range(4):
                G = sum(0.5 ** (s - t) * R[e, s] for s in range(t, 4))
                if loss == "sampled_slate":
                    expect -= G * np.log(p[e, t, A[e, t]]).sum()
                elif C[e, t].any():
                    i = S[e, t, int(np.argmax(C[e, t]))]
                    expect -= G * np.log(1 - (1 - p[e, t, i]) ** 3 + 1e-6)
        expect /= 2
    assert m.train_on(S, C, A, R) == pytest.approx(expect, rel=1e-4, abs=1e-5)
    assert m.n_updates == 1


def test_reinforce_warmup_is_trained_on_only_in_the_reference_variant():
    from sb3_slate import runs

    for train_on_warmup, updates in ((False, 0), (True, 4)):
        cfg = resolve_config("reinforce-softmax", ENV, {"replay": "episode", "n_envs": 4, "env_kwargs": dict(SMALL),
                                                          "agent": {"warmup_episodes": 8, "net_arch": [8],
                                                                    "train_on_warmup": train_on_warmup}})
        from sb3_slate.agents import EpisodeREINFORCE

        m = EpisodeREINFORCE(num_items=1000, slate_size=10, episode_length=8, net_arch=[8], loss="first_click",
                             warmup_episodes=8, train_on_warmup=train_on_warmup)
        m.set_env(runs.base_env(cfg, 4))
        m.learn(4 * 8)  # one batch of 4 warm-up episodes
        assert m.episodes_done == 4 and m.n_updates == updates


def test_reinforce_checkpoint_round_trip_and_variant_settings(tmp_path):
    from sb3_slate.agents import EpisodeREINFORCE

    ref = resolve_config("reinforce-softmax", ENV, {"variant": "reference"}, preset="paper")
    assert ref.replay == "episode" and ref.agent.loss == "first_click" and ref.agent.train_on_warmup
    assert ref.belief.item_init == "scratch" and ref.belief.scratch_std == 1.0
    cor = resolve_config("reinforce-softmax", ENV, {}, preset="paper")
    assert cor.agent.loss == "sampled_slate" and not cor.agent.train_on_warmup
    m = _reinforce("sampled_slate")
    m.train_on(*_episodes(np.random.default_rng(0)))
    m.save(tmp_path / "r.zip")
    back = EpisodeREINFORCE.load(tmp_path / "r.zip")
    obs = {"slate": np.random.default_rng(1).integers(0, 30, (6, 3)), "clicks": np.ones((6, 3), np.uint8)}
    assert np.array_equal(back.predict(obs, deterministic=True)[0], m.predict(obs, deterministic=True)[0])
    assert back.n_updates == 1
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable EpisodeREINFORCE checkpoint"):
        EpisodeREINFORCE.load(tmp_path / "bad.zip")


def test_reinforce_paper_regime_run_reproduces_its_validation_in_a_fresh_load(tmp_path):
    from sb3_slate import runs
    from sb3_slate.agents import EpisodeREINFORCE
    from sb3_slate.protocol import VALIDATION_SEED, evaluate_agent
    from sb3_slate.runs import load_agent, train_run

    torch.set_num_threads(1)
    cfg = resolve_config("reinforce-softmax", ENV, {
        "variant": "reference", "replay": "episode", "episodes": 30, "n_envs": 10, "val_every": 10,
        "checkpoint_every": 10, "val_users": 8, "test_users": 8, "env_kwargs": dict(SMALL),
        "agent": {"warmup_episodes": 10, "net_arch": [16]}})
    res = train_run(cfg, tmp_path / "run", progress=False)
    assert [v["episodes"] for v in res["validation"]] == [0, 10, 20, 30]
    agent = load_agent(tmp_path / "run", "best")
    assert isinstance(agent.model, EpisodeREINFORCE) and agent.model.loss == "first_click"
    replay = evaluate_agent(agent, lambda n: runs.base_env(agent.config, n), cfg.val_users, VALIDATION_SEED)
    assert replay.summary()["mean"] == res["best"]["validation_return"]


def test_item_id_wknn_keeps_no_copy_of_the_slates_vectors():
    assert _model(REFERENCE_SWITCHES).replay_buffer.action_dim == 1  # the slates are kept as ids already
