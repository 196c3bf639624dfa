"""Every method end to end on a small env, run directories, resume, refusals, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gym_slaterec.progress import status_threads
from gym_slaterec.provenance import ArtifactExistsError, ProvenanceMismatchError
from gym_slaterec.rollouts import make_vector_env
from sb3_slate.methods import METHODS, SAC_METHODS, parse_set, resolve_config
from sb3_slate.runs import Run, evaluate_run_dir, load_agent, train_run

ENV = "SlateRec/FocusedTopDown-v0"
SMALL = {"episode_length": 10}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A tiny logged dataset, GeMS and MF for FocusedTopDown (short episodes)."""
    import torch

    from gym_slaterec.gems import GeMSConfig, train_gems
    from gym_slaterec.mf import train_mf
    from gym_slaterec.rollouts import generate_logged_data

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("artifacts")
    ds = generate_logged_data(ENV, d / "logged", episodes=60, seed=0, progress=False, env_kwargs=SMALL)
    gems = train_gems(ds, GeMSConfig(epochs=1, latent_dim=8), out=d / "gems.pt", progress=False, max_steps=5)
    mf = train_mf(ds, out=d / "mf.pt", epochs=1, progress=False, max_seconds=5)
    return {"gems": str(gems.path), "mf": str(mf.path), "dir": d}


SMALL_SAC = {"warmup_episodes": 4, "batch_transitions": 16, "net_arch": [32]}
#: the sb3-contrib methods' settings for 8 episodes of 10 turns
SMALL_AGENT = {"recurrentppo-gems": {"rollout_turns": 10, "batch_transitions": 20, "net_arch": [32]},
               "recurrentppo-topk-ideal": {"rollout_turns": 10, "batch_transitions": 20, "net_arch": [32]},
               "tqc-gems": SMALL_SAC, "crossq-gems": SMALL_SAC}


def small_config(method: str, artifacts: dict, **extra) -> "RunConfig":  # noqa: F821
    over = {
        "episodes": 8, "n_envs": 4, "window": 3, "val_every": 4, "val_users": 8, "test_users": 12,
        "checkpoint_every": 4, "env_kwargs": dict(SMALL), "gems": artifacts["gems"], "mf": artifacts["mf"],
        "agent": SMALL_AGENT.get(method, SMALL_SAC if method in SAC_METHODS else {}),
    }
    if method in ("random", "oracle"):
        over["episodes"] = 1
    over.update(extra)
    # the transition-replay regime for every SAC method (their default is the paper's episode replay)
    return resolve_config(method, ENV, over, preset="window" if method in SAC_METHODS else None)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_end_to_end(method, artifacts, tmp_path):
    cfg = small_config(method, artifacts)
    out = tmp_path / "run"
    results = train_run(cfg, out, progress=False)

    for name in ("config.json", "provenance.json", "state.json", "results.json"):
        assert (out / name).is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["method"] == method and saved["env_id"] == ENV
    test = saved["test"]
    assert test["episodes"] == 12 and len(test["ci95"]) == 2
    assert 0 <= test["mean"] <= 100 and test["ci95"][0] <= test["mean"] <= test["ci95"][1]
    assert set(test) >= {"clicks_per_turn", "boredom", "diversity", "coverage"}
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["env_id"] == ENV and prov["item_embeddings_fingerprint"]
    if method == "sac-gems":
        assert prov["inputs"]["gems"] == load_agent(out).gems_fingerprint is not None
    agent = load_agent(out, "best")
    assert agent.method == method
    assert "best" in agent.list_checkpoints()
    if method not in ("random", "oracle"):
        # learning happened over the whole budget, with validations and periodic checkpoints along the way
        assert saved["budget"] == {"episodes": 8, "turns": 80}
        assert [v["episodes"] for v in saved["validation"]] == [0, 4, 8]
        assert {"last", "ep0000004", "ep0000008"} <= set(agent.list_checkpoints())
        assert (out / "tb").is_dir() and any((out / "tb").glob("events.out.tfevents*"))
    # the agent acts on a fresh env wrapped as in training, in its action space
    env = agent.wrap_env(make_vector_env(ENV, 3, **SMALL))
    obs, _ = env.reset(seed=123)
    action, _ = agent.predict(obs, deterministic=True)
    assert env.action_space.contains(np.asarray(action, dtype=env.action_space.dtype))
    env.step(action)
    # evaluate_run_dir on the test users reproduces the run's test return exactly
    from sb3_slate.protocol import TEST_SEED

    ev = evaluate_run_dir(out, ENV, 12, TEST_SEED)
    assert ev["mean"] == pytest.approx(test["mean"]) and ev["episodes"] == 12


def test_distinct_learning_rates_survive_save_and_load(artifacts, tmp_path):
    from sb3_slate.agents import SlateSAC
    from sb3_slate.runs import load_agent

    cfg = small_config("sac-topk-ideal", artifacts, episodes=8)
    train_run(cfg, tmp_path / "run", progress=False)
    model = load_agent(tmp_path / "run", "last").model  # rebuilt from config.json, weights read weights-only
    assert isinstance(model, SlateSAC)
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(3e-3)
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert model.gamma == 0.8 and model.tau == 0.002
    assert model.policy.actor.features_extractor is not model.policy.critic.features_extractor


