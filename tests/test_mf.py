"""BPR matrix factorisation (docs/method.md section 7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gym_slaterec.mf import MFEmbeddings, click_pairs, train_mf
from gym_slaterec.provenance import ArtifactExistsError, ProvenanceMismatchError
from gym_slaterec.rollouts import generate_logged_data

ENV = "SlateRec/FocusedTopDown-v0"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("mf")
    train = generate_logged_data(ENV, root / "train", episodes=400, seed=0, progress=False)
    held_out = generate_logged_data(ENV, root / "test", episodes=200, seed=10_000, progress=False)
    return train, held_out


@pytest.fixture(scope="module")
def mf(datasets, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("mf_out") / "mf.npz"
    # lr 1e-2 so that a few epochs suffice in a test; the default 1e-4 is the one of docs/method.md
    return train_mf(datasets[0], out, seed=0, epochs=6, patience=3, lr=1e-2, progress=False)


def test_click_pairs_match_clicks(datasets):
    ds = datasets[0]
    users, items = click_pairs(ds)
    assert len(users) == int(np.asarray(ds.clicks).sum())
    e, t, r = np.nonzero(np.asarray(ds.clicks[:3]))
    np.testing.assert_array_equal(items[: len(e)], np.asarray(ds.slates[:3])[e, t, r])


def test_mf_ranks_clicked_items_above_random_on_held_out_users(mf, datasets):
    """Held-out episodes: a user profile from half its clicks ranks its other clicks above random items."""
    _, test = datasets
    q = mf.embeddings
    rng = np.random.default_rng(0)
    hits, total = 0.0, 0
    for e in range(len(test)):
        s, c = np.asarray(test.slates[e]), np.asarray(test.clicks[e]).astype(bool)
        clicked = s[c]
        if len(clicked) < 4:
            continue
        profile = q[clicked[: len(clicked) // 2]].mean(0)
        pos = clicked[len(clicked) // 2 :]
        neg = rng.integers(0, 1000, size=len(pos))
        hits += np.sum((q[pos] @ profile > q[neg] @ profile) + 0.5 * (q[pos] @ profile == q[neg] @ profile))
        total += len(pos)
    auc = hits / total
    assert auc > 0.8, auc  # chance: 0.5
    # validation AUC over seeds 0-2 and ATen kernels default/avx2 (scripts/learning_spread.py --check mf):
    # 0.941-0.950, sd 0.005: the threshold is far below any measured spread
    assert mf.metrics["val_auc"] > 0.8


def test_mf_file_roundtrip_and_provenance(mf, datasets):
    loaded = MFEmbeddings.load(mf.path)
    np.testing.assert_array_equal(loaded.embeddings, mf.embeddings)
    assert loaded.embeddings.shape == (1000, 20) and loaded.embeddings.dtype == np.float32
    assert loaded.env_id == ENV
    assert loaded.provenance["inputs"]["dataset"] == datasets[0].fingerprint
    assert loaded.provenance["hyperparameters"]["lr"] == 1e-2
    assert loaded.fingerprint == mf.fingerprint and len(loaded.fingerprint) == 64
    with pytest.raises(ProvenanceMismatchError, match="FocusedTopDown.*DiffuseDivPen"):
        loaded.check_env("SlateRec/DiffuseDivPen-v0")


def test_mf_refuses_overwrite_and_bad_files(mf, datasets, tmp_path):
    before = mf.path.read_bytes()
    with pytest.raises(ArtifactExistsError):
        train_mf(datasets[0], mf.path, epochs=1, progress=False)
    assert mf.path.read_bytes() == before
    bad = tmp_path / "bad.npz"
    bad.write_bytes(before[: len(before) // 3])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        MFEmbeddings.load(bad)
    with pytest.raises(FileNotFoundError):
        MFEmbeddings.load(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="epochs"):
        train_mf(datasets[0], None, epochs=0, progress=False)


def test_cli_train_mf_refuses_overwrite(mf, datasets, capsys):
    from gym_slaterec.cli import main

    before = mf.path.read_bytes()
    assert main(["train-mf", str(datasets[0].path), "--out", str(mf.path), "--epochs", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert mf.path.read_bytes() == before


def test_reference_recipe_trains_on_its_validation_clicks_through_shared_user_rows():
    """The reference recipe's validation passes step the optimiser, and validation episode e
    shares its user row with training episode n_val + e: an item clicked only in validation
    episodes ends up scored above items nobody clicked, by the rows of those episodes."""
    from gym_slaterec.mf_reference import train_reference_recipe

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 30)
    items = np.where(users < 20, 0, rng.integers(1, 6, size=len(users)))  # item 0: validation clicks only
    records = []
    table, metrics = train_reference_recipe(users, items, 40, 50, seed=0, epochs=30, patience=100, dim=4, lr=1e-2,
                                            batch_size=16, val_fraction=0.5, device="cpu", report=records.append)
    assert metrics["val_clicks"] == 600 and metrics["train_clicks"] == 600 and len(records) == 30
    assert metrics["stopped"] == "epochs"
    again, _ = train_reference_recipe(users, items, 40, 50, seed=0, epochs=30, patience=100, dim=4, lr=1e-2,
                                      batch_size=16, val_fraction=0.5, device="cpu", report=lambda r: None)
    np.testing.assert_array_equal(table, again)  # seeded
    # the best item table is the one of the lowest validation loss
    assert metrics["val_bpr_loss"] == min(r["val_loss"] for r in records)
    # the validation clicks were learnt: item 0 is no longer scored like the never-clicked items 6..49
    # (rows 0..19 click items 1..5 in training and item 0 in validation: item 0 joins items 1..5)
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    centre = unit[1:6].mean(axis=0)
    cos = unit @ centre / np.linalg.norm(centre)
    assert cos[0] > 0.5 and cos[0] > np.quantile(cos[6:], 0.9)


def test_reference_recipe_stops_at_a_validation_past_its_time_limit_or_patience():
    from gym_slaterec.mf_reference import train_reference_recipe

    rng = np.random.default_rng(1)
    users, items = np.repeat(np.arange(40), 30), rng.integers(0, 50, size=1200)
    common = dict(seed=0, dim=4, batch_size=16, val_fraction=0.5, device="cpu")
    records = []
    table, metrics = train_reference_recipe(users, items, 40, 50, epochs=30, patience=100, lr=1e-2,
                                            max_seconds=1e-9, report=records.append, **common)
    assert metrics["stopped"] == "time" and metrics["validations"] == len(records) == 1
    assert table.shape == (50, 4) and np.isfinite(table).all()
    # random clicks: nothing to learn, so the validation loss stops falling and patience ends it
    _, metrics = train_reference_recipe(users, items, 40, 50, epochs=500, patience=2, lr=0.5,
                                        report=lambda r: None, **common)
    assert metrics["stopped"] == "patience" and metrics["epochs_run"] < 500


def test_reference_recipe_fused_adam_is_the_per_tensor_update():
    """The fused optimiser (the default, ~8x faster on a 100,000-row table) computes the same
    dense Adam as torch's per-tensor loop, up to rounding."""
    from gym_slaterec.mf_reference import train_reference_recipe

    rng = np.random.default_rng(2)
    users, items = np.repeat(np.arange(60), 20), rng.integers(0, 30, size=1200)
    tables = [train_reference_recipe(users, items, 60, 30, seed=0, epochs=3, patience=100, dim=4, lr=1e-2,
                                     batch_size=16, val_fraction=0.2, device="cpu", report=lambda r: None,
                                     fused=fused)[0] for fused in (True, False)]
    assert np.abs(tables[0]).max() > 0.05  # it moved away from its small Xavier start
    np.testing.assert_allclose(tables[0], tables[1], atol=1e-5)


