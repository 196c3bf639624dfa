"""Experiment trackers as plug-ins, in their offline / local modes (nothing leaves the machine)."""

from __future__ import annotations

import json
import re

import pytest

from gym_slaterec.cli import main

ENV = "FocusedTopDown-v0"
TINY = ["--no-progress", "--episodes", "8", "--preset", "window", "--seed", "3",
        "--set", "env_kwargs.episode_length=10", "--set", "n_envs=2", "--set", "val_every=2",
        "--set", "checkpoint_every=4", "--set", "val_users=4", "--set", "test_users=4",
        "--set", "agent.warmup_episodes=2", "--set", "agent.batch_transitions=8", "--set", "agent.net_arch=[8]"]


@pytest.fixture
def offline_modes(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("SWANLAB_MODE", "offline")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SWANLAB_LOG_DIR", raising=False)
    monkeypatch.setenv("SLATEREC_PROJECT", "slaterec-tests")
    for name in ("WANDB_API_KEY", "SWANLAB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_every_tracker_gets_tensorboards_scalars_and_the_runs_identity(offline_modes, capsys):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    pytest.importorskip("swanlab")
    import mlflow

    out = offline_modes / "runs" / "tracked_run"
    args = ["train", "sac-topk-ideal", ENV, "--out", str(out), "--tag", "trk", "--notes", "tracker check",
            "--tracker", "tensorboard", "--tracker", "mlflow", "--tracker", "wandb", "--tracker", "swanlab", *TINY]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "swanlab:" not in printed.out and "mlflow" not in printed.err  # their notices only with --verbose
    tb = tensorboard_scalars(out / "tb")
    assert "validation/return" in tb and "train/critic_loss" in tb and "train/ent_coef" in tb

    # MLflow (a local file store beside the run): the same scalars at the same steps, the config as parameters
    client = mlflow.tracking.MlflowClient(tracking_uri=(out.parent / "mlruns").as_uri())
    exp = client.get_experiment_by_name("slaterec-tests")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "tracked_run"
    assert run.data.tags["tag.trk"] == "1" and run.data.tags["tag.sac-topk-ideal"] == "1"
    assert run.data.tags["mlflow.note.content"] == "tracker check"
    assert run.data.params["config.method"] == "sac-topk-ideal" and run.data.params["config.seed"] == "3"
    assert run.data.params["provenance.kind"] == "sb3_run"
    for tag, points in tb.items():
        history = client.get_metric_history(run.info.run_id, tag)
        got = sorted((m.step, m.value) for m in history)
        assert [s for s, _ in got] == [s for s, _ in sorted(points)], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in sorted(points)], rel=1e-6), tag

    # W&B offline run and SwanLab offline run, both inside the run directory
    (wandb_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    raw = wandb_file.read_bytes()
    for text in (b"validation/return", b"train/critic_loss", b"tracked_run", b"tracker check", b"slaterec-tests"):
        assert text in raw, text
    (swan_run,) = (out / "swanlog").glob("run-*")
    assert "sac-topk-ideal" in (swan_run / "files" / "config.yaml").read_text()
    assert b"validation/return" in next(swan_run.glob("*.swanlab")).read_bytes()


def test_tensorboard_is_left_out_when_not_chosen_and_gems_mf_take_trackers(offline_modes, tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("swanlab")
    import mlflow

    data = tmp_path / "logged"
    assert main(["generate", ENV, "--episodes", "40", "--out", str(data), "--no-progress"]) == 0
    gems = tmp_path / "art" / "g.pt"
    assert main(["pretrain-gems", str(data), "--out", str(gems), "--max-steps", "4", "--eval-every", "2",
                 "--latent-dim", "4", "--val-max-samples", "200", "--tracker", "mlflow", "--tracker", "swanlab",
                 "--no-progress"]) == 0
    assert not any(tmp_path.rglob("events.out.tfevents*"))  # no TensorBoard asked for, none written
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("slaterec-tests").experiment_id])
    assert run.info.run_name == "g" and run.data.params["gems.latent_dim"] == "4"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [2, 4]
    (swan_run,) = (tmp_path / "art" / "swanlog").glob("run-*")  # no --notes: no description, still recorded
    assert b"val/loss" in next(swan_run.glob("*.swanlab")).read_bytes()