def interrupt_after_first_training_validation(cfg, out: Path, monkeypatch, at: int = 4) -> None:
    """Train ``cfg`` into ``out`` and interrupt it (KeyboardInterrupt) once its checkpoint at episode ``at`` is written."""
    original = Run.save_checkpoint

    def crash(self, name):
        original(self, name)
        if name == "last" and self.state["episodes"] == at:
            raise KeyboardInterrupt

    monkeypatch.setattr(Run, "save_checkpoint", crash)
    before = set(status_threads())
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, out, progress=False)
    monkeypatch.setattr(Run, "save_checkpoint", original)
    # the interrupted training's status-line timer stopped with it (it printed into later output)
    assert not set(status_threads()) - before


def test_interrupted_run_resumes_from_last_checkpoint(artifacts, tmp_path, monkeypatch):
    cfg = small_config("sac-gems", artifacts, episodes=12, checkpoint_every=0)
    out = tmp_path / "run"
    interrupt_after_first_training_validation(cfg, out, monkeypatch)
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "interrupted" and state["episodes"] == 4  # stopped cleanly at a resume point
    assert not (out / "results.json").exists()

    # another configuration is refused; the same one resumes
    with pytest.raises(ValueError, match="another configuration"):
        train_run(small_config("sac-gems", artifacts, episodes=16, checkpoint_every=0), out, progress=False)
    results = train_run(cfg, out, progress=False)
    assert results["budget"]["episodes"] == 12 and results["budget"]["turns"] == 120
    assert [v["episodes"] for v in results["validation"]] == [0, 4, 8, 12]
    # each stretch of the run says where it ran, from which episode
    assert [x["episodes"] for x in results["sessions"]] == [0, 4] and all(x["machine"] for x in results["sessions"])
    assert json.loads((out / "state.json").read_text())["resumed"] == 1
    # a finished run is never overwritten
    with pytest.raises(ArtifactExistsError, match="finished"):
        train_run(cfg, out, progress=False)


def test_a_resumed_run_keeps_the_training_scalars_of_its_earlier_session(artifacts, tmp_path, monkeypatch):
    """SB3's own CSV log empties progress.csv when a resumed run opens it; the run's keeps the rows."""
    import csv

    cfg = small_config("sac-gems", artifacts, episodes=12, checkpoint_every=0)
    out = tmp_path / "run"
    interrupt_after_first_training_validation(cfg, out, monkeypatch, at=8)

    def logged_episodes() -> list[int]:
        rows = csv.DictReader((out / "tb" / "progress.csv").open())
        return [int(r["train_episode/episodes"]) for r in rows if r.get("train_episode/episodes")]

    before = logged_episodes()
    assert 4 in before
    train_run(cfg, out, progress=False)
    after = logged_episodes()
    assert after[:len(before)] == before and after[-1] == 12


