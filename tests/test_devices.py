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
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device here: this test of the CUDA path (GeMS, MF, "
                                "SAC training) runs only on a machine with one")


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


def test_online_runs_record_their_device_and_cpu_only_methods_stay_on_the_cpu(tmp_path, monkeypatch, capsys):
    import json

    from gym_slaterec import devices
    from sb3_slate.methods import resolve_config
    from sb3_slate.runs import run_device, train_run

    cfg = resolve_config("sac-topk-ideal", ENV, {"episodes": 4, "n_envs": 2, "val_users": 3, "test_users": 3,
                                                "val_every": 2, "replay": "episode",
                                                "agent": {"warmup_episodes": 2, "batch_episodes": 2}})
    train_run(cfg, tmp_path / "run", progress=False, device="cpu")
    assert json.loads((tmp_path / "run" / "provenance.json").read_text())["device"] == "cpu"
    assert json.loads((tmp_path / "run" / "state.json").read_text())["device"] == "cpu"
    if not CUDA:
        status = main(["train", "random", ENV, "--out", str(tmp_path / "r"), "--device", "cuda:0"])
        assert status == 2 and "no CUDA device" in capsys.readouterr().err and not (tmp_path / "r").exists()
    # on a CUDA machine: auto puts the SAC+GeMS/TopK networks there, the others stay on the CPU
    monkeypatch.setattr(devices, "resolve_device", lambda spec="auto": "cuda" if spec in ("auto", "cuda") else spec)
    assert run_device("sac-gems", "auto") == "cuda" and run_device("slateq", "auto") == "cpu"
    with pytest.raises(ValueError, match="slateq trains on the CPU only"):
        run_device("slateq", "cuda")
    # ... also from the command line without --device: argparse's default "auto" reaches the method
    # unresolved (once it was resolved to "cuda" when parsed, and every CPU-only method was refused)
    assert devices.device_arg("auto") == "auto" and devices.device_arg(" cpu ") == "cpu"
    assert main(["train", "random", ENV, "--out", str(tmp_path / "auto"), "--episodes", "1", "--no-progress",
                 "--set", "val_users=3", "--set", "test_users=3"]) == 0
    assert json.loads((tmp_path / "auto" / "provenance.json").read_text())["device"] == "cpu"
    capsys.readouterr()
    # an explicit cuda for a CPU-only method: refused once, before any seed starts or anything is created
    assert main(["train", "slateq", ENV, "--seeds", "0", "1", "--device", "cuda", "--out", str(tmp_path / "q")]) == 2
    assert "slateq trains on the CPU only" in capsys.readouterr().err and not (tmp_path / "q").exists()


@needs_cuda
@pytest.mark.parametrize("replay", ["episode", "window"])
def test_sac_trains_on_cuda_and_its_checkpoint_evaluates_on_the_cpu(tmp_path, replay):
    import json

    from sb3_slate.methods import resolve_config
    from sb3_slate.runs import load_agent, train_run

    cfg = resolve_config("sac-topk-ideal", ENV, {"episodes": 8, "n_envs": 2, "val_users": 3, "test_users": 3,
                                                "val_every": 4, "env_kwargs": SHORT,
                                                "agent": {"warmup_episodes": 2, ("batch_episodes" if replay == "episode" else "batch_transitions"): 4}},
                         preset="paper" if replay == "episode" else "window")
    res = train_run(cfg, tmp_path / "run", progress=False, device="cuda")
    assert json.loads((tmp_path / "run" / "provenance.json").read_text())["device"] == "cuda"
    agent = load_agent(tmp_path / "run", "best")
    assert np.isfinite(res["test"]["mean"]) and agent.method == "sac-topk-ideal"


