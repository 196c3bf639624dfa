"""``slaterec train --seeds``: several seeds side by side, each an ordinary run directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gym_slaterec.cli import main

ENV = "FocusedTopDown-v0"
#: a small paper-regime SAC+GeMS: episodes of 10 turns, 2 warm-up episodes, batches of 2 episodes
SMALL = ["--set", "env_kwargs.episode_length=10", "--set", "n_envs=3", "--set", "val_every=3", "--set", "val_users=10",
         "--set", "test_users=8", "--set", "agent.warmup_episodes=2", "--set", "agent.batch_episodes=2",
         "--set", "agent.net_arch=[16]", "--episodes", "9"]


@pytest.fixture(scope="module")
def gems(tmp_path_factory) -> dict[str, str]:
    """Tiny GeMS checkpoints of FocusedTopDown and of DiffuseTopDown."""
    import torch

    from gym_slaterec.gems import GeMSConfig, train_gems
    from gym_slaterec.rollouts import generate_logged_data

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("seeds")
    out = {}
    for env in ("FocusedTopDown", "DiffuseTopDown"):
        ds = generate_logged_data(f"SlateRec/{env}-v0", d / f"logged_{env}", episodes=40, seed=0, progress=False,
                                  env_kwargs={"episode_length": 10})
        out[env] = str(train_gems(ds, GeMSConfig(epochs=1, latent_dim=8), out=d / f"{env}.pt", progress=False,
                                  max_steps=3).path)
    return out


def curve(run: Path) -> list[float]:
    """Validation means and spreads, episode by episode."""
    return [x for v in json.loads((run / "state.json").read_text())["validation"] for x in (v["mean"], v["std"])]


@pytest.mark.slow(15)
def test_each_seed_is_the_single_seed_run(gems, tmp_path, capsys):
    """Seed i of --seeds follows the trajectory of --seed i, whatever seeds train beside it."""
    base = ["train", "sac-gems", ENV, "--gems", gems["FocusedTopDown"], "--no-progress", *SMALL]
    assert main([*base, "--seed", "1", "--out", str(tmp_path / "single")]) == 0
    assert main([*base, "--seeds", "0", "1", "--out", str(tmp_path / "both"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    both = tmp_path / "both"
    assert sorted(p.name for p in both.iterdir()) == ["s0", "s1"]
    single = curve(tmp_path / "single")
    assert len(single) == 2 * 4  # episodes 0, 3, 6, 9
    assert curve(both / "s1") == pytest.approx(single, rel=1e-6, abs=1e-6)
    assert curve(both / "s0") != pytest.approx(single, rel=1e-6)  # another seed, another run
    for seed in (0, 1):  # ordinary run directories: their own seed, config and results
        cfg = json.loads((both / f"s{seed}" / "config.json").read_text())
        assert cfg["seed"] == seed and cfg["gems"] == str(Path(gems["FocusedTopDown"]).resolve())
        res = json.loads((both / f"s{seed}" / "results.json").read_text())
        assert summary["test"][str(seed)] == res["test"]["mean"]
    one = json.loads((tmp_path / "single" / "results.json").read_text())["test"]["mean"]
    assert summary["test"]["1"] == pytest.approx(one, rel=1e-6)
    values = list(summary["test"].values())
    assert summary["mean"]["n"] == 2 and summary["mean"]["mean"] == pytest.approx(sum(values) / 2)
    lo, hi = summary["mean"]["ci95"]
    assert lo < summary["mean"]["mean"] < hi
    # the same command again reports the finished seeds and trains nothing
    mtime = (both / "s0" / "results.json").stat().st_mtime_ns
    assert main([*base, "--seeds", "0", "1", "--out", str(tmp_path / "both")]) == 0
    assert "mean test return over 2 seed(s)" in capsys.readouterr().out
    assert (both / "s0" / "results.json").stat().st_mtime_ns == mtime
    # evaluable on its own
    assert main(["evaluate", ENV, "--policy", str(both / "s0"), "--episodes", "3", "--json"]) == 0


def test_a_mismatched_input_of_one_seed_stops_all_before_anything_runs(gems, tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["train", "sac-gems", ENV, "--seeds", "0", "1", "--gems", gems["FocusedTopDown"], gems["DiffuseTopDown"],
                 "--out", str(out / "{seed}"), "--no-progress", *SMALL])
    err = capsys.readouterr().err
    assert code == 2 and "seed 1" in err and "DiffuseTopDown" in err
    assert not out.exists()  # no seed started


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0", "0"], "more than once"),
    (["--seeds", "0", "1", "--gems", "a.pt", "b.pt", "c.pt"], "one per seed (2), got 3"),
    (["--seed", "0", "--gems", "a.pt", "b.pt"], "one file per run"),
    (["--seed", "0", "--jobs", "2"], "--jobs goes with --seeds"),
    (["--seeds", "0", "1", "--out", "runs/{method}"], "only the field {seed}"),
])
def test_bad_seed_arguments_are_refused(argv, message, tmp_path, capsys):
    args = ["train", "sac-gems", ENV, *argv]
    if "--out" not in argv:
        args += ["--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow(40)
def test_interrupted_seeds_resume_where_they_stopped(tmp_path):
    """Ctrl-C stops every seed at a resume point; the same command finishes them."""
    out = tmp_path / "runs"
    argv = ["train", "reinforce-softmax", ENV, "--preset", "window", "--seeds", "3", "4", "--out", str(out),
            "--no-progress", "--episodes", "120", "--set", "env_kwargs.episode_length=10", "--set", "val_every=40",
            "--set", "checkpoint_every=40",
            "--set", "val_users=4", "--set", "test_users=4", "--set", "n_envs=2"]
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from gym_slaterec.cli import main; sys.exit(main())")
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, SLATEREC_STATUS_EVERY="3600"))
    deadline = time.monotonic() + 240

    def started(seed: int) -> bool:
        try:
            return json.loads((out / f"s{seed}" / "state.json").read_text())["episodes"] >= 40
        except (OSError, ValueError, KeyError):
            return False

    while not (started(3) and started(4)):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the seeds did not start"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    stopped = {s: json.loads((out / f"s{s}" / "state.json").read_text()) for s in (3, 4)}
    for seed, state in stopped.items():
        assert not (out / f"s{seed}" / "results.json").exists()
        assert state["status"] == "interrupted" and state["episodes"] < 120, (seed, state, output)
    assert main(argv) == 0
    for seed, before in stopped.items():
        state = json.loads((out / f"s{seed}" / "state.json").read_text())
        assert state["status"] == "complete" and state["resumed"] == 1
        assert state["validation"][:len(before["validation"])] == before["validation"]  # kept, then continued
        assert state["validation"][-1]["episodes"] >= 120


def test_a_child_that_does_not_stop_is_killed_after_its_grace_with_its_stacks_in_its_log(tmp_path):
    """stop_children: SIGINT to all at once; one that ignores it dumps its stacks, then is killed."""
    from gym_slaterec.cli.children import CHILD_CLI, stop_children

    stubborn = ("import faulthandler, signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                "faulthandler.register(signal.SIGUSR1, all_threads=True); print('ready', flush=True); "
                "time.sleep(120)")
    logs = [open(tmp_path / f"{i}.log", "w") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", stubborn], stdout=logs[0], stderr=subprocess.STDOUT),
             subprocess.Popen([sys.executable, "-c", CHILD_CLI, "--version"], stdout=logs[1],
                              stderr=subprocess.STDOUT)]
    t0 = time.monotonic()
    while "ready" not in (tmp_path / "0.log").read_text():
        assert time.monotonic() - t0 < 60, "the stubborn child did not start"
        time.sleep(0.1)
    killed = stop_children(procs, grace_s=2.0)
    for log in logs:
        log.close()
    assert killed == [procs[0]] and procs[0].returncode == -signal.SIGKILL
    assert "File \"<string>\", line 1" in (tmp_path / "0.log").read_text()  # faulthandler's stack dump
    assert stop_children(procs) == []  # already stopped: nothing to do


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device")
def test_seeds_train_on_a_gpu(gems, tmp_path, capsys):
    """Every seed's networks on the GPU; seed i still the single-seed run (on the same device)."""
    base = ["train", "sac-gems", ENV, "--gems", gems["FocusedTopDown"], "--no-progress", "--device", "cuda", *SMALL]
    assert main([*base, "--seeds", "0", "1", "--out", str(tmp_path / "both")]) == 0
    assert main([*base, "--seed", "1", "--out", str(tmp_path / "single")]) == 0
    for seed in (0, 1):
        assert json.loads((tmp_path / "both" / f"s{seed}" / "state.json").read_text())["device"].startswith("cuda")
    assert curve(tmp_path / "both" / "s1") == pytest.approx(curve(tmp_path / "single"), rel=1e-4, abs=1e-4)
