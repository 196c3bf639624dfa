"""Offline RL benchmark on FocusedTopDown: random / medium / expert datasets x TD3+BC, CQL, IQL.

For each quality level: collect N episodes (``slaterec collect``), export them with
the GeMS (``slaterec export``), train each algorithm (``slaterec train-offline``)
and compare its test return (500 fixed test users) with the collecting policy's
return on the same users. Stages whose output already exists are reused, so an
interrupted benchmark can be continued. Results: ``OUT/bench_results.json``
and a markdown table on stdout.

    .venv/bin/python scripts/bench_offline.py --gems runs/gems_focused_topdown.pt \\
        --out runs/offline_bench --episodes 10000 --medium epsilon-greedy --expert oracle
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ENV = "SlateRec/FocusedTopDown-v0"


def policy_spec(text: str):
    """``random``/``oracle``/``epsilon-greedy`` or ``RUN_DIR[@CHECKPOINT]``."""
    if text in ("random", "oracle", "epsilon-greedy"):
        return text, None
    run, _, ckpt = text.partition("@")
    return Path(run), (ckpt or "best")


def collecting_policy_return(policy, checkpoint, users: int, first_seed: int) -> dict:
    from gym_slaterec.rollouts import evaluate_reference_policy

    if isinstance(policy, str):
        return evaluate_reference_policy(ENV, policy, users, first_seed).to_dict()
    from sb3_slate.runs import evaluate_run_dir

    return evaluate_run_dir(policy, ENV, users, first_seed, checkpoint=checkpoint)


def oracle_through_gems(gems_path: Path, users: int, first_seed: int) -> float:
    """Diagnostic ceiling: the oracle's slate encoded (with no clicks) and decoded by the GeMS."""
    from gym_slaterec.gems import GeMSCheckpoint
    from gym_slaterec.rollouts import make_vector_env

    ckpt = GeMSCheckpoint.load(gems_path)
    env = make_vector_env(ENV, users)
    env.reset(seed=first_seed)
    total = np.zeros(users)
    k = env.simulator.slate_size
    for _ in range(env.config.episode_length):
        oracle = env.simulator.oracle_slates()
        slates = ckpt.decode_latent(ckpt.encode_latent(oracle, np.zeros((users, k), dtype=np.uint8)))
        _, r, _, _, _ = env.step(slates)
        total += r
    return float(total.mean())


