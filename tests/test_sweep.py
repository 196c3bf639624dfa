"""slaterec sweep: grid expansion, a real local Ray instance, resume after Ctrl-C, the
sequential fallback, failing trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gym_slaterec.cli import main
from slaterec_lab.grid import SHIPPED_DIR, GridError, expand, load_grid, shipped_grid
from gym_slaterec.locks import lock_owner
from slaterec_lab.sweep import run_sweep

# ``slaterec`` in a child process that answers SIGINT as a foreground process does, even when
# pytest itself runs in the background with SIGINT ignored (children inherit that)
FOREGROUND_CLI = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                  "from gym_slaterec.cli import main; sys.exit(main())")

# 2 methods x 2 seeds x 1 environment, tiny budgets (20-turn episodes)
GRID = {
    "name": "t22",
    "environments": ["FocusedTopDown-v0"],
    "seeds": [0, 1],
    "set": {"val_users": 10, "test_users": 20, "n_envs": 4, "checkpoint_every": 4, "env_kwargs.episode_length": 20},
    "methods": {
        "random": {},
        "sac-topk-ideal": {"episodes": 16, "preset": "window",
                           "set": {"val_every": 4, "agent.warmup_episodes": 4, "agent.batch_transitions": 32}},
    },
    "retries": 0,
}


def _write(tmp_path: Path, grid: dict, name: str = "grid.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(grid))
    return p


def _test_returns(sweep_dir: Path) -> dict[str, float]:
    out = {}
    for res in sorted((sweep_dir / "runs").glob("*/results.json")):
        out[res.parent.name] = json.loads(res.read_text())["test"]["mean"]
    return out


def test_expansion_builds_each_stage_once_and_orders_dependencies(tmp_path):
    grid = {"environments": ["FocusedTopDown-v0"], "seeds": [0, 1, 2],
            "logged": {"episodes": 100}, "gems": {"max_steps": 5}, "mf": {"epochs": 1},
            "methods": {"sac-gems": {"grid": {"agent.gamma": [0.8, 0.0]}}, "sac-topk-mf": {}, "random": {}},
            "grid": {"gems.lambda_kl": [0.5, 1.0]}}
    trials = expand(grid, tmp_path)
    kinds = [t.kind for t in trials]
    assert kinds.count("logged") == 1 and kinds.count("mf") == 1 and kinds.count("gems") == 2
    runs = [t for t in trials if t.kind == "run"]
    # sac-gems: 2 GeMS x 2 gammas x 3 seeds; the others are not multiplied by GeMS or gamma values
    assert sum(t.method == "sac-gems" for t in runs) == 12
    assert sum(t.method == "sac-topk-mf" for t in runs) == 3 and sum(t.method == "random" for t in runs) == 3
    assert len({t.id for t in trials}) == len(trials)
    position = {t.id: i for i, t in enumerate(trials)}
    for t in trials:
        assert all(position[d] < position[t.id] for d in t.deps)
    gems = {t.id: t for t in trials if t.kind == "gems"}
    for t in runs:
        if t.method == "sac-gems":
            (dep,) = t.deps
            assert f"lambda_kl={t.point['gems.lambda_kl']}" in dep
            assert gems[dep].argv[gems[dep].argv.index("--lambda-kl") + 1] == str(t.point["gems.lambda_kl"])
            assert f"agent.gamma={t.point['agent.gamma']}" in t.argv
            assert t.argv[t.argv.index("--gems") + 1] == str(tmp_path.resolve() / dep)
        if t.method == "random":
            assert t.deps == [] and "--gems" not in t.argv


def test_stage_seed_run_builds_one_stage_per_run_seed(tmp_path):
    grid = {"environments": ["FocusedTopDown-v0"], "seeds": [3, 7], "logged": {"episodes": 100},
            "gems": {"max_steps": 5, "seed": "run"}, "mf": {"epochs": 1, "seed": 11},
            "methods": {"sac-gems": {}, "sac-topk-mf": {}}}
    trials = expand(grid, tmp_path)
    gems = {t.id: t for t in trials if t.kind == "gems"}
    assert len(gems) == 2 and sum(t.kind == "mf" for t in trials) == 1 and sum(t.kind == "logged" for t in trials) == 1
    for t in (t for t in trials if t.kind == "run" and t.method == "sac-gems"):
        (dep,) = [d for d in t.deps if d in gems]
        argv = gems[dep].argv
        assert argv[argv.index("--seed") + 1] == str(t.seed)  # its own GeMS, trained with its seed
        assert t.argv[t.argv.index("--gems") + 1].endswith(dep)
    mf_argv = next(t for t in trials if t.kind == "mf").argv
    assert mf_argv[mf_argv.index("--seed") + 1] == "11"
    order = [t.id for t in trials]
    assert all(order.index(d) < order.index(t.id) for t in trials for d in t.deps)
    for stage, seed, message in [("logged", "run", "logged.seed: expected an integer, got 'run'"),
                                 ("gems", "each", "gems.seed: expected an integer or 'run'")]:
        bad = {**grid, stage: {**grid.get(stage, {}), "seed": seed}}
        with pytest.raises(GridError, match=message):
            expand(bad, tmp_path)


def test_a_runs_cpus_become_its_torch_threads_unless_set(tmp_path):
    grid = {"environments": ["FocusedTopDown-v0"], "resources": {"cpus": 2},
            "methods": {"sac-topk-ideal": {}, "random": {}, "sac-topk-mf": {"set": {"torch_threads": 1}, "resources": {"cpus": 3}}},
            "mf": {"epochs": 1}, "logged": {"episodes": 10}}
    runs = {t.method: t for t in expand(grid, tmp_path) if t.kind == "run"}

    def sets(t):
        return [t.argv[i + 1] for i, a in enumerate(t.argv) if a == "--set"]

    assert sets(runs["sac-topk-ideal"]) == ["torch_threads=2"] and runs["sac-topk-ideal"].cpus == 2
    assert sets(runs["random"]) == []  # nothing to train
    assert sets(runs["sac-topk-mf"]) == ["torch_threads=1"]  # the grid's own setting wins
    grid["resources"] = {"cpus": 1}
    assert all(not sets(t) for t in expand({**grid, "methods": {"sac-topk-ideal": {}}}, tmp_path) if t.kind == "run")


@pytest.mark.parametrize("value", [None, True, False, 0.8, 3, "auto", [256, 256], {"gamma": 0.5}])
def test_grid_values_reach_the_command_as_written(tmp_path, value):
    from sb3_slate.methods import parse_set
    from slaterec_lab.grid import _set_args

    argv = _set_args({"x.y": value})  # what a grid value becomes on a trial's command line
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert parse_set(sets) == {"x": {"y": value}}


@pytest.mark.parametrize("bad, message", [
    ({"methods": {"random": {}}}, "environments"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"sac-magic": {}}}, "unknown method 'sac-magic'"),
    ({"environments": ["FocusedTopDown-v0"], "seeds": [0, -1], "methods": {"random": {}}}, "seeds"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"random": {}}, "grids": {}}, "unknown grid key(s) grids"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"random": {"epochs": 3}}}, "methods.random: unknown key"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"random": {}}, "grid": {"agent.gamma": []}}, "grid.agent.gamma"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"sac-gems": {"grid": {"gems.lambda_kl": [1]}}}},
     "stage keys belong in the top-level grid"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"random": {}}, "resources": {"cpus": 0}}, "resources.cpus"),
    # every key and value of every stage and method, checked as the command will check it
    ({"environments": ["FocusedTopDown-v0"], "methods": {"sac-topk-ideal": {"set": {"agent.gama": 0.5}}}}, "gama"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"sac-topk-ideal": {"set": {"agent.gamma": "high"}}}}, "gamma"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"sac-topk-ideal": {"grid": {"n_envs": [4, -2]}}}}, "n_envs"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"random": {}}, "set": {"val_users": 1.5}}, "val_users"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"sac-gems": {}}, "gems": {"latent_dim": -1}}, "latent"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"sac-gems": {}}, "gems": {"lamda_kl": 1}}, "lamda-kl"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"sac-gems": {}}, "gems": {"lr": "fast"}}, "--lr"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"sac-topk-mf": {}}, "mf": {"dim": 0}}, "dim"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"sac-gems": {}}, "logged": {"episodes": 0}}, "episodes"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"sac-gems": {}}, "logged": {"policy": "oracle", "epsilon": 0.1}},
     "--epsilon applies to --policy epsilon-greedy only"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"random": {}}, "name": "../../escape"}, "name"),
    ({"environments": ["FocusedTopDown-v0"], "methods": {"random": {}}, "name": "a/b"}, "name"),
])
def test_bad_grids_are_refused_with_the_key_named(tmp_path, bad, message, capsys):
    with pytest.raises((GridError, ValueError), match=message.replace("(", r"\(").replace(")", r"\)")):
        expand(bad, tmp_path)
    # and by --dry-run, before anything runs: nothing is created
    grid_file = _write(tmp_path, bad)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["sweep", str(grid_file), "--out", str(tmp_path / "sw"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message.split("(")[0].strip("'") in err and "Traceback" not in err, err
    assert main(["sweep", str(grid_file), "--out", str(tmp_path / "sw"), "--executor", "local"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_binary_grid_file_is_named_not_decoded(tmp_path, capsys):
    bad = tmp_path / "grid.yaml"
    bad.write_bytes(bytes(range(256)) * 4)
    assert main(["sweep", str(bad), "--dry-run"]) == 2
    assert "is not a text file" in capsys.readouterr().err


def test_gems_on_the_sweeps_mf_stage_runs_after_it(tmp_path):
    grid = {"environments": ["FocusedTopDown-v0"], "methods": {"sac-gems": {}}, "gems": {"item_init": "mf"}}
    trials = expand(grid, tmp_path)
    order = [t.id for t in trials]
    (gems,) = [t for t in trials if t.kind == "gems"]
    (mf,) = [t for t in trials if t.kind == "mf"]
    assert mf.id in gems.deps and order.index(mf.id) < order.index(gems.id)
    assert gems.argv[gems.argv.index("--item-init") + 1] == f"mf:{tmp_path.resolve() / mf.id}"
    inside = {**grid, "gems": {"item_init": f"mf:{tmp_path / 'mf' / 'x.npz'}"}}
    with pytest.raises(GridError, match="write item_init: mf"):
        expand(inside, tmp_path)


@pytest.mark.slow(80)
def test_ray_sweep_resumes_after_ctrl_c_and_matches_the_sequential_run(tmp_path):
    pytest.importorskip("ray")
    grid_file = _write(tmp_path, GRID)
    # without Ray: one trial after another, in this process
    seq = run_sweep(GRID, grid_file, tmp_path / "seq", executor="inline", progress=False)
    assert seq.counts()["done"] == 4
    expected = _test_returns(tmp_path / "seq")
    assert len(expected) == 4
    # Ray (a real local instance, 2 workers), interrupted as soon as one run has finished
    out = tmp_path / "ray"
    cmd = [sys.executable, "-c", FOREGROUND_CLI,
           "sweep", str(grid_file), "--out", str(out), "--executor", "ray", "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    done_first: dict[str, float] = {}
    while time.time() < deadline and proc.poll() is None:
        done_first = {p.parent.name: p.stat().st_mtime for p in (out / "runs").glob("*/results.json")} \
            if (out / "runs").is_dir() else {}
        if done_first:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before it could be interrupted:\n" + proc.communicate()[0]
    proc.send_signal(signal.SIGINT)
    text = proc.communicate(timeout=180)[0]
    assert proc.returncode == 130, text
    record = json.loads((out / "sweep.json").read_text())
    status = {t["id"]: t["status"] for t in record["trials"]}
    assert "running" not in status.values()
    finished = {p.parent.name: p.stat().st_mtime for p in (out / "runs").glob("*/results.json")}
    assert 1 <= len(finished) < 4, status
    assert lock_owner(out) is None
    # the same command again: finished runs are kept, the others resume/run
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Token authentication" not in text + rerun.stdout + rerun.stderr  # Ray's notices: only with --verbose
    for name, mtime in finished.items():
        assert (out / "runs" / name / "results.json").stat().st_mtime == mtime, f"{name} was redone"
    record = json.loads((out / "sweep.json").read_text())
    assert {t["status"] for t in record["trials"]} == {"done"}
    assert _test_returns(out) == expected  # same grid, same seeds: same results with or without Ray

    # slaterec table on those runs, against a hand computation (scipy)
    import numpy as np
    from scipy import stats

    from slaterec_lab.results import find_runs, label_variants, read_run
    from slaterec_lab.tables import build

    table = build(label_variants([read_run(r) for r in find_runs([out])]))["FocusedTopDown"]
    by_method = {m: [v for k, v in expected.items() if k.startswith(m + "_")] for m in ("random", "sac-topk-ideal")}
    best = max(by_method, key=lambda m: np.mean(by_method[m]))
    other = "random" if best == "sac-topk-ideal" else "sac-topk-ideal"
    # the grid's own agent settings name the row (they are not the method's defaults)
    row = {"random": "random", "sac-topk-ideal": "sac-topk-ideal [batch_transitions=32, warmup_episodes=4]"}
    assert set(table) == set(row.values())
    for m, values in by_method.items():
        v = np.array(values)
        s = table[row[m]]["summary"]
        assert s.n == 2 and s.mean == pytest.approx(v.mean())
        assert s.half_width == pytest.approx(stats.t.ppf(0.975, 1) * v.std(ddof=1) / np.sqrt(2))
    assert table[row[best]]["best"] and table[row[other]]["p"] == pytest.approx(
        stats.ttest_ind(by_method[other], by_method[best], equal_var=False).pvalue)


def test_failing_trial_is_reported_and_its_dependents_blocked(tmp_path, capsys):
    """A stage that fails at run time (its item matrix file is missing: no grid check reads files)
    fails once - a command that refused its input would refuse it again - and blocks its dependents."""
    grid = {"name": "broken", "environments": ["FocusedTopDown-v0"], "seeds": [0],
            "logged": {"episodes": 50, "item_embeddings": str(tmp_path / "no_such_matrix.npy")}, "gems": {"max_steps": 2},
            "methods": {"sac-gems": {"episodes": 4}, "random": {}},
            "set": {"val_users": 5, "test_users": 5}, "retries": 1}
    grid_file = _write(tmp_path, grid)
    out = tmp_path / "sw"
    status = main(["sweep", str(grid_file), "--out", str(out), "--executor", "local", "--no-progress"])
    text = capsys.readouterr().out
    assert status == 1
    record = {t["id"]: t for t in json.loads((out / "sweep.json").read_text())["trials"]}
    logged = record["logged/FocusedTopDown"]
    assert logged["status"] == "failed" and logged["attempts"] == 1  # exit status 2: not retried
    assert "no_such_matrix.npy" in logged["error"] and "not retried" in logged["error"]
    assert record["gems/FocusedTopDown.pt"]["status"] == "blocked"
    assert record["runs/sac-gems_FocusedTopDown_s0"]["status"] == "blocked"
    assert record["runs/random_FocusedTopDown_s0"]["status"] == "done"  # unaffected trials still run
    assert "failed  logged/FocusedTopDown" in text and "1 done, 1 failed, 2 blocked" in text
    assert main(["sweep", str(grid_file), "--out", str(out), "--retries", "-1"]) == 2
    assert "--retries: must be a non-negative integer, got -1" in capsys.readouterr().err
    # a folder of the user's is not taken for a sweep directory
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert main(["sweep", str(grid_file), "--out", str(tmp_path / "mine"), "--executor", "local"]) == 2
    assert "exists and is not a sweep directory" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    # a folder holding another grid's outputs beside this grid's is refused too, naming the stray entry
    (tmp_path / "mixed" / "runs" / "not_this_grids").mkdir(parents=True)
    assert main(["sweep", str(grid_file), "--out", str(tmp_path / "mixed"), "--executor", "local"]) == 2
    assert "holds runs/not_this_grids, which is no output of this grid" in capsys.readouterr().err
    # a different grid in the same sweep directory is refused
    grid2 = dict(grid, seeds=[0, 1])
    status = main(["sweep", str(_write(tmp_path, grid2, "other.yaml")), "--out", str(out), "--executor", "local"])
    assert status == 2 and "holds a sweep of another grid" in capsys.readouterr().err


def test_failures_other_than_refusals_are_retried(tmp_path):
    from slaterec_lab import sweep as sw

    record = sw.Sweep.open({"environments": ["FocusedTopDown-v0"], "methods": {"random": {}}, "retries": 1},
                           tmp_path / "g.yaml", tmp_path / "s")
    (t,) = record.trials.values()
    bar = sw._Progress(record, False)
    sw._finish(record, bar, t, {"returncode": 1, "wall_s": 1.0}, "", 1, {t["id"]: 1})
    assert t["status"] == sw.PENDING  # a crash, a killed worker: tried again
    sw._finish(record, bar, t, {"returncode": 2, "wall_s": 1.0}, "", 1, {t["id"]: 1})
    assert t["status"] == sw.FAILED and "not retried" in t["error"]


@pytest.mark.slow(29)
def test_sigterm_stops_a_sweep_like_ctrl_c(tmp_path):
    grid = {"name": "term", "environments": ["FocusedTopDown-v0"], "seeds": [0, 1, 2],
            "set": {"val_users": 5, "test_users": 5}, "methods": {"random": {}}, "retries": 0}
    out = tmp_path / "sw"
    cmd = [sys.executable, "-c", FOREGROUND_CLI,
           "sweep", str(_write(tmp_path, grid)), "--out", str(out), "--executor", "local", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("logs/*.log")):  # the first trial has started
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, text
    statuses = [t["status"] for t in json.loads((out / "sweep.json").read_text())["trials"]]
    assert "running" not in statuses and lock_owner(out) is None
    assert main(["sweep", str(tmp_path / "grid.yaml"), "--out", str(out), "--executor", "local", "--no-progress"]) == 0


@pytest.mark.slow(17)
def test_trials_stop_on_the_sweeps_sigint_when_it_was_started_in_the_background(tmp_path):
    """``nohup slaterec sweep ... &`` starts the sweep with SIGINT ignored, which its trials
    would inherit; stopped with SIGTERM, the sweep's SIGINT must still stop a running trial
    (before the SIGKILL that follows 60 s later)."""
    grid = {"name": "bg", "environments": ["FocusedTopDown-v0"], "seeds": [0],
            "set": {"val_users": 5, "test_users": 5, "n_envs": 2},
            "methods": {"sac-topk-ideal": {"episodes": 100000, "preset": "window", "set": {"val_every": 4}}},
            "retries": 0}
    out = tmp_path / "sw"
    cmd = [sys.executable, "-c", "import sys; from gym_slaterec.cli import main; sys.exit(main())",
           "sweep", str(_write(tmp_path, grid)), "--out", str(out), "--executor", "local", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("runs/*/train.log")):  # the trial is training
        time.sleep(0.2)
    time.sleep(1.0)
    stopped = time.time()
    proc.send_signal(signal.SIGTERM)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, text
    assert time.time() - stopped < 45, "the trial ignored the sweep's SIGINT"
    (trial,) = json.loads((out / "sweep.json").read_text())["trials"]
    assert trial["status"] == "interrupted"


@pytest.mark.parametrize("name", sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml")))
def test_shipped_grids_expand_into_commands_the_cli_accepts(tmp_path, name):
    """Every shipped grid expands, and every trial's command parses (no stale option in a grid)."""
    from gym_slaterec.cli import build_parser

    grid = load_grid(shipped_grid(name))
    matrix = grid.get("item_embeddings")
    if isinstance(matrix, str) and ("/" in matrix or matrix.endswith((".npy", ".pt"))) and not Path(matrix).exists():
        pytest.skip(f"grid {name} names the matrix file {matrix}, which this checkout's machine lacks")
    trials = expand(grid, tmp_path)
    assert trials and all(t.kind in {"logged", "gems", "mf", "run", "collect", "export", "offline"} for t in trials)
    parser = build_parser()
    for trial in trials:
        args = parser.parse_args(trial.argv)
        assert args.command == trial.argv[0]


