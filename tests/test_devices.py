"""--device auto|cpu|cuda[:N]: resolution, refusal, provenance; the CUDA path where CUDA is."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gym_slaterec.cli import main
from gym_slaterec.devices import resolve_device
from gym_slaterec.gems import GeMSCheckpoint, GeMSConfig, train_gems
from gym_slaterec.mf import train_mf
from gym_slaterec.rollouts import generate_logged_data

ENV = "SlateRec/FocusedTopDown-v0"
SHORT = {"episode_length": 10}
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device here: the CUDA path of GeMS and MF training "
                                "is exercised only on a machine with one")


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    return generate_logged_data(ENV, tmp_path_factory.mktemp("dev") / "logged", episodes=40, seed=0, progress=False,
                                env_kwargs=SHORT)


TINY = GeMSConfig(epochs=1, latent_dim=8, encoder_hidden=(32,), decoder_hidden=(32,), val_max_samples=200)


def test_resolution_and_refusals():
    assert resolve_device("auto") == ("cuda" if CUDA else "cpu")
    assert resolve_device("cpu") == "cpu"
    for bad in ("gpu", "cuda:x", "", "CPU", 0):
        with pytest.raises(ValueError, match="device must be"):
            resolve_device(bad)
    if not CUDA:
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(ValueError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_device_is_recorded_and_a_missing_one_refused_before_anything_is_written(logged, tmp_path, capsys):
    ckpt = train_gems(logged, TINY, out=tmp_path / "g.pt", progress=False, max_steps=3, device="cpu")
    assert GeMSCheckpoint.load(tmp_path / "g.pt").provenance["device"] == "cpu"
    mf = train_mf(logged, tmp_path / "mf.npz", epochs=1, progress=False, device="cpu")
    assert mf.provenance["device"] == "cpu"
    if not CUDA:
        status = main(["pretrain-gems", str(logged.path), "--out", str(tmp_path / "c.pt"), "--device", "cuda"])
        assert status == 2 and "no CUDA device" in capsys.readouterr().err
        assert not (tmp_path / "c.pt").exists()
    assert np.isfinite(ckpt.low).all()


@needs_cuda
def test_gems_and_mf_train_on_cuda_and_load_on_cpu(logged, tmp_path):
    cpu = train_gems(logged, TINY, out=tmp_path / "cpu.pt", progress=False, max_steps=5, device="cpu")
    gpu = train_gems(logged, TINY, out=tmp_path / "gpu.pt", progress=False, max_steps=5, device="cuda")
    loaded = GeMSCheckpoint.load(tmp_path / "gpu.pt")
    assert loaded.provenance["device"] == "cuda"
    assert next(loaded.model.parameters()).device.type == "cpu"
    assert abs(gpu.val_metrics["loss"] - cpu.val_metrics["loss"]) < 0.5  # other kernels, other noise draws
    z = np.zeros((3, loaded.latent_dim), dtype=np.float32)
    assert loaded.decode_latent(z).shape == (3, loaded.slate_size)
    mf = train_mf(logged, tmp_path / "mf.npz", epochs=2, progress=False, device="cuda")
    assert mf.provenance["device"] == "cuda" and np.isfinite(mf.embeddings).all()
