"""Names of the researcher's choosing: run directories from a template of the run's own fields,
on the command line and in grids; collisions and escapes refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gym_slaterec.cli import main
from slaterec_lab.grid import GridError, expand

QUICK = ["--set", "val_users=2", "--set", "test_users=2", "--no-progress"]


def test_train_names_its_run_directory_from_a_template(tmp_path, capsys):
    ws = tmp_path / "ws"
    args = ["train", "random", "FocusedTopDown-v0", "--workspace", ws, "--seed", "7", "--tag", "probe",
            "--name-template", "log_{seed}/{method}/{tag}_{env}_{date}_n{val_users}", *QUICK]
    assert main([str(a) for a in args]) == 0
    (run,) = [p.parent for p in ws.rglob("results.json")]
    assert run.relative_to(ws) == Path("log_7/random") / f"probe_FocusedTopDown_{time.strftime('%Y%m%d', time.gmtime())}_n2"
    assert json.loads((run / "config.json").read_text())["seed"] == 7
    capsys.readouterr()


@pytest.mark.parametrize("template, message", [
    ("{method}/{agent.gama}", "unknown field {agent.gama}"),
    ("../{method}", "inside the workspace"),
    ("/abs/{method}", "inside the workspace"),
    ("{method} {seed}", "inside the workspace"),
])
def test_bad_templates_are_refused_before_anything_is_written(tmp_path, capsys, template, message):
    code = main(["train", "sac-topk-ideal", "FocusedTopDown-v0", "--workspace", str(tmp_path / "ws"),
                 "--name-template", template, *QUICK])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "ws").exists() or not any((tmp_path / "ws").rglob("config.json"))


def test_out_and_a_template_are_one_name_too_many(tmp_path, capsys):
    assert main(["train", "random", "FocusedTopDown-v0", "--out", str(tmp_path / "r"), "--name-template", "{seed}",
                 *QUICK]) == 2
    assert "give one" in capsys.readouterr().err


def test_grid_name_template(tmp_path):
    grid = {"environments": ["FocusedTopDown"], "seeds": [0, 1], "methods": {"sac-topk-ideal": {"preset": "window"}},
            "grid": {"agent.gamma": [0.8, 0.0]}, "name_template": "log_{seed}/{method}/gamma{agent.gamma}"}
    runs = sorted(t.id for t in expand(grid, tmp_path) if t.kind == "run")
    assert runs == [f"runs/log_{s}/sac-topk-ideal/gamma{g}" for s in (0, 1) for g in ("0.0", "0.8")]
    with pytest.raises(GridError, match="to two runs"):
        expand({**grid, "name_template": "log_{seed}/{method}"}, tmp_path)
    # the grid point's stage keys are fields too (two GeMS settings, one run each)
    stages = {"environments": ["FocusedTopDown"], "methods": {"sac-gems": {}}, "grid": {"gems.lambda_kl": [0.5, 1.0]},
              "name_template": "{method}/kl{gems.lambda_kl}_s{seed}"}
    assert sorted(t.id for t in expand(stages, tmp_path) if t.kind == "run") == [
        "runs/sac-gems/kl0.5_s0", "runs/sac-gems/kl1.0_s0"]
    with pytest.raises(GridError, match="without {date}"):
        expand({**grid, "name_template": "{method}_{date}"}, tmp_path)


@pytest.fixture(scope="module")
def small_logged(tmp_path_factory):
    out = tmp_path_factory.mktemp("logged") / "data"
    assert main(["generate", "FocusedTopDown-v0", "--episodes", "30", "--out", str(out), "--no-progress"]) == 0
    return out


def test_gems_and_mf_files_are_named_from_their_settings(small_logged, tmp_path, capsys):
    ws = tmp_path / "ws"
    gems = ["pretrain-gems", small_logged, "--workspace", ws, "--max-steps", "2", "--latent-dim", "4",
            "--lambda-kl", "0.5", "--lambda-click", "0.2", "--seed", "58", "--no-progress", "--name-template",
            "GeMS_{env}_latentdim{latent_dim}_beta{lambda_kl}_lambdaclick{lambda_click}_seed{seed}"]
    assert main([str(a) for a in gems]) == 0
    made = ws / "GeMS_FocusedTopDown_latentdim4_beta0.5_lambdaclick0.2_seed58.pt"
    assert made.is_file()
    assert main([str(a) for a in gems]) == 2  # the same name again: refused, not overwritten
    assert "exists" in capsys.readouterr().err
    mf = ["train-mf", small_logged, "--workspace", ws, "--epochs", "1", "--seed", "3", "--no-progress",
          "--name-template", "mf/{dataset}_dim{dim}_s{seed}"]
    assert main([str(a) for a in mf]) == 0
    assert (ws / "mf" / "data_dim20_s3.npz").is_file()
    assert main([str(a) for a in mf[:-2]] + ["--name-template", "{dimension}"]) == 2
    assert "unknown field {dimension}" in capsys.readouterr().err
    assert main([str(a) for a in mf[:-2]]) == 2
    assert "give --out FILE or --name-template TEMPLATE" in capsys.readouterr().err
    assert main([str(a) for a in mf] + ["--out", str(tmp_path / "x.npz")]) == 2
    assert "--out and --name-template both name the file; give one" in capsys.readouterr().err


def test_grid_names_paired_gems_after_their_parameters(tmp_path):
    grid = {"environments": ["FocusedTopDown-v0"], "seeds": [0], "logged": {"episodes": 20},
            "gems": {"max_steps": 2, "latent_dim": 32},
            "zip": {"gems.lambda_kl": [0.5, 1.0], "gems.lambda_click": [0.2, 0.5]},
            "name_template": {"gems": "GeMS_{env}_latentdim{latent_dim}_beta{lambda_kl}_lambdaclick{lambda_click}_seed{seed}",
                              "runs": "{method}_{env}_s{seed}_kl{gems.lambda_kl}"},
            "methods": {"sac-gems": {"episodes": 2}}}
    trials = expand(grid, tmp_path)
    gems = sorted(t.id for t in trials if t.kind == "gems")
    assert gems == ["gems/GeMS_FocusedTopDown_latentdim32_beta0.5_lambdaclick0.2_seed0.pt",
                    "gems/GeMS_FocusedTopDown_latentdim32_beta1.0_lambdaclick0.5_seed0.pt"]
    runs = [t for t in trials if t.kind == "run"]
    assert sorted(t.id for t in runs) == ["runs/sac-gems_FocusedTopDown_s0_kl0.5", "runs/sac-gems_FocusedTopDown_s0_kl1.0"]
    for run in runs:  # each run trains on the GeMS of its own pair
        kl = run.id.rsplit("kl", 1)[1]
        assert f"beta{kl}_" in run.argv[run.argv.index("--gems") + 1]
    clash = {**grid, "name_template": {"gems": "GeMS_{env}_latentdim{latent_dim}"}}
    with pytest.raises(GridError, match="to two different gems trials"):
        expand(clash, tmp_path)
    with pytest.raises(GridError, match="name_template: expected a string"):
        expand({**grid, "name_template": {"checkpoints": "x"}}, tmp_path)
