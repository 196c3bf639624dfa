"""d3rlpy_adapters: collection from every policy kind, export (d3rlpy, Minari), offline RL runs, refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gym_slaterec.gems import GeMSCheckpoint, GeMSConfig, train_gems
from gym_slaterec.logged_data import DatasetError, DatasetWriter, LoggedDataset
from gym_slaterec.provenance import ArtifactExistsError, ProvenanceMismatchError, sha256_file
from gym_slaterec.rollouts import generate_logged_data, rollout_reference_policy

from d3rlpy_adapters.collect import collect, resolve_checkpoint
from d3rlpy_adapters.export import episode_windows, export_d3rlpy, load_d3rlpy, sidecar_path
from d3rlpy_adapters.window import WindowBuffer, WindowLayout
from conftest import window_dataset

ENV = "SlateRec/FocusedTopDown-v0"
SHORT = {"episode_length": 10}
REPO = Path(__file__).resolve().parents[1]
TRAINED_GEMS = REPO / "runs" / "gems_focused_topdown.pt"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return tmp_path_factory.mktemp("offline")


@pytest.fixture(scope="module")
def tiny_gems(work) -> Path:
    """A small GeMS (a few optimiser steps): valid checkpoint, poor reconstruction."""
    ds = generate_logged_data(ENV, work / "logged", episodes=40, seed=0, progress=False, env_kwargs=SHORT)
    cfg = GeMSConfig(epochs=1, latent_dim=8, encoder_hidden=(32,), decoder_hidden=(32,), val_max_samples=200)
    return train_gems(ds, cfg, out=work / "tiny_gems.pt", progress=False, max_steps=5).path


@pytest.fixture(scope="module")
def reference_datasets(work) -> dict[str, LoggedDataset]:
    return {
        name: collect(ENV, name, 24, 7, work / f"data_{name}", epsilon=0.3, batch_size=10, progress=False, env_kwargs=SHORT)
        for name in ("random", "oracle", "epsilon-greedy")
    }


@pytest.fixture(scope="module")
def export_file(work, reference_datasets, tiny_gems) -> Path:
    return export_d3rlpy(reference_datasets["epsilon-greedy"], tiny_gems, work / "eg.h5", window=4)


# --------------------------------------------------------------- collection
def test_collect_reference_policies(reference_datasets):
    for name, ds in reference_datasets.items():
        assert ds.slates.shape == (24, 11, 10) and ds.clicks.shape == (24, 11, 10)
        assert ds.extras["rewards"].shape == (24, 10) and ds.extras["rewards"].dtype == np.float32
        np.testing.assert_array_equal(ds.extras["rewards"], ds.clicks[:, 1:].sum(-1))
        prov = ds.provenance
        assert prov["env_id"] == ENV and prov["seed"] == 7 and prov["env_kwargs"] == SHORT
        assert prov["policy"]["kind"] == "reference" and prov["policy"]["name"] == name
        assert prov["env_params"]["episode_length"] == 10 and prov["gems"] is None
        assert "actions" not in ds.extras
    assert reference_datasets["epsilon-greedy"].provenance["policy"]["epsilon"] == 0.3
    # the same users and policy streams as the simulator's own roll-outs (episode j = user seed + j)
    seen = {}
    rollout_reference_policy(ENV, "epsilon-greedy", 24, 7, epsilon=0.3, batch_size=24, env_kwargs=SHORT,
                             on_batch=lambda start, s, c: seen.update(s=s, c=c))
    np.testing.assert_array_equal(reference_datasets["epsilon-greedy"].slates, seen["s"])
    np.testing.assert_array_equal(reference_datasets["epsilon-greedy"].clicks, seen["c"])
    assert reference_datasets["oracle"].returns().mean() > reference_datasets["random"].returns().mean()


def test_collect_refuses_bad_input(work, reference_datasets):
    with pytest.raises(ArtifactExistsError):
        collect(ENV, "random", 2, 0, work / "data_random", progress=False, env_kwargs=SHORT)
    with pytest.raises(ValueError, match="episodes"):
        collect(ENV, "random", 0, 0, work / "x", progress=False)
    with pytest.raises(ValueError, match="agent run directory"):
        collect(ENV, "greedy", 2, 0, work / "x", progress=False)
    with pytest.raises(ValueError):
        collect("SlateRec/Nope-v0", "random", 2, 0, work / "x", progress=False)


def test_resolve_checkpoint():
    names = ["best", "ep0000100", "ep0000200", "ep0000400", "last"]
    assert resolve_checkpoint(names, "best") == "best"
    assert resolve_checkpoint(names, "ep0000200") == "ep0000200"
    assert resolve_checkpoint(names, "episodes:190") == "ep0000200"
    assert resolve_checkpoint(names, "390") == "ep0000400"
    with pytest.raises(ValueError, match="available"):
        resolve_checkpoint(names, "middle")


@pytest.fixture(scope="module")
def agent_run(work, tiny_gems):
    """A tiny SAC+GeMS run (short episodes) with periodic checkpoints."""
    runs = pytest.importorskip("sb3_slate.runs", reason="sb3_slate.runs is needed to collect from an agent run")
    from sb3_slate.methods import resolve_config

    gems = TRAINED_GEMS if TRAINED_GEMS.is_file() else tiny_gems
    cfg = resolve_config("sac-gems", ENV, {
        "episodes": 8, "n_envs": 4, "window": 3, "val_every": 4, "val_users": 4, "test_users": 4,
        "checkpoint_every": 4, "env_kwargs": dict(SHORT), "gems": str(gems),
        "agent": {"warmup_episodes": 4, "batch_transitions": 16, "net_arch": [32]},
    }, preset="window")
    runs.train_run(cfg, work / "sac_run", progress=False)
    return work / "sac_run", Path(gems)


def test_collect_from_agent_run(work, agent_run):
    run_dir, gems_path = agent_run
    ds = collect(ENV, run_dir, 12, 3, work / "data_agent", checkpoint="episodes:4", batch_size=5, progress=False)
    gems = GeMSCheckpoint.load(gems_path)
    assert ds.slates.shape == (12, 11, 10)  # the run's own env overrides (short episodes) are used
    actions = ds.extras["actions"]
    assert actions.shape == (12, 10, gems.latent_dim) and actions.dtype == np.float32
    # the stored action is what the GeMS wrapper decoded into the slate that was shown
    decoded = gems.decode_latent(gems.from_action(actions.reshape(-1, gems.latent_dim)))
    np.testing.assert_array_equal(decoded, ds.slates[:, 1:].reshape(-1, 10))
    np.testing.assert_array_equal(ds.extras["rewards"], ds.clicks[:, 1:].sum(-1))
    pol = ds.provenance["policy"]
    assert pol["kind"] == "agent" and pol["method"] == "sac-gems" and pol["checkpoint"] == "ep0000004"
    assert pol["checkpoint_fingerprint"] == sha256_file(run_dir / "checkpoints" / "ep0000004.zip")
    assert pol["run_fingerprint"]
    assert ds.provenance["gems"]["fingerprint"] == sha256_file(gems_path)
    assert ds.provenance["inputs"]["gems"] == sha256_file(gems_path)
    with pytest.raises(ProvenanceMismatchError, match="trained on"):
        collect("SlateRec/DiffuseMixed-v0", run_dir, 2, 0, work / "data_wrong_env", progress=False)


def test_merged_datasets_hold_the_parts_in_order_and_say_what_they_left_out(work, agent_run, reference_datasets):
    from d3rlpy_adapters.merge import describe_parts, merge_datasets

    run_dir, gems_path = agent_run
    medium = collect(ENV, run_dir, 6, 100, work / "m_medium", checkpoint="episodes:4", progress=False)
    expert = collect(ENV, run_dir, 5, 200, work / "m_expert", progress=False)
    both, notes = merge_datasets([medium.path, expert.path], work / "m_medium_expert", progress=False)
    assert not notes and len(both) == 11
    np.testing.assert_array_equal(both.slates, np.concatenate([medium.slates, expert.slates]))
    np.testing.assert_array_equal(both.extras["actions"], np.concatenate([medium.extras["actions"],
                                                                          expert.extras["actions"]]))
    parts = describe_parts(both)
    assert [p["episodes"] for p in parts] == [6, 5] and parts[1]["fingerprint"] == expert.fingerprint
    assert parts[0]["policy"]["checkpoint"] == "ep0000004"
    assert both.provenance["gems"]["fingerprint"] == sha256_file(gems_path)
    h5 = export_d3rlpy(both, gems_path, work / "m_medium_expert.h5", window=3)  # the policies' own actions
    assert json.loads(sidecar_path(h5).read_text())["action"]["source"] == "policy"
    # a reference policy's dataset stores no actions: the merge keeps none and says so
    mixed, notes = merge_datasets([expert.path, reference_datasets["random"].path], work / "m_mixed", progress=False)
    assert "actions" not in mixed.extras and "left out" in notes[0]
    long_episodes = collect(ENV, "random", 2, 0, work / "m_random_long", progress=False)  # 100 turns, not 10
    with pytest.raises(ProvenanceMismatchError, match="differ in env_params"):
        merge_datasets([expert.path, long_episodes.path], work / "m_bad", progress=False)
    assert not (work / "m_bad").exists()
    with pytest.raises(ArtifactExistsError):
        merge_datasets([medium.path, expert.path], work / "m_medium_expert", progress=False)
    with pytest.raises(ValueError, match="at least two"):
        merge_datasets([medium.path], work / "m_one", progress=False)


def test_medium_replay_is_the_replay_memory_kept_with_a_checkpoint_oldest_first(work, tiny_gems):
    from d3rlpy_adapters.collect import collect_replay
    from sb3_slate.methods import resolve_config
    from sb3_slate.runs import train_run

    base = {"episodes": 12, "n_envs": 4, "val_every": 4, "val_users": 4, "test_users": 4, "checkpoint_every": 4,
            "env_kwargs": dict(SHORT), "gems": str(tiny_gems), "replay_snapshots": [8],
            "agent": {"warmup_episodes": 4, "batch_episodes": 2, "buffer_episodes": 6, "net_arch": [16]}}
    run = work / "replay_run"
    train_run(resolve_config("sac-gems", ENV, base, preset="paper"), run, progress=False)
    snapshot = run / "checkpoints" / "replay_ep0000008.npz"
    assert snapshot.is_file() and not (run / "checkpoints" / "replay_ep0000004.npz").exists()
    ds = collect_replay(run, "episodes:8", work / "data_medium_replay", progress=False)
    with np.load(snapshot) as raw:  # 8 episodes into a ring of 6: the oldest kept is at index 8 % 6 = 2
        order = [2, 3, 4, 5, 0, 1]
        np.testing.assert_array_equal(ds.slates, raw["slates"][order])
        np.testing.assert_array_equal(ds.extras["actions"], raw["actions"][order])
    assert len(ds) == 6 and ds.provenance["policy"]["kind"] == "replay"
    assert ds.provenance["gems"]["fingerprint"] == sha256_file(tiny_gems)
    np.testing.assert_array_equal(ds.extras["rewards"], ds.clicks[:, 1:].sum(-1))
    h5 = export_d3rlpy(ds, tiny_gems, work / "medium_replay.h5", window=3)
    assert json.loads(sidecar_path(h5).read_text())["action"]["source"] == "policy"
    with pytest.raises(FileNotFoundError, match="kept no replay memory with checkpoint ep0000004"):
        collect_replay(run, "ep0000004", work / "data_none", progress=False)
    with pytest.raises(ValueError, match=r"replay_snapshots \[6\] are not periodic checkpoints"):
        resolve_config("sac-gems", ENV, {**base, "replay_snapshots": [6]}, preset="paper")
    with pytest.raises(ValueError, match="keeps no replay memory of episodes"):
        resolve_config("sac-gems", ENV, {**base, "agent": {}, "replay_snapshots": [8]}, preset="window")


def test_export_round_trip_through_gems(work, trained):
    """decode(exported action) reproduces the logged slate for most items: epsilon-greedy
    logs of new users, encoded by the session's short-trained GeMS (tests/conftest.py)."""
    _, gems_path = trained
    ds = collect(ENV, "epsilon-greedy", 20, 500, work / "data_rt", progress=False)
    h5 = export_d3rlpy(ds, gems_path, work / "rt.h5", window=3)
    data = load_d3rlpy(h5)
    assert data.meta["action"]["source"] == "encoded"
    gems = GeMSCheckpoint.load(gems_path)
    actions = np.concatenate([ep.actions for ep in data.buffer.episodes])
    decoded = gems.decode_latent(gems.from_action(actions))
    acc = float((decoded == ds.slates[:, 1:].reshape(-1, 10)).mean())
    assert acc > 0.5, acc  # measured 0.67 (chance 0.001; half of the items are random)


