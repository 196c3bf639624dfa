"""``slaterec envs | generate | evaluate``: the simulator and its reference policies."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import add_no_progress, positive_int, seed_arg

from ..policies import POLICY_NAMES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("envs", help="list the environments and their parameters")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_envs)

    p = sub.add_parser("generate", help="write a logged dataset of a reference policy")
    p.add_argument("env_id")
    p.add_argument("--policy", choices=POLICY_NAMES, default="epsilon-greedy")
    p.add_argument("--epsilon", type=float, default=None, help="exploration rate of epsilon-greedy (default 0.5)")
    p.add_argument("--episodes", type=positive_int, default=100_000)
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--out", required=True, type=Path, help="dataset folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    add_item_embeddings_argument(p)
    p.add_argument("--batch-size", type=positive_int, default=4096, help="users simulated at once")
    add_no_progress(p)
    p.set_defaults(handler=cmd_generate, checker=check_generate)

    p = sub.add_parser("evaluate", help="mean return of a policy with its 95%% interval")
    p.add_argument("env_id")
    p.add_argument("--policy", default="oracle", help=f"one of {', '.join(POLICY_NAMES)}, or an agent run directory")
    p.add_argument("--epsilon", type=float, default=None, help="exploration rate of epsilon-greedy (default 0.5)")
    p.add_argument("--episodes", type=positive_int, default=1000)
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--checkpoint", default="best", help="run directories: best, last or a periodic checkpoint")
    add_item_embeddings_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_no_progress(p)
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser(
        "import-dataset", help="import a logged dataset of the reference code (.pt file or folder of chunks)",
        description="Convert the reference implementation's logged dataset ({id: {'slate', 'clicks'}} saved with "
        "torch.save) into this package's memory-mapped format. Files are read without executing code. The "
        "environment defaults to the one the file is named after (focused_topdown.pt, diffuse_mix.pt, ...).",
    )
    p.add_argument("source", type=Path, help="a .pt file or a folder of .pt chunk files")
    p.add_argument("--env", dest="env_id", help="environment the data was logged on (id or reference name)")
    add_item_embeddings_argument(p)
    p.add_argument("--out", required=True, type=Path, help="dataset folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.set_defaults(handler=cmd_import_dataset)


def add_item_embeddings_argument(p: argparse.ArgumentParser) -> None:
    """``--item-embeddings`` for every command that builds an environment."""
    p.add_argument("--item-embeddings", metavar="NAME|FILE",
                   help="item matrix replacing the environment's: a shipped name (focused, diffuse, peaked) "
                        "or an N x d .npy / .pt file (the reference code's tensors load as they are)")


def _env_id(name: str) -> str:
    from ..core.config import preset

    return preset(name).env_id


def cmd_envs(args: argparse.Namespace) -> int:
    from ..core.config import ENV_PRESETS

    table = {env_id: p.config.to_dict() for env_id, p in ENV_PRESETS.items()}
    if args.json:
        from gym_slaterec.provenance import dumps_strict
        print(dumps_strict(table, indent=2))
        return 0
    shared = {k: v for k, v in next(iter(table.values())).items() if all(c[k] == v for c in table.values())}
    print(f"{'environment':30s} {'item_embeddings':16s} {'click_model':12s} diversity_penalty")
    for env_id, cfg in table.items():
        print(f"{env_id:30s} {cfg['item_embeddings']:16s} {cfg['click_model']:12s} {cfg['diversity_penalty']}")
    print("\nshared parameters (override with gymnasium.make(env_id, name=value)):")
    for key, value in shared.items():
        print(f"  {key} = {value}")
    return 0


#: epsilon-greedy's exploration rate when --epsilon is not given
DEFAULT_EPSILON = 0.5


def epsilon_of(args: argparse.Namespace) -> float:
    """``--epsilon``, or its default when not given (None marks "not given", so that it can be refused
    for the policies that do not read it)."""
    return DEFAULT_EPSILON if args.epsilon is None else args.epsilon


def check_policy_options(args: argparse.Namespace) -> None:
    """Options that only some policies read are refused for the others (never ignored silently)."""
    if args.epsilon is not None and args.policy != "epsilon-greedy":
        raise ValueError(f"--epsilon applies to --policy epsilon-greedy only, not to {args.policy!r}")
    if not 0.0 <= epsilon_of(args) <= 1.0:
        raise ValueError(f"--epsilon must lie in [0, 1], got {epsilon_of(args)}")


def check_generate(args: argparse.Namespace) -> None:
    """Every option of ``generate`` checked as the command will use it (reads and writes nothing)."""
    _env_id(args.env_id)
    check_policy_options(args)


def cmd_generate(args: argparse.Namespace) -> int:
    from ..rollouts import generate_logged_data

    ds = generate_logged_data(
        _env_id(args.env_id), args.out, policy=args.policy, episodes=args.episodes, seed=args.seed,
        epsilon=epsilon_of(args), item_embeddings=args.item_embeddings, overwrite=args.overwrite,
        batch_size=args.batch_size, progress=not args.no_progress,
    )
    returns = ds.returns()
    print(f"wrote {ds.path}: {len(ds)} episodes x {ds.turns} turns, mean return {returns.mean():.2f}, fingerprint {ds.fingerprint[:12]}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    env_id = _env_id(args.env_id)
    check_policy_options(args)
    if args.policy in POLICY_NAMES:
        from ..rollouts import evaluate_reference_policy

        stats = evaluate_reference_policy(
            env_id, args.policy, args.episodes, args.seed, epsilon=epsilon_of(args),
            item_embeddings=args.item_embeddings, progress=not (args.json or args.no_progress),
        )
        result = {"env_id": env_id, "policy": args.policy, **stats.to_dict()}
    else:
        run_dir = Path(args.policy)
        if not run_dir.is_dir():
            raise ValueError(f"--policy must be one of {', '.join(POLICY_NAMES)} or an agent run directory; {run_dir} is neither")
        from gym_slaterec.run_dirs import evaluator_of

        evaluate_run_dir = evaluator_of(run_dir)
        result = evaluate_run_dir(run_dir, env_id, args.episodes, args.seed, item_embeddings=args.item_embeddings,
                                  checkpoint=args.checkpoint)
    if args.json:
        from gym_slaterec.provenance import dumps_strict
        print(dumps_strict(result))
    else:
        import math

        lo, hi = result["ci95"]
        ci = f"95% CI [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) and math.isfinite(hi) else "no interval from one episode"
        print(f"{result['policy']} on {env_id}: mean return {result['mean']:.2f}  {ci}  over {result['episodes']} episodes")
    return 0


def cmd_import_dataset(args: argparse.Namespace) -> int:
    from ..core.config import env_of_reference_file
    from ..reference_import import import_reference_dataset

    if not args.source.exists():
        raise FileNotFoundError(f"no such file or folder: {args.source}")
    env_id = args.env_id
    if env_id is None:
        env_id = env_of_reference_file(args.source.name)
        if env_id is None:
            raise ValueError(
                f"cannot tell the environment from the name {args.source.name!r}; pass --env "
                f"(e.g. --env focused_topdown or --env SlateRec/FocusedTopDown-v0)"
            )
    ds = import_reference_dataset(args.source, env_id, args.out, item_embeddings=args.item_embeddings,
                                  overwrite=args.overwrite)
    print(f"wrote {ds.path}: {len(ds)} episodes x {ds.turns} turns on {ds.env_id} (item embeddings "
          f"{ds.provenance['item_embeddings_source']}, {str(ds.item_embeddings_fingerprint)[:12]}), mean return "
          f"{ds.returns().mean():.2f}; turn 0 holds the initial slate (the reference format does not log it)")
    return 0
