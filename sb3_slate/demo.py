"""Demo stage: a short SAC+GeMS training next to the reference policies, same test users."""

from __future__ import annotations

from typing import Any


def demo_stage(ctx: Any) -> None:
    """Train SAC+GeMS briefly with the demo's GeMS (``ctx.artifacts["gems"]``) and test it.

    Random and the short-term oracle go through the same protocol (same fixed
    test users), so the three returns are directly comparable.
    """
    from .methods import METHOD_TABLE, resolve_config
    from .runs import train_run

    gems = ctx.artifacts.get("gems")
    if gems is None:
        print("== SAC+GeMS: skipped (no GeMS checkpoint from an earlier stage)")
        return
    episodes, users = 40, min(ctx.eval_episodes, 200)
    print(f"== SAC+GeMS on {ctx.env_id}: {episodes} training episodes (8 users in parallel, 1 gradient step per 8 turns), test on {users} fixed users")
    common = {"seed": ctx.seed, "val_users": 100, "test_users": users, "checkpoint_every": 0}
    runs = {  # name: (method, preset, overrides)
        "sac-gems": ("sac-gems", "window", {**common, "gems": str(gems), "episodes": episodes, "val_every": 16,
                                        "n_envs": 8, "agent": {"warmup_episodes": 8, "batch_transitions": 64}}),
        # the paper's regime (episode replay, whole-history beliefs, 1 update per episode), tiny budget
        "sac-gems-paper": ("sac-gems", "paper", {**common, "gems": str(gems), "episodes": 200, "n_envs": 50,
                                                 "val_every": 100, "agent": {"warmup_episodes": 50}}),
        "random": ("random", None, dict(common)),
        "oracle": ("oracle", None, dict(common)),
    }
    table: dict[str, Any] = {}
    for name, (method, preset, overrides) in runs.items():
        cfg = resolve_config(method, ctx.env_id, overrides, preset=preset)
        out = ctx.out / f"sb3_{name.replace('-', '_')}"
        results = train_run(cfg, out, progress=True)
        table[name] = {"run_dir": str(out), "test": results["test"], "wall_time_s": results["wall_time_s"],
                       "validation": [(v["episodes"], v["mean"]) for v in results["validation"]]}
        if name == "sac-gems":
            ctx.artifacts["sac_gems_run"] = out
    print(f"   {'policy':15s} {'test return [95% CI]':>26s}  method")
    for name, row in table.items():
        t = row["test"]
        print(f"   {name:15s} {t['mean']:9.1f} [{t['ci95'][0]:6.1f}, {t['ci95'][1]:6.1f}]  "
              f"{METHOD_TABLE[runs[name][0]].summary}")
    print(f"   (a short budget: the paper trains 100,000 episodes; see BENCHMARKS.md for a one-hour run)")
    ctx.results["sb3"] = table
