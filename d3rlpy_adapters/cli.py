"""``slaterec collect | export | train-offline``: offline datasets and offline RL."""

from __future__ import annotations

import argparse

from gym_slaterec.trackers import add_tracker_argument, check_trackers
import json
from pathlib import Path

from gym_slaterec.cli import add_no_progress, positive_int, seed_arg
from gym_slaterec.devices import DEVICE_HELP, device_arg

from gym_slaterec.cli.sim_commands import add_item_embeddings_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help="collect a dataset of episodes from a reference policy or an agent run")
    p.add_argument("env_id")
    p.add_argument("--policy", required=True,
                   help="random, oracle, epsilon-greedy, or an agent run directory (slaterec train ... --out RUN_DIR)")
    p.add_argument("--episodes", type=positive_int, required=True)
    p.add_argument("--seed", type=seed_arg, default=0, help="episode j is played by user seed + j")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    p.add_argument("--epsilon", type=float, default=None, help="exploration rate of epsilon-greedy (default 0.5)")
    p.add_argument("--checkpoint", default="best",
                   help="agent checkpoint: best, last, a checkpoint name, or episodes:N (closest periodic checkpoint)")
    p.add_argument("--list-checkpoints", action="store_true", help="print the run's checkpoints and exit")
    p.add_argument("--stochastic", action="store_true", help="sample the agent's actions instead of acting greedily")
    p.add_argument("--batch-size", type=positive_int, default=1000, help="users simulated at once")
    add_item_embeddings_argument(p)
    p.add_argument("--overwrite", action="store_true")
    add_no_progress(p)
    p.set_defaults(handler=cmd_collect, checker=check_collect)

    p = sub.add_parser("replay-dataset", help="a dataset of the episodes an agent run's replay memory held at a "
                       "periodic checkpoint (D4RL's medium-replay; train with --set replay_snapshots=[N])")
    p.add_argument("run", type=Path, help="agent run directory (episode regime: the SAC methods, SlateQ)")
    p.add_argument("--checkpoint", required=True, help="the periodic checkpoint: epNNNNNNN or episodes:N")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    p.add_argument("--overwrite", action="store_true")
    add_no_progress(p)
    p.set_defaults(handler=cmd_replay_dataset)

    p = sub.add_parser("merge-datasets", help="one dataset of the episodes of several (medium-expert: the medium "
                       "and the expert datasets)")
    p.add_argument("datasets", type=Path, nargs="+", help="collected datasets of the same environment")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    p.add_argument("--overwrite", action="store_true")
    add_no_progress(p)
    p.set_defaults(handler=cmd_merge_datasets)

    p = sub.add_parser("export", help="export a collected dataset to d3rlpy or Minari with GeMS latent actions")
    p.add_argument("dataset", type=Path)
    p.add_argument("--gems", type=Path, required=True, help="GeMS checkpoint that encodes the logged slates")
    p.add_argument("--format", choices=("d3rlpy", "minari"), default="d3rlpy")
    p.add_argument("--out", type=Path, required=True, help="d3rlpy: the .h5 file; minari: a folder (MINARI_DATASETS_PATH)")
    p.add_argument("--window", type=positive_int, default=10, help="turns of history per observation (d3rlpy)")
    p.add_argument("--actions", choices=("auto", "policy", "encoded"), default="auto",
                   help="policy: the collecting agent's own GeMS latents (it must have acted through --gems); "
                        "encoded: the GeMS encoding of each logged slate and clicks; auto: policy when possible")
    p.add_argument("--dataset-id", help="Minari dataset id (default slaterec/<env>/<dataset name>-v0)")
    p.add_argument("--allow-partial", action="store_true", help="accept a GeMS checkpoint whose training was interrupted")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("train-offline", help="train an offline RL agent (d3rlpy) and evaluate it in the environment")
    p.add_argument("algo", choices=("td3bc", "cql", "iql", "bcq", "bc"))
    p.add_argument("dataset", type=Path, help="a d3rlpy file written by `slaterec export`")
    p.add_argument("--gems", type=Path, required=True, help="the GeMS the dataset was exported with")
    p.add_argument("--steps", type=positive_int, default=10_000, help="gradient steps")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--out", type=Path, required=True, help="run directory to create (an unfinished run of the same "
                   "settings there is resumed from its last checkpoint: --set checkpoint_every=N, default 1000)")
    p.add_argument("--eval-every", type=positive_int, default=1000, help="gradient steps between validations")
    p.add_argument("--val-users", type=positive_int, default=200)
    p.add_argument("--test-users", type=positive_int, default=500)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--gamma", type=float, default=0.8)
    p.add_argument("--device", type=device_arg, default="auto", help=DEVICE_HELP)
    p.add_argument("--set", dest="set_", action="append", default=[], metavar="KEY=VALUE",
                   help="any other OfflineConfig field, e.g. --set td3bc_alpha=1.0 (repeatable)")
    p.add_argument("--allow-partial", action="store_true", help="accept a GeMS checkpoint whose training was interrupted")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--tag", help="a short label recorded with the run (tracker tag)")
    p.add_argument("--notes", help="free text recorded with the run (tracker notes)")
    add_tracker_argument(p)
    add_no_progress(p)
    p.set_defaults(handler=cmd_train_offline, checker=check_train_offline)


