"""Divergence and nonsense named: a diverged training stops with "training diverged at ...;
lower the learning rate" and its run is marked failed; numbers in scientific notation are
numbers; sizes are checked against free disk and memory before anything is written or
allocated; options that do not apply are refused; booleans are booleans; edited datasets
are caught downstream; reference file names are recognised by prefix."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

import gym_slaterec  # noqa: F401
from gym_slaterec.cli import main
from gym_slaterec.core.config import env_of_reference_file
from gym_slaterec.gems import GeMSConfig, train_gems
from gym_slaterec.rollouts import generate_logged_data

ENV = "FocusedTopDown-v0"
SHORT = ["--set", "env_kwargs.episode_length=10", "--set", "val_users=4", "--set", "test_users=4"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("nonsense")
    logged = generate_logged_data("SlateRec/" + ENV, d / "logged", episodes=40, seed=0, progress=False,
                                  env_kwargs={"episode_length": 10}).path
    gems = train_gems(logged, GeMSConfig(epochs=1, latent_dim=8, encoder_hidden=(32,), decoder_hidden=(32,),
                                         val_max_samples=100), out=d / "gems.pt", progress=False, max_steps=3).path
    assert main(["export", str(logged), "--gems", str(gems), "--out", str(d / "data.h5"), "--window", "3"]) == 0
    return {"dir": d, "logged": logged, "gems": gems, "h5": d / "data.h5"}


def cli(args: list, capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


# ------------------------------------------------------------------ divergence
@pytest.mark.parametrize("command", ["train-mf", "pretrain-gems"])
def test_diverged_embedding_trainings_stop_and_write_nothing(work, tmp_path, capsys, command):
    out = tmp_path / ("mf.npz" if command == "train-mf" else "gems.pt")
    extra = ["--lr", "1e30", "--epochs", "3"] if command == "train-mf" else ["--lr", "1e20", "--max-steps", "30"]
    code, err = cli([command, work["logged"], "--out", out, "--no-progress", *extra], capsys)
    assert code == 2 and "training diverged at" in err and "lower the learning rate" in err, err
    assert not out.exists()


@pytest.mark.parametrize("preset", ["paper", "window"])
def test_a_diverged_agent_run_is_marked_failed(tmp_path, capsys, preset):
    out = tmp_path / "run"
    args = ["train", "sac-topk-ideal", ENV, "--preset", preset, "--out", out, "--episodes", "60", "--no-progress",
            *SHORT, "--set", "n_envs=4", "--set", "val_every=20", "--set", "agent.warmup_episodes=4",
            "--set", "agent.learning_rate=1e30", "--set", "agent.actor_learning_rate=1e30"]
    code, err = cli(args, capsys)
    assert code == 2 and "training diverged at" in err and "lower the learning rate" in err, err
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "failed" and "diverged" in state["error"]
    assert main(["runs", str(tmp_path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "failed"


def test_a_diverged_offline_run_is_marked_failed(work, tmp_path, capsys):
    out = tmp_path / "off"
    code, err = cli(["train-offline", "td3bc", work["h5"], "--gems", work["gems"], "--steps", "200", "--out", out,
                     "--eval-every", "200", "--val-users", "4", "--test-users", "4", "--no-progress",
                     "--set", "actor_lr=1e30", "--set", "critic_lr=1e30", "--set", "log_every=10"], capsys)
    assert code == 2 and "training diverged at step" in err, err
    assert json.loads((out / "state.json").read_text())["status"] == "failed"


# ------------------------------------------------------------------ numbers
def test_scientific_notation_is_a_number_everywhere(tmp_path, capsys):
    from sb3_slate.methods import parse_set, resolve_config
    from slaterec_lab.grid import expand

    assert parse_set(["agent.learning_rate=1e-3", "x=5E+4", "y=-2e5"]) == {
        "agent": {"learning_rate": 0.001}, "x": 50000.0, "y": -200000.0}
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("agent:\n  learning_rate: 3e-4\n")
    cfg = resolve_config("sac-topk-ideal", "SlateRec/" + ENV, config_file=cfg_file)
    assert cfg.agent.learning_rate == pytest.approx(3e-4)
    grid = {"environments": [ENV], "methods": {"sac-topk-ideal": {"set": {"agent.learning_rate": "1e-3"}}}}
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text(yaml.safe_dump(grid).replace("'1e-3'", "1e-3"))
    assert main(["sweep", str(grid_file), "--out", str(tmp_path / "sw"), "--dry-run"]) == 0
    assert "agent.learning_rate=0.001" in capsys.readouterr().out
    del expand


# ------------------------------------------------------------------ sizes
def test_a_dataset_larger_than_the_free_disk_is_refused_before_writing(tmp_path, capsys):
    code, err = cli(["generate", ENV, "--episodes", "1000000000", "--out", tmp_path / "huge", "--no-progress"], capsys)
    assert code == 2 and "GB" in err and "free" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command, option", [("pretrain-gems", "--latent-dim"), ("train-mf", "--dim")])
def test_a_model_larger_than_the_memory_is_refused_before_allocating(work, tmp_path, capsys, command, option):
    code, err = cli([command, work["logged"], "--out", tmp_path / "x", option, "1000000000", "--no-progress"], capsys)
    assert code == 2 and "of memory" in err and "GB" in err, err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ options that do not apply, booleans
@pytest.mark.parametrize("args, message", [
    (["evaluate", ENV, "--policy", "oracle", "--epsilon", "0.3", "--episodes", "2"], "--epsilon applies to"),
    (["collect", ENV, "--policy", "random", "--stochastic", "--episodes", "2", "--out", "{tmp}/c"], "--stochastic"),
    (["collect", ENV, "--policy", "oracle", "--epsilon", "0.2", "--episodes", "2", "--out", "{tmp}/c"], "--epsilon"),
    (["generate", ENV, "--policy", "random", "--epsilon", "0.2", "--episodes", "2", "--out", "{tmp}/g"], "--epsilon"),
    (["generate", ENV, "--epsilon", "1.5", "--episodes", "2", "--out", "{tmp}/g"], "[0, 1]"),
])
def test_options_that_do_not_apply_are_refused(tmp_path, capsys, args, message):
    code, err = cli([a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    assert code == 2 and message in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["no", "false", 0, 1, None])
def test_booleans_are_booleans(value):
    with pytest.raises(ValueError, match="analysis_info must be True or False"):
        gym.make("SlateRec/" + ENV, analysis_info=value)
    with pytest.raises(ValueError, match="analysis_info must be True or False"):
        gym.make_vec("SlateRec/" + ENV, num_envs=2, vectorization_mode="vector_entry_point", analysis_info=value)


# ------------------------------------------------------------------ content fingerprints
@pytest.mark.parametrize("command", ["train-mf", "pretrain-gems", "export"])
def test_a_dataset_edited_in_place_is_refused_downstream(work, tmp_path, capsys, command):
    edited = tmp_path / "edited"
    edited.mkdir()
    for f in work["logged"].iterdir():
        (edited / f.name).write_bytes(f.read_bytes())
    clicks = np.load(edited / "clicks.npy", mmap_mode="r+")
    clicks[3, 5, 0] = 1 - clicks[3, 5, 0]  # meta.json (and its fingerprint) untouched
    clicks.flush()
    del clicks
    out = tmp_path / "out"
    extra = ["--gems", work["gems"], "--window", "3"] if command == "export" else ["--no-progress"]
    code, err = cli([command, edited, "--out", out, *extra], capsys)
    assert code == 2 and "clicks.npy does not match its recorded fingerprint" in err and "modified" in err, err
    assert not out.exists()


# ------------------------------------------------------------------ reference files
@pytest.mark.parametrize("name, env", [
    ("focused_topdown.pt", "SlateRec/FocusedTopDown-v0"),
    ("focused_topdown_moving_env.pt", "SlateRec/FocusedTopDown-v0"),
    ("diffuse_mixed_moving_env.pt", "SlateRec/DiffuseMixed-v0"),
    ("diffuse_mix.pt", "SlateRec/DiffuseMixed-v0"),
    ("focused_divpen_seed3.pt", "SlateRec/FocusedDivPen-v0"),
    ("focused_topdownish.pt", None),
    ("my_data.pt", None),
])
def test_reference_dataset_names_are_recognised_by_prefix(name, env):
    assert env_of_reference_file(name) == env


def test_importing_a_missing_file_names_the_file(tmp_path, capsys):
    code, err = cli(["import-dataset", tmp_path / "focused_topdown_moving_env.pt", "--out", tmp_path / "d"], capsys)
    assert code == 2 and "no such file or folder" in err and "focused_topdown_moving_env.pt" in err, err
    assert "--env" not in err


def test_third_party_info_lines_only_with_verbose(work, tmp_path):
    import subprocess
    import sys

    def export(*flags: str) -> str:
        out = tmp_path / f"x{len(flags)}.h5"
        done = subprocess.run([sys.executable, "-c", "import sys; from gym_slaterec.cli import main; sys.exit(main())",
                               *flags, "export", str(work["logged"]),
                               "--gems", str(work["gems"]), "--out", str(out), "--window", "3"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    assert "Signatures have been automatically determined" not in export()
    assert "Signatures have been automatically determined" in export("--verbose")


def test_the_grid_modules_example_expands(tmp_path):
    """The YAML example in slaterec_lab/grid.py's docstring runs as written."""
    import re

    from slaterec_lab import grid

    example = re.search(r"::\n\n((?:    .*\n|\n)+)", grid.__doc__).group(1)
    spec = yaml.safe_load("\n".join(line[4:] for line in example.splitlines()))
    trials = grid.expand(spec, tmp_path)
    assert {t.kind for t in trials} == {"logged", "gems", "run"} and spec["environments"] == ["FocusedTopDown"]


def test_every_command_runs_on_the_threads_it_is_given(monkeypatch, capsys):
    """One intra-op thread by default (a shared core must not collapse two waiting threads);
    $SLATEREC_THREADS sets another count; nonsense is refused by name."""
    import torch
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("SLATEREC_THREADS", raising=False)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert main(["methods"]) == 0
        assert torch.get_num_threads() == 1
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
        monkeypatch.setenv("SLATEREC_THREADS", "2")
        assert main(["methods"]) == 0 and torch.get_num_threads() == 2
        monkeypatch.setenv("SLATEREC_THREADS", "two")
        assert main(["methods"]) == 2
        assert "SLATEREC_THREADS must be a positive integer, got 'two'" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