def test_export_prefers_the_policy_own_actions(work, agent_run, reference_datasets, tiny_gems):
    """An agent that acted through this GeMS exports its own latents (exactly the stored
    actions); another GeMS, or a policy without actions, falls back to / requires encoding."""
    run_dir, gems_path = agent_run
    ds = collect(ENV, run_dir, 6, 21, work / "data_own", progress=False)
    h5 = export_d3rlpy(ds, gems_path, work / "own.h5", window=3)
    data = load_d3rlpy(h5)
    assert data.meta["action"]["source"] == "policy"
    exported = np.concatenate([ep.actions for ep in data.buffer.episodes])
    np.testing.assert_array_equal(exported, np.clip(ds.extras["actions"].reshape(-1, exported.shape[1]), -1, 1))
    enc = load_d3rlpy(export_d3rlpy(ds, gems_path, work / "own_enc.h5", window=3, actions="encoded"))
    assert enc.meta["action"]["source"] == "encoded"
    assert not np.array_equal(np.concatenate([ep.actions for ep in enc.buffer.episodes]), exported)
    ref = reference_datasets["oracle"]
    assert load_d3rlpy(export_d3rlpy(ref, tiny_gems, work / "ref_auto.h5", window=3)).meta["action"]["source"] == "encoded"
    with pytest.raises(ProvenanceMismatchError, match="stores no policy actions"):
        export_d3rlpy(ref, tiny_gems, work / "ref_pol.h5", actions="policy")
    with pytest.raises(ValueError, match="actions must be one of"):
        export_d3rlpy(ds, gems_path, work / "bad.h5", actions="latent")
    assert not (work / "ref_pol.h5").exists() and not (work / "bad.h5").exists()


