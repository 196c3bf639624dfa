"""Nothing destroyed by an interrupt: an interrupted ``--overwrite`` leaves the old artifact
intact, SIGTERM cleans up as SIGINT does, a write removes the debris of a killed earlier
write, --overwrite never replaces a user's sidecar, and nothing is created before every
input is checked."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gym_slaterec.cli import main
from gym_slaterec.gems import GeMSCheckpoint, GeMSConfig, train_gems
from gym_slaterec.rollouts import generate_logged_data

ENV = "FocusedTopDown-v0"
SHORT = {"episode_length": 10}
# a foreground-like child: SIGINT raises KeyboardInterrupt even when pytest runs in the background
CLI = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
       "from gym_slaterec.cli import main; sys.exit(main())")


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def interrupt_when(cmd: list, ready, sig: int = signal.SIGINT, timeout: float = 600.0) -> tuple[int, str]:
    """Start ``slaterec CMD``, send ``sig`` once ``ready()`` holds, return (exit status, stderr).
    The generous timeout is for loaded machines (the child imports torch, then trains)."""
    proc = subprocess.Popen([sys.executable, "-c", CLI, *map(str, cmd)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the command ended before it could be interrupted: {proc.communicate()[1]}"
    if not ready():
        proc.kill()
        pytest.fail(f"the command was not at the point to interrupt after {timeout:.0f} s: {proc.communicate()[1][-2000:]}")
    proc.send_signal(sig)
    err = proc.communicate(timeout=120)[1]
    return proc.returncode, err


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("interrupts")
    logged = generate_logged_data("SlateRec/" + ENV, d / "logged", episodes=30, seed=0, progress=False,
                                  env_kwargs=SHORT).path
    gems = train_gems(logged, GeMSConfig(epochs=1, latent_dim=8, encoder_hidden=(32,), decoder_hidden=(32,),
                                         val_max_samples=100), out=d / "gems.pt", progress=False, max_steps=3).path
    assert main(["export", str(logged), "--gems", str(gems), "--out", str(d / "data.h5"), "--window", "3"]) == 0
    return {"dir": d, "logged": logged, "gems": gems, "h5": d / "data.h5"}


def test_interrupted_gems_overwrite_keeps_the_complete_checkpoint(work, tmp_path):
    out = tmp_path / "gems.pt"
    out.write_bytes(work["gems"].read_bytes())
    before = out.read_bytes()
    partial = tmp_path / "gems.partial.pt"
    log = tmp_path / "tb"
    code, err = interrupt_when(["pretrain-gems", work["logged"], "--out", out, "--overwrite", "--epochs", "1000",
                                "--batch-size", "8", "--val-max-samples", "50", "--eval-every", "5", "--logdir", log],
                               lambda: log.is_dir() and any(p.stat().st_size > 200 for p in log.rglob("events*")))
    assert code == 130, err
    assert out.read_bytes() == before  # the complete checkpoint is untouched
    assert f"{out} was left as it was" in err and str(partial) in err
    assert GeMSCheckpoint.load(partial, allow_partial=True).partial
    assert not list(tmp_path.glob(".gems.pt.*"))


def test_interrupted_offline_overwrite_keeps_the_finished_run(work, tmp_path):
    out = tmp_path / "run"
    base = ["train-offline", "bc", work["h5"], "--gems", work["gems"], "--eval-every", "2", "--val-users", "4",
            "--test-users", "4", "--out", out, "--no-progress"]
    assert main([str(a) for a in base + ["--steps", "4"]]) == 0
    before = tree(out)
    staged = lambda: any((p / "state.json").is_file() for p in tmp_path.glob(".run.*.tmp"))  # noqa: E731
    code, err = interrupt_when(base + ["--steps", "100000", "--overwrite", "--set", "eval_every=100000"], staged)
    assert code == 130, err
    assert tree(out) == before  # the finished run is intact, not a stub
    assert not list(tmp_path.glob(".run.*"))  # and the staged replacement is gone
    # an overwrite that completes replaces it
    assert main([str(a) for a in base + ["--steps", "6", "--overwrite"]]) == 0
    assert json.loads((out / "results.json").read_text())["budget"]["gradient_steps"] == 6


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_generate_cleans_up_on_sigint_and_sigterm(tmp_path, sig):
    out = tmp_path / "data"
    code, err = interrupt_when(["generate", ENV, "--episodes", "200000", "--batch-size", "64", "--out", out,
                                "--no-progress"], lambda: bool(list(tmp_path.glob(".data.*.tmp"))), sig)
    assert code == 130 and "interrupted" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary, no lock file, no dataset


def test_a_write_removes_the_debris_of_a_killed_earlier_write(tmp_path, capsys):
    debris = tmp_path / ".data.k1ll3d_x.tmp"
    debris.mkdir()
    (debris / "slates.npy").write_bytes(b"\0" * 1024)
    (tmp_path / ".data.old-31337").mkdir()
    assert main(["generate", ENV, "--episodes", "4", "--out", str(tmp_path / "data"), "--no-progress"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_overwrite_never_replaces_a_users_sidecar(work, tmp_path, capsys):
    out = tmp_path / "x.h5"
    side = tmp_path / "x.h5.provenance.json"
    side.write_text('{"my": "own notes about the x.h5 I am about to make"}')
    before = tree(tmp_path)
    assert main(["export", str(work["logged"]), "--gems", str(work["gems"]), "--out", str(out), "--window", "3",
                 "--overwrite"]) == 2
    assert "not a provenance sidecar written by SlateRec" in capsys.readouterr().err
    assert tree(tmp_path) == before


def test_a_refused_input_creates_no_run_directory(tmp_path, capsys):
    m999 = tmp_path / "m999.npy"
    np.save(m999, np.random.default_rng(0).normal(size=(999, 20)).astype(np.float32))
    out = tmp_path / "run"
    args = ["train", "sac-topk-mf", ENV, "--mf", str(m999), "--out", str(out), "--episodes", "2", "--no-progress"]
    assert main(args) == 2
    assert "(999, 20)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m999.npy"]  # no run directory, no lock file


def test_first_ctrl_c_stops_training_at_its_next_resume_point(tmp_path):
    """Ctrl-C in `train` loses no work: the run stops after its batch of episodes with a checkpoint
    there (none was due: periodic checkpoints off, one validation per 100,000 episodes); a resume
    with a wall-time limit already spent then tests it at once."""
    out = tmp_path / "run"
    argv = ["train", "reinforce-softmax", ENV, "--preset", "window", "--out", out, "--no-progress",
            "--episodes", "100000", "--set", "env_kwargs.episode_length=10", "--set", "val_every=100000",
            "--set", "checkpoint_every=0", "--set", "val_users=4", "--set", "test_users=4", "--set", "n_envs=2"]
    progress = out / "tb" / "progress.csv"
    code, err = interrupt_when(argv, lambda: progress.is_file() and len(progress.read_text().splitlines()) > 4)
    assert code == 130, err
    assert "SIGINT: stopping reinforce-softmax training at its next resume point" in err and "Traceback" not in err
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "interrupted" and state["episodes"] >= 4, state  # past the only earlier resume point (0)
    assert [v["episodes"] for v in state["validation"]] == [0]  # no validation off the schedule
    assert (out / "checkpoints" / "last.zip").is_file() and not (out / "results.json").exists()
    assert main([str(a) for a in argv + ["--set", "max_wall_s=0.001"]]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["budget"]["episodes"] == state["episodes"] and results["test"]["episodes"] == 4


@pytest.mark.slow(26)
def test_first_ctrl_c_stops_offline_training_at_its_next_step_and_it_resumes_from_there(work, tmp_path):
    """As `train`: a Ctrl-C in `train-offline` writes a resume point at the step it reached (none was
    due: one checkpoint per 100,000 steps), and the same command continues from that step."""
    out = tmp_path / "run"
    argv = ["train-offline", "bc", work["h5"], "--gems", work["gems"], "--steps", "100000", "--val-users", "4",
            "--test-users", "4", "--out", out, "--no-progress", "--set", "eval_every=100000",
            "--set", "checkpoint_every=100000", "--set", "log_every=10"]

    def logged(n_files: int):
        return lambda: len([p for p in (out / "tb").rglob("events*") if p.stat().st_size > 200]) >= n_files

    code, err = interrupt_when(argv, logged(1))
    assert code == 130 and "SIGINT: stopping offline bc training at its next resume point" in err, err
    first = json.loads((out / "state.json").read_text())
    assert first["status"] == "interrupted" and first["step"] >= 10, first  # past the only earlier resume point (0)
    time.sleep(1.1)  # the resumed session's TensorBoard file gets another name (its timestamp)
    code, err = interrupt_when(argv, logged(2))
    assert code == 130, err
    second = json.loads((out / "state.json").read_text())
    assert second["step"] > first["step"] and second["validation"] == first["validation"] == []
