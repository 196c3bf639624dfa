"""``slaterec envs | generate | evaluate``, called in-process through gym_slaterec.cli.main."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gym_slaterec.cli import main
from gym_slaterec.core.embeddings import fingerprint
from gym_slaterec.logged_data import LoggedDataset
from gym_slaterec.rollouts import rollout_reference_policy


def test_envs_lists_the_six_environments(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for name in ("FocusedTopDown", "FocusedMixed", "FocusedDivPen", "DiffuseTopDown", "DiffuseMixed", "DiffuseDivPen"):
        assert f"SlateRec/{name}-v0" in out
    assert "boredom_threshold = 5" in out
    assert main(["envs", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert len(table) == 6
    assert table["SlateRec/DiffuseDivPen-v0"]["diversity_penalty"] == 3.0
    assert table["SlateRec/FocusedMixed-v0"]["click_model"] == "Mixed"


def test_generate_writes_a_dataset_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "logged"
    args = ["generate", "FocusedTopDown-v0", "--policy", "epsilon-greedy", "--epsilon", "0.3",
            "--episodes", "6", "--seed", "2", "--out", str(out)]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    ds = LoggedDataset.load(out, verify=True)
    assert len(ds) == 6 and ds.env_id == "SlateRec/FocusedTopDown-v0"
    assert ds.provenance["policy"] == {"name": "epsilon-greedy", "epsilon": 0.3} and ds.provenance["seed"] == 2
    before = ds.fingerprint
    assert main(args[:-2] + ["--seed", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert LoggedDataset.load(out).fingerprint == before
    assert main(args + ["--seed", "3", "--overwrite"]) == 0
    assert LoggedDataset.load(out).fingerprint != before


def test_generate_with_item_embeddings_file(tmp_path, capsys):
    emb = np.random.default_rng(0).uniform(0.01, 1, size=(40, 20)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    np.save(tmp_path / "emb.npy", emb)
    out = tmp_path / "ds"
    assert main(["generate", "SlateRec/DiffuseMixed-v0", "--policy", "random", "--episodes", "3",
                 "--out", str(out), "--item-embeddings", str(tmp_path / "emb.npy")]) == 0
    ds = LoggedDataset.load(out)
    assert ds.item_embeddings_fingerprint == fingerprint(emb) and ds.num_items == 40
    assert main(["generate", "SlateRec/DiffuseMixed-v0", "--episodes", "3", "--out", str(tmp_path / "o2"),
                 "--item-embeddings", str(tmp_path / "missing.npy")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_evaluate_json(capsys):
    assert main(["evaluate", "SlateRec/FocusedDivPen-v0", "--policy", "random", "--episodes", "12",
                 "--seed", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"mean", "ci95", "episodes"} <= set(result)
    assert result["episodes"] == 12
    returns = rollout_reference_policy("SlateRec/FocusedDivPen-v0", "random", 12, 4)
    assert result["mean"] == pytest.approx(returns.mean())
    lo, hi = result["ci95"]
    assert lo < result["mean"] < hi


def test_evaluate_text(capsys):
    assert main(["evaluate", "FocusedTopDown-v0", "--policy", "oracle", "--episodes", "5"]) == 0
    out = capsys.readouterr().out
    assert "mean return" in out and "95% CI" in out and "5 episodes" in out


def test_unknown_environment_and_bad_arguments(tmp_path, capsys):
    assert main(["evaluate", "SlateRec/Nope-v0", "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert "unknown environment" in err and "FocusedTopDown" in err
    assert main(["generate", "Nope", "--episodes", "2", "--out", str(tmp_path / "x")]) == 2
    assert "unknown environment" in capsys.readouterr().err
    assert main(["generate", "FocusedTopDown-v0", "--episodes", "0", "--out", str(tmp_path / "x")]) == 2
    assert "episodes" in capsys.readouterr().err
    assert main(["evaluate", "FocusedTopDown-v0", "--policy", "nonsense", "--episodes", "2"]) == 2
    assert "policy" in capsys.readouterr().err
    assert main(["generate", "FocusedTopDown-v0", "--policy", "greedy", "--out", str(tmp_path / "x")]) == 2
    assert "invalid choice: 'greedy'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