# ------------------------------------------------------------------ export
def test_window_observations_match_online_buffer():
    rng = np.random.default_rng(0)
    s, c = rng.integers(0, 50, (3, 8, 4)), rng.integers(0, 2, (3, 8, 4))
    for W in (1, 3, 7):
        offline = episode_windows(s, c, W, 50)
        assert offline.shape == (3, 7, W * 9)
        buf = WindowBuffer(3, WindowLayout(W, 4, 50))
        online = [buf.reset(s[:, 0], c[:, 0])] + [buf.push(s[:, t], c[:, t]) for t in range(1, 7)]
        np.testing.assert_array_equal(np.stack(online, 1), offline)
    rows = episode_windows(s, c, 3, 50).reshape(3, 7, 3, 9)
    np.testing.assert_array_equal(rows[:, 0, :, 8], [[1, 0, 0]] * 3)  # left-aligned, padding after
    np.testing.assert_array_equal(rows[:, 5, 2, :4], s[:, 5])  # current turn last once the window is full
    np.testing.assert_array_equal(rows[:, 5, 0, 4:8], c[:, 3])


def test_encoder_runs_repeated_windows_once_with_the_beliefs_of_each_row(monkeypatch):
    """CQL repeats each observation for its sampled actions; the encoder's shortcut (one GRU pass
    per distinct window) gives every row the belief of a pass over all rows, even when windows
    differ in one entry or share a projection key."""
    from d3rlpy_adapters.encoders import _Belief, _distinct_rows

    torch.manual_seed(0)
    layout = WindowLayout(3, 4, 50)
    rng = np.random.default_rng(1)
    base = episode_windows(rng.integers(0, 50, (40, 4, 4)), rng.integers(0, 2, (40, 4, 4)), 3, 50).reshape(-1, layout.size)
    base[1] = base[0]
    base[1, 5] = 1 - base[1, 5]  # differs from row 0 in one click only
    x = torch.as_tensor(np.repeat(base, 10, axis=0), dtype=torch.float32)[torch.randperm(len(base) * 10)]
    unique, inverse = _distinct_rows(x)
    assert len(unique) == len(np.unique(base, axis=0)) and torch.equal(unique[inverse], x)
    belief = _Belief(layout, item_dim=5, hidden=6)
    torch.testing.assert_close(belief(x), belief._belief(x), rtol=1e-5, atol=1e-6)
    assert _distinct_rows(x[: len(base)].unique(dim=0)) is None  # mostly distinct rows: no shortcut
    # when distinct rows share a key (here: all of them), the exact comparison catches it
    import d3rlpy_adapters.encoders as encoders

    monkeypatch.setattr(encoders, "_key_weights", lambda n, device: torch.zeros(n, dtype=torch.float64))
    u, inv = _distinct_rows(x)
    assert len(u) == len(unique) and torch.equal(u[inv], x)
    torch.testing.assert_close(belief(x), belief._belief(x), rtol=1e-5, atol=1e-6)
    # a critic's hidden layer on repeated rows: the belief's share once per window, the same values
    monkeypatch.undo()
    factory = encoders.SlateHistoryEncoderFactory(num_items=50, slate_size=4, window=3, item_dim=5, hidden=6,
                                                  feature_size=7)
    critic = factory.create_with_action((layout.size,), 2)
    action = torch.randn(len(x), 2)
    beliefs, inverse = critic.current_belief().distinct(x)
    assert inverse is not None and len(beliefs) < len(x)
    per_row = torch.relu(critic.fc(torch.cat([critic.current_belief()._belief(x), action], dim=1)))
    torch.testing.assert_close(critic(x, action), per_row, rtol=1e-5, atol=1e-6)


def test_encoder_reads_windows_repeated_in_a_row_as_d3rlpy_repeats_them():
    """d3rlpy's CQL and BCQ repeat each observation n times in a row for their sampled actions:
    the encoder recognises the pattern exactly (one changed entry anywhere breaks it) and gives
    every row the belief and hidden layer of a pass over all rows, gradients included."""
    from d3rlpy_adapters.encoders import SlateHistoryEncoderFactory, _repeat_count

    torch.manual_seed(0)
    layout = WindowLayout(3, 4, 50)
    rng = np.random.default_rng(1)
    base = episode_windows(rng.integers(0, 50, (40, 4, 4)), rng.integers(0, 2, (40, 4, 4)), 3, 50).reshape(-1, layout.size)
    x = torch.as_tensor(np.repeat(base, 7, axis=0), dtype=torch.float32)  # 1,120 rows
    assert _repeat_count(x) == 7
    for row, col in ((0, 3), (6, 0), (len(x) - 1, layout.size - 1), (500, 10)):
        y = x.clone()
        y[row, col] += 1
        assert _repeat_count(y) is None, (row, col)
    assert _repeat_count(x[:-1]) is None
    many = torch.as_tensor(np.repeat(base[:30], 40, axis=0), dtype=torch.float32)  # runs longer than the first probe
    assert _repeat_count(many) == 40
    many[1199, 5] += 1
    assert _repeat_count(many) is None
    critic = SlateHistoryEncoderFactory(num_items=50, slate_size=4, window=3, item_dim=5, hidden=6,
                                        feature_size=7).create_with_action((layout.size,), 2)
    assert critic.current_belief().distinct(x)[1] == 7
    action = torch.randn(len(x), 2)
    got = critic(x, action)
    got.square().sum().backward()
    fast = [p.grad.clone() for p in critic.parameters()]
    critic.zero_grad()
    per_row = torch.relu(critic.fc(torch.cat([critic.current_belief()._belief(x), action], dim=1)))
    per_row.square().sum().backward()
    torch.testing.assert_close(got, per_row, rtol=1e-5, atol=1e-6)
    for a, b in zip(fast, [p.grad for p in critic.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_encoder_belief_is_the_gru_state_after_each_windows_real_turns():
    """The belief of a left-aligned window is the GRU's state after its real turns alone,
    computed here one window at a time, turn by turn, from the same weights."""
    from d3rlpy_adapters.encoders import _Belief

    torch.manual_seed(0)
    layout = WindowLayout(4, 3, 40)
    rng = np.random.default_rng(2)
    slates, clicks = rng.integers(0, 40, (12, 6, 3)), rng.integers(0, 2, (12, 6, 3))
    x = torch.as_tensor(episode_windows(slates, clicks, 4, 40).reshape(-1, layout.size), dtype=torch.float32)
    belief = _Belief(layout, item_dim=5, hidden=6)
    cell = torch.nn.GRUCell(3 * 6, 6)
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in belief.gru.state_dict().items()})
    got = belief._belief(x)
    rows = x.reshape(len(x), 4, layout.row)
    assert set(rows[:, :, 2 * 3].sum(1).tolist()) == {1.0, 2.0, 3.0, 4.0}  # partial windows and full ones
    for i in range(len(x)):
        h = torch.zeros(1, 6)
        real = int(rows[i, :, 2 * 3].sum())
        for t in range(real):
            ids = rows[i, t, :3].long()
            h = cell(torch.cat([belief.items.weight[ids].flatten(), rows[i, t, 3:6]])[None], h)
        torch.testing.assert_close(got[i], h[0], rtol=1e-5, atol=1e-6)


