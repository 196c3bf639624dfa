"""``slaterec demo``: the whole workflow end to end on a small budget.

Stages run in order; each package adds its own stage (a ``demo_stage(ctx)``
function in ``gym_slaterec.gems.demo``, ``sb3_slate.demo``,
``d3rlpy_adapters.demo``) that reads what earlier stages left in ``ctx``.
"""

from __future__ import annotations

import argparse
import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..provenance import DEMO_MARKER, check_writable, provenance, write_json_atomic
from . import entry_point_modules, seed_arg

#: Demo stages come from the ``slaterec.demo_stages`` entry points (each package its own).
OWN_STAGE_MODULES = ("gym_slaterec.gems.demo",)


def stage_modules() -> list[str]:
    return entry_point_modules("slaterec.demo_stages", OWN_STAGE_MODULES)


@dataclass
class DemoContext:
    out: Path
    env_id: str = "SlateRec/FocusedTopDown-v0"
    seed: int = 0
    episodes: int = 2000  # logged-data episodes
    eval_episodes: int = 200
    artifacts: dict[str, Path] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole workflow on a small budget")
    p.add_argument("--out", type=Path, default=Path("demo_output"))
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo's output folder")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.set_defaults(handler=cmd_demo)


def reference_stage(ctx: DemoContext) -> None:
    from .. import ENV_IDS
    from ..rollouts import evaluate_reference_policy, generate_logged_data

    print(f"== logged data: {ctx.episodes} episodes of epsilon-greedy (0.5) on {ctx.env_id}")
    ds = generate_logged_data(ctx.env_id, ctx.out / "logged_focused_topdown", episodes=ctx.episodes, seed=ctx.seed)
    ctx.artifacts["dataset"] = ds.path
    print(f"   {ds.path}: mean return {ds.returns().mean():.2f}")
    print(f"== reference policies, {ctx.eval_episodes} episodes each (mean return [95% CI])")
    print(f"   {'environment':30s} {'random':>22s} {'oracle':>22s} {'epsilon-greedy':>22s}")
    table = {}
    for env_id in ENV_IDS:
        row = {}
        for policy in ("random", "oracle", "epsilon-greedy"):
            row[policy] = evaluate_reference_policy(env_id, policy, ctx.eval_episodes, ctx.seed + 10_000).to_dict()
        table[env_id] = row
        cells = [f"{r['mean']:7.1f} [{r['ci95'][0]:6.1f},{r['ci95'][1]:6.1f}]" for r in row.values()]
        print(f"   {env_id:30s} " + " ".join(f"{c:>22s}" for c in cells))
    ctx.results["reference_policies"] = table


def cmd_demo(args: argparse.Namespace) -> int:
    import json
    import shutil

    out = check_writable(args.out, args.overwrite, "demo_output")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # marks the folder as the demo's own, so that a later --overwrite may replace it
    write_json_atomic(out / DEMO_MARKER, provenance("demo_output", seed=args.seed))
    ctx = DemoContext(out=out, seed=args.seed)
    t0 = time.time()
    reference_stage(ctx)
    for name in stage_modules():
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.demo_stage(ctx)
    (out / "demo_results.json").write_text(json.dumps(ctx.results, indent=2, default=str) + "\n")
    print(f"demo finished in {time.time() - t0:.0f} s; results in {out / 'demo_results.json'}")
    return 0
