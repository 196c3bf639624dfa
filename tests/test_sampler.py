"""The vectorised transition sampler draws d3rlpy's batches, exactly."""

from __future__ import annotations

import numpy as np
import pytest


def _episodes(rng: np.random.Generator):
    from d3rlpy.dataset import Episode

    out = []
    for size, terminated in ((5, True), (1, True), (4, False), (7, True), (2, False), (1, False), (3, True)):
        out.append(Episode(observations=rng.integers(0, 1000, (size, 21)).astype(np.int16),
                           actions=rng.uniform(-1, 1, (size, 4)).astype(np.float32),
                           rewards=rng.random((size, 1)).astype(np.float32), terminated=terminated))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_batches_as_d3rlpy_from_the_same_global_seed(seed):
    from d3rlpy.constants import ActionSpace
    from d3rlpy.dataset import InfiniteBuffer, ReplayBuffer

    from d3rlpy_adapters.sampler import TransitionSampler

    episodes = _episodes(np.random.default_rng(seed))
    buffer = ReplayBuffer(InfiniteBuffer(), episodes=episodes, action_space=ActionSpace.CONTINUOUS, action_size=4)
    sampler = TransitionSampler.from_episodes(episodes)
    assert sampler.transition_count == buffer.transition_count == sum(e.transition_count for e in episodes)
    np.random.seed(seed)
    theirs = [buffer.sample_transition_batch(64) for _ in range(5)]
    np.random.seed(seed)
    ours = [sampler.sample(64) for _ in range(5)]
    for a, b in zip(theirs, ours):
        for field in ("observations", "actions", "rewards", "next_observations", "next_actions", "terminals",
                      "intervals"):
            x, y = getattr(a, field), getattr(b, field)
            assert x.dtype == y.dtype == np.float32 and x.shape == y.shape, field
            np.testing.assert_array_equal(x, y, err_msg=field)
    assert any(b.terminals.any() for b in ours)  # terminal transitions were drawn and matched
    # the sampler's episodes are views into its arrays (the dataset is held once), with the same content
    for old, new in zip(episodes, sampler.episodes()):
        assert np.shares_memory(new.observations, sampler.observations)
        np.testing.assert_array_equal(old.observations, new.observations)
        assert new.terminated == old.terminated and new.transition_count == old.transition_count


def test_refuses_no_episodes():
    from d3rlpy_adapters.sampler import TransitionSampler

    with pytest.raises(ValueError, match="no episodes"):
        TransitionSampler.from_episodes([])


def test_reads_a_d3rlpy_file_into_the_same_transitions(tmp_path):
    import h5py
    from d3rlpy.constants import ActionSpace
    from d3rlpy.dataset import InfiniteBuffer, ReplayBuffer
    from d3rlpy.dataset.io import dump

    from d3rlpy_adapters.sampler import read_d3rlpy_file

    episodes = _episodes(np.random.default_rng(5))
    path = tmp_path / "d.h5"
    with open(path, "w+b") as f:
        dump(episodes, f)
    sampler = read_d3rlpy_file(path)
    assert sampler.observations.dtype == np.int16 and sampler.observations.shape == (23, 21)
    np.testing.assert_array_equal(sampler.actions, np.concatenate([e.actions for e in episodes]))
    assert list(sampler.terminated) == [e.terminated for e in episodes]
    buffer = ReplayBuffer(InfiniteBuffer(), episodes=episodes, action_space=ActionSpace.CONTINUOUS, action_size=4)
    np.random.seed(9)
    a = buffer.sample_transition_batch(32)
    np.random.seed(9)
    b = sampler.sample(32)
    np.testing.assert_array_equal(a.next_observations, b.next_observations)
    # a file whose episodes do not agree, or of another layout, is refused with what is wrong
    with h5py.File(path, "a") as h5:
        del h5["actions_2"]
        h5["actions_2"] = np.zeros((3, 4), dtype=np.float32)  # episode 2 has 4 turns
    with pytest.raises(ValueError, match="episode 2: observations of shape"):
        read_d3rlpy_file(path)
    with h5py.File(path, "a") as h5:
        del h5["columns"]
        h5["columns"] = [b"observations", b"actions"]
    with pytest.raises(ValueError, match="with columns"):
        read_d3rlpy_file(path)