def test_encoder_item_lookup_has_the_embedding_gradient_and_respects_a_frozen_table():
    """The encoders' item lookup (its own backward) gives nn.Embedding's values and gradients,
    with ids repeated across slots and turns, and none when the table is frozen."""
    from d3rlpy_adapters.encoders import _Lookup

    torch.manual_seed(0)
    table = torch.randn(30, 4, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 30, (16, 5, 3))
    ids[0, 0] = ids[1, 1]  # the same items in two places
    weights = torch.randn(16, 5, 3, 4, dtype=torch.float64)
    ours = _Lookup.apply(table, ids)
    (ours * weights).sum().backward()
    grad = table.grad.clone()
    table.grad = None
    theirs = torch.nn.functional.embedding(ids, table)
    (theirs * weights).sum().backward()
    assert torch.equal(ours, theirs)
    torch.testing.assert_close(grad, table.grad, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: _Lookup.apply(t, ids), (table.detach().requires_grad_(),))
    frozen = table.detach()
    assert not _Lookup.apply(frozen, ids).requires_grad


def test_export_d3rlpy_shapes_dtypes_boundaries(export_file, reference_datasets, tiny_gems):
    ds = reference_datasets["epsilon-greedy"]
    gems = GeMSCheckpoint.load(tiny_gems)
    data = load_d3rlpy(export_file, gems.fingerprint)
    eps = data.buffer.episodes
    assert len(eps) == 24 and data.buffer.transition_count == 24 * 10
    assert data.buffer.dataset_info.action_space.name == "CONTINUOUS"
    expected_obs = episode_windows(ds.slates, ds.clicks, 4, ds.num_items)
    expected_act = np.clip(gems.to_action(gems.encode_latent(
        np.asarray(ds.slates[:, 1:]).reshape(-1, 10).astype(np.int64), np.asarray(ds.clicks[:, 1:]).reshape(-1, 10))), -1, 1)
    for e, ep in enumerate(eps):
        assert ep.observations.shape == (10, 4 * 21) and ep.observations.dtype == np.int16
        assert ep.actions.shape == (10, gems.latent_dim) and ep.actions.dtype == np.float32
        assert ep.terminated and ep.rewards.shape == (10, 1)
        np.testing.assert_array_equal(ep.observations, expected_obs[e])
        np.testing.assert_array_equal(ep.rewards[:, 0], ds.clicks[e, 1:].sum(-1))
        np.testing.assert_allclose(ep.actions, expected_act[e * 10 : (e + 1) * 10], atol=1e-6)
    meta = json.loads(sidecar_path(export_file).read_text())
    assert meta["gems"]["fingerprint"] == gems.fingerprint and meta["inputs"]["dataset"] == ds.fingerprint
    assert meta["env_id"] == ENV and meta["action"]["space"] == "continuous" and meta["observation"]["window"] == 4
    assert meta["file_sha256"] == sha256_file(export_file)


def test_export_minari(work, reference_datasets, tiny_gems, export_file):
    pytest.importorskip("minari")  # an optional extra (slaterec[minari]); make test installs it
    from d3rlpy_adapters.minari_export import export_minari, load_minari

    out, dataset_id = export_minari(reference_datasets["epsilon-greedy"], tiny_gems, work / "minari")
    md = load_minari(out)
    assert md.total_episodes == 24 and md.total_steps == 240
    d3 = load_d3rlpy(export_file).buffer.episodes
    for i, ep in enumerate(md.iterate_episodes()):
        assert ep.observations["slate"].shape == (11, 10) and ep.actions.shape == (10, 8)
        np.testing.assert_allclose(ep.actions, d3[ep.id].actions, atol=1e-6)
        assert ep.terminations[-1] and not ep.terminations[:-1].any() and not ep.truncations.any()
        np.testing.assert_array_equal(ep.rewards, reference_datasets["epsilon-greedy"].clicks[ep.id, 1:].sum(-1))
    assert dataset_id.startswith("slaterec/focusedtopdown/")
    with pytest.raises(ArtifactExistsError):
        export_minari(reference_datasets["epsilon-greedy"], tiny_gems, out)


def test_export_minari_to_a_relative_folder(work, reference_datasets, tiny_gems, tmp_path, monkeypatch):
    pytest.importorskip("minari")
    from d3rlpy_adapters.minari_export import export_minari, load_minari

    monkeypatch.chdir(tmp_path)
    out, _ = export_minari(reference_datasets["epsilon-greedy"], tiny_gems, Path("rel") / "minari")
    assert load_minari(out).total_episodes == 24 and (tmp_path / "rel" / "minari").is_dir()


# --------------------------------------------------------------- refusals
def _resaved_gems(src: Path, dst: Path, **provenance_changes) -> Path:
    ckpt = GeMSCheckpoint.load(src)
    ckpt.provenance = {**ckpt.provenance, **provenance_changes}
    return ckpt.save(dst, overwrite=True)


