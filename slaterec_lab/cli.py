"""``slaterec table | plot | sweep | benchmark ...``: experiments, results across runs and seeds."""

from __future__ import annotations

import argparse
from pathlib import Path

from gym_slaterec.cli import add_no_progress, nonnegative_int, positive_int

from .results import STATUSES as RUN_STATUSES

#: ``slaterec runs --sort`` -> the summary field it orders by (returns: best first)
RUN_SORT_KEYS = {"run": "run", "method": "method", "env": "env_id", "seed": "seed", "status": "status",
                 "test": "test", "best": "best_validation", "created": "created_utc"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help="Table 2 from run directories: mean test return over seeds, 95%% CI, Welch's test")
    p.add_argument("runs", nargs="+", type=Path, help="run directories or folders holding them")
    p.add_argument("--format", choices=("markdown", "latex", "csv"), default="markdown")
    p.add_argument("--paper", action="store_true", help="show the published values beside ours, with the difference")
    p.add_argument("--normalised", action="store_true",
                   help="normalised scores 100 x (R - random) / (expert - random) with the shipped reference returns, "
                        "the raw return beside them (CSV: always as extra columns)")
    p.add_argument("--columns", choices=("environment", "dataset"), default="environment",
                   help="environment: one column per environment (Table 2); dataset: offline runs as D4RL tables, one "
                        "per environment, a column per dataset (quality and fingerprint), the dataset's own return first")
    p.add_argument("--whole-budget", action="store_true",
                   help="only runs that trained their whole budget (leave out runs a wall-time limit stopped short)")
    p.add_argument("--out", type=Path, help="write to this file instead of printing")
    p.add_argument("--overwrite", action="store_true", help="replace a table this command wrote before")
    p.set_defaults(handler=cmd_table)

    p = sub.add_parser("benchmark", help="the offline benchmark's datasets: collecting policies and the five "
                       "D4RL-style datasets (random, medium, expert, medium-replay, medium-expert)")
    kinds = p.add_subparsers(dest="benchmark_command", metavar="COMMAND")
    kinds.required = True
    b = kinds.add_parser("policies", help="a policies folder from a finished agent run: its best checkpoint "
                         "(expert) and the checkpoint halfway between random and expert (medium), with their GeMS",
                         description="Bundle the collecting policies of one environment from a finished SAC+GeMS run "
                         "of the paper regime trained with periodic checkpoints and replay snapshots (e.g. sweeps/"
                         "benchmark_policies.yaml): expert = its best checkpoint; medium = the periodic checkpoint "
                         "(with a kept replay memory) whose validation return is closest to halfway between the "
                         "shipped random return and the best validation return.")
    b.add_argument("run", type=Path, help="a finished agent run directory")
    b.add_argument("--out", type=Path, required=True, help="policies folder to create")
    b.add_argument("--medium", default="halfway", help="halfway (default), or a checkpoint: episodes:N / epNNNNNNN")
    b.add_argument("--no-replay", action="store_true", help="leave the medium's replay memory out (~100 MB; "
                   "medium-replay then cannot be rebuilt from the folder): a folder small enough to ship")
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(handler=cmd_benchmark_policies)
    b = kinds.add_parser("train-policies", help="build the collecting policies from scratch: the online chain per "
                         "environment (a sweep), then a policies folder per environment",
                         description="Run GRID (default: the shipped benchmark_policies: 100,000 logged episodes -> "
                         "GeMS -> SAC+GeMS in the paper regime with checkpoints and replay snapshots; ~1.5 core-hours "
                         "per environment) on the given environments into OUT/sweep, then write OUT/ENV with "
                         "slaterec benchmark policies. Running it again resumes the sweep.")
    b.add_argument("environments", nargs="+", help="environment names (FocusedTopDown, ...)")
    b.add_argument("--out", type=Path, required=True, help="folder of the sweep and the policies folders")
    b.add_argument("--grid", type=Path, default=Path("benchmark_policies"), help="grid file or shipped grid name; "
                   "its environments are replaced by ENVIRONMENTS, its sac-gems run of seed 0 is the source")
    b.add_argument("--executor", choices=("auto", "ray", "local", "inline"), default="auto")
    b.add_argument("--workers", type=positive_int, help="CPUs of the local Ray instance (default: all)")
    add_no_progress(b)
    b.set_defaults(handler=cmd_benchmark_train_policies)
    b = kinds.add_parser("datasets", help="rebuild the benchmark datasets from policies folders and check them "
                         "against their recorded fingerprints")
    b.add_argument("policies", nargs="+", help="policies folders (slaterec benchmark policies), or environment names "
                   "whose policies ship with the package")
    b.add_argument("--out", type=Path, required=True, help="folder of the datasets: OUT/ENV/QUALITY")
    b.add_argument("--qualities", nargs="+", default=None, metavar="QUALITY",
                   help="random, medium, expert, medium-replay, medium-expert (default: all the folder can rebuild)")
    b.add_argument("--episodes", type=positive_int, help="episodes per dataset (default: the benchmark's 10,000; "
                   "fingerprints are compared with those recorded for that size)")
    b.add_argument("--record", action="store_true", help="write the datasets' fingerprints into each policies "
                   "folder's benchmark.json (whoever builds the policies does this once)")
    b.add_argument("--allow-mismatch", action="store_true", help="keep a dataset whose fingerprint differs from the "
                   "recorded one (refused and removed otherwise); its provenance records the mismatch")
    b.add_argument("--native-arithmetic", dest="portable", action="store_false", help="compute with this CPU's "
                   "fastest kernels; by default the command runs in a child process with the kernels that round alike "
                   "on every x86-64 CPU with AVX2 (ATen's generic ones, MKL's AVX2 path, one thread), so that the "
                   "datasets match the recorded ones elsewhere too")
    b.add_argument("--overwrite", action="store_true")
    add_no_progress(b)
    b.add_argument("--json", action="store_true", help="print the rows as JSON")
    b.set_defaults(handler=cmd_benchmark_datasets)

    p = sub.add_parser("summaries", help="keep the small summaries of finished runs (a few KB each) in a folder "
                       "that tables and curves read as they read run directories",
                       description="Copy the summary (configuration, provenance, budget, wall time, validation curve, "
                       "test return with its interval) of every complete run under RUNS into OUT as RUN-NAME.json, so "
                       "that a table grows from runs made on different machines, days or cluster nodes "
                       "(slaterec table OUT ...). A summary already there with the same content is kept; another run "
                       "of the same name is refused unless --overwrite.")
    p.add_argument("runs", nargs="+", type=Path, help="run directories or folders holding them")
    p.add_argument("--out", type=Path, required=True, help="folder of summaries (created)")
    p.add_argument("--overwrite", action="store_true", help="replace a summary of another run with the same name")
    p.set_defaults(handler=cmd_summaries)

    p = sub.add_parser("sweep", help="run a grid of experiments (YAML) on Ray, or one after another without it",
                       description="Expand GRID into trials (logged data -> MF/GeMS -> agents; each artifact built "
                       "once) and run them on Ray (a local instance, or the cluster at --address) or, without Ray, one "
                       "after another. Running the same command again resumes: finished trials are kept, unfinished "
                       "runs resume from their checkpoints, failed trials are retried.")
    p.add_argument("grid", type=Path, help="grid file (YAML), or the name of a shipped grid (a file of sweeps/: tiny, table2_focused_slice, "
                   "table2, fig3_lambdas_small, gems_budget_small, offline_small, offline_benchmark_slice, "
                   "offline_benchmark...)")
    p.add_argument("--out", type=Path, help="sweep directory (default: WORKSPACE/sweeps/GRID-NAME)")
    p.add_argument("--workspace", type=Path, help="root of the default directories (default: $SLATEREC_WORKSPACE, else ./runs)")
    p.add_argument("--executor", choices=("auto", "ray", "local", "inline"), default="auto",
                   help="auto: Ray when installed (pip install 'slaterec[ray]'), else local; local: one trial at a "
                   "time, each in a child process; inline: one at a time in this process")
    p.add_argument("--address", help="address of an existing Ray cluster (default: start a local instance)")
    p.add_argument("--workers", type=positive_int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--retries", type=nonnegative_int, help="retries of a failed trial in this invocation (default: the "
                   "grid's `retries`, else 1)")
    p.add_argument("--dry-run", action="store_true", help="list the trials and their commands, run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per event)")
    p.set_defaults(handler=cmd_sweep)

    p = sub.add_parser("runs", help="list the run directories under ROOT: method, environment, seed, status, returns")
    p.add_argument("root", nargs="?", type=Path, default=Path("runs"))
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.add_argument("--method", help="only runs of this method (e.g. sac-gems, offline-td3bc)")
    p.add_argument("--env", help="only runs of this environment (FocusedTopDown, or its full id)")
    p.add_argument("--status", nargs="+", choices=RUN_STATUSES, help="only runs with one of these statuses")
    p.add_argument("--tag", help="only runs with this --tag")
    p.add_argument("--sort", choices=RUN_SORT_KEYS, default="run", help="order of the rows (default: run)")
    p.set_defaults(handler=cmd_runs)

    p = sub.add_parser("convert-run", help="rewrite a trusted run directory written before the pickle-free formats",
                       description="Runs written by earlier versions keep SB3 checkpoints, SB3 replay buffers and "
                       "d3rlpy models as pickles, which can run code when read; SlateRec refuses to read them. If you "
                       "trust where RUN came from, this command reads them once and rewrites them as weights-only files.")
    p.add_argument("run", type=Path, help="an online or offline run directory")
    p.add_argument("--trust", action="store_true", help="required: you vouch that the run's files are not hostile")
    p.set_defaults(handler=cmd_convert_run)

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
    c.add_argument("--per-seed", action="store_true", help="one line per run (seed) instead of the mean and band")
    c.add_argument("--whole-budget", action="store_true", help="only runs that trained their whole budget")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(handler=cmd_plot_curves)
    c = kinds.add_parser("slates", help="Fig. 2: relevance scores and boredom of the slates two (or more) runs "
                         "recommend to the test users")
    c.add_argument("runs", nargs="+", type=Path, help="run directories (e.g. SAC+GeMS with gamma 0.8 and gamma 0)")
    c.add_argument("--out", type=Path, required=True, help="PNG file to write")
    c.add_argument("--labels", nargs="+", help="one legend label per run (default: method and gamma)")
    c.add_argument("--users", type=positive_int, default=200, help="test users played per run")
    c.add_argument("--checkpoint", default="best", help="which checkpoint of each run (default: best)")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(handler=cmd_plot_slates)
    c = kinds.add_parser("heatmap", help="Fig. 3: mean test return over a two-key grid of a sweep")
    c.add_argument("sweep", type=Path, help="sweep directory (slaterec sweep)")
    c.add_argument("--x", required=True, help="grid key on the horizontal axis, e.g. gems.lambda_kl")
    c.add_argument("--y", required=True, help="grid key on the vertical axis, e.g. gems.lambda_click")
    c.add_argument("--method", help="the method whose runs to show (needed when several have both keys)")
    c.add_argument("--env", help="the environment (needed when several have both keys)")
    c.add_argument("--out", type=Path, required=True, help="PNG file to write")
    c.add_argument("--title", default="")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(handler=cmd_plot_heatmap)
    c = kinds.add_parser("datasets", help="the offline benchmark: per environment and dataset, one bar per algorithm "
                         "(normalised score, 95%% interval over seeds), the dataset's own return marked")
    c.add_argument("runs", nargs="+", type=Path, help="offline run directories or summaries, or folders holding them")
    c.add_argument("--out", type=Path, required=True, help="PNG file to write")
    c.add_argument("--title", default="")
    c.add_argument("--raw", action="store_true", help="raw test returns instead of normalised scores")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(handler=cmd_plot_datasets)


TABLE_HEADERS = ("| method |", "method,environment,", "\\begin{tabular}", "environment,dataset,",
                 "<!-- slaterec table --columns dataset -->", "% slaterec table --columns dataset")


def _refuse_unless_ours(out: Path, overwrite: bool, ours: bool, what: str) -> None:
    from gym_slaterec.provenance import ArtifactExistsError

    if out.exists():
        if not overwrite:
            raise ArtifactExistsError(f"{out} already exists; pass --overwrite to replace it")
        if not ours:
            raise ArtifactExistsError(f"{out} is not a {what} written by slaterec; refusing to replace it even with "
                                      "--overwrite (move it away or choose another path)")


def _warn(notes: list[str]) -> None:
    import sys

    for note in notes:
        print(f"warning: {note}", file=sys.stderr)


def cmd_table(args: argparse.Namespace) -> int:
    from .results import comparable_records
    from .tables import build, build_by_dataset, render, render_by_dataset

    records, notes = comparable_records(args.runs, need_test=True, whole_budget=args.whole_budget)
    _warn(notes)
    if args.columns == "dataset":
        if args.paper:
            raise ValueError("--paper compares with Table 2 (one column per environment): not with --columns dataset")
        text = render_by_dataset(build_by_dataset(records), args.format, args.normalised)
    else:
        text = render(build(records), args.format, args.paper, args.normalised)
    if args.out is not None:
        from gym_slaterec.provenance import write_bytes_atomic

        ours = args.out.is_file() and args.out.read_text(errors="replace").startswith(TABLE_HEADERS)
        _refuse_unless_ours(args.out, args.overwrite, ours, "table")
        write_bytes_atomic(args.out, text.encode(), overwrite=True)
        print(f"wrote {args.out} ({len(records)} runs)")
    else:
        print(text, end="")
    return 0


def cmd_summaries(args: argparse.Namespace) -> int:
    from .results import keep_summaries

    written, kept, skipped = keep_summaries(args.runs, args.out, args.overwrite)
    for note in skipped:
        print(f"skipped {note}")
    print(f"{args.out}: {written} {'summary' if written == 1 else 'summaries'} written, {kept} already there")
    return 0


def _check_figure_out(args: argparse.Namespace) -> None:
    from .plots import png_runs

    if args.out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file, got {args.out}")
    try:
        ours = args.out.is_file() and isinstance(png_runs(args.out), list)
    except Exception:  # not a PNG, or one without our metadata
        ours = False
    _refuse_unless_ours(args.out, args.overwrite, ours, "figure")


def cmd_plot_slates(args: argparse.Namespace) -> int:
    from .analysis import slate_statistics
    from .plots import plot_slate_statistics

    _check_figure_out(args)
    if args.labels is not None and len(args.labels) != len(args.runs):
        raise ValueError(f"--labels gives {len(args.labels)} labels for {len(args.runs)} runs")
    for run in args.runs:
        if not (run / "provenance.json").is_file():
            raise FileNotFoundError(f"{run} is not a run directory (no provenance.json)")
    stats = [slate_statistics(run, args.users, checkpoint=args.checkpoint) for run in args.runs]
    data = plot_slate_statistics(stats, args.out, args.labels)
    for label, d in data.items():
        print(f"{label}: mean relevance {d['mean_score']:.3f}, bored-topic items per slate {d['mean_bored_items']:.2f}")
    print(f"wrote {args.out} ({len(stats)} runs)")
    return 0


def cmd_plot_heatmap(args: argparse.Namespace) -> int:
    from .analysis import heatmap_data
    from .plots import plot_heatmap

    _check_figure_out(args)
    if not (args.sweep / "sweep.json").is_file():
        raise FileNotFoundError(f"{args.sweep} is not a sweep directory (no sweep.json)")
    data = heatmap_data(args.sweep, args.x, args.y, args.method, args.env)
    plot_heatmap(data, args.out, args.title)
    print(f"wrote {args.out} ({len(data['runs'])} runs, {len(data['x'])} x {len(data['y'])} cells)")
    return 0


def cmd_plot_datasets(args: argparse.Namespace) -> int:
    from .plots import plot_datasets
    from .results import comparable_records
    from .tables import build_by_dataset

    _check_figure_out(args)
    records, notes = comparable_records(args.runs, need_test=True)
    _warn(notes)
    plot_datasets(build_by_dataset(records), args.out, args.title, args.raw)
    print(f"wrote {args.out} ({len(records)} runs)")
    return 0


def cmd_plot_curves(args: argparse.Namespace) -> int:
    from .plots import plot_curves
    from .results import comparable_records

    _check_figure_out(args)
    records, notes = comparable_records(args.runs, need_test=False, whole_budget=args.whole_budget)
    _warn(notes)
    plot_curves(records, args.out, args.title, args.x, per_seed=args.per_seed)
    print(f"wrote {args.out} ({len(records)} runs)")
    return 0


def default_sweep_dir(grid: dict, grid_file: Path, workspace: Path | None) -> Path:
    import os

    from .grid import grid_name

    root = workspace or Path(os.environ.get("SLATEREC_WORKSPACE") or "runs")
    return root / "sweeps" / (grid_name(grid) or grid_file.stem)


def cmd_sweep(args: argparse.Namespace) -> int:
    from .grid import expand, load_grid, shipped_grid
    from .sweep import run_sweep, summary_lines

    grid = load_grid(args.grid)
    if not args.grid.is_file():
        args.grid = shipped_grid(str(args.grid))
    out = args.out if args.out is not None else default_sweep_dir(grid, args.grid, args.workspace)
    if args.dry_run:
        trials = expand(grid, out)
        for t in trials:
            deps = f"  (after {', '.join(t.deps)})" if t.deps else ""
            print(f"{t.id}{deps}\n    slaterec {' '.join(t.argv)}")
        print(f"{len(trials)} trials in {out}")
        return 0
    sweep = run_sweep(grid, args.grid, out, args.executor, args.address, args.workers, not args.no_progress,
                      args.retries)
    for line in summary_lines(sweep):
        print(line)
    counts = sweep.counts()
    if counts["done"] == len(sweep.trials):
        print(f"table: slaterec table {sweep.path}")
        return 0
    return 1


def cmd_benchmark_train_policies(args: argparse.Namespace) -> int:
    from gym_slaterec.core.config import preset

    from d3rlpy_adapters.benchmark import build_policies, read_policies

    from .grid import GridError, load_grid, seed_run_ids, shipped_grid
    from .sweep import run_sweep, summary_lines

    grid = load_grid(args.grid)
    grid_file = args.grid if args.grid.is_file() else shipped_grid(str(args.grid))
    envs = [preset(e).env_id for e in args.environments]
    if "sac-gems" not in (grid.get("methods") or {}) or 0 not in grid.get("seeds", [0]):
        raise GridError(f"{grid_file}: the policies come from its sac-gems run of seed 0; the grid has none")
    grid["environments"] = envs
    sweep = run_sweep(grid, grid_file, args.out / "sweep", args.executor, None, args.workers, not args.no_progress)
    for line in summary_lines(sweep):
        print(line)
    made = 0
    for env_id in envs:
        env = env_id.split("/")[-1].split("-v")[0]
        (rel,) = [rel for t in sweep.trials.values() if t["kind"] in ("run", "seeds") and t["method"] == "sac-gems"
                  and t["env_id"] == env_id for s, rel in seed_run_ids(t) if s == 0][:1] or [None]
        run = None if rel is None else sweep.path / rel
        if run is None or not (run / "results.json").is_file():
            print(f"{env}: its SAC+GeMS run is not finished; run the same command again to resume")
            continue
        target = args.out / env
        if (target / "benchmark.json").is_file() and read_policies(target).get("source_run") == str(run):
            print(f"{env}: policies already in {target}")
        else:
            m = build_policies(run, target)
            print(f"{env}: wrote {target} (expert validation {m['policies']['expert']['validation_return']:.2f}, "
                  f"medium {m['policies']['medium']['validation_return']:.2f} at {m['policies']['medium']['source_checkpoint']})")
        made += 1
    print(f"datasets: slaterec benchmark datasets {' '.join(str(args.out / e.split('/')[-1].split('-v')[0]) for e in envs)} "
          "--out DATA --record")
    return 0 if made == len(envs) else 1


def cmd_benchmark_policies(args: argparse.Namespace) -> int:
    from d3rlpy_adapters.benchmark import build_policies

    m = build_policies(args.run, args.out, args.medium, args.overwrite, replay=not args.no_replay)
    ref, pol = m["reference"], m["policies"]
    print(f"wrote {args.out}: {m['env_id']}; expert = {pol['expert']['source_checkpoint']} (validation "
          f"{pol['expert']['validation_return']:.2f} at episode {pol['expert']['episodes']}, test {ref['expert_test']:.2f}); "
          f"medium = {pol['medium']['source_checkpoint']} (validation {pol['medium']['validation_return']:.2f}; halfway between "
          f"random {ref['random']:.2f} and the expert: {ref['medium_target']:.2f}); medium-replay "
          f"{'kept' if pol['medium']['replay'] else 'left out (--no-replay)' if args.no_replay else 'not available (no replay memory at that checkpoint)'}")
    return 0


def cmd_benchmark_datasets(args: argparse.Namespace) -> int:
    import json

    from d3rlpy_adapters.benchmark import available_qualities, build_datasets, policies_folder, read_policies

    folders = [policies_folder(p) for p in args.policies]
    envs = [read_policies(f)["env_id"].split("/")[-1].split("-v")[0] for f in folders]  # every folder checked first
    if len(set(envs)) != len(envs):
        raise ValueError(f"two policies folders of one environment ({', '.join(envs)}): their datasets would share OUT/ENV")
    rows = []
    for folder, env in zip(folders, envs):
        qualities = args.qualities or available_qualities(folder)
        medium = read_policies(folder)["policies"]["medium"]
        if args.qualities is None and "medium-replay" not in qualities:
            print(f"note: {folder} kept no replay memory and its medium is no periodic checkpoint; medium-replay is skipped")
        elif "medium-replay" in qualities and not medium.get("replay") and medium.get("episodes"):
            print(f"note: {folder} keeps no replay memory (the shipped policies leave it out): medium-replay retrains "
                  f"the medium agent from its seed for {medium['episodes']:,} episodes (about {medium['episodes'] / 1000:.0f} "
                  "core-minutes in the paper regime) and checks it against the shipped one", flush=True)
        for r in build_datasets(folder, args.out / env, qualities, args.episodes, args.overwrite,
                                args.record, progress=not args.no_progress, allow_mismatch=args.allow_mismatch):
            rows.append({"env": env, **r})
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'environment':16s} {'dataset':14s} {'episodes':>8s} {'mean return':>11s}  fingerprint   recorded")
    for r in rows:
        check = {None: "not recorded", True: "matches", False: f"DIFFERS (recorded {str(r['recorded'])[:12]}"
                 + ("" if r["recorded_mean_return"] is None else f", mean return {r['recorded_mean_return']:.4f}")
                 + ")"}[r["matches"]]
        print(f"{r['env']:16s} {r['quality']:14s} {r['episodes']:8d} {r['mean_return']:11.4f}  {r['fingerprint'][:12]}  {check}")
    if any(r["matches"] is False for r in rows):
        print("note: kept with --allow-mismatch (recorded in each dataset's provenance): computed otherwise than the "
              "record (other kernels, another torch build, or a retrained agent); the dataset is a valid one of the "
              "same policy, but not the benchmark's")
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    import json

    from .drift import compare, item_table

    a, source_a = item_table(args.a)
    b, source_b = item_table(args.b)
    res = {"a": source_a, "b": source_b, **compare(a, b)}
    if args.json:
        from gym_slaterec.provenance import dumps_strict
        print(dumps_strict(res))
        return 0
    print(f"A: {source_a} ({a.shape[0]} x {a.shape[1]})\nB: {source_b} ({b.shape[0]} x {b.shape[1]})")
    for key, value in res.items():
        if key not in ("a", "b"):
            shown = "-" if value is None else str(value) if isinstance(value, int) else f"{value:.4f}"
            print(f"  {key:26s} {shown}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from .results import find_runs, run_summary

    if not args.root.is_dir():
        raise FileNotFoundError(f"no such folder: {args.root}")
    rows = [run_summary(run) for run in sorted(find_runs([args.root], allow_empty=True, include_damaged=True))]
    from .tables import short_env

    env = None if args.env is None else short_env(args.env)
    rows = [r for r in rows if (args.method is None or r["method"] == args.method)
            and (env is None or short_env(str(r["env_id"])) == env)
            and (args.status is None or r["status"] in args.status) and (args.tag is None or r["tag"] == args.tag)]
    key, best_first = RUN_SORT_KEYS[args.sort], args.sort in ("test", "best")

    def order(r: dict) -> tuple:  # missing values last; returns from the best down
        v = r[key]
        return (1, 0, r["run"]) if v is None else (0, -v if best_first else v, r["run"])

    rows.sort(key=order)
    if args.json:
        from gym_slaterec.provenance import dumps_strict
        print(dumps_strict(rows, indent=2))
        return 0

    def fmt(v) -> str:
        return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    # whole names: the run column is as wide as its longest path (relative to ROOT), never cut
    names = [_relative(r["run"], args.root) for r in rows]
    table = [("run", "method", "replay", "environment", "seed", "status", "best val", "test")] + [
        (n, fmt(r["method"]), fmt(r["replay"]), fmt(r["env_id"]).removeprefix("SlateRec/"), fmt(r["seed"]),
         r["status"], fmt(r["best_validation"]), fmt(r["test"])) for n, r in zip(names, rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for i, row in enumerate(table):
        print("  ".join(c.rjust(w) if j >= 6 or j == 4 else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))).rstrip())
        if i and rows[i - 1]["detail"]:
            print(f"    {rows[i - 1]['status']}: {rows[i - 1]['detail']}")
    counts = {s: sum(r["status"] == s for r in rows) for s in RUN_STATUSES}
    print(f"{len(rows)} run(s) under {args.root}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return 0


def _relative(run: str, root: Path) -> str:
    try:
        return str(Path(run).relative_to(root))
    except ValueError:
        return run


def cmd_convert_run(args: argparse.Namespace) -> int:
    import json

    from gym_slaterec.provenance import identify_artifact

    if not args.trust:
        raise ValueError("convert-run reads pickle-based files, which can run any code they hold; pass --trust only "
                         f"if you trust where {args.run} came from")
    kind, what = identify_artifact(args.run)
    if kind == "sb3_run":
        from sb3_slate.checkpoints import convert_run
    elif kind == "offline_run":
        from d3rlpy_adapters.offline import convert_run
    else:
        raise ValueError(f"{args.run} is not a SlateRec run directory ({what})")
    changed = convert_run(args.run)
    print(json.dumps({"run": str(args.run), "converted": changed}) if changed else f"{args.run}: nothing to convert")
    return 0
