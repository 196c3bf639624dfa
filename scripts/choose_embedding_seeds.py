"""Reference intervals of the six environments and the seeds of the shipped matrices.

1. Reference intervals: the random, short-term-oracle and epsilon-greedy (0.5)
   returns of each environment with the reference implementation's matrices
   (``../shared/reference/``, read in place, never copied). For FocusedTopDown the
   reference simulator's own figures (``focused_topdown_stats.json``) are the target;
   for the other five, this simulator's means with the reference matrices (it agrees
   with the reference turn by turn, tests/test_core_mechanics.py).
2. Seed search: draws of the unpowered recipe for a list of seeds, each scored on
   the nine (environment, policy) means of its family against the acceptance rule of
   ``focused_topdown_stats.json``; the seed with the smallest largest deviation
   (in units of that rule's tolerance) among the candidates is kept.

    python scripts/choose_embedding_seeds.py --stage reference --ref-episodes 100000 --json ref.json
    python scripts/choose_embedding_seeds.py --stage targets --reference ref.json --json tests/data/reference_returns.json
    python scripts/choose_embedding_seeds.py --stage search --reference ref.json --episodes 2000 --json seeds.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from gym_slaterec.core.embeddings import generate_item_embeddings
from gym_slaterec.rollouts import rollout_reference_policy

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
POLICIES = ("random", "oracle", "epsilon-greedy")
FAMILIES = {"focused": ("FocusedTopDown", "FocusedMixed", "FocusedDivPen"),
            "diffuse": ("DiffuseTopDown", "DiffuseMixed", "DiffuseDivPen")}
STATS_KEY = {"random": "random", "oracle": "oracle", "epsilon-greedy": "epsilon-greedy (epsilon 0.5)"}


def run(env: str, policy: str, episodes: int, seed: int, emb) -> tuple[float, float]:
    r = rollout_reference_policy(f"SlateRec/{env}-v0", policy, episodes, seed, item_embeddings=emb)
    return float(r.mean()), float(r.std(ddof=1))


def tolerance(n: int, ref: dict) -> float:
    return 2.58 * math.sqrt(ref["std"] ** 2 / n + ref["std"] ** 2 / ref["episodes"]) + 0.01 * ref["mean"]


def reference_stage(episodes: int) -> dict:
    """The 18 (environment, policy) means with the reference matrices."""
    out = {}
    for family, envs in FAMILIES.items():
        emb = np.load(REFERENCE / f"reference_item_embeddings_{family}.npy")
        for env in envs:
            for pol in POLICIES:
                t0 = time.time()
                mean, std = run(env, pol, episodes, 10_000_000, emb)
                half = 1.96 * std / math.sqrt(episodes)
                out[f"{env}/{pol}"] = {"mean": mean, "std": std, "episodes": episodes, "ci95": [mean - half, mean + half]}
                print(f"reference matrix {env:15s} {pol:15s} {mean:8.2f} [{mean-half:.2f}, {mean+half:.2f}]"
                      f"  ({time.time()-t0:.1f} s)", flush=True)
    return out


def targets_from(reference: dict) -> dict:
    """FocusedTopDown: the reference simulator's own figures; others: our means with the reference matrices."""
    official = json.loads((REFERENCE / "focused_topdown_stats.json").read_text())["policies"]
    targets = {}
    for key, row in reference.items():
        env, pol = key.split("/")
        targets[key] = official[STATS_KEY[pol]] if env == "FocusedTopDown" else row
    return targets


def score(family: str, seed: int, episodes: int, targets: dict) -> tuple[float, dict]:
    """Largest |mean - target| / tolerance over the family's nine cells (< 1: all accepted)."""
    emb = generate_item_embeddings(family, seed)
    rows, worst = {}, 0.0
    for env in FAMILIES[family]:
        for pol in POLICIES:
            mean, std = run(env, pol, episodes, 0, emb)
            ref = targets[f"{env}/{pol}"]
            z = abs(mean - ref["mean"]) / tolerance(episodes, ref)
            rows[f"{env}/{pol}"] = {"mean": mean, "std": std, "target": ref["mean"], "z": z}
            worst = max(worst, z)
    return worst, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("reference", "targets", "search", "check"), required=True)
    ap.add_argument("--reference", type=Path, help="search: the JSON written by the reference stage")
    ap.add_argument("--ref-episodes", type=int, default=100_000)
    ap.add_argument("--episodes", type=int, default=2000, help="episodes per (environment, policy) of a candidate")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(2023, 2043)))
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    if args.stage == "reference":
        args.json.write_text(json.dumps(reference_stage(args.ref_episodes), indent=2) + "\n")
        return 0
    if args.stage == "targets":  # tests/data/reference_returns.json
        targets = targets_from(json.loads(args.reference.read_text()))
        out = {key: {"mean": t["mean"], "std": t["std"], "episodes": t["episodes"],
                     "source": ("reference simulator (shared/reference/focused_topdown_stats.json)"
                                if key.startswith("FocusedTopDown/") else
                                "this simulator with the reference implementation's matrix")}
               for key, t in targets.items()}
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        return 0
    targets = targets_from(json.loads(args.reference.read_text()))
    if args.stage == "check":  # the shipped matrices against the targets, as a Markdown table
        print("| environment | policy | shipped matrix: mean [95 % CI] | target | allowed gap | inside |")
        print("|---|---|---:|---:|---:|---|")
        rows = {}
        for family in args.families:
            for env in FAMILIES[family]:
                for pol in POLICIES:
                    r = rollout_reference_policy(f"SlateRec/{env}-v0", pol, args.episodes, 0)
                    mean, std = float(r.mean()), float(r.std(ddof=1))
                    half = 1.96 * std / math.sqrt(len(r))
                    ref = targets[f"{env}/{pol}"]
                    tol = tolerance(args.episodes, ref)
                    rows[f"{env}/{pol}"] = {"mean": mean, "std": std, "episodes": args.episodes}
                    print(f"| {env} | {pol} | {mean:.2f} [{mean - half:.2f}, {mean + half:.2f}] | {ref['mean']:.2f} "
                          f"| +-{tol:.2f} | {'yes' if abs(mean - ref['mean']) <= tol else 'NO'} |", flush=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        return 0
    out: dict = {}
    for family in args.families:
        results = {}
        for seed in args.seeds:
            worst, rows = score(family, seed, args.episodes, targets)
            results[seed] = {"worst": worst, "rows": rows}
            cells = ", ".join(f"{k.split('/')[0][len(family):]}/{k.split('/')[1]} {v['mean']:.1f}" for k, v in rows.items())
            print(f"{family} seed {seed}: worst {worst:.2f}  ({cells})", flush=True)
        best = min(results, key=lambda sd: results[sd]["worst"])
        print(f"{family}: best seed {best} (worst |mean - target| / tolerance {results[best]['worst']:.2f})", flush=True)
        out[family] = {"best": best, "candidates": results}
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