def test_export_refusals(work, reference_datasets, tiny_gems, export_file):
    ds = reference_datasets["epsilon-greedy"]
    with pytest.raises(ArtifactExistsError):
        export_d3rlpy(ds, tiny_gems, export_file)
    other_env = _resaved_gems(tiny_gems, work / "gems_other_env.pt", env_id="SlateRec/FocusedMixed-v0")
    with pytest.raises(ProvenanceMismatchError, match="FocusedMixed"):
        export_d3rlpy(ds, other_env, work / "x.h5")
    with pytest.raises(ValueError, match="window"):
        export_d3rlpy(ds, tiny_gems, work / "x.h5", window=0)
    # a dataset with NaN actions, one without an environment, one whose rewards disagree with its clicks
    prov = dict(ds.provenance)
    with pytest.raises(DatasetError, match="refusing to write.*NaN"):
        with DatasetWriter(work / "nan", 2, 10, 10, 1000, prov, extras={"actions": ((10, 3), np.float32)}) as w:
            w.write(0, ds.slates[:2], ds.clicks[:2], actions=np.full((2, 10, 3), np.nan, np.float32))
    assert not (work / "nan").exists()
    with DatasetWriter(work / "nan", 2, 10, 10, 1000, prov, extras={"actions": ((10, 3), np.float32)}) as w:
        w.write(0, ds.slates[:2], ds.clicks[:2], actions=np.zeros((2, 10, 3), np.float32))
    np.save(work / "nan" / "actions.npy", np.full((2, 10, 3), np.nan, np.float32))  # damaged behind our back
    with pytest.raises(DatasetError, match="actions.npy: episode 0 holds NaN"):
        export_d3rlpy(work / "nan", tiny_gems, work / "x.h5")
    LoggedDataset.from_arrays(ds.slates[:2], ds.clicks[:2], {**prov, "env_id": None}, 1000).save(work / "noenv")
    with pytest.raises(DatasetError, match="env_id"):
        export_d3rlpy(work / "noenv", tiny_gems, work / "x.h5")
    bad = np.asarray(ds.extras["rewards"][:2]) + 1
    LoggedDataset.from_arrays(ds.slates[:2], ds.clicks[:2], prov, 1000, {"rewards": bad}).save(work / "badrew")
    with pytest.raises(DatasetError, match="rewards"):
        export_d3rlpy(work / "badrew", tiny_gems, work / "x.h5")
    with pytest.raises(DatasetError, match="not found|meta.json"):
        export_d3rlpy(work / "missing", tiny_gems, work / "x.h5")
    assert not (work / "x.h5").exists()


def test_load_refusals(work, export_file, tiny_gems):
    other = _resaved_gems(tiny_gems, work / "gems_other.pt", note="another GeMS")
    with pytest.raises(ProvenanceMismatchError, match="another|GeMS"):
        load_d3rlpy(export_file, sha256_file(other))
    copy = work / "copy.h5"
    copy.write_bytes(export_file.read_bytes())
    with pytest.raises(DatasetError, match="sidecar"):
        load_d3rlpy(copy)
    sidecar_path(copy).write_text(sidecar_path(export_file).read_text())
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte
    copy.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="SHA-256"):
        load_d3rlpy(copy)
    from d3rlpy_adapters.offline import train_offline

    with pytest.raises(ProvenanceMismatchError):
        train_offline("td3bc", export_file, other, work / "run_other")
    assert not (work / "run_other").exists()


