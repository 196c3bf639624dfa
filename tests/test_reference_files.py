"""The reference implementation's files accepted as they are: .pt matrices and logged
datasets (built here with torch.save in the shapes the reference code writes),
environment aliases, and --item-embeddings on the command line."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from gym_slaterec.cli import main as cli_main
from gym_slaterec.core.config import resolve_env_id
from gym_slaterec.core.embeddings import fingerprint, load_item_embeddings
from gym_slaterec.gems.data import TurnSampler
from gym_slaterec.logged_data import LoggedDataset
from gym_slaterec.mf import MFEmbeddings
from gym_slaterec.reference_import import import_reference_dataset


class NotATensor:
    """A picklable object: torch.save stores it, a weights_only load must refuse it."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


@pytest.fixture
def matrix() -> np.ndarray:
    rng = np.random.default_rng(4)
    m = rng.uniform(0.0, 1.0, size=(1000, 20)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


@pytest.fixture
def matrix_pt(tmp_path, matrix):
    path = tmp_path / "item_embeddings_focused.pt"
    torch.save(torch.from_numpy(matrix), path)
    return path


def sessions(n: int, seed: int, turns: int = 100, k: int = 10) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {i: {"slate": torch.randint(0, 1000, (turns, k), generator=g),
                "clicks": (torch.rand(turns, k, generator=g) < 0.2).long()} for i in range(n)}


# ------------------------------------------------------------------ matrices
def test_pt_matrix_is_accepted_wherever_a_matrix_is(matrix, matrix_pt):
    emb, source = load_item_embeddings(matrix_pt, 2)
    np.testing.assert_array_equal(emb, matrix)
    assert source == str(matrix_pt.resolve())
    env = gym.make("SlateRec/FocusedTopDown-v0", item_embeddings=matrix_pt)
    assert env.unwrapped.simulator.catalogue.fingerprint == fingerprint(matrix)
    same = gym.make("SlateRec/FocusedTopDown-v0", item_embeddings=matrix)
    for e in (env, same):
        e.reset(seed=3)
    a = env.step(np.arange(10))[0]
    b = same.step(np.arange(10))[0]
    np.testing.assert_array_equal(a["clicks"], b["clicks"])
    mf = MFEmbeddings.load(matrix_pt)
    np.testing.assert_array_equal(mf.embeddings, matrix)
    assert mf.provenance["imported_from"] == str(matrix_pt.resolve()) and mf.env_id is None


def test_pt_files_holding_other_things_are_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save(NotATensor(), evil)
    with pytest.raises(ValueError, match="objects other than tensors"):
        load_item_embeddings(evil, 2)
    with pytest.raises(ValueError, match="objects other than tensors"):
        MFEmbeddings.load(evil)
    a_dict = tmp_path / "dict.pt"
    torch.save({"w": torch.ones(3, 4)}, a_dict)
    with pytest.raises(ValueError, match="holds a dict, not a tensor"):
        load_item_embeddings(a_dict, 2)
    cube = tmp_path / "cube.pt"
    torch.save(torch.ones(10, 20, 2), cube)
    with pytest.raises(ValueError, match=r"2-D matrix .*\(10, 20, 2\)"):
        load_item_embeddings(cube, 2)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pt"):
        load_item_embeddings(junk, 2)


def test_reference_environment_names_are_aliases():
    assert resolve_env_id("focused_topdown") == "SlateRec/FocusedTopDown-v0"
    assert resolve_env_id("diffuse_mix") == "SlateRec/DiffuseMixed-v0"
    assert resolve_env_id("Focused_DivPen") == "SlateRec/FocusedDivPen-v0"
    assert resolve_env_id("FocusedMixed-v0") == "SlateRec/FocusedMixed-v0"
    with pytest.raises(ValueError, match="focused_topdown"):
        resolve_env_id("focused_sideways")


# ----------------------------------------------------------------- datasets
def test_import_reference_dataset_file_and_folder(tmp_path, matrix_pt):
    one = sessions(30, 0)
    torch.save(one, tmp_path / "focused_topdown.pt")
    ds = import_reference_dataset(tmp_path / "focused_topdown.pt", "focused_topdown", tmp_path / "ds",
                                  item_embeddings=str(matrix_pt), progress=False)
    assert (len(ds), ds.turns) == (30, 100)
    assert not ds.has_initial_turn and ds.first_turn == 1
    env = gym.make("SlateRec/FocusedTopDown-v0", item_embeddings=matrix_pt)
    initial = env.unwrapped.simulator.initial_slate
    np.testing.assert_array_equal(ds.slates[:, 0], np.tile(initial, (30, 1)))
    assert ds.clicks[:, 0].sum() == 0
    for i in (0, 17, 29):
        np.testing.assert_array_equal(ds.slates[i, 1:], one[i]["slate"].numpy())
        np.testing.assert_array_equal(ds.clicks[i, 1:], one[i]["clicks"].numpy())
    np.testing.assert_allclose(ds.returns(), [one[i]["clicks"].sum().item() for i in range(30)])
    prov = ds.provenance
    assert prov["env_id"] == "SlateRec/FocusedTopDown-v0"
    assert prov["item_embeddings_fingerprint"] == env.unwrapped.simulator.catalogue.fingerprint
    assert prov["imported_from"].endswith("focused_topdown.pt") and prov["has_initial_turn"] is False
    # GeMS samples only the turns that were observed
    sampler = TurnSampler(ds)
    assert len(sampler) == 30 * 100 and not np.isin(sampler.index % 101, [0]).any()
    reloaded = LoggedDataset.load(tmp_path / "ds", verify=True)
    assert reloaded.fingerprint == ds.fingerprint

    folder = tmp_path / "chunks"
    folder.mkdir()
    torch.save(sessions(5, 1), folder / "chunk_0.pt")
    torch.save(sessions(7, 2), folder / "chunk_1.pt")
    ds2 = import_reference_dataset(folder, "SlateRec/FocusedTopDown-v0", tmp_path / "ds2", progress=False)
    assert len(ds2) == 12
    np.testing.assert_array_equal(ds2.slates[5, 1:], sessions(7, 2)[0]["slate"].numpy())


@pytest.mark.parametrize("bad, message", [
    ("id", "item id 5000, outside"),
    ("negative", "item id -1, outside"),
    ("click", "clicks must be 0 or 1, found 7"),
    ("keys", r"expected a dict with keys \['slate', 'clicks'\]"),
    ("shape", "different shapes"),
    ("turns", "sessions have 50 turns"),
])
def test_import_refuses_corrupt_reference_datasets(tmp_path, bad, message):
    data = sessions(4, 0)
    if bad == "id":
        data[2]["slate"][3, 4] = 5000
    elif bad == "negative":
        data[1]["slate"][0, 0] = -1
    elif bad == "click":
        data[0]["clicks"][9, 9] = 7
    elif bad == "keys":
        data[3] = {"slates": data[3]["slate"], "clicks": data[3]["clicks"]}
    elif bad == "shape":
        data[3]["slate"] = data[3]["slate"][:, :5]
        data[3]["clicks"] = data[3]["clicks"][:, :5]
    elif bad == "turns":
        data = sessions(4, 0, turns=50)
    src = tmp_path / "bad.pt"
    torch.save(data, src)
    with pytest.raises(ValueError, match=message):
        import_reference_dataset(src, "focused_topdown", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_import_dataset_command(tmp_path, capsys):
    torch.save(sessions(6, 0), tmp_path / "diffuse_mix.pt")
    out = tmp_path / "imported"
    assert cli_main(["import-dataset", str(tmp_path / "diffuse_mix.pt"), "--out", str(out)]) == 0
    assert LoggedDataset.load(out).env_id == "SlateRec/DiffuseMixed-v0"
    before = (out / "meta.json").read_text()
    assert cli_main(["import-dataset", str(tmp_path / "diffuse_mix.pt"), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "meta.json").read_text() == before
    torch.save(sessions(2, 0), tmp_path / "mine.pt")
    assert cli_main(["import-dataset", str(tmp_path / "mine.pt"), "--out", str(tmp_path / "x")]) == 2
    assert "pass --env" in capsys.readouterr().err
    torch.save(NotATensor(), tmp_path / "focused_mix.pt")
    assert cli_main(["import-dataset", str(tmp_path / "focused_mix.pt"), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "focused_mix.pt" in err and "objects other than tensors" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ------------------------------------------------------------ command line
def test_train_with_a_pt_matrix_records_its_fingerprint(tmp_path, matrix, matrix_pt, capsys):
    run = tmp_path / "run"
    args = ["train", "random", "focused_topdown", "--item-embeddings", str(matrix_pt), "--episodes", "1",
            "--out", str(run), "--no-progress", "--set", "val_users=5", "--set", "test_users=5", "--json"]
    assert cli_main(args) == 0
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["item_embeddings_fingerprint"] == fingerprint(matrix)
    assert json.loads((run / "config.json").read_text())["env_kwargs"]["item_embeddings"] == str(matrix_pt.resolve())
    capsys.readouterr()
    assert cli_main(["runs", str(tmp_path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    results = json.loads((run / "results.json").read_text())
    assert (row["method"], row["env_id"], row["seed"], row["status"]) == ("random", "SlateRec/FocusedTopDown-v0", 0, "complete")
    assert row["test"] == results["test"]["mean"] and row["best_validation"] == results["best"]["validation_return"]
    missing = ["train", "random", "FocusedTopDown-v0", "--set", "env_kwargs.item_embeddings=nowhere.pt",
               "--out", str(tmp_path / "run2")]
    assert cli_main(missing) == 2
    assert "nowhere.pt" in capsys.readouterr().err and not (tmp_path / "run2").exists()


def test_collect_refuses_an_agent_in_another_item_space(tmp_path, matrix, matrix_pt, capsys):
    run = tmp_path / "run"
    assert cli_main(["train", "random", "FocusedTopDown-v0", "--episodes", "1", "--out", str(run), "--no-progress",
                     "--set", "val_users=5", "--set", "test_users=5", "--json"]) == 0
    capsys.readouterr()
    args = ["collect", "FocusedTopDown-v0", "--policy", str(run), "--episodes", "3", "--out", str(tmp_path / "c"),
            "--item-embeddings", str(matrix_pt)]
    assert cli_main(args) == 2
    assert "item embeddings" in capsys.readouterr().err and not (tmp_path / "c").exists()
    ok = ["collect", "FocusedTopDown-v0", "--policy", "oracle", "--episodes", "3", "--out", str(tmp_path / "c"),
          "--item-embeddings", str(matrix_pt)]
    assert cli_main(ok) == 0
    assert LoggedDataset.load(tmp_path / "c").item_embeddings_fingerprint == fingerprint(matrix)


def test_a_dataset_logged_with_another_matrix_carries_it_to_export_and_offline_evaluation(tmp_path, matrix, matrix_pt):
    from gym_slaterec.rollouts import generate_logged_data

    ds = generate_logged_data("SlateRec/FocusedTopDown-v0", tmp_path / "ds", episodes=3, seed=0,
                              item_embeddings=str(matrix_pt), progress=False, env_kwargs={"episode_length": 5})
    assert ds.provenance["env_kwargs"] == {"episode_length": 5, "item_embeddings": str(matrix_pt.resolve())}
    from gym_slaterec.rollouts import make_vector_env

    rebuilt = make_vector_env(ds.env_id, 1, **ds.provenance["env_kwargs"]).simulator.catalogue
    assert rebuilt.fingerprint == ds.item_embeddings_fingerprint == fingerprint(matrix)


def test_offline_training_refuses_an_export_whose_environment_lost_its_matrix(tmp_path, matrix_pt):
    from d3rlpy_adapters.export import export_d3rlpy, sidecar_path
    from d3rlpy_adapters.offline import OfflineConfig, train_offline
    from gym_slaterec.gems import GeMSConfig, train_gems
    from gym_slaterec.provenance import ProvenanceMismatchError
    from gym_slaterec.rollouts import generate_logged_data

    torch.set_num_threads(1)
    ds = generate_logged_data("SlateRec/FocusedTopDown-v0", tmp_path / "ds", episodes=6, seed=0,
                              item_embeddings=str(matrix_pt), progress=False, env_kwargs={"episode_length": 5})
    gems = train_gems(ds, GeMSConfig(epochs=1, latent_dim=4, encoder_hidden=(16,), decoder_hidden=(16,),
                                     val_max_samples=20), out=tmp_path / "g.pt", progress=False, max_steps=2)
    h5 = export_d3rlpy(ds, gems.path, tmp_path / "x.h5", window=2)
    side = json.loads(sidecar_path(h5).read_text())
    side["env_kwargs"] = {"episode_length": 5}  # as written before environments recorded their matrix
    sidecar_path(h5).write_text(json.dumps(side))
    cfg = OfflineConfig(steps=2, eval_every=2, val_users=2, test_users=2, batch_size=8)
    with pytest.raises(ProvenanceMismatchError, match="item embeddings"):
        train_offline("bc", h5, gems.path, tmp_path / "run", cfg, progress=False)
    assert not (tmp_path / "run").exists()
