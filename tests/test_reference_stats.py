"""Statistical faithfulness: mean returns on FocusedTopDown with the reference embeddings.

The acceptance rule and the reference statistics are read from
``../shared/reference/focused_topdown_stats.json`` (relative to the repo root).
"""

from __future__ import annotations

import json
import math
import re
import warnings

import pytest
from conftest import ENV_IDS, REPO_ROOT, SHARED_REFERENCE

from gym_slaterec.rollouts import rollout_reference_policy

ENV = "SlateRec/FocusedTopDown-v0"
EPISODES = 1000
SEED = 20231
POLICIES = {"random": ("random", 0.5), "oracle": ("oracle", 0.5), "epsilon-greedy (epsilon 0.5)": ("epsilon-greedy", 0.5)}


def _acceptance(stats: dict):
    """Parse 'differs from `mean` by at most Z*sqrt(std^2/n + std^2/M) plus P % of `mean`'."""
    rule = stats["acceptance"]
    m = re.search(r"at most ([\d.]+)\*sqrt\(std\^2/n \+ std\^2/(\d+)\) plus ([\d.]+) % of", rule)
    assert m, f"cannot parse the acceptance rule: {rule!r}"
    z, ref_n, pct = float(m.group(1)), int(m.group(2)), float(m.group(3))

    def tolerance(mean: float, std: float, n: int) -> float:
        return z * math.sqrt(std**2 / n + std**2 / ref_n) + pct / 100 * mean

    return tolerance


@pytest.mark.slow
def test_reference_policy_returns_match_the_reference_simulator(reference_focused):
    stats_path = SHARED_REFERENCE / "focused_topdown_stats.json"
    if not stats_path.is_file():
        pytest.skip(f"reference statistics not available at {stats_path}")
    stats = json.loads(stats_path.read_text())
    tolerance = _acceptance(stats)
    report, failures = [], []
    for key, (policy, eps) in POLICIES.items():
        ref = stats["policies"][key]
        assert ref["episodes"] == 1000
        returns = rollout_reference_policy(ENV, policy, EPISODES, SEED, epsilon=eps, item_embeddings=reference_focused)
        mean = float(returns.mean())
        tol = tolerance(ref["mean"], ref["std"], EPISODES)
        line = f"{key}: measured {mean:.2f} (std {returns.std(ddof=1):.2f}) vs reference {ref['mean']:.2f} +- {tol:.2f}"
        report.append(line)
        if abs(mean - ref["mean"]) > tol:
            failures.append(line)
    assert not failures, "outside the acceptance rule:\n" + "\n".join(failures) + "\nall:\n" + "\n".join(report)
    # make the measured means visible in a plain test run (warnings summary), so drift shows
    print("\n".join(report))
    warnings.warn("FocusedTopDown reference check passed; " + "; ".join(report), UserWarning, stacklevel=1)


# The other five environments have no reference-simulator figures: their targets are
# this simulator's means with the reference implementation's matrices, 100,000
# episodes each (scripts/choose_embedding_seeds.py --stage reference; the simulator
# agrees with the reference turn by turn). FocusedTopDown's target is the reference
# simulator's own statistics.
REFERENCE_RETURNS = REPO_ROOT / "tests" / "data" / "reference_returns.json"
ALL_POLICIES = {"random": "random", "oracle": "oracle", "epsilon-greedy": "epsilon-greedy (epsilon 0.5)"}


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_default_environments_reproduce_the_reference_returns(env_id):
    """The shipped matrices: each environment's reference-policy means inside the
    acceptance rule of focused_topdown_stats.json, around the reference targets."""
    targets = json.loads(REFERENCE_RETURNS.read_text())
    name = env_id.split("/")[1].split("-")[0]
    failures, report = [], []
    for policy in ALL_POLICIES:
        ref = targets[f"{name}/{policy}"]
        returns = rollout_reference_policy(env_id, policy, EPISODES, SEED)
        mean = float(returns.mean())
        tol = 2.58 * math.sqrt(ref["std"] ** 2 / EPISODES + ref["std"] ** 2 / ref["episodes"]) + 0.01 * ref["mean"]
        line = f"{name} {policy}: measured {mean:.2f} vs reference {ref['mean']:.2f} +- {tol:.2f}"
        report.append(line)
        if abs(mean - ref["mean"]) > tol:
            failures.append(line)
    assert not failures, "outside the acceptance rule:\n" + "\n".join(failures) + "\nall:\n" + "\n".join(report)


def test_reference_returns_file_agrees_with_the_shared_statistics():
    stats_path = SHARED_REFERENCE / "focused_topdown_stats.json"
    if not stats_path.is_file():
        pytest.skip(f"reference statistics not available at {stats_path}")
    official = json.loads(stats_path.read_text())["policies"]
    targets = json.loads(REFERENCE_RETURNS.read_text())
    for policy, key in ALL_POLICIES.items():
        assert targets[f"FocusedTopDown/{policy}"]["mean"] == official[key]["mean"]
        assert targets[f"FocusedTopDown/{policy}"]["std"] == official[key]["std"]