# ------------------------------------------------------------- offline RL
@pytest.mark.parametrize("algo", ["td3bc", "cql", "iql", "bcq", "bc"])
def test_offline_run_writes_valid_run_dir(algo, work, export_file, tiny_gems):
    import d3rlpy

    from d3rlpy_adapters.offline import OfflineConfig, load_offline_policy, train_offline

    out = work / f"run_{algo}"
    cfg = OfflineConfig(steps=4, eval_every=2, val_users=4, test_users=6, batch_size=16, feature_size=32, seed=1)
    res = train_offline(algo, export_file, tiny_gems, out, cfg, progress=False)
    for name in ("config.json", "provenance.json", "results.json", "model_best.pt", "model_last.pt"):
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    saved = json.loads((out / "results.json").read_text())
    assert saved["method"] == f"offline-{algo}" and saved["env_id"] == ENV
    assert [v["step"] for v in saved["validation"]] == [2, 4]
    assert saved["test"]["episodes"] == 6 and len(saved["test"]["ci95"]) == 2
    assert 0 <= saved["test"]["mean"] <= 100  # 10-turn episodes, at most 10 clicks per turn
    assert saved["best"]["step"] in (2, 4) and saved == json.loads(json.dumps(res, default=str))
    prov = saved["provenance"]
    assert prov["inputs"]["gems"] == sha256_file(tiny_gems) and prov["inputs"]["dataset"] == sha256_file(export_file)
    assert prov["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # device="auto"
    agent = load_offline_policy(out)
    assert isinstance(agent.algo, d3rlpy.base.LearnableBase)
    with pytest.raises(ArtifactExistsError):
        train_offline(algo, export_file, tiny_gems, out, cfg, progress=False)
    if algo == "bc":  # an offline run directory is recognised as one and may be replaced
        train_offline(algo, export_file, tiny_gems, out, cfg, progress=False, overwrite=True)


@pytest.mark.parametrize("algo", ["td3bc", "cql", "bcq"])
def test_critics_skip_their_gru_backward_in_the_actor_update_and_learn_the_same(algo, monkeypatch):
    """The critics' encoders, in evaluation mode during d3rlpy's actor updates, encode the history
    without recording it for a backward pass: the weights after a few updates are those of the
    encoders that backpropagate through their GRUs there (whose gradients were discarded)."""
    import d3rlpy

    from d3rlpy_adapters import encoders
    from d3rlpy_adapters.offline import OfflineConfig, make_algorithm

    layout, data = window_dataset()
    batches = [data.sample_transition_batch(32) for _ in range(4)]

    def recording(self, x, action):  # always through the GRU, with its graph
        return self.head(*self.current_belief().distinct(x), action)

    weights = []
    for forward in (encoders.SlateHistoryEncoderWithAction.forward, recording):
        monkeypatch.setattr(encoders.SlateHistoryEncoderWithAction, "forward", forward)
        d3rlpy.seed(0)
        learner = make_algorithm(OfflineConfig(algo=algo, shared_encoder=False), layout)  # one encoder per network
        learner.build_with_dataset(data)
        for batch in batches:
            learner.update(batch)
        modules = learner.impl.modules
        weights.append({f"{m}.{n}": p.detach().clone() for m in ("policy", "q_funcs")
                        for n, p in getattr(modules, m).named_parameters()})
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("algo, passes", [("td3bc", 2), ("iql", 3), ("cql", 3), ("bcq", 4)])
def test_a_shared_belief_runs_the_gru_once_per_batch_and_is_trained_by_the_critics_alone(algo, passes):
    """``shared_encoder``: one online belief (trained by the critics' losses, read without gradient
    by the actor and imitator) and one target belief; the GRU runs once per distinct batch and set
    of weights in an update (TD3+BC: the observations and the target's next observations), where
    one encoder per network runs it for every network."""
    import d3rlpy

    from d3rlpy_adapters.encoders import SlateHistoryEncoder, SlateHistoryEncoderWithAction
    from d3rlpy_adapters.offline import OfflineConfig, _modules, history_beliefs, make_algorithm, tie_encoders

    layout, data = window_dataset()
    batches = [data.sample_transition_batch(64) for _ in range(4)]  # CQL, BCQ: 640 repeated rows
    counts = {}
    for shared in (False, True):
        d3rlpy.seed(0)
        cfg = OfflineConfig(algo=algo, shared_encoder=shared)
        learner = make_algorithm(cfg, layout)
        learner.build_with_dataset(data)
        tie_encoders(learner, cfg)
        calls = [0]
        for b in history_beliefs(learner):  # count the GRU passes

            def counted(x, encode=b._belief):
                calls[0] += 1
                return encode(x)

            b._belief = counted
        learner.update(batches[0])  # d3rlpy's first update is one with an actor update
        counts[shared] = calls[0]
        if not shared:
            continue
        mods = learner.impl.modules
        assert len(history_beliefs(learner)) == 2  # the online belief and its target
        online = mods.q_funcs[0].encoder.current_belief()
        target = mods.targ_q_funcs[0].encoder.current_belief()
        encoders = [m for module in _modules(learner).values() if isinstance(module, torch.nn.Module)
                    for m in module.modules() if isinstance(m, (SlateHistoryEncoder, SlateHistoryEncoderWithAction))]
        for enc in encoders:
            belief = enc.current_belief()
            assert belief is online or belief is target
        assert not any("belief" in k for k in mods.policy.state_dict())  # saved with the first critic
        critic_params = {id(p) for g in mods.critic_optim.optim.param_groups for p in g["params"]}
        actor_params = {id(p) for g in mods.actor_optim.optim.param_groups for p in g["params"]}
        assert all(id(p) in critic_params and id(p) not in actor_params for p in online.parameters())
        before = {n: p.detach().clone() for n, p in online.named_parameters()}
        actor_before = [p.detach().clone() for p in mods.policy.parameters()]
        target_before = [p.detach().clone() for p in target.parameters()]
        for batch in batches[1:]:
            learner.update(batch)
        assert all(not torch.equal(before[n], p) for n, p in online.named_parameters())
        assert any(not torch.equal(a, p) for a, p in zip(actor_before, mods.policy.parameters()))
        assert any(not torch.equal(a, p) for a, p in zip(target_before, target.parameters()))
    assert (algo, counts[True]) == (algo, passes) and counts[True] < counts[False]


@pytest.mark.parametrize("algo", ["td3bc", "iql", "cql", "bcq", "bc"])
def test_offline_optimisers_run_fused_adam_with_the_same_update_and_keep_it_after_loading(algo, tmp_path):
    """Every Adam of a learner runs torch's fused kernel after ``fuse_optimisers``; updates move the
    weights as torch's per-tensor Adam does (to float32 rounding; the fused kernel does not count
    its writes in the tensors' versions, by which the belief's caches tell changed weights), and a
    checkpoint of a learner whose optimisers were not fused (as those written before) loads into a
    fused learner."""
    import d3rlpy

    from d3rlpy_adapters.offline import (OfflineConfig, _load_learner, _modules, _save_learner, fuse_optimisers,
                                         make_algorithm, tie_encoders)

    layout, data = window_dataset()
    batches = [data.sample_transition_batch(64) for _ in range(5)]

    def learner_of(fused: bool):
        d3rlpy.seed(0)
        cfg = OfflineConfig(algo=algo)
        learner = make_algorithm(cfg, layout)
        learner.build_with_dataset(data)
        tie_encoders(learner, cfg)
        if fused:
            assert fuse_optimisers(learner) >= 1
        return learner

    def optimisers(learner):
        return [m.optim for m in _modules(learner).values() if hasattr(m, "optim")]

    def weights(learner):
        return torch.cat([p.detach().flatten() for m in _modules(learner).values() if isinstance(m, torch.nn.Module)
                          for p in m.parameters()])

    plain, fused = learner_of(False), learner_of(True)
    assert all(g["fused"] for o in optimisers(fused) for g in o.param_groups)
    assert not any(g["fused"] for o in optimisers(plain) for g in o.param_groups)
    before = weights(plain)
    assert torch.equal(before, weights(fused))
    for learner in (plain, fused):
        torch.manual_seed(1)
        for batch in batches:
            learner.update(batch)
    moved = (weights(plain) - before).abs().max()
    assert moved > 1e-4  # the updates did something
    assert torch.allclose(weights(plain), weights(fused), rtol=0, atol=1e-5)
    _save_learner(plain, tmp_path / "model.pt")
    reloaded = learner_of(True)
    _load_learner(reloaded, tmp_path / "model.pt")
    assert torch.equal(weights(reloaded), weights(plain))
    assert all(g["fused"] for o in optimisers(reloaded) for g in o.param_groups)
    reloaded.update(data.sample_transition_batch(64))  # the loaded optimiser states step on the fused kernel


def test_the_encoder_knows_d3rlpys_repeated_batches_from_where_they_were_made(monkeypatch):
    """d3rlpy's repeat-and-flatten, as its CQL and BCQ call it, returns what it always did, and
    the flattened batch remembers its source and ``n`` until either changes; the encoder then
    encodes the source (no scan of the batch), and a CQL learner trains exactly as with the scan."""
    import d3rlpy
    from d3rlpy.algos.qlearning.torch import bcq_impl, cql_impl
    from d3rlpy.torch_utility import expand_and_repeat_recursively, flatten_left_recursively

    import d3rlpy_adapters.encoders as encoders
    from d3rlpy_adapters.offline import OfflineConfig, make_algorithm, tie_encoders
    from d3rlpy_adapters.repeats import repeat_origin

    layout, data = window_dataset()
    x = torch.as_tensor(data.sample_transition_batch(40).observations)
    for module in (cql_impl, bcq_impl):
        got = module.flatten_left_recursively(module.expand_and_repeat_recursively(x, 7), dim=1)
        assert torch.equal(got, flatten_left_recursively(expand_and_repeat_recursively(x, 7), dim=1))
        assert torch.equal(got, x.repeat_interleave(7, dim=0))
        source, n = repeat_origin(got)
        assert source is x and n == 7
    assert repeat_origin(got.clone()) is None and repeat_origin(x) is None
    belief = encoders._Belief(layout, item_dim=5, hidden=6)
    beliefs, rows = belief.distinct(got)
    assert rows == 7 and len(beliefs) == len(x)
    torch.testing.assert_close(encoders._spread(beliefs, rows), belief._belief(got), rtol=1e-5, atol=1e-6)
    got[3, 0] += 1  # changed after it was made: no longer a repeat of x
    assert repeat_origin(got) is None
    again = cql_impl.flatten_left_recursively(cql_impl.expand_and_repeat_recursively(x, 3), dim=1)
    x[0, 0] += 1  # the source changed since: the copy no longer repeats it
    assert repeat_origin(again) is None

    batches = [data.sample_transition_batch(64) for _ in range(3)]
    weights, scans = [], []
    scan = encoders._repeat_count
    monkeypatch.setattr(encoders, "_repeat_count", lambda x: scans.append(len(x)) or scan(x))
    for tracked in (True, False):
        if not tracked:
            assert not scans  # every repeated batch of CQL's update was known
            monkeypatch.setattr(encoders, "repeat_origin", lambda x: None)
        d3rlpy.seed(0)
        cfg = OfflineConfig(algo="cql", shared_encoder=True)
        learner = make_algorithm(cfg, layout)
        learner.build_with_dataset(data)
        tie_encoders(learner, cfg)
        for batch in batches:
            learner.update(batch)
        weights.append({n: p.detach().clone() for n, p in learner.impl.modules.q_funcs.named_parameters()})
    assert scans  # the scan found them instead
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_a_shared_belief_cache_gives_the_gradient_of_separate_passes():
    """The cache hands both critics of an update one belief (one graph): the critics' update moves
    the weights as two passes through the same weights do."""
    import d3rlpy

    from d3rlpy_adapters.offline import OfflineConfig, make_algorithm, tie_encoders

    layout, data = window_dataset()
    batch = data.sample_transition_batch(32)
    weights = []
    for cache in (True, False):
        d3rlpy.seed(0)
        cfg = OfflineConfig(algo="td3bc", shared_encoder=True)
        learner = make_algorithm(cfg, layout)
        learner.build_with_dataset(data)
        tie_encoders(learner, cfg)
        if not cache:
            for q in (*learner.impl.modules.q_funcs, *learner.impl.modules.targ_q_funcs):
                q.encoder.current_belief()._cache = None
        learner._grad_step = 1  # no actor update: the critics' update alone
        learner.update(batch)
        weights.append({n: p.detach().clone() for n, p in learner.impl.modules.q_funcs.named_parameters()})
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=1e-5, atol=1e-6, msg=name)


