"""``slaterec train``: online RL agents with the paper's protocol (docs/method.md sections 7-8)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from gym_slaterec.cli import add_no_progress, positive_int, seed_arg
from gym_slaterec.devices import DEVICE_HELP, device_arg
from gym_slaterec.trackers import add_tracker_argument, check_trackers

from gym_slaterec.cli.sim_commands import add_item_embeddings_argument

from .methods import METHODS, PRESETS, VARIANTS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train an online RL agent (or run a reference policy) with validation, checkpoints and a final test",
        description="Train METHOD on ENV_ID into a new run directory; an existing unfinished run directory with the "
        "same configuration is resumed from its last checkpoint. Prints the test return of the best-validation checkpoint.",
    )
    p.add_argument("method", choices=METHODS)
    p.add_argument("env_id")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=seed_arg, default=None, help="run seed (0 to 2**32-1); default 0")
    seeds.add_argument("--seeds", type=seed_arg, nargs="+", metavar="SEED",
                       help="train several seeds side by side, one ordinary run directory each (OUT/sSEED, or "
                       "--out with a {seed} field), each in a process of its own; the same command resumes them")
    p.add_argument("--jobs", type=positive_int, help="with --seeds: seeds trained at once (default: one per core)")
    p.add_argument("--out", type=Path, help="run directory (created; resumed if unfinished); default: "
                   "WORKSPACE/METHOD_ENV_sSEED[_TAG]_TIMESTAMP")
    p.add_argument("--workspace", type=Path, help="root of the default run directories "
                   "(default: $SLATEREC_WORKSPACE, else ./runs)")
    p.add_argument("--tag", help="a short label, part of the default run directory name and recorded in the run")
    p.add_argument("--name-template", help="the run directory under the workspace, from the run's fields, e.g. "
                   "'log_{seed}/{method}/{tag}_{date}' or '{env}_gamma{agent.gamma}_s{seed}' (fields: method, env, "
                   "seed, tag, date, time and every configuration key)")
    p.add_argument("--notes", help="free text recorded in the run's configuration")
    p.add_argument("--gems", type=Path, nargs="+", metavar="FILE", help=f"GeMS checkpoint "
                   f"({', '.join(_needing('gems'))}); with --seeds, one for all seeds or one per seed")
    p.add_argument("--mf", type=Path, nargs="+", metavar="FILE", help=f"MF embeddings ({', '.join(_needing('mf'))}; "
                   "sac-wknn unless agent.embeddings=ideal); with --seeds, one for all seeds or one per seed")
    p.add_argument("--allow-partial", action="store_true", help="accept a GeMS checkpoint whose training was interrupted")
    p.add_argument("--episodes", type=positive_int, help="training budget in episodes")
    add_item_embeddings_argument(p)
    p.add_argument("--preset", choices=PRESETS, help="a named training regime: paper (episode replay, the paper's "
                   "budget and protocol; the default of the SAC methods) or window (transition replay "
                   "with a history window)")
    p.add_argument("--variant", choices=VARIANTS, help="what the method computes: corrected (the paper's text, "
                   "done right; the default) or reference (what the reference implementation computes, its "
                   "defects included; docs/method.md section 7). --set can switch any one difference back")
    p.add_argument("--config", type=Path, help="YAML file overriding the method's defaults (after --preset)")
    p.add_argument("--set", dest="set_", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set agent.gamma=0.9 --set window=20 (repeatable)")
    p.add_argument("--device", type=device_arg, default="auto", help=DEVICE_HELP + " (networks of the SAC "
                   "methods with GeMS/TopK; the others run on the CPU)")
    add_tracker_argument(p)
    add_no_progress(p)
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(handler=cmd_train, checker=check_train_args)

    m = sub.add_parser("methods", help="list the methods, or one method's regimes and settings with their defaults",
                       description="The method table: what each method needs, its regimes and devices; with METHOD, "
                       "every agent.* and belief.* setting of each regime with its default and meaning.")
    m.add_argument("method", nargs="?", choices=METHODS)
    m.set_defaults(handler=cmd_methods)


def _needing(artifact: str) -> list[str]:
    from .methods import METHOD_TABLE, artifacts_needed

    return [name for name in METHOD_TABLE if artifact in artifacts_needed(name)]


def cmd_methods(args: argparse.Namespace) -> int:
    from .agent_configs import BeliefConfig, describe
    from .methods import METHOD_TABLE, artifacts_needed

    if args.method is None:
        print(f"{'method':24s} {'regimes':22s} {'needs':6s} {'devices':9s} summary")
        for name, m in METHOD_TABLE.items():
            regimes = "-" if m.reference else ", ".join(r + "*" * (r == m.default_regime) for r in m.regimes)
            print(f"{name:24s} {regimes:22s} {','.join(artifacts_needed(name)) or '-':6s} "
                  f"{'cpu,cuda' if m.cuda else 'cpu':9s} {m.summary}")
        print("(* the default regime; `slaterec methods METHOD` lists its settings)")
        return 0
    m = METHOD_TABLE[args.method]
    print(f"{m.name}: {m.summary}")
    needs = artifacts_needed(m.name)
    print(f"  needs: {', '.join(needs) or 'nothing'}; devices: {'cpu, cuda' if m.cuda else 'cpu'}"
          + (f"; published (Table 2): {', '.join(f'{k} {v}' for k, v in m.published.items())}" if m.published else ""))
    for regime, r in m.regimes.items():
        if m.reference:
            break
        print(f"\n  replay={regime} ({r.config.__name__}: {r.config.__doc__.strip().splitlines()[0]})")
        for key, default, doc in describe(r.config):
            print(f"    {key} = {default!r}\n        {doc}")
    if m.trains:
        print("\n  belief")
        for key, default, doc in describe(BeliefConfig, "belief"):
            print(f"    {key} = {default!r}\n        {doc}")
    for regime, settings in m.reference_variant.items():
        from gym_slaterec.names import flat_fields

        shown = ", ".join(f"{k}={v}" for k, v in flat_fields(settings).items()) or "the same as corrected"
        print(f"\n  --variant reference (replay={regime}; docs/method.md section 7): {shown}")
    if not m.reference_variant:
        print("\n  --variant reference: not available yet (docs/method.md section 7)")
    return 0


def check_train_args(args: argparse.Namespace) -> None:
    """Every check of ``train``'s arguments that reads no input artifact and writes nothing:
    each seed's RunConfig, one --gems / --mf per run (or per seed), and the device (an explicit
    CUDA device for a method that trains on the CPU only is refused here, not by each seed)."""
    from .runs import run_device
    from .seeds import check_seeds, per_seed, seed_out

    run_device(args.method, args.device)
    if args.seeds is None:
        for name in ("gems", "mf"):
            if getattr(args, name) is not None and len(getattr(args, name)) > 1:
                raise ValueError(f"--{name}: one file per run (several, one per seed, go with --seeds)")
        if args.jobs is not None:
            raise ValueError("--jobs goes with --seeds")
        run_config(args)
        return
    seeds = check_seeds(args.seeds)
    if args.out is not None and args.name_template is not None:
        raise ValueError("--out and --name-template both name the run directories; give one")
    for seed, gems, mf in zip(seeds, per_seed("--gems", args.gems, seeds), per_seed("--mf", args.mf, seeds)):
        seed_out(args.out, seed)
        run_config(args, seed, gems, mf)
    args.seeds_out, args.out = args.out, None  # each seed's child holds its own run directory's lock


def run_config(args: argparse.Namespace, seed: Optional[int] = None, gems: Optional[Path] = None,
               mf: Optional[Path] = None) -> "RunConfig":  # noqa: F821
    """The checked RunConfig of ``train``'s arguments (reads no input artifact, writes nothing);
    ``seed``, ``gems``, ``mf``: one seed's of ``--seeds``."""
    from gym_slaterec.core.config import preset

    from .methods import parse_set, resolve_config

    env_id = preset(args.env_id).env_id
    overrides = parse_set(args.set_)
    if seed is None:
        seed = args.seed
        gems = args.gems[0] if args.gems else None
        mf = args.mf[0] if args.mf else None
    for key, value in (("seed", seed), ("episodes", args.episodes), ("variant", args.variant)):
        if value is not None:
            overrides[key] = value
    if gems is not None:
        overrides["gems"] = str(gems.resolve())
    if mf is not None:
        overrides["mf"] = str(mf.resolve())
    if args.allow_partial:
        overrides["allow_partial"] = True
    if args.item_embeddings is not None:
        overrides.setdefault("env_kwargs", {})["item_embeddings"] = args.item_embeddings
    for key in ("tag", "notes"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    check_trackers(args.trackers)
    return resolve_config(args.method, env_id, overrides, args.config, preset=args.preset)


def cmd_train(args: argparse.Namespace) -> int:
    from .runs import default_run_dir, train_run

    if args.seeds is not None:
        return train_several_seeds(args)
    cfg = run_config(args)
    env_id = cfg.env_id
    if args.out is not None and args.name_template is not None:
        raise ValueError("--out and --name-template both name the run directory; give one")
    out = args.out if args.out is not None else default_run_dir(cfg, args.workspace, args.name_template)
    results = train_run(cfg, out, progress=not args.no_progress, device=args.device, trackers=args.trackers)
    if args.json:
        from gym_slaterec.provenance import dumps_strict
        print(dumps_strict({k: results[k] for k in ("method", "env_id", "seed", "budget", "wall_time_s", "best", "test")}))
        return 0
    t = results["test"]
    print(f"{args.method} on {env_id} (seed {cfg.seed}, {results['budget']['episodes']} episodes, "
          f"{results['wall_time_s']:.0f} s): test return {t['mean']:.2f} 95% CI [{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}] "
          f"over {t['episodes']} users; best validation {results['best']['validation_return']:.2f} "
          f"at episode {results['best']['episodes']}; run directory {out}")
    return 0



def _child_argv(args: argparse.Namespace, run: "SeedRun") -> list[str]:  # noqa: F821
    """``train`` for one seed of ``--seeds``: the same options, that seed, its inputs and run directory."""
    cfg = run.config
    argv = ["train", args.method, args.env_id, "--seed", str(run.seed), "--out", str(run.out.resolve()),
            "--no-progress", "--device", args.device]
    if cfg.gems:
        argv += ["--gems", cfg.gems]
    if cfg.mf:
        argv += ["--mf", cfg.mf]
    for flag, value in (("--episodes", args.episodes), ("--item-embeddings", args.item_embeddings),
                        ("--preset", args.preset), ("--variant", args.variant), ("--config", args.config),
                        ("--tag", args.tag), ("--notes", args.notes)):
        if value is not None:
            argv += [flag, str(value)]
    if args.allow_partial:
        argv.append("--allow-partial")
    for item in args.set_:
        argv += ["--set", item]
    for tracker in args.trackers or []:
        argv += ["--tracker", tracker]
    return argv


def train_several_seeds(args: argparse.Namespace) -> int:
    """``train --seeds``: every seed planned and checked, then trained side by side (sb3_slate.seeds)."""
    from gym_slaterec.cli import CLIError

    from .runs import default_run_dir
    from .seeds import SeedRun, default_jobs, per_seed, plan_seed_runs, seed_out, seeds_summary, train_seeds

    runs = []
    for seed, gems, mf in zip(args.seeds, per_seed("--gems", args.gems, args.seeds), per_seed("--mf", args.mf, args.seeds)):
        cfg = run_config(args, seed, gems, mf)
        out = seed_out(args.seeds_out, seed) or default_run_dir(cfg, args.workspace, args.name_template)
        runs.append(SeedRun(seed, cfg, out))
    plan_seed_runs(runs)
    threads = runs[0].config.torch_threads  # per seed (--set torch_threads=N), whatever this process has
    jobs = args.jobs or default_jobs(len(runs), threads)
    train_seeds(runs, lambda r: _child_argv(args, r), jobs, threads, progress=not args.no_progress)
    summary = seeds_summary(runs)
    if args.json:
        from gym_slaterec.provenance import dumps_strict
        print(dumps_strict(summary))
    else:
        for r in runs:
            if r.results is not None:
                t, b = r.results["test"], r.results["best"]
                print(f"seed {r.seed}: test return {t['mean']:.2f} 95% CI [{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}]; "
                      f"best validation {b['validation_return']:.2f} at episode {b['episodes']}; {r.out}")
        if "mean" in summary:
            m = summary["mean"]
            spread = f" [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}] (95% t interval over seeds)" if m["n"] > 1 else ""
            print(f"{args.method} on {runs[0].config.env_id}: mean test return over {m['n']} seed(s) "
                  f"{m['mean']:.2f}{spread}")
    if summary["failed"]:
        raise CLIError(f"seed(s) {', '.join(summary['failed'])} failed (the others are kept; the same command "
                       "resumes them): " + "; ".join(f"seed {s}: {e}" for s, e in summary["failed"].items()))
    return 0