def check_collect(args: argparse.Namespace) -> None:
    """Options that do not apply to the chosen policy are refused, not ignored."""
    from gym_slaterec.cli.sim_commands import check_policy_options

    from .collect import is_reference_policy

    check_policy_options(args)
    reference = is_reference_policy(args.policy)
    if reference and args.stochastic:
        raise ValueError(f"--stochastic applies to agent runs; the reference policy {args.policy!r} has no "
                         "deterministic mode to switch off")
    if reference and args.checkpoint != "best":
        raise ValueError(f"--checkpoint applies to agent runs, not to the reference policy {args.policy!r}")


def cmd_replay_dataset(args: argparse.Namespace) -> int:
    from .collect import collect_replay

    ds = collect_replay(args.run, args.checkpoint, args.out, args.overwrite, progress=not args.no_progress)
    print(f"wrote {args.out}: {len(ds)} episodes of the replay memory of {args.run} at "
          f"{ds.provenance['policy']['checkpoint']}, mean return {float(ds.returns().mean()):.2f}, "
          f"{'with' if 'actions' in ds.extras else 'without'} the policy's GeMS actions")
    return 0


def cmd_merge_datasets(args: argparse.Namespace) -> int:
    from .merge import merge_datasets

    ds, notes = merge_datasets(args.datasets, args.out, args.overwrite, progress=not args.no_progress)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {args.out}: {len(ds)} episodes from {len(args.datasets)} datasets, mean return "
          f"{float(ds.returns().mean()):.2f}, fingerprint {ds.fingerprint[:12]}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from .collect import is_reference_policy, load_policy_agent, collect

    if args.list_checkpoints:
        if is_reference_policy(args.policy):
            raise ValueError(f"--list-checkpoints needs an agent run directory, not {args.policy!r}")
        agent, _ = load_policy_agent(args.policy, "best")
        for name in agent.list_checkpoints():
            print(name)
        return 0
    policy = args.policy if is_reference_policy(args.policy) else Path(args.policy)
    from gym_slaterec.cli.sim_commands import epsilon_of

    ds = collect(args.env_id, policy, args.episodes, args.seed, args.out, epsilon=epsilon_of(args),
                 checkpoint=args.checkpoint, overwrite=args.overwrite, batch_size=args.batch_size,
                 deterministic=not args.stochastic, progress=not args.no_progress, item_embeddings=args.item_embeddings)
    returns = ds.returns()
    print(f"wrote {ds.path}: {len(ds)} episodes x {ds.turns} turns, mean return {returns.mean():.2f}, "
          f"extras {sorted(ds.extras)}, fingerprint {ds.fingerprint[:12]}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "d3rlpy":
        from .export import export_d3rlpy, sidecar_path

        out = export_d3rlpy(args.dataset, args.gems, args.out, window=args.window, overwrite=args.overwrite,
                            actions=args.actions, allow_partial=args.allow_partial)
        meta = json.loads(sidecar_path(out).read_text())
        print(f"wrote {out} ({meta['transitions']} transitions, observation {meta['observation']['size']} values, "
              f"action {meta['action']['size']}-d in [-1, 1] ({meta['action']['source']}), {100 * meta['action']['clipped_fraction']:.2f}% clipped) "
              f"and {sidecar_path(out).name}")
    else:
        from .minari_export import export_minari

        out, dataset_id = export_minari(args.dataset, args.gems, args.out, args.dataset_id, overwrite=args.overwrite,
                                        actions=args.actions, allow_partial=args.allow_partial)
        print(f"wrote Minari dataset {dataset_id!r} under {out} (load with MINARI_DATASETS_PATH={out} "
              f"minari.load_dataset({dataset_id!r}))")
    return 0


def offline_config(args: argparse.Namespace) -> "OfflineConfig":  # noqa: F821
    """The checked OfflineConfig of ``train-offline``'s options and ``--set`` (reads nothing)."""
    from .offline import OfflineConfig

    cfg = OfflineConfig(algo=args.algo, steps=args.steps, seed=args.seed, eval_every=args.eval_every,
                        val_users=args.val_users, test_users=args.test_users, batch_size=args.batch_size,
                        gamma=args.gamma, allow_partial=args.allow_partial)
    cfg.validate()
    if args.set_:
        from sb3_slate.methods import parse_set

        cfg = cfg.with_overrides(parse_set(args.set_))
    return cfg


def check_train_offline(args: argparse.Namespace) -> None:
    check_trackers(args.trackers)
    offline_config(args)


def cmd_train_offline(args: argparse.Namespace) -> int:
    from .offline import train_offline

    cfg = offline_config(args)
    res = train_offline(args.algo, args.dataset, args.gems, args.out, cfg, overwrite=args.overwrite, device=args.device,
                        progress=not args.no_progress, trackers=args.trackers, tag=args.tag, notes=args.notes)
    t = res["test"]
    print(f"offline {args.algo}: best validation {res['best']['validation_return']:.2f} at step {res['best']['step']}; "
          f"test return {t['mean']:.2f} [{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}] over {t['episodes']} users "
          f"(dataset mean return {res['dataset']['mean_return']:.2f}); run in {args.out}")
    return 0