@needs_cuda
def test_belief_unroll_on_cuda_equals_the_cpu_one_in_values_and_gradients():
    from sb3_slate.agents.episode_sac import SlateBelief, unroll_pair

    assert resolve_device("cuda") == "cuda" and not torch.backends.cudnn.allow_tf32  # float32 as on the CPU
    torch.manual_seed(0)
    a, c = SlateBelief(50, 3, hidden_size=4), SlateBelief(50, 3, hidden_size=6)
    S, C = torch.randint(0, 50, (5, 8, 3)), torch.randint(0, 2, (5, 8, 3)).float()
    w = torch.randn(5, 8, 10)
    results = []
    for device in ("cpu", "cuda"):
        a.zero_grad(), c.zero_grad()
        a.to(device), c.to(device)
        fa, fc = unroll_pair(a, c, S.to(device), C.to(device))  # hand-written on CPU, cuDNN on CUDA
        (torch.cat([fa, fc], dim=2) * w.to(device)).sum().backward()
        results.append([t.detach().cpu() for t in (fa, fc, *(p.grad for p in [*a.parameters(), *c.parameters()]))])
    for cpu, gpu in zip(*results):
        torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-5)


def test_the_offline_critic_encoder_in_evaluation_mode_passes_the_actions_gradient_only():
    """d3rlpy's actor updates (TD3+BC, BCQ, CQL) backpropagate through a critic it has put in
    evaluation mode: there the critic's encoder computes the same values, and the same gradient
    with respect to the action, as in training mode, without a backward pass through its GRU
    (whose gradients the critic's own update would discard). On CUDA too, where cuDNN refuses a
    backward through a GRU in evaluation mode."""
    from d3rlpy_adapters.encoders import SlateHistoryEncoderFactory
    from d3rlpy_adapters.window import episode_windows

    factory = SlateHistoryEncoderFactory(num_items=40, slate_size=3, window=4, item_dim=5, hidden=6, feature_size=8)
    torch.manual_seed(0)
    encoder = factory.create_with_action((factory.layout().size,), 2)
    rng = np.random.default_rng(1)  # one episode of 7 turns: windows from one real turn to full ones
    x = torch.as_tensor(episode_windows(rng.integers(0, 40, (1, 8, 3)), rng.integers(0, 2, (1, 8, 3)), 4, 40)
                        .reshape(7, -1), dtype=torch.float32)
    for device in ("cpu", "cuda") if CUDA else ("cpu",):
        encoder.to(device)
        results = {}
        for mode in (True, False):
            encoder.train(mode)
            encoder.zero_grad(set_to_none=True)
            action = torch.randn(7, 2, generator=torch.Generator().manual_seed(2)).to(device).requires_grad_()
            out = encoder(x.to(device), action)
            out.square().sum().backward()
            results[mode] = (out.detach().cpu(), action.grad.cpu())
            grads = {n: p.grad for n, p in encoder.named_parameters()}
            assert grads["fc.weight"] is not None
            assert all((g is None) != mode for n, g in grads.items() if n.startswith("belief.")), mode
        assert encoder.belief.gru.training  # kept in training mode: the same function (one layer, no dropout)
        for train, evaluation in zip(results[True], results[False]):
            torch.testing.assert_close(evaluation, train, rtol=0, atol=0)


@pytest.mark.parametrize("algo", ["td3bc", "iql", "cql", "bcq"])
def test_offline_learners_with_a_shared_belief_train_on_each_device(algo):
    """``shared_encoder``: the belief's cache and the readers' gradient-free passes on the CPU and,
    where there is one, on CUDA (the updates' sampled noise differs between the devices' generators,
    so only that the weights moved and stay finite is compared)."""
    import d3rlpy

    from conftest import window_dataset
    from d3rlpy_adapters.offline import OfflineConfig, make_algorithm, tie_encoders

    layout, data = window_dataset(episodes=8, action_size=3)
    batch = data.sample_transition_batch(64)
    for device in ("cpu", "cuda") if CUDA else ("cpu",):
        if device == "cuda":
            resolve_device("cuda")  # full float32, as the commands set it
        d3rlpy.seed(0)
        cfg = OfflineConfig(algo=algo, shared_encoder=True, feature_size=16)
        learner = make_algorithm(cfg, layout, device)
        learner.build_with_dataset(data)
        tie_encoders(learner, cfg)
        before = {n: p.detach().cpu().clone() for n, p in learner.impl.modules.q_funcs.named_parameters()}
        learner.update(batch)
        weights = {n: p.detach().cpu() for n, p in learner.impl.modules.q_funcs.named_parameters()}
        assert all(torch.isfinite(w).all() for w in weights.values())
        assert not torch.equal(before["0._encoder.belief.gru.weight_ih_l0"], weights["0._encoder.belief.gru.weight_ih_l0"])
