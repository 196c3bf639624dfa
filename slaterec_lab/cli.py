"""``slaterec table | plot``: results across runs and seeds."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help="Table 2 from run directories: mean test return over seeds, 95%% CI, Welch's test")
    p.add_argument("runs", nargs="+", type=Path, help="run directories or folders holding them")
    p.add_argument("--format", choices=("markdown", "latex", "csv"), default="markdown")
    p.add_argument("--paper", action="store_true", help="show the published values beside ours, with the difference")
    p.add_argument("--out", type=Path, help="write to this file instead of printing")
    p.add_argument("--overwrite", action="store_true", help="replace a table this command wrote before")
    p.set_defaults(handler=cmd_table)

    p = sub.add_parser("runs", help="list the run directories under ROOT: method, environment, seed, status, returns")
    p.add_argument("root", nargs="?", type=Path, default=Path("runs"))
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(handler=cmd_runs)

    p = sub.add_parser("drift", help="distance between the item tables of two artifacts (GeMS, MF, run, environment)")
    p.add_argument("a", help="GeMS checkpoint, MF/matrix file, run directory, environment id or shipped matrix name")
    p.add_argument("b")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_drift)

    p = sub.add_parser("plot", help="PNG figures from run directories")
    kinds = p.add_subparsers(dest="figure", metavar="FIGURE")
    kinds.required = True
    c = kinds.add_parser("curves", help="validation return against episodes, mean and 95%% band over seeds")
    c.add_argument("runs", nargs="+", type=Path, help="run directories or folders holding them")
    c.add_argument("--out", type=Path, required=True, help="PNG file to write")
    c.add_argument("--title", default="")
    c.add_argument("--x", choices=("episodes", "turns", "wall_s"), default="episodes", help="the horizontal axis")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(handler=cmd_plot_curves)


TABLE_HEADERS = ("| method |", "method,environment,", "\\begin{tabular}")


def _refuse_unless_ours(out: Path, overwrite: bool, ours: bool, what: str) -> None:
    from gym_slaterec.provenance import ArtifactExistsError

    if out.exists():
        if not overwrite:
            raise ArtifactExistsError(f"{out} already exists; pass --overwrite to replace it")
        if not ours:
            raise ArtifactExistsError(f"{out} is not a {what} written by slaterec; refusing to replace it even with "
                                      "--overwrite (move it away or choose another path)")


def cmd_table(args: argparse.Namespace) -> int:
    from .results import find_runs, read_run
    from .tables import build, render

    records = [read_run(r) for r in find_runs(args.runs)]
    text = render(build(records), args.format, args.paper)
    if args.out is not None:
        from gym_slaterec.provenance import write_bytes_atomic

        ours = args.out.is_file() and args.out.read_text(errors="replace").startswith(TABLE_HEADERS)
        _refuse_unless_ours(args.out, args.overwrite, ours, "table")
        write_bytes_atomic(args.out, text.encode(), overwrite=True)
        print(f"wrote {args.out} ({len(records)} runs)")
    else:
        print(text, end="")
    return 0


def cmd_plot_curves(args: argparse.Namespace) -> int:
    from .plots import plot_curves, png_runs
    from .results import find_runs, read_run

    if args.out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file, got {args.out}")
    try:
        ours = args.out.is_file() and isinstance(png_runs(args.out), list)
    except Exception:  # not a PNG, or one without our metadata
        ours = False
    _refuse_unless_ours(args.out, args.overwrite, ours, "figure")
    records = [read_run(r) for r in find_runs(args.runs)]
    plot_curves(records, args.out, args.title, args.x)
    print(f"wrote {args.out} ({len(records)} runs)")
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    import json

    from .drift import compare, item_table

    a, source_a = item_table(args.a)
    b, source_b = item_table(args.b)
    res = {"a": source_a, "b": source_b, **compare(a, b)}
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"A: {source_a} ({a.shape[0]} x {a.shape[1]})\nB: {source_b} ({b.shape[0]} x {b.shape[1]})")
    for key, value in res.items():
        if key not in ("a", "b"):
            shown = "-" if value is None else str(value) if isinstance(value, int) else f"{value:.4f}"
            print(f"  {key:26s} {shown}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    import json

    from .results import find_runs, run_summary

    if not args.root.is_dir():
        raise FileNotFoundError(f"no such folder: {args.root}")
    rows = [run_summary(run) for run in sorted(find_runs([args.root], allow_empty=True))]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0

    def fmt(v) -> str:
        return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    print(f"{'run':40s} {'method':16s} {'replay':8s} {'environment':28s} {'seed':>10s} {'status':9s} "
          f"{'best val':>9s} {'test':>8s}")
    for r in rows:
        print(f"{r['run'][-40:]:40s} {fmt(r['method']):16s} {fmt(r['replay']):8s} {fmt(r['env_id']):28s} "
              f"{fmt(r['seed']):>10s} {r['status']:9s} {fmt(r['best_validation']):>9s} {fmt(r['test']):>8s}")
    print(f"{len(rows)} run(s) under {args.root}")
    return 0