def test_denormals_are_flushed_only_inside_the_reference_recipe_block():
    from gym_slaterec.mf_reference import flushed_denormals

    if not torch.set_flush_denormal(False):  # returns whether this CPU can flush (x86 with SSE3, most ARM)
        pytest.skip("this CPU cannot flush denormals")
    tiny = torch.full((4,), 1e-39)  # a float32 denormal
    assert float((tiny * 1.0)[0]) != 0.0
    with flushed_denormals():
        assert float((tiny * 1.0)[0]) == 0.0
        with flushed_denormals():  # nested: the outer setting survives the inner block
            pass
        assert float((tiny * 1.0)[0]) == 0.0
    assert float((tiny * 1.0)[0]) != 0.0  # restored


def test_train_mf_cli_time_limit_is_checked(capsys):
    from gym_slaterec.cli import main

    for bad in ("0", "-5", "inf", "soon"):
        assert main(["train-mf", "nowhere", "--out", "x.npz", "--recipe", "reference", "--max-minutes", bad]) == 2
        assert "--max-minutes: must be a positive number" in capsys.readouterr().err


def test_train_mf_records_its_recipe(datasets, tmp_path):
    torch.set_num_threads(1)
    mf = train_mf(datasets[0], tmp_path / "ref.npz", seed=0, epochs=1, patience=3, progress=False, recipe="reference")
    assert mf.provenance["hyperparameters"]["recipe"] == "reference" and mf.metrics["validations"] >= 1
    with pytest.raises(ValueError, match="recipe must be one of default, reference"):
        train_mf(datasets[0], tmp_path / "x.npz", recipe="paper")
