"""Short trainings that must actually learn, on several seeds, each against random on the same
users: an online SAC method (the paper's episode regime) and an offline algorithm.

The assertions are on means over seeds, with margins taken from the spread measured across
seeds and CPU kernels by ``scripts/learning_spread.py`` (ATEN_CPU_CAPABILITY=default and
avx2, one torch thread, AMD EPYC, 2026-12-03 and 2026-12-05; BENCHMARKS.md "Learning checks"), never from
one machine's single outcome: other CPUs, kernels and thread counts change every run's
floating-point path, so a single seed's result is not a property of the code.
"""

from __future__ import annotations

import statistics

import pytest
from learning_checks import offline_learning_run, over_seeds, sac_learning_run

SAC_SEEDS = (0, 1, 2)
OFFLINE_SEEDS = (0, 1)


@pytest.mark.slow(250)
def test_episode_replay_sac_learns(tmp_path):
    """SAC+TopK (ideal) in the paper's regime, 300 ten-turn episodes per seed.

    Measured over seeds 0-5 and two kernels (12 runs): the untrained policy earns 4.8-6.8 per
    episode (random: 6.22); the best validation rises above it by 4.6 on average (sd 1.7, min
    2.1); the test return of the best checkpoint beats random by 4.8 on average (sd 2.6, min
    0.9; kernel means 4.0 and 5.6, sd within a kernel 2.2 and 2.9). Thresholds on the 3-seed
    means sit at least 2.8 of their standard deviations (sd / sqrt(3)) below the worse kernel's
    mean: rise 1.5 (3.2 sd below 4.6), gain 0.5 (2.8 sd below 4.0). Of the 40 three-seed
    subsets of those runs, the lowest means are a rise of 2.95 and a gain of 2.13."""
    runs = over_seeds(sac_learning_run, tmp_path, SAC_SEEDS)
    random_return = runs[0]["random"]
    untrained = statistics.fmean(r["untrained"] for r in runs)
    rise = statistics.fmean(r["best_validation"] - r["untrained"] for r in runs)
    gain = statistics.fmean(r["gain"] for r in runs)
    assert untrained < random_return + 1.0, runs  # the untrained policy is not already good
    assert rise > 1.5, runs
    assert gain > 0.5, runs


@pytest.mark.slow(30)
def test_offline_td3bc_on_a_medium_policys_episodes_learns(tmp_path):
    """TD3+BC, 300 gradient steps, on 100 episodes of the shipped FocusedTopDown medium policy in
    its own GeMS latents (data return ~134), per seed; tested on the protocol's users against
    random (34.1).

    Measured over seeds 0-5 and two kernels (12 runs): gain over random 67.3-94.9, mean 79.2, sd
    10.6 (kernel means 79.3 and 79.1). The threshold on the 2-seed mean, 45, is 4.5 of its
    standard deviations below."""
    runs = over_seeds(offline_learning_run, tmp_path, OFFLINE_SEEDS)
    assert statistics.fmean(r["gain"] for r in runs) > 45.0, runs