def test_ray_that_does_not_start_is_one_line_or_falls_back(tmp_path, monkeypatch, capsys):
    ray = pytest.importorskip("ray")

    def timeout(**kwargs):
        raise TimeoutError("The current node timed out during startup")

    monkeypatch.setattr(ray, "init", timeout)
    grid = {"environments": ["FocusedTopDown-v0"], "seeds": [0], "set": {"val_users": 5, "test_users": 5},
            "methods": {"random": {}}}
    grid_file = _write(tmp_path, grid)
    assert main(["sweep", str(grid_file), "--out", str(tmp_path / "a"), "--executor", "ray", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Ray did not start (The current node timed out during startup)" in err and "--executor local" in err
    assert "Traceback" not in err
    assert main(["sweep", str(grid_file), "--out", str(tmp_path / "b"), "--executor", "auto", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "falling back to the local executor" in out and "1 done" in out


def test_paired_values_expand_to_one_stage_per_pair(tmp_path, capsys):
    """The paper's GeMS settings come in pairs (Params1: lambda_KL 0.5 / lambda_click 0.2; Params2:
    1.0 / 0.5): a zip block gives two GeMS per environment, not the four of a crossed grid."""
    grid = {"environments": ["FocusedTopDown-v0"], "seeds": [0, 1], "methods": {"sac-gems": {}},
            "zip": {"gems.lambda_kl": [0.5, 1.0], "gems.lambda_click": [0.2, 0.5]},
            "grid": {"agent.gamma": [0.8, 0.0]}}
    trials = expand(grid, tmp_path)
    gems = [t for t in trials if t.kind == "gems"]
    pairs = sorted((t.argv[t.argv.index("--lambda-kl") + 1], t.argv[t.argv.index("--lambda-click") + 1]) for t in gems)
    assert pairs == [("0.5", "0.2"), ("1.0", "0.5")]
    runs = [t for t in trials if t.kind == "run"]
    assert len(runs) == 2 * 2 * 2  # pairs x gamma x seeds
    for t in runs:
        (dep,) = t.deps[1:] or t.deps
        assert f"lambda_kl={t.point['gems.lambda_kl']}_lambda_click={t.point['gems.lambda_click']}" in dep
    # train keys pair the same way
    run_zip = {**grid, "zip": {"agent.gamma": [0.8, 0.0], "agent.tau": [0.002, 0.005]}, "grid": {}}
    points = sorted((t.point["agent.gamma"], t.point["agent.tau"]) for t in expand(run_zip, tmp_path) if t.kind == "run")
    assert points == [(0.0, 0.005), (0.0, 0.005), (0.8, 0.002), (0.8, 0.002)]
    # --dry-run shows the two GeMS
    assert main(["sweep", str(_write(tmp_path, grid)), "--out", str(tmp_path / "sw"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("slaterec pretrain-gems") == 2 and "lambda_click=0.2_lambda_kl=0.5.pt" in out  # YAML sorts keys


def test_a_zip_pairs_the_variant_with_the_stage_recipes_that_go_with_it(tmp_path):
    """One grid for both variants of Table 2: each variant's runs on the MF and GeMS of its own
    recipe; a run that needs no MF (the reference SAC+WkNN) is not repeated over MF recipes."""
    grid = {"environments": ["FocusedTopDown-v0"], "seeds": [0],
            "methods": {"sac-topk-mf": {"preset": "paper"}, "sac-gems": {"preset": "paper"},
                        "sac-wknn": {"preset": "paper"}, "random": {}},
            "zip": {"variant": ["corrected", "reference"], "mf.recipe": ["default", "reference"],
                    "gems.recipe": ["default", "reference"]}}
    trials = expand(grid, tmp_path)
    runs = {(t.method, t.point["variant"]): t for t in trials if t.kind == "run"}
    assert sorted(runs) == [(m, v) for m in ("random", "sac-gems", "sac-topk-mf", "sac-wknn")
                            for v in ("corrected", "reference")]
    by_id = {t.id: t for t in trials}
    for (method, variant), t in runs.items():
        assert f"variant={variant}" in t.argv
        recipe = "default" if variant == "corrected" else "reference"
        for dep in t.deps:
            stage = by_id[dep]
            if stage.kind in ("mf", "gems"):
                assert stage.argv[stage.argv.index("--recipe") + 1] == recipe
        kinds = sorted(by_id[d].kind for d in t.deps)
        assert kinds == {"sac-topk-mf": ["mf"], "sac-gems": ["gems"], "random": [],
                         "sac-wknn": ["mf"] if variant == "corrected" else []}[method]
    assert sum(t.kind == "mf" for t in trials) == 2 and sum(t.kind == "gems" for t in trials) == 2


@pytest.mark.parametrize("zipped, message", [
    ({"gems.lambda_kl": [0.5, 1.0], "gems.lambda_click": [0.2]}, "equal lengths"),
    ({"agent.gamma": [0.8, 0.0], "agent.tau": [0.1, 0.2]}, "either crossed or paired"),
    ({"gems.lambda_kl": 0.5}, "non-empty list"),
])
def test_bad_paired_values_are_refused(tmp_path, zipped, message):
    grid = {"environments": ["FocusedTopDown-v0"], "methods": {"sac-gems": {}}, "zip": zipped,
            "grid": {"agent.tau": [0.1]}}
    with pytest.raises(GridError, match=message):
        expand(grid, tmp_path)


def test_the_local_executor_gives_trials_their_gpus(tmp_path, monkeypatch, capsys):
    """resources.gpus picks devices from the visible list (a fake one here), as Ray does on a cluster."""
    from slaterec_lab import sweep as sw

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    seen = {}
    real = sw.run_command

    def recording(argv, log_path, cwd, threads, devices=None):
        seen[argv[1]] = devices
        return real(argv, log_path, cwd, threads, devices)

    monkeypatch.setattr(sw, "run_command", recording)
    grid = {"environments": ["FocusedTopDown-v0"], "seeds": [0], "set": {"val_users": 4, "test_users": 4},
            "methods": {"random": {"resources": {"gpus": 2}}, "oracle": {"resources": {"gpus": 0.5}}}}
    assert main(["sweep", str(_write(tmp_path, grid)), "--out", str(tmp_path / "sw"), "--executor", "local",
                 "--no-progress"]) == 0
    assert seen == {"random": "3,5", "oracle": "3"}
    record = {t["id"]: t for t in json.loads((tmp_path / "sw" / "sweep.json").read_text())["trials"]}
    assert record["runs/random_FocusedTopDown_s0"]["devices"] == "3,5"
    capsys.readouterr()
    grid["methods"]["random"]["resources"]["gpus"] = 3
    assert main(["sweep", str(_write(tmp_path, grid, "g3.yaml")), "--out", str(tmp_path / "sw3"), "--executor", "local",
                 "--no-progress"]) == 2
    assert "asks for 3 GPU(s), but 2 are visible (3, 5)" in capsys.readouterr().err
    assert not (tmp_path / "sw3" / "runs").exists()


OFFLINE_GRID = {
    "name": "off",
    "environments": ["FocusedTopDown-v0"],
    "seeds": [0],
    "logged": {"episodes": 30, "seed": 0},
    "gems": {"max_steps": 4, "latent_dim": 8, "val_max_samples": 200},
    "set": {"val_users": 4, "test_users": 4, "n_envs": 4},
    "methods": {"sac-gems": {"episodes": 8, "preset": "paper",
                             "set": {"val_every": 4, "checkpoint_every": 4, "agent.warmup_episodes": 4,
                                     "agent.batch_episodes": 2, "replay_snapshots": [4]}}},
    "offline": {"datasets": {"random": {"policy": "random", "episodes": 6},
                             "expert": {"policy": "run:sac-gems", "episodes": 6},
                             "random-expert": {"merge": ["random", "expert"]},
                             "replay": {"policy": "run:sac-gems", "replay": "ep0000004"}},
                "export": {"window": 3}, "algorithms": ["td3bc", "bc"], "seeds": [0], "steps": 4,
                "set": {"eval_every": 2, "val_users": 2, "test_users": 2, "batch_size": 16, "feature_size": 16}},
    "retries": 0,
}


def test_offline_stages_expand_collect_export_and_train_offline_per_dataset(tmp_path):
    trials = {t.id: t for t in expand(OFFLINE_GRID, tmp_path)}
    kinds = sorted(t.kind for t in trials.values())
    assert kinds.count("collect") == 4 and kinds.count("export") == 4 and kinds.count("offline") == 8
    merged = trials["offline/data/FocusedTopDown_random-expert"]
    assert merged.argv[0] == "merge-datasets" and merged.deps == ["offline/data/FocusedTopDown_random",
                                                                  "offline/data/FocusedTopDown_expert"]
    assert kinds.count("gems") == 1  # gems: online, the sweep's GeMS stage exports both datasets
    expert = trials["offline/data/FocusedTopDown_expert"]
    assert trials["offline/data/FocusedTopDown_replay"].argv[:2] == ["replay-dataset", expert.argv[3]]
    (run_id,) = expert.deps
    assert trials[run_id].kind == "run" and trials[run_id].method == "sac-gems"
    assert expert.argv[expert.argv.index("--policy") + 1] == str((tmp_path / run_id).resolve())
    td3 = trials["offline/runs/td3bc_FocusedTopDown_random_s0"]
    assert set(td3.deps) == {"offline/export/FocusedTopDown_random.h5", next(t.id for t in trials.values()
                                                                           if t.kind == "gems")}
    assert td3.argv[:2] == ["train-offline", "td3bc"] and "--steps" in td3.argv
    own = expand({**OFFLINE_GRID, "offline": {**OFFLINE_GRID["offline"], "gems": "dataset"}}, tmp_path)
    gems = [t for t in own if t.kind == "gems"]
    assert sorted(t.id for t in gems) == ["gems/FocusedTopDown.pt", "offline/gems/FocusedTopDown_expert.pt",
                                          "offline/gems/FocusedTopDown_random-expert.pt",
                                          "offline/gems/FocusedTopDown_random.pt",
                                          "offline/gems/FocusedTopDown_replay.pt"]  # the online one for sac-gems
    assert all(t.deps == [t.id.replace("offline/gems/", "offline/data/").removesuffix(".pt")]
               for t in gems if t.id.startswith("offline/"))


@pytest.mark.parametrize("offline, message", [
    ({"datasets": {"x": {"policy": "run:sac-wknn", "episodes": 4}}}, "names 0 runs of the grid"),
    ({"datasets": {"x": {"policy": "random", "episodes": 4}}, "algorithms": ["sac"]}, "unknown algorithm 'sac'"),
    ({"datasets": {"x": {"policy": "random", "episodes": 4}}, "gems": "mine"}, "expected online"),
    ({"datasets": {"x y": {"policy": "random", "episodes": 4}}}, "must be letters"),
    ({"datasets": {"x": {"policy": "random", "episodes": 4}}, "set": {"td3bc_beta": 1}}, "td3bc_beta"),
    ({"datasets": {"x": {"policy": "random", "episodes": 4, "stochastic": True}}}, "--stochastic applies to agent runs"),
    ({"datasets": {"x": {"policy": "random", "episodes": 4}, "y": {"merge": ["x", "z"]}}}, "merge takes a list"),
])
def test_bad_offline_sections_are_refused_by_name(tmp_path, offline, message):
    with pytest.raises(GridError, match=message):
        expand({**OFFLINE_GRID, "offline": offline}, tmp_path)
    # a reference policy collects in the registered environment: runs with other env settings would not match
    with pytest.raises(GridError, match="env_kwargs"):
        expand({**OFFLINE_GRID, "set": {**OFFLINE_GRID["set"], "env_kwargs.episode_length": 10}}, tmp_path)


@pytest.mark.slow(17)
def test_an_offline_sweep_runs_end_to_end_and_its_table_keeps_datasets_apart(tmp_path):
    from slaterec_lab.results import comparable_records

    sweep = run_sweep(OFFLINE_GRID, _write(tmp_path, OFFLINE_GRID), tmp_path / "sw", executor="inline", progress=False)
    assert all(t["status"] == "done" for t in sweep.trials.values()), {
        k: t.get("error") for k, t in sweep.trials.items() if t["status"] != "done"}
    records, _ = comparable_records([tmp_path / "sw" / "offline" / "runs"], need_test=True)
    assert len(records) == 8
    rows = {(r.method, r.config.get("dataset")) for r in records}
    assert len(rows) == 8  # two algorithms x four datasets, never averaged together
    merged = json.loads((tmp_path / "sw" / "offline" / "data" / "FocusedTopDown_random-expert" / "meta.json").read_text())
    assert [p["episodes"] for p in merged["provenance"]["policy"]["parts"]] == [6, 6]


@pytest.mark.slow(30)
def test_grouped_seeds_are_one_trial_with_the_same_run_directories(tmp_path):
    """group_seeds: a cell's seeds train in one trial (train --seeds), into the run directories,
    and with the results, that one trial per seed gives."""
    # on the CPU: the same results run for run (CUDA's scatter-adds sum in no fixed order)
    grid = {**GRID, "device": "cpu",
            "methods": {**GRID["methods"], "sac-topk-ideal": {**GRID["methods"]["sac-topk-ideal"], "episodes": 8}}}
    grouped = {**grid, "group_seeds": True, "resources": {"cpus": 2}}
    trials = {t.id: t for t in expand(grouped, tmp_path / "g")}
    assert set(trials) == {"runs/random_FocusedTopDown_s{seed}", "runs/sac-topk-ideal_FocusedTopDown_s{seed}"}
    t = trials["runs/sac-topk-ideal_FocusedTopDown_s{seed}"]
    assert t.kind == "seeds" and t.point["seeds"] == [0, 1] and t.cpus == 2
    assert t.argv[t.argv.index("--seeds") + 1:t.argv.index("--seeds") + 3] == ["0", "1"]
    assert t.argv[t.argv.index("--jobs") + 1] == "2" and "torch_threads=2" not in " ".join(t.argv)
    one = run_sweep(grid, _write(tmp_path, grid), tmp_path / "one", executor="inline", progress=False)
    two = run_sweep(grouped, _write(tmp_path, grouped, "g.yaml"), tmp_path / "g", executor="inline", progress=False)
    assert {t["status"] for t in two.trials.values()} == {"done"} and len(two.trials) == 2
    assert _test_returns(tmp_path / "g") == pytest.approx(_test_returns(tmp_path / "one"), rel=1e-6)
    assert len(_test_returns(tmp_path / "g")) == 4
    again = run_sweep(grouped, _write(tmp_path, grouped, "g.yaml"), tmp_path / "g", executor="inline", progress=False)
    assert all(t["attempts"] == 1 for t in again.trials.values())  # done trials are not run again
    for bad, message in [({"name_template": "{method}_{seed}"}, "leave name_template out"),
                         ({"group_seeds": "yes"}, "expected true or false")]:
        with pytest.raises(GridError, match=message):
            expand({**grouped, **bad}, tmp_path / "x")


def test_folder_holding_a_trial_run_by_hand_is_adopted(tmp_path, capsys):
    """A trial run by hand (the command --dry-run prints) into the sweep's folder before the sweep
    existed counts as done: the sweep adopts the folder and runs only the rest."""
    grid = {"name": "adopt", "environments": ["FocusedTopDown-v0"], "seeds": [0, 1],
            "set": {"val_users": 5, "test_users": 5, "env_kwargs.episode_length": 10},
            "methods": {"random": {}}, "retries": 0}
    grid_file = _write(tmp_path, grid)
    out = tmp_path / "sw"
    assert main(["sweep", str(grid_file), "--out", str(out), "--dry-run"]) == 0
    lines = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("slaterec train")]
    by_hand = next(ln for ln in lines if "--seed" in ln and ln[ln.index("--seed") + 1] == "0")
    assert not out.exists()  # a dry run creates nothing
    argv = by_hand[1:]
    note = argv.index("--notes")
    argv = argv[:note] + ["--notes", " ".join(argv[note + 1:])]
    assert main(argv) == 0
    first = out / "runs" / "random_FocusedTopDown_s0" / "results.json"
    before = first.read_bytes(), first.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["sweep", str(grid_file), "--out", str(out), "--executor", "inline", "--no-progress"]) == 0
    assert "2 trials, 1 already done" in capsys.readouterr().out
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before  # not run again
    record = {t["id"]: t["status"] for t in json.loads((out / "sweep.json").read_text())["trials"]}
    assert record == {"runs/random_FocusedTopDown_s0": "done", "runs/random_FocusedTopDown_s1": "done"}
