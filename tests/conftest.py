"""Shared fixtures and helpers for the gym_slaterec tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import gym_slaterec  # noqa: F401  (registers the environments)
from gym_slaterec.core.config import SimulatorConfig
from gym_slaterec.core.simulator import TopicRecSimulator
from gym_slaterec.gems import GeMSConfig, train_gems
from gym_slaterec.rollouts import generate_logged_data

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO_ROOT.parent / "shared" / "reference"
ENV_IDS = gym_slaterec.ENV_IDS

def snapshot(sim: TopicRecSimulator) -> dict[str, np.ndarray]:
    """A deep copy of every array attribute of ``sim`` (its whole state, RNG counters included)."""
    state = {}
    for obj_name, obj in (("sim", sim), ("rng", sim.rng)):
        for name, value in vars(obj).items():
            if isinstance(value, np.ndarray):
                state[f"{obj_name}.{name}"] = value.copy()
    return state


def assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"state {key} changed")


def make_sim(items: np.ndarray, num_users: int = 1, seed: int = 0, **overrides) -> TopicRecSimulator:
    """A simulator over a hand-crafted item matrix, seeded users ``seed + i``, not yet reset."""
    sim = TopicRecSimulator(SimulatorConfig().replace(**overrides), num_users, items)
    sim.seed(np.arange(num_users) + seed)
    return sim


def one_topic_items() -> np.ndarray:
    """Three items in a single 2-d topic.

    Item 2 = (1, 1)/sqrt(2) has the largest norm, so it is the initial slate (k = 1),
    and every user (a non-negative unit 2-vector when K = 1) scores it >= 1/sqrt(2):
    with position_decay = 1 it is clicked with certainty unless the topic is bored,
    in which case it is never clicked. Items 0 and 1 are the axes, scaled by 0.9.
    """
    return np.array([[0.9, 0.0], [0.0, 0.9], [np.sqrt(0.5), np.sqrt(0.5)]], dtype=np.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def reference_focused() -> Path:
    path = SHARED_REFERENCE / "reference_item_embeddings_focused.npy"
    if not path.is_file():
        pytest.skip(f"reference embeddings not available at {path} (../shared/reference relative to the repo root)")
    return path


__all__ = ["snapshot", "assert_same_state", "make_sim", "one_topic_items", "ENV_IDS", "REPO_ROOT", "SHARED_REFERENCE"]


# A small epsilon-greedy dataset and a short GeMS training on it, shared by the GeMS
# and the export tests (one training per test session).
@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    return generate_logged_data("SlateRec/FocusedTopDown-v0", tmp_path_factory.mktemp("gems") / "logged", episodes=300, seed=3, progress=False)


@pytest.fixture(scope="session")
def trained(small_dataset, tmp_path_factory):
    """A short training (600 steps of batch 256: about 30 s on one free core) on the small dataset.

    A 256-d latent with lambda_kl 0.01 and lr 3e-3: with the paper's 32-d latent the
    code is the bottleneck and the same 600 steps reconstruct only ~9 % of held-out
    items (34 % after 32 minutes on 20,000 episodes; BENCHMARKS.md).
    """
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("gems_ckpt") / "gems.pt"
    config = GeMSConfig(latent_dim=256, lambda_kl=0.01, lr=3e-3, epochs=20, seed=0, eval_every=300,
                        val_max_samples=3000)
    ckpt = train_gems(small_dataset, config, out=path, progress=False, max_steps=600)
    return ckpt, path


def window_dataset(episodes: int = 12, turns: int = 10, action_size: int = 4):
    """``(layout, dataset)``: a small d3rlpy dataset of random left-aligned window observations
    (window 4, slates of 3 out of 50 items), random actions and rewards, episodes of ``turns``."""
    import d3rlpy

    from d3rlpy_adapters.export import episode_windows
    from d3rlpy_adapters.window import WindowLayout

    layout = WindowLayout(4, 3, 50)
    rng = np.random.default_rng(0)
    slates = rng.integers(0, layout.num_items, (episodes, turns + 1, layout.slate_size))
    clicks = (rng.random((episodes, turns + 1, layout.slate_size)) < 0.3).astype(np.uint8)
    obs = episode_windows(slates, clicks, layout.window, layout.num_items).reshape(-1, layout.size)
    terminals = np.zeros(len(obs))
    terminals[turns - 1 :: turns] = 1
    return layout, d3rlpy.dataset.MDPDataset(
        obs.astype(np.float32), rng.standard_normal((len(obs), action_size)).astype(np.float32),
        rng.random((len(obs), 1)).astype(np.float32), terminals)


@pytest.fixture(autouse=True)
def no_status_line_left_running():
    """Every job closes its progress bar on every exit: a status-line timer a test leaves running
    prints into later output (and into another job's log in a real session)."""
    from gym_slaterec.progress import status_threads

    before = set(status_threads())
    yield
    left = set(status_threads()) - before
    for t in left:  # wait briefly: a bar closed at the very end may still be finishing its last line
        t.join(timeout=1.0)
    assert not [t for t in left if t.is_alive()], "a status-line timer was left running (a progress bar not closed)"


def _worker_shares(total: int, workers: int) -> list[int]:
    """How many tests pytest-xdist's ``worksteal`` hands each worker first: contiguous shares of
    the collection, in order (``WorkStealingScheduling.check_schedule``)."""
    shares, left = [], total
    for i in range(workers):
        shares.append(left // (workers - i))
        left -= shares[-1]
    return shares


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, the long tests (``@pytest.mark.slow(SECONDS)``, seconds measured on a
    2-core Zen 1 machine) lead the workers' first shares, longest first and spread so that the
    shares' long tests add up alike: a worker never starts a four-minute test when the others are
    about to run out of work. Workers steal the ends of each other's queues, the short tests."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return

    def seconds(item) -> float:
        mark = item.get_closest_marker("slow")
        return float(mark.args[0]) if mark is not None and mark.args else 0.0

    long = sorted((i for i in items if seconds(i) > 0), key=seconds, reverse=True)
    if not long:
        return
    chosen = {id(i) for i in long}
    rest = [i for i in items if id(i) not in chosen]
    heads: list[list] = [[] for _ in range(workers)]
    load = [0.0] * workers
    for item in long:  # longest first, each to the share with the least so far
        w = load.index(min(load))
        heads[w].append(item)
        load[w] += seconds(item)
    ordered, start = [], 0
    for head, share in zip(heads, _worker_shares(len(items), workers)):
        fill = max(0, share - len(head))
        ordered += head + rest[start:start + fill]
        start += fill
    ordered += rest[start:]
    items[:] = ordered
