"""Demo stage: the table and a learning-curve figure of the demo's runs."""

from __future__ import annotations

from typing import Any


def demo_stage(ctx: Any) -> None:
    from .grid import load_grid, shipped_grid
    from .plots import plot_curves
    from .results import find_runs, label_variants, read_run
    from .sweep import run_sweep, summary_lines
    from .tables import build, render

    runs = find_runs([ctx.out])
    records = label_variants([read_run(r) for r in runs])
    print("== results table of the demo's runs (slaterec table)")
    print(render(build(records)))
    fig = ctx.out / "learning_curves.png"
    online = [r for r in records if r.x_label == "episodes" and len(r.curve) > 1]
    plot_curves(online, fig, f"demo: online runs on {ctx.env_id}")
    print(f"   learning curves: {fig} (slaterec plot curves)")
    ctx.results["lab"] = {"figure": str(fig), "runs": [str(r) for r in runs]}

    grid_file = shipped_grid("tiny")
    print(f"== a tiny sweep ({grid_file.name}: 4 methods x 2 seeds, logged data and GeMS built once; slaterec sweep)")
    sweep = run_sweep(load_grid(grid_file), grid_file, ctx.out / "sweep_tiny", progress=False)
    for line in summary_lines(sweep):
        print("   " + line)
    sweep_records = label_variants([read_run(r) for r in find_runs([sweep.path / "runs"])])
    print(render(build(sweep_records)))
    sweep_fig = ctx.out / "sweep_tiny_curves.png"
    plot_curves([r for r in sweep_records if len(r.curve) > 1], sweep_fig, "tiny sweep: validation return, 2 seeds")
    print(f"   sweep table: slaterec table {sweep.path}; learning curves: {sweep_fig}")
    ctx.results["sweep"] = {"path": str(sweep.path), "counts": sweep.counts(), "figure": str(sweep_fig)}
