"""No file the package reads executes code: a payload planted in every kind of file a run
directory holds (checkpoints, replay buffers, offline models; old pickle-based formats and
the new weights-only ones) never runs, whichever command reads it, and the command answers
with one line (the old formats: how to convert a trusted run)."""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from gym_slaterec.cli import main

ENV = "FocusedTopDown-v0"


class Payload:
    """Unpickling it creates the folder ``marker``: the proof that a file ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def run_cli(args: list, capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished window-regime SAC run (SB3 model), its arguments, and a finished offline run."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("payload")
    online = d / "online"
    train_args = ["train", "sac-topk-ideal", ENV, "--out", online, "--no-progress", "--episodes", "8", "--preset", "window",
                  "--set", "env_kwargs.episode_length=10", "--set", "n_envs=2", "--set", "val_every=2",
                  "--set", "checkpoint_every=2", "--set", "val_users=4", "--set", "test_users=4",
                  "--set", "agent.warmup_episodes=2", "--set", "agent.batch_transitions=8", "--set", "agent.net_arch=[8]"]
    assert main([str(a) for a in train_args]) == 0
    from gym_slaterec.gems import GeMSConfig, train_gems
    from gym_slaterec.rollouts import generate_logged_data

    generate_logged_data("SlateRec/" + ENV, d / "logged", episodes=30, seed=0, progress=False,
                         env_kwargs={"episode_length": 10})

    gems = train_gems(d / "logged", GeMSConfig(epochs=1, latent_dim=8, encoder_hidden=(32,), decoder_hidden=(32,),
                                               val_max_samples=100), out=d / "gems.pt", progress=False, max_steps=3).path
    assert main(["export", str(d / "logged"), "--gems", str(gems), "--out", str(d / "data.h5"), "--window", "3"]) == 0
    offline = d / "offline"
    off_args = ["train-offline", "bc", d / "data.h5", "--gems", gems, "--steps", "4", "--eval-every", "2",
                "--val-users", "4", "--test-users", "4", "--out", offline, "--no-progress", "--set", "checkpoint_every=2"]
    assert main([str(a) for a in off_args]) == 0
    return {"online": online, "train_args": train_args, "offline": offline, "offline_args": off_args, "gems": gems}


def unfinished(run: Path, tmp_path: Path, offline: bool = False) -> Path:
    """A copy of ``run`` made unfinished (resumable), so that training the same arguments resumes it."""
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    (copy / "results.json").unlink()
    state = json.loads((copy / "state.json").read_text())
    state["status"] = "unfinished" if offline else "running"
    if offline:
        state["step"] = 2
    (copy / "state.json").write_text(json.dumps(state))
    return copy


def legacy_sb3_zip(path: Path, marker: Path) -> None:
    """A checkpoint in SB3's own format whose cloudpickled entry carries the payload."""
    blob = base64.b64encode(pickle.dumps(Payload(marker))).decode()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data", json.dumps({"policy_class": {":type:": "<class 'abc.ABCMeta'>", ":serialized:": blob}}))
        z.writestr("policy.pth", b"")


def weights_zip_with_payload(path: Path, marker: Path) -> None:
    """The new checkpoint format with a pickled object where weights belong."""
    import io

    buf = io.BytesIO()
    torch.save({"params": Payload(marker), "variables": {}}, buf)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("slaterec.json", json.dumps({"format": "slaterec.sb3_checkpoint/1", "class": "SlateSAC"}))
        z.writestr("state.pt", buf.getvalue())


PLANTS = {
    "legacy best.zip": ("checkpoints/best.zip", legacy_sb3_zip),
    "legacy last.zip": ("checkpoints/last.zip", legacy_sb3_zip),
    "weights best.zip": ("checkpoints/best.zip", weights_zip_with_payload),
    "weights last.zip": ("checkpoints/last.zip", weights_zip_with_payload),
    "pickled replay buffer": ("checkpoints/last_replay_buffer.pkl",
                              lambda p, m: p.write_bytes(pickle.dumps(Payload(m)))),
}


@pytest.mark.parametrize("plant", PLANTS)
@pytest.mark.parametrize("command", ["evaluate", "collect", "drift", "train-resume"])
def test_payload_in_an_online_run_never_runs(runs, tmp_path, capsys, plant, command):
    rel, write = PLANTS[plant]
    if plant == "pickled replay buffer" and command != "train-resume":
        pytest.skip("only resuming reads the replay buffer")
    run = unfinished(runs["online"], tmp_path) if command == "train-resume" else tmp_path / "run"
    if command != "train-resume":
        shutil.copytree(runs["online"], run)
    if plant == "pickled replay buffer":
        (run / "checkpoints" / "last_replay_buffer.npz").unlink()
    marker = tmp_path / "PWNED"
    write(run / rel, marker)
    checkpoint = "last" if "last" in plant else "best"
    if command == "evaluate":
        args = ["evaluate", ENV, "--policy", run, "--episodes", "2", "--checkpoint", checkpoint, "--json"]
    elif command == "collect":
        args = ["collect", ENV, "--policy", run, "--episodes", "2", "--checkpoint", checkpoint, "--out",
                tmp_path / "data", "--no-progress"]
    elif command == "drift":
        if checkpoint != "best":
            pytest.skip("drift reads the best checkpoint")
        args = ["drift", run, "focused"]
    else:
        if checkpoint != "last" and "replay" not in plant:
            pytest.skip("resuming reads the last checkpoint")
        args = [*runs["train_args"]]
        args[args.index(runs["online"])] = run
    code, err = run_cli(args, capsys)
    assert not marker.exists(), f"{plant} ran code in {command}"
    assert code == 2, err
    if plant.startswith("legacy") or "pickled" in plant:
        assert "pickle-based format" in err and f"slaterec convert-run {run} --trust" in err, err
    else:
        assert "holds more than weights" in err, err


