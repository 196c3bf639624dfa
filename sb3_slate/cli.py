"""``slaterec train``: online RL agents with the paper's protocol (docs/method.md sections 7-8)."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    p.add_argument("--seed", type=seed_arg, default=None, help="run seed (0 to 2**32-1); default 0")
    p.add_argument("--out", type=Path, help="run directory (created; resumed if unfinished); default: "
                   "WORKSPACE/METHOD_ENV_sSEED[_TAG]_TIMESTAMP")
    p.add_argument("--workspace", type=Path, help="root of the default run directories "
                   "(default: $SLATEREC_WORKSPACE, else ./runs)")
    p.add_argument("--tag", help="a short label, part of the default run directory name and recorded in the run")
    p.add_argument("--name-template", help="the run directory under the workspace, from the run's fields, e.g. "
                   "'log_{seed}/{method}/{tag}_{date}' or '{env}_gamma{agent.gamma}_s{seed}' (fields: method, env, "
                   "seed, tag, date, time and every configuration key)")
    p.add_argument("--notes", help="free text recorded in the run's configuration")
    p.add_argument("--gems", type=Path, help=f"GeMS checkpoint ({', '.join(_needing('gems'))})")
    p.add_argument("--mf", type=Path, help=f"MF embeddings ({', '.join(_needing('mf'))}; sac-wknn unless "
                   "agent.embeddings=ideal)")
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
    p.set_defaults(handler=cmd_train, checker=run_config)

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


def run_config(args: argparse.Namespace) -> "RunConfig":  # noqa: F821
    """The checked RunConfig of ``train``'s arguments (reads no input artifact, writes nothing)."""
    from gym_slaterec.core.config import preset

    from .methods import parse_set, resolve_config

    env_id = preset(args.env_id).env_id
    overrides = parse_set(args.set_)
    for key, value in (("seed", args.seed), ("episodes", args.episodes), ("variant", args.variant)):
        if value is not None:
            overrides[key] = value
    if args.gems is not None:
        overrides["gems"] = str(args.gems.resolve())
    if args.mf is not None:
        overrides["mf"] = str(args.mf.resolve())
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

