"""One writer per artifact: a live writer's lock refuses a second one (naming its pid and
host), a dead writer's lock and temporaries are gone for the next one, and a sweep's trials
die with their driver."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gym_slaterec.cli import main
from gym_slaterec.locks import ArtifactBusyError, lock_file, lock_owner, writer_lock

TRAIN = ["train", "sac-topk-ideal", "FocusedTopDown-v0", "--no-progress", "--episodes", "100000", "--preset", "window",
         "--set", "env_kwargs.episode_length=10", "--set", "n_envs=2", "--set", "val_every=4",
         "--set", "val_users=4", "--set", "test_users=4", "--set", "agent.net_arch=[8]"]
CLI = "import sys; from gym_slaterec.cli import main; sys.exit(main())"


def wait_for(predicate, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_live_writer_refuses_a_second_and_a_dead_one_does_not_block(tmp_path, capsys):
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", CLI, *TRAIN, "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out / "train.log").is_file(), what="the first writer to train")
        owner = lock_owner(out)
        assert owner is not None and f"pid {child.pid}" in owner and socket.gethostname() in owner
        # the same command again: refused
        code = main([*TRAIN, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and f"is being written by pid {child.pid} on host {socket.gethostname()}" in err, err
        assert "Traceback" not in err
        with pytest.raises(ArtifactBusyError, match=f"pid {child.pid}"):
            with writer_lock(out, wait_s=0.0):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # SIGKILL released the lock: the run is unfinished, not running, and can be resumed
    assert lock_owner(out) is None
    with writer_lock(out):
        assert lock_owner(out) is not None and "this process" in lock_owner(out)
    assert not lock_file(out).exists()


def test_sigterm_stops_a_writer_like_ctrl_c(tmp_path):
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", CLI, *TRAIN, "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (out / "train.log").is_file(), what="the writer to train")
    child.send_signal(signal.SIGTERM)
    err = child.communicate(timeout=60)[1]
    assert child.returncode == 130 and "interrupted" in err, err
    assert lock_owner(out) is None and not list(tmp_path.glob(".run.*.tmp"))


def test_a_write_removes_the_debris_of_a_killed_earlier_write(tmp_path):
    target = tmp_path / "gems.pt"
    (tmp_path / ".gems.pt.ab12cd_3.tmp").mkdir()  # atomic_path's temporary of a SIGKILLed writer
    (tmp_path / ".gems.pt.ab12cd_3.tmp" / "gems.pt").write_bytes(b"half")
    (tmp_path / ".gems.pt.old-4242").write_bytes(b"backup of a killed swap")
    keep = [tmp_path / ".gems.pt.provenance.json.zz99yy88.tmp", tmp_path / "gems.pt.notes", tmp_path / ".other.ab12cd_3.tmp"]
    for p in keep:
        p.write_text("not debris of gems.pt")
    with writer_lock(target):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)


@pytest.mark.slow(17)
def test_a_sweep_killed_with_sigkill_leaves_no_trial_running(tmp_path):
    grid = {"name": "orphan", "environments": ["FocusedTopDown-v0"], "seeds": [0],
            "set": {"val_users": 4, "test_users": 4, "n_envs": 2},
            "methods": {"sac-topk-ideal": {"episodes": 100000, "preset": "window", "set": {"val_every": 4}}},
            "retries": 0}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    out = tmp_path / "sw"
    driver = subprocess.Popen([sys.executable, "-c", CLI, "sweep", str(tmp_path / "grid.yaml"), "--out", str(out),
                               "--executor", "local", "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: list(out.glob("runs/*/train.log")), what="the trial to train")
    (run,) = [p.parent for p in out.glob("runs/*/train.log")]
    owner = lock_owner(run)
    assert owner is not None and f"pid {driver.pid}" not in owner  # the trial's own process writes the run
    trial_pid = int(owner.split()[1])
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    wait_for(lambda: lock_owner(run) is None, timeout=60, what="the orphaned trial to stop")
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # reaped by init shortly after it exits
            os.kill(trial_pid, 0)
            time.sleep(0.1)
    assert lock_owner(out) is None
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "interrupted" and state["episodes"] < 100000
