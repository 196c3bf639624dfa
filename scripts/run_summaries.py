"""Keep the small summaries tables are built from (results/NAME/*.json), and print the table.

    python scripts/run_summaries.py save runs/sweeps/contrib_methods results/contrib_methods
    python scripts/run_summaries.py table results/contrib_methods

A summary holds a complete run's method, environment, seed, budget, wall time, the settings
that define it (agent, belief, regime), the validation curve, the best validation and the
test return with its interval: what a table or a curve needs, without checkpoints (run
directories under runs/ do not outlive a session).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def save(root: Path, dest: Path) -> int:
    from slaterec_lab.results import find_runs, run_status

    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for run in find_runs([root]):
        if run_status(run)[0] != "complete":
            continue
        res = json.loads((run / "results.json").read_text())
        cfg = json.loads((run / "config.json").read_text())
        prov = res.get("provenance", {})
        summary = {
            "run": run.name, "method": res["method"], "env_id": res["env_id"], "seed": res["seed"],
            "budget": res["budget"], "wall_time_s": round(res["wall_time_s"], 1),
            "settings": {k: cfg.get(k) for k in ("replay", "n_envs", "window", "episodes", "val_every", "val_users",
                                                 "test_users", "agent", "belief")},
            "inputs": prov.get("inputs", {}), "item_embeddings_fingerprint": prov.get("item_embeddings_fingerprint"),
            "package_version": prov.get("package_version"),
            "validation": [[v.get("episodes", v.get("step")), v["mean"]] for v in res["validation"]],
            "best": res["best"], "test": {k: res["test"][k] for k in ("mean", "std", "ci95", "episodes")},
        }
        (dest / f"{run.name}.json").write_text(json.dumps(summary, indent=1) + "\n")
        n += 1
    print(f"wrote {n} summaries to {dest}")
    return 0


def table(src: Path) -> int:
    from slaterec_lab.stats import summarise

    rows: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(src.glob("*.json")):
        s = json.loads(path.read_text())
        rows.setdefault((s["env_id"].split("/")[-1].split("-v")[0], s["method"]), []).append(s)
    print("| environment | method | budget (episodes) | test return: mean over seeds ± 95 % t half-width | seeds | per seed | wall time per run (s) |")
    print("|---|---|---:|---:|---:|---|---:|")
    for (env, method), runs in sorted(rows.items(), key=lambda kv: -summarise([r["test"]["mean"] for r in kv[1]]).mean):
        tests = [r["test"]["mean"] for r in sorted(runs, key=lambda r: r["seed"])]
        st = summarise(tests)
        per_seed = ", ".join(f"{t:.1f}" for t in tests)
        walls = sorted(r["wall_time_s"] for r in runs)
        print(f"| {env} | {method} | {runs[0]['budget']['episodes']:,} | {st.mean:.1f} ± {st.half_width:.1f} | {len(runs)} "
              f"| {per_seed} | {walls[len(walls) // 2]:.0f} |")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save")
    s.add_argument("root", type=Path)
    s.add_argument("dest", type=Path)
    t = sub.add_parser("table")
    t.add_argument("src", type=Path)
    args = p.parse_args()
    return save(args.root, args.dest) if args.cmd == "save" else table(args.src)


if __name__ == "__main__":
    sys.exit(main())