def test_an_offline_run_written_before_shared_encoder_existed_reads_as_one_encoder_per_network(work, export_file,
                                                                                               tiny_gems):
    """Runs written before the setting existed trained one encoder per network: their config.json,
    without the key, reads as ``shared_encoder=false`` (not today's default), so their weights load,
    they resume as themselves, and tables keep them apart from shared runs."""
    from d3rlpy_adapters.offline import OfflineConfig, load_offline_policy, read_offline_config, train_offline
    from slaterec_lab.results import read_run

    assert OfflineConfig().shared_encoder  # today's default
    cfg = OfflineConfig(steps=2, eval_every=2, val_users=2, test_users=2, batch_size=16, feature_size=16, seed=0,
                        shared_encoder=False)
    out = work / "before_shared_encoder"
    train_offline("td3bc", export_file, tiny_gems, out, cfg, progress=False, device="cpu")
    config = json.loads((out / "config.json").read_text())
    del config["shared_encoder"]
    (out / "config.json").write_text(json.dumps(config))
    assert read_offline_config(out).shared_encoder is False
    assert len({id(m) for m in load_offline_policy(out).algo.impl.modules.q_funcs.modules()
                if type(m).__name__ == "_Belief"}) == 2  # each critic its own belief: the saved weights fit
    assert read_run(out).config["shared_encoder"] is False


def test_offline_encoders_start_from_a_chosen_item_table_and_can_keep_it(work, export_file, tiny_gems):
    from d3rlpy_adapters.offline import (OfflineConfig, history_beliefs, load_offline_policy, set_encoder_items,
                                         train_offline)
    from gym_slaterec.rollouts import make_vector_env

    ideal = make_vector_env(ENV, 1).simulator.items
    cfg = OfflineConfig(steps=3, eval_every=3, val_users=2, test_users=2, batch_size=16, feature_size=16, seed=0,
                        encoder_items="ideal", encoder_freeze=True)
    train_offline("td3bc", export_file, tiny_gems, work / "run_ideal_frozen", cfg, progress=False)
    agent = load_offline_policy(work / "run_ideal_frozen")
    beliefs = history_beliefs(agent.algo)
    assert len(beliefs) == 2  # the shared belief and its target copy (one per network without sharing)
    for b in beliefs:  # target networks: their Polyak average of equal tables rounds by 1 ulp
        assert np.allclose(b.items.weight.detach().numpy(), ideal, rtol=0, atol=1e-6)
    from slaterec_lab.drift import compare, item_table

    table, where = item_table(str(work / "run_ideal_frozen"))  # slaterec drift reads offline runs too
    assert "offline run" in where and compare(table, ideal)["mean_cosine"] == pytest.approx(1.0)
    # unfrozen, the GeMS's table is where training starts (then it moves)
    cfg = dataclasses.replace(cfg, encoder_items="gems", encoder_freeze=False)
    train_offline("td3bc", export_file, tiny_gems, work / "run_gems_init", cfg, progress=False)
    table = GeMSCheckpoint.load(tiny_gems).item_embedding_table()
    moved = [b.items.weight.detach().numpy() for b in history_beliefs(load_offline_policy(work / "run_gems_init").algo)]
    assert all(np.abs(m - table).max() < 0.1 for m in moved) and any(not np.array_equal(m, table) for m in moved)
    with pytest.raises(ValueError, match="encoder_freeze=true with encoder_items=scratch"):
        OfflineConfig(encoder_freeze=True).validate()
    with pytest.raises(ValueError, match="encoder_items must be scratch, gems, ideal or mf:FILE"):
        OfflineConfig(encoder_items="random").validate()
    with pytest.raises(ValueError, match="has 20 dimensions per item, but item_dim is 8"):
        train_offline("td3bc", export_file, tiny_gems, work / "run_bad_dim",
                      dataclasses.replace(cfg, item_dim=8), progress=False)
    assert not (work / "run_bad_dim").exists()
    with pytest.raises(ValueError, match="item table of shape"):
        set_encoder_items(agent.algo, np.zeros((5, 20), np.float32), False)