def main() -> None:
    from d3rlpy_adapters.collect import collect
    from d3rlpy_adapters.export import export_d3rlpy, sidecar_path
    from d3rlpy_adapters.offline import OfflineConfig, train_offline
    from gym_slaterec.logged_data import LoggedDataset
    from sb3_slate.protocol import TEST_SEED

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gems", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--episodes", type=int, default=10_000)
    p.add_argument("--random", default="random")
    p.add_argument("--medium", default="epsilon-greedy")
    p.add_argument("--expert", default="oracle")
    p.add_argument("--levels", default="expert,medium,random")
    p.add_argument("--level", action="append", default=[], metavar="NAME=POLICY",
                   help="an extra quality level, e.g. sac_mid=runs/sac@ep0005000 (add NAME to --levels)")
    p.add_argument("--algos", default="td3bc,iql,cql")
    p.add_argument("--steps", default="td3bc=1000,iql=1000,cql=400", help="gradient steps per algorithm")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--test-users", type=int, default=500)
    p.add_argument("--val-users", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="set_", action="append", default=[], metavar="ALGO.KEY=VALUE",
                   help="an OfflineConfig field for one algorithm, e.g. td3bc.td3bc_alpha=1.0")
    p.add_argument("--tag", default="", help="suffix of the run directories (a variant of the same algorithms)")
    args = p.parse_args()
    torch.set_num_threads(1)
    steps = {k: int(v) for k, v in (kv.split("=") for kv in args.steps.split(","))}
    args.out.mkdir(parents=True, exist_ok=True)
    res_file = args.out / "bench_results.json"
    results = json.loads(res_file.read_text()) if res_file.is_file() else {"env_id": ENV, "levels": {}}
    results["gems"] = str(args.gems)
    results["command"] = "scripts/bench_offline.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())

    def save() -> None:
        res_file.write_text(json.dumps(results, indent=2, default=str) + "\n")

    if "oracle_through_gems" not in results:
        t0 = time.time()
        results["oracle_through_gems"] = {"mean": oracle_through_gems(args.gems, args.test_users, TEST_SEED),
                                          "users": args.test_users, "wall_time_s": time.time() - t0}
        save()
    print(f"oracle slate -> GeMS encode (no clicks) -> decode: {results['oracle_through_gems']['mean']:.2f}", flush=True)

    extra = dict(kv.split("=", 1) for kv in args.level)
    for level in args.levels.split(","):
        policy, ckpt = policy_spec(extra[level] if level in extra else getattr(args, level))
        entry = results["levels"].setdefault(level, {"policy": str(policy), "checkpoint": ckpt, "runs": {}})
        data_dir = args.out / f"data_{level}"
        h5 = args.out / f"{level}.h5"
        if not data_dir.is_dir():
            t0 = time.time()
            collect(ENV, policy, args.episodes, args.seed + 100_000, data_dir, checkpoint=ckpt or "best")
            entry["collect_wall_s"] = time.time() - t0
        ds = LoggedDataset.load(data_dir)
        entry["dataset_mean_return"] = float(ds.returns().mean())
        entry["episodes"] = len(ds)
        if "policy_test" not in entry:
            t0 = time.time()
            entry["policy_test"] = collecting_policy_return(policy, ckpt, args.test_users, TEST_SEED)
            entry["policy_test_wall_s"] = time.time() - t0
        if not h5.is_file() or not sidecar_path(h5).is_file():
            t0 = time.time()
            export_d3rlpy(data_dir, args.gems, h5, window=args.window, overwrite=True)
            entry["export_wall_s"] = time.time() - t0
            entry["export"] = json.loads(sidecar_path(h5).read_text())["action"]
        save()
        print(f"[{level}] {policy}: dataset {entry['dataset_mean_return']:.2f}, test users "
              f"{entry['policy_test']['mean']:.2f}", flush=True)
        for algo in args.algos.split(","):
            run_dir = args.out / f"{level}_{algo}{args.tag}"
            if (run_dir / "results.json").is_file():
                r = json.loads((run_dir / "results.json").read_text())
            else:
                cfg = OfflineConfig(algo=algo, steps=steps[algo], seed=args.seed, eval_every=args.eval_every,
                                    val_users=args.val_users, test_users=args.test_users)
                cfg = cfg.with_overrides({k.split(".", 1)[1]: float(v) for k, v in
                                          (kv.split("=", 1) for kv in args.set_) if k.startswith(algo + ".")})
                r = train_offline(algo, h5, args.gems, run_dir, cfg, overwrite=False)
            entry["runs"][algo + args.tag] = {
                "steps": r["budget"]["gradient_steps"], "test": r["test"], "best": r["best"],
                "config": json.loads((run_dir / "config.json").read_text()),
                "validation": [(v["step"], v["mean"]) for v in r["validation"]],
                "wall_time_s": r["wall_time_s"], "breakdown": r.get("wall_time_breakdown_s"),
                "fraction_of_collecting_policy": r["test"]["mean"] / entry["policy_test"]["mean"],
            }
            save()
            print(f"   {algo}{args.tag}: test {r['test']['mean']:.2f} ({100 * entry['runs'][algo + args.tag]['fraction_of_collecting_policy']:.0f}% "
                  f"of the collecting policy), {r['wall_time_s']:.0f} s", flush=True)

    print("\n| dataset (collecting policy) | policy test return | " + " | ".join(
        a.upper() for a in args.algos.split(",")) + " |")
    print("|---|---|" + "---|" * len(args.algos.split(",")))
    for level, e in results["levels"].items():
        cells = []
        for algo in args.algos.split(","):
            run = e["runs"].get(algo + args.tag)
            if run:
                lo, hi = run["test"]["ci95"]
                cells.append(f"{run['test']['mean']:.1f} [{lo:.1f}, {hi:.1f}] ({100 * run['fraction_of_collecting_policy']:.0f}%)")
            else:
                cells.append("-")
        pt = e["policy_test"]
        print(f"| {level} ({e['policy']}) | {pt['mean']:.1f} [{pt['ci95'][0]:.1f}, {pt['ci95'][1]:.1f}] | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
