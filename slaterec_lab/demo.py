"""Demo stage: the table and a learning-curve figure of the demo's runs."""

from __future__ import annotations

from typing import Any


def demo_stage(ctx: Any) -> None:
    from .plots import plot_curves
    from .results import find_runs, read_run
    from .tables import build, render

    runs = find_runs([ctx.out])
    records = [read_run(r) for r in runs]
    print("== results table of the demo's runs (slaterec table)")
    print(render(build(records)))
    fig = ctx.out / "learning_curves.png"
    online = [r for r in records if r.x_label == "episodes" and len(r.curve) > 1]
    plot_curves(online, fig, f"demo: online runs on {ctx.env_id}")
    print(f"   learning curves: {fig} (slaterec plot curves)")
    ctx.results["lab"] = {"figure": str(fig), "runs": [str(r) for r in runs]}