def test_a_tracker_that_is_not_installed_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    out = tmp_path / "run"
    assert main(["train", "random", ENV, "--out", str(out), "--tracker", "wandb", "--no-progress"]) == 2
    assert "tracker 'wandb' is chosen but wandb is not installed: pip install 'slaterec[wandb]'" in capsys.readouterr().err
    assert not out.exists()
    assert main(["train", "random", ENV, "--out", str(out), "--tracker", "comet"]) == 2
    assert "invalid choice: 'comet'" in capsys.readouterr().err


def test_grids_name_their_trackers_for_every_training_trial(tmp_path, monkeypatch):
    from gym_slaterec import trackers
    from slaterec_lab.grid import GridError, expand

    monkeypatch.setattr(trackers, "EXTRAS", {})  # the trials' arguments, whether or not mlflow is installed here

    grid = {"environments": [ENV], "seeds": [0], "trackers": ["tensorboard", "mlflow"],
            "logged": {"episodes": 20}, "gems": {"max_steps": 2},
            "methods": {"sac-gems": {"episodes": 2}, "random": {}}}
    trials = {t.id: t for t in expand(grid, tmp_path)}
    for t in trials.values():
        args = " ".join(t.argv)
        if t.argv[0] in ("train", "pretrain-gems"):
            assert "--tracker tensorboard --tracker mlflow" in args, args
        else:
            assert "--tracker" not in args  # logged-data generation trains nothing
    with pytest.raises(GridError, match="trackers: unknown tracker 'tensorbored'"):
        expand({**grid, "trackers": ["tensorbored"]}, tmp_path)
    assert json.dumps(sorted(trials))  # expandable, JSON-clean ids


def test_a_sweeps_trials_report_to_the_grids_project(offline_modes, monkeypatch):
    pytest.importorskip("mlflow")
    import mlflow

    from slaterec_lab.sweep import run_sweep

    monkeypatch.delenv("SLATEREC_PROJECT", raising=False)
    grid = {"name": "tracked_grid", "environments": [ENV], "seeds": [0], "trackers": ["mlflow"],
            "set": {"env_kwargs.episode_length": 10, "n_envs": 2, "val_every": 2, "val_users": 2, "test_users": 2,
                    "agent.warmup_episodes": 1, "agent.batch_transitions": 4, "agent.net_arch": [8]},
            "methods": {"sac-topk-ideal": {"episodes": 4, "preset": "window"}}}
    sweep_dir = offline_modes / "sweep"
    state = run_sweep(grid, offline_modes / "g.yaml", sweep_dir, executor="inline", progress=False)
    assert state.counts()["done"] == 1
    client = mlflow.tracking.MlflowClient(tracking_uri=(sweep_dir / "runs" / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("tracked_grid").experiment_id])
    assert run.info.run_name == "sac-topk-ideal_FocusedTopDown_s0"
    assert client.get_metric_history(run.info.run_id, "validation/return")


def test_a_resumed_run_continues_its_tracker_runs(offline_modes, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    import mlflow

    from sb3_slate.runs import Run

    out = offline_modes / "runs" / "resumed"
    args = ["train", "sac-topk-ideal", ENV, "--out", str(out), "--tracker", "mlflow", "--tracker", "wandb", *TINY]
    original = Run.save_checkpoint

    def stop_at_episode_4(self, name):
        original(self, name)
        if name == "last" and self.state["episodes"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(Run, "save_checkpoint", stop_at_episode_4)
    assert main(args) == 130
    monkeypatch.setattr(Run, "save_checkpoint", original)
    assert main(args) == 0  # the same command resumes
    client = mlflow.tracking.MlflowClient(tracking_uri=(out.parent / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("slaterec-tests").experiment_id])
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "validation/return"))
    # both sessions' validations in one run: turn 20 from the first, 60 and 80 from the resumed one (the
    # interruption at episode 4 came before that validation's scalars were written, to any tracker)
    assert steps == [20, 60, 80]
    # offline-run-DATE_TIME-ID, with "-1" appended when both sessions started within one second
    ids = {re.match(r"offline-run-\d{8}_\d{6}-([0-9a-z]+)", p.name).group(1) for p in (out / "wandb").glob("offline-run-*")}
    assert len(list((out / "wandb").glob("offline-run-*"))) == 2 and len(ids) == 1