def test_cli_collect_export_train(work, tiny_gems, capsys):
    from gym_slaterec.cli import main

    data, h5, run = work / "cli_data", work / "cli.h5", work / "cli_run"
    assert main(["collect", ENV, "--policy", "oracle", "--episodes", "3", "--seed", "1", "--out", str(data)]) == 0
    assert main(["export", str(data), "--gems", str(tiny_gems), "--out", str(h5), "--window", "2"]) == 0
    assert main(["train-offline", "bc", str(h5), "--gems", str(tiny_gems), "--steps", "2", "--eval-every", "2",
                 "--val-users", "2", "--test-users", "2", "--out", str(run)]) == 0
    assert json.loads((run / "results.json").read_text())["test"]["episodes"] == 2
    capsys.readouterr()
    # an offline run directory evaluates like an online one, at any saved checkpoint
    for checkpoint in ("best", "last"):
        assert main(["evaluate", ENV, "--policy", str(run), "--episodes", "3", "--checkpoint", checkpoint,
                     "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["method"] == "offline-bc" and out["checkpoint"] == checkpoint and out["episodes"] == 3
    assert main(["evaluate", ENV, "--policy", str(run), "--checkpoint", "ep7"]) == 2
    assert "ep7" in capsys.readouterr().err
    assert main(["export", str(data), "--gems", str(tiny_gems), "--out", str(h5)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["collect", ENV, "--policy", "nobody", "--episodes", "3", "--out", str(work / "nope")]) == 2


def test_offline_config_overrides_are_checked():
    from d3rlpy_adapters.offline import OfflineConfig

    cfg = OfflineConfig().with_overrides({"td3bc_alpha": 1.0, "steps": 7})
    assert cfg.td3bc_alpha == 1.0 and cfg.steps == 7 and OfflineConfig().td3bc_alpha == 10.0
    with pytest.raises(ValueError, match="unknown offline setting.*alpha"):
        OfflineConfig().with_overrides({"alpha": 1.0})
    with pytest.raises(ValueError, match="td3bc_alpha"):
        OfflineConfig().with_overrides({"td3bc_alpha": -1.0})
    with pytest.raises(ValueError, match="iql_expectile"):
        OfflineConfig().with_overrides({"iql_expectile": 1.5})


# ------------------------------------------- expectations derived independently
def test_export_observations_of_a_hand_made_three_turn_episode(work):
    """Window 2 over a three-turn episode of 2-item slates, written out by hand."""
    slates = np.array([[[0, 1], [2, 3], [4, 5], [6, 7]]])  # reset, turns 1-3
    clicks = np.array([[[1, 0], [0, 1], [1, 1], [0, 0]]])
    obs = episode_windows(slates, clicks, 2, 10)
    expected = np.array([[
        # before turn 1: only the reset observation, then a padding row
        [0, 1, 1, 0, 1, 0, 0, 0, 0, 0],
        # before turn 2: reset, turn 1
        [0, 1, 1, 0, 1, 2, 3, 0, 1, 1],
        # before turn 3: turns 1, 2 (the reset dropped out); never turn 3 itself
        [2, 3, 0, 1, 1, 4, 5, 1, 1, 1],
    ]])
    np.testing.assert_array_equal(obs, expected)


def test_export_refuses_gems_of_another_item_matrix_with_the_same_env_id(work, reference_datasets, tiny_gems):
    ds = reference_datasets["epsilon-greedy"]
    other = _resaved_gems(tiny_gems, work / "gems_other_items.pt", item_embeddings_fingerprint="0" * 64)
    assert GeMSCheckpoint.load(other, allow_env_mismatch=True).env_id == ds.env_id
    with pytest.raises(ProvenanceMismatchError, match="item embeddings 000000000000"):
        export_d3rlpy(ds, other, work / "other_items.h5")
    assert not (work / "other_items.h5").exists()


@pytest.mark.parametrize("algo, actor_key, critic_key", [
    ("td3bc", "actor_learning_rate", "critic_learning_rate"),
    ("cql", "actor_learning_rate", "critic_learning_rate"),
    ("iql", "actor_learning_rate", "critic_learning_rate"),
    ("bcq", "actor_learning_rate", "critic_learning_rate"),
    ("bc", "learning_rate", None),
])
def test_offline_settings_reach_the_d3rlpy_algorithm(algo, actor_key, critic_key):
    from d3rlpy_adapters.offline import OfflineConfig, make_algorithm

    cfg = OfflineConfig(algo=algo, actor_lr=1.5e-4, critic_lr=7e-4, gamma=0.7, batch_size=33, td3bc_alpha=4.0)
    algo_cfg = make_algorithm(cfg, WindowLayout(3, 10, 1000)).config
    assert getattr(algo_cfg, actor_key) == 1.5e-4
    if critic_key is not None:
        assert getattr(algo_cfg, critic_key) == 7e-4 and algo_cfg.gamma == 0.7
    assert algo_cfg.batch_size == 33
    if algo == "td3bc":
        assert algo_cfg.alpha == 4.0


@pytest.mark.parametrize("shared", [False, True])
def test_offline_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_one(work, export_file, tiny_gems,
                                                                                  monkeypatch, shared):
    from d3rlpy_adapters import offline
    from d3rlpy_adapters.offline import OfflineConfig, train_offline

    cfg = OfflineConfig(steps=12, eval_every=3, checkpoint_every=6, val_users=3, test_users=4, batch_size=16,
                        feature_size=32, seed=3, shared_encoder=shared)
    work = work / f"shared_{shared}"  # on the CPU: CUDA's scatter-adds sum in no fixed order
    whole = train_offline("td3bc", export_file, tiny_gems, work / "resume_whole", cfg, progress=False, device="cpu")

    real = offline.evaluate_offline_agent
    calls = {"n": 0}

    def interrupted_at_the_third_validation(*args, **kwargs):  # step 9: after the checkpoint at step 6
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = work / "resume_cut"
    monkeypatch.setattr(offline, "evaluate_offline_agent", interrupted_at_the_third_validation)
    with pytest.raises(KeyboardInterrupt):
        train_offline("td3bc", export_file, tiny_gems, out, cfg, progress=False, device="cpu")
    monkeypatch.setattr(offline, "evaluate_offline_agent", real)
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "interrupted" and state["step"] == 6 and not (out / "results.json").exists()
    assert [v["step"] for v in state["validation"]] == [3, 6]
    # another configuration is refused, not mixed into the unfinished run
    with pytest.raises(ArtifactExistsError, match="another configuration"):
        train_offline("td3bc", export_file, tiny_gems, out, dataclasses.replace(cfg, steps=20), progress=False,
                      device="cpu")
    resumed = train_offline("td3bc", export_file, tiny_gems, out, cfg, progress=False, device="cpu")
    assert resumed["resumed"] and not whole["resumed"]
    assert [v["step"] for v in resumed["validation"]] == [3, 6, 9, 12]
    assert [v["mean"] for v in resumed["validation"]] == [v["mean"] for v in whole["validation"]]
    assert resumed["test"]["mean"] == whole["test"]["mean"] and resumed["best"] == whole["best"]
    assert json.loads((out / "state.json").read_text())["status"] == "complete"
    from d3rlpy_adapters.offline import load_offline_policy
    from gym_slaterec.run_dirs import list_checkpoints as offline_checkpoints

    assert offline_checkpoints(out) == ["best", "last", "step0000006", "step0000012"]
    assert load_offline_policy(out, checkpoint="step6") is not None
    if shared:  # the policy reads the critics' belief, and slaterec drift reads that table
        from d3rlpy_adapters.offline import history_beliefs, policy_belief
        from slaterec_lab.drift import item_table

        algo = load_offline_policy(out).algo
        assert len(history_beliefs(algo)) == 2 and policy_belief(algo) is history_beliefs(algo)[0]
        assert policy_belief(algo) is algo.impl.modules.q_funcs[0].encoder.current_belief()
        assert np.array_equal(item_table(str(out))[0], policy_belief(algo).items.weight.detach().numpy())
    with pytest.raises(FileNotFoundError, match=r"has no checkpoint 'step0000007' \(available: best, last, step0000006"):
        load_offline_policy(out, checkpoint="step7")
    with pytest.raises(ArtifactExistsError):  # a finished run is not trained again
        train_offline("td3bc", export_file, tiny_gems, out, cfg, progress=False, device="cpu")