@pytest.mark.parametrize("kind", ["legacy .d3", "weights .pt"])
@pytest.mark.parametrize("command", ["evaluate", "collect", "train-resume"])
def test_payload_in_an_offline_run_never_runs(runs, tmp_path, capsys, kind, command):
    run = unfinished(runs["offline"], tmp_path, offline=True)
    marker = tmp_path / "PWNED"
    name = "model_last" if command == "train-resume" else "model_best"
    if kind == "legacy .d3":
        (run / f"{name}.pt").unlink()
        (run / f"{name}.d3").write_bytes(pickle.dumps(Payload(marker)))
    else:
        torch.save({"format": "slaterec.offline_model/1", "modules": Payload(marker)}, run / f"{name}.pt")
    if command == "evaluate":
        args = ["evaluate", ENV, "--policy", run, "--episodes", "2", "--json"]
    elif command == "collect":
        args = ["collect", ENV, "--policy", run, "--episodes", "2", "--out", tmp_path / "data", "--no-progress"]
    else:
        args = [*runs["offline_args"]]
        args[args.index(runs["offline"])] = run
    code, err = run_cli(args, capsys)
    assert not marker.exists(), f"{kind} ran code in {command}"
    assert code == 2, err
    if kind == "legacy .d3":
        assert "pickle-based format" in err and "slaterec convert-run" in err and "--trust" in err, err
    else:
        assert "damaged or not a SlateRec offline model" in err, err


def model_with_buffer(run: Path):
    """The last checkpoint's model of ``run`` with the run's own (full-size) replay buffer loaded."""
    from sb3_slate.checkpoints import load_replay_buffer
    from sb3_slate.envs import SB3VecEnv
    from sb3_slate.methods import load_artifacts, wrap_env
    from sb3_slate.runs import base_env, read_run, rebuild_model

    _, cfg, _ = read_run(run)
    art = load_artifacts(cfg, cfg.env_id, None)
    wrapped = wrap_env(cfg, art, base_env(cfg, cfg.n_envs, analysis=False))
    model = rebuild_model(cfg, art, run / "checkpoints" / "last.zip", "cpu", SB3VecEnv(wrapped, seed=0), wrapped)
    load_replay_buffer(model.replay_buffer, run / "checkpoints" / "last_replay_buffer.npz")
    return model


def test_convert_run_rewrites_a_trusted_legacy_run(runs, tmp_path, capsys):
    """A run in SB3's pickle format (written by SB3's own save, as earlier versions did) is refused,
    then converted with --trust, and acts exactly as before."""
    from sb3_slate.runs import load_agent

    run = unfinished(runs["online"], tmp_path)
    agent = load_agent(runs["online"], "best", warn_unfinished=False)
    agent.model.save(run / "checkpoints" / "best.zip")  # SB3's pickle-based format
    last = model_with_buffer(runs["online"])
    last.save(run / "checkpoints" / "last.zip")
    last.save_replay_buffer(run / "checkpoints" / "last_replay_buffer.pkl")
    (run / "checkpoints" / "last_replay_buffer.npz").unlink()
    args = ["evaluate", ENV, "--policy", run, "--episodes", "3", "--json"]
    code, err = run_cli(args, capsys)
    assert code == 2 and "convert-run" in err
    code, err = run_cli(["convert-run", run], capsys)
    assert code == 2 and "--trust" in err
    assert run_cli(["convert-run", run, "--trust"], capsys)[0] == 0
    assert not (run / "checkpoints" / "last_replay_buffer.pkl").exists()
    main(["evaluate", ENV, "--policy", str(runs["online"]), "--episodes", "3", "--json"])
    want = json.loads(capsys.readouterr().out)
    main([str(a) for a in args])
    got = json.loads(capsys.readouterr().out)
    assert got["mean"] == want["mean"]
    # the converted replay buffer holds what the original held
    a = model_with_buffer(run)
    assert a.replay_buffer.pos == last.replay_buffer.pos
    assert (a.replay_buffer.actions == last.replay_buffer.actions).all()
    # and training resumes from it
    resume = [*runs["train_args"]]
    resume[resume.index(runs["online"])] = run
    assert run_cli(resume, capsys)[0] == 0
    assert (run / "results.json").is_file()


def test_payload_in_an_episode_regime_checkpoint_never_runs(tmp_path, capsys):
    """The paper regime's own checkpoint format (config.json + state.pt) is read weights-only too."""
    run = tmp_path / "run"
    args = ["train", "sac-topk-ideal", ENV, "--out", run, "--no-progress", "--episodes", "4",
            "--set", "env_kwargs.episode_length=10", "--set", "n_envs=2", "--set", "val_every=2",
            "--set", "val_users=2", "--set", "test_users=2", "--set", "agent.warmup_episodes=2",
            "--set", "agent.batch_episodes=2", "--set", "agent.net_arch=[8]"]
    assert main([str(a) for a in args]) == 0
    marker = tmp_path / "PWNED"
    best = run / "checkpoints" / "best.zip"
    with zipfile.ZipFile(best) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    import io

    buf = io.BytesIO()
    torch.save({"actor": Payload(marker)}, buf)
    entries["state.pt"] = buf.getvalue()
    with zipfile.ZipFile(best, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    code, err = run_cli(["evaluate", ENV, "--policy", run, "--episodes", "2"], capsys)
    assert not marker.exists() and code == 2 and "not a readable EpisodeSAC checkpoint" in err, err