def test_resume_may_change_the_wall_time_limit(artifacts, tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupt_after_first_training_validation(small_config("sac-gems", artifacts, episodes=12, checkpoint_every=0), out,
                                              monkeypatch)
    # a limit already spent: the resumed run trains no further, then tests its best checkpoint
    spent = small_config("sac-gems", artifacts, episodes=12, checkpoint_every=0, max_wall_s=1e-3)
    results = train_run(spent, out, progress=False)
    assert results["budget"]["episodes"] == 4 and results["test"]["mean"] > 0
    assert json.loads((out / "config.json").read_text())["max_wall_s"] == 1e-3
    state = json.loads((out / "state.json").read_text())
    [change] = state["max_wall_s_changes"]
    assert (change["episodes"], change["from"], change["to"]) == (4, None, 1e-3) and change["wall_s"] > 0
    assert state["stopped_by_wall_budget"] is True
    first = json.loads((out / "results.json").read_text())
    from slaterec_lab.results import run_status

    status, detail = run_status(out)
    assert status == "complete" and "wall-time limit at 4 of 12 episodes" in detail and "max_wall_s" in detail

    # the finished, wall-limited run continues to its episode budget under a larger limit ...
    with pytest.raises(ValueError, match="larger limit"):  # ... only under a larger one
        train_run(spent, out, progress=False)
    assert json.loads((out / "results.json").read_text()) == first  # a refusal changes nothing
    longer = small_config("sac-gems", artifacts, episodes=12, checkpoint_every=0, max_wall_s=1e6)
    results = train_run(longer, out, progress=False)
    assert results["budget"]["episodes"] == 12
    assert [v["episodes"] for v in results["validation"]] == [0, 4, 8, 12]  # one curve across the stop
    kept = out / "wall_limited" / "ep0000004"
    assert json.loads((kept / "results.json").read_text()) == first and (kept / "summary.json").is_file()
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "complete" and "stopped_by_wall_budget" not in state
    assert state["continued"][0]["episodes"] == 4
    assert run_status(out) == ("complete", "")
    assert json.loads((out / "config.json").read_text())["max_wall_s"] == 1e6
    with pytest.raises(ArtifactExistsError, match="finished run"):  # a run that reached its budget is never reopened
        train_run(small_config("sac-gems", artifacts, episodes=12, checkpoint_every=0, max_wall_s=2e6), out,
                  progress=False)


def test_refuses_gems_from_another_environment(artifacts, tmp_path):
    cfg = resolve_config("sac-gems", "SlateRec/FocusedMixed-v0", {"gems": artifacts["gems"], "env_kwargs": SMALL})
    with pytest.raises(ProvenanceMismatchError, match="FocusedTopDown"):
        train_run(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # nothing written
    cfg = resolve_config("sac-topk-mf", "SlateRec/DiffuseTopDown-v0", {"mf": artifacts["mf"], "env_kwargs": SMALL})
    with pytest.raises(ProvenanceMismatchError):
        train_run(cfg, tmp_path / "run2", progress=False)


def test_default_regimes_are_the_measured_winners(artifacts):
    paper = resolve_config("sac-gems", ENV, {"gems": artifacts["gems"]})
    assert paper.replay == "episode" and paper.episodes == 100_000 and paper.n_envs == 100
    assert paper.agent.batch_episodes == 20 and paper.agent.warmup_episodes == 2000
    window = resolve_config("sac-gems", ENV, {"gems": artifacts["gems"]}, preset="window")
    assert window.replay == "window" and window.window == 10 and window.agent.batch_transitions == 64
    # overrides still win over the default regime
    assert resolve_config("sac-gems", ENV, {"gems": artifacts["gems"], "episodes": 300}).episodes == 300
    for method in ("sac-topk-ideal", "sac-topk-mf"):
        cfg = resolve_config(method, ENV, {"mf": artifacts["mf"]})
        assert cfg.replay == "episode" and cfg.episodes == 100_000 and cfg.agent.batch_episodes == 20
        assert resolve_config(method, ENV, {"mf": artifacts["mf"]}, preset="window").replay == "window"
    assert resolve_config("sac-wknn", ENV, {"mf": artifacts["mf"]}).replay == "episode"
    assert resolve_config("sac-wknn", ENV, {"mf": artifacts["mf"]}, preset="window").replay == "window"


def test_bad_configuration_is_refused(artifacts, tmp_path):
    with pytest.raises(ValueError, match="needs a GeMS"):
        resolve_config("sac-gems", ENV)
    with pytest.raises(ValueError, match="unknown method"):
        resolve_config("dqn", ENV)
    with pytest.raises(ValueError, match="unknown configuration keys: windw"):
        resolve_config("random", ENV, {"windw": 3})
    with pytest.raises(ValueError, match="window must be a positive integer"):
        resolve_config("random", ENV, {"window": 0})
    with pytest.raises(ValueError, match="key=value"):
        parse_set(["agent.gamma"])
    assert parse_set(["agent.gamma=0.9", "window=20", "agent.net_arch=[64, 64]"]) == {
        "agent": {"gamma": 0.9, "net_arch": [64, 64]}, "window": 20}
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "data.txt").write_text("keep me")
    with pytest.raises(ArtifactExistsError, match="not a resumable run"):
        train_run(small_config("random", artifacts), other, progress=False)
    assert (other / "data.txt").read_text() == "keep me"


def test_cli_train_and_evaluate_run_dir(artifacts, tmp_path, capsys):
    from gym_slaterec.cli import main

    out = tmp_path / "oracle_run"
    args = ["train", "oracle", "FocusedTopDown-v0", "--seed", "1", "--out", str(out), "--no-progress",
            "--set", "env_kwargs.episode_length=10", "--set", "val_users=5", "--set", "test_users=7", "--json"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["method"] == "oracle" and printed["test"]["episodes"] == 7
    assert main(args) == 2  # the finished run directory is not overwritten
    assert "never overwritten" in capsys.readouterr().err
    assert main(["evaluate", "FocusedTopDown-v0", "--policy", str(out), "--episodes", "6", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["episodes"] == 6 and ev["policy"] == str(out)
    assert main(["train", "sac-gems", "FocusedMixed-v0", "--out", str(tmp_path / "x"), "--gems", artifacts["gems"],
                 "--no-progress"]) == 2
    assert "FocusedTopDown" in capsys.readouterr().err


def test_default_run_directory_names_tag_and_notes(tmp_path, capsys, monkeypatch):
    from gym_slaterec.cli import main

    monkeypatch.setenv("SLATEREC_WORKSPACE", str(tmp_path / "ws"))
    args = ["train", "random", "focused_topdown", "--tag", "baseline", "--notes", "first try", "--no-progress",
            "--set", "val_users=3", "--set", "test_users=3"]
    assert main(args) == 0
    (run,) = (tmp_path / "ws").iterdir()
    assert run.name.startswith("random_FocusedTopDown_s0_baseline_") and str(run) in capsys.readouterr().out
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["tag"], cfg["notes"]) == ("baseline", "first try")
    assert main(args[:3] + ["--tag", "no/slashes", "--workspace", str(tmp_path / "other")]) == 2
    assert "tag must be" in capsys.readouterr().err and not (tmp_path / "other").exists()
