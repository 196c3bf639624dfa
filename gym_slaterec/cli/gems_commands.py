"""``slaterec train-mf | pretrain-gems | gems-info``: slate decoders (docs/method.md sections 6-7)."""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
from pathlib import Path

from ..trackers import add_tracker_argument
from ..devices import DEVICE_HELP, device_arg
from . import add_no_progress, positive_float, positive_int, seed_arg

#: pretrain-gems --thread-mode default: shares of each batch in forked processes where the
#: platform forks (BENCHMARKS.md: the fastest on two idle cores and on busy ones), else torch's threads
DEFAULT_THREAD_MODE = "processes" if "fork" in multiprocessing.get_all_start_methods() else "ops"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-mf", help="BPR matrix-factorisation item embeddings from a logged dataset")
    p.add_argument("dataset", type=Path, help="logged dataset folder (slaterec generate)")
    p.add_argument("--out", type=Path, help="MF embeddings file to create (.npz); or --name-template")
    add_name_template_arguments(p, "MF_{env}_dim{dim}_seed{seed}")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 200: lr 1e-4 needs ~100-200 epochs, see BENCHMARKS.md)")
    p.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs (default 5; "
                   "--recipe reference: in validation passes, default 3)")
    p.add_argument("--recipe", choices=("default", "reference"), default="default",
                   help="default: this package's BPR training; reference: the reference implementation's, its "
                   "defects included (docs/method.md section 7), for SAC+TopK (MF) --variant reference")
    p.add_argument("--dim", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--max-minutes", type=positive_float, help="stop at the first validation past this wall time "
                   "and keep the best table so far (its metrics say the time limit ended it)")
    p.add_argument("--logdir", type=Path, help="TensorBoard folder")
    add_tracker_argument(p)
    p.add_argument("--device", type=device_arg, default="auto", help=DEVICE_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    add_no_progress(p)
    p.set_defaults(handler=cmd_train_mf, checker=check_train_mf)

    p = sub.add_parser("pretrain-gems", help="train the GeMS slate VAE on a logged dataset")
    p.add_argument("dataset", type=Path, help="logged dataset folder (slaterec generate)")
    p.add_argument("--out", type=Path, help="GeMS checkpoint file to create (.pt); or --name-template")
    add_name_template_arguments(p, "GeMS_{env}_latentdim{latent_dim}_beta{lambda_kl}_lambdaclick{lambda_click}_seed{seed}")
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--lambda-kl", type=float, default=1.0)
    p.add_argument("--lambda-click", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--item-init", default="scratch", help="scratch | ideal (privileged) | mf:FILE")
    p.add_argument("--freeze-items", action="store_true", help="keep the initial item table fixed")
    p.add_argument("--recipe", choices=("default", "reference"), default="default",
                   help="reference: the reference code's training, whose reparameterisation noise is scaled by "
                        "the variance instead of the standard deviation (docs/method.md section 7)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    p.add_argument("--eval-every", type=positive_int, help="validate every N steps (default: every epoch)")
    p.add_argument("--patience", type=int, help="early stop after N validations without improvement")
    p.add_argument("--val-max-samples", type=int, default=100_000, help="cap on validation turns")
    p.add_argument("--init-from", type=Path, help="start from this GeMS checkpoint's weights (fine-tuning)")
    p.add_argument("--snapshots", type=positive_int, nargs="+", default=[], metavar="STEP",
                   help="also write OUT.stepSTEP.pt: the checkpoint --max-steps STEP would have written "
                        "(GeMS of several budgets from one run)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--logdir", type=Path, help="TensorBoard folder")
    add_tracker_argument(p)
    p.add_argument("--threads", type=positive_int, default=1, help="CPU threads (default 1)")
    p.add_argument("--thread-mode", choices=["ops", "shards", "processes"], default=DEFAULT_THREAD_MODE,
                   help="with --threads > 1: processes (default where processes can fork): each of N processes "
                        "takes an equal share of every batch, fastest and it keeps going when other jobs hold "
                        "the cores; ops: torch's threads share each operation; shards: the shares on threads "
                        f"(one GIL) (default here: {DEFAULT_THREAD_MODE}; BENCHMARKS.md)")
    p.add_argument("--device", type=device_arg, default="auto", help=DEVICE_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    add_no_progress(p)
    p.set_defaults(handler=cmd_pretrain_gems, checker=gems_config)

    p = sub.add_parser("gems-info", help="hyper-parameters, provenance, bounds and metrics of a GeMS checkpoint")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_gems_info)


def add_name_template_arguments(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("--name-template", help=f"the file under the workspace, from the settings, e.g. '{example}' (fields: "
                   "every option by its name, env, env_id, dataset, date, time)")
    p.add_argument("--workspace", type=Path, help="root of --name-template (default: $SLATEREC_WORKSPACE, else ./runs)")


def resolve_out(args: argparse.Namespace, fields: dict, suffix: str) -> None:
    """``args.out`` from ``--name-template`` (filled with ``fields``, the dataset's environment and the
    date), so the writer lock and the refusal to overwrite see the final path."""
    from ..logged_data import LoggedDataset
    from ..names import common_fields, fill_template, workspace

    if getattr(args, "out_from_template", False):
        return  # resolved by the checker already
    if args.out is not None and args.name_template is not None:
        raise ValueError("--out and --name-template both name the file; give one")
    if args.name_template is None:
        if args.out is None:
            raise ValueError("give --out FILE or --name-template TEMPLATE")
        return
    ds = LoggedDataset.load(args.dataset, check=False)
    name = fill_template(args.name_template, {**fields, **common_fields(ds.env_id), "dataset": Path(args.dataset).name})
    args.out = workspace(args.workspace) / (name if name.endswith(suffix) else name + suffix)
    args.out_from_template = True


def check_train_mf(args: argparse.Namespace) -> None:
    """Every option of ``train-mf`` checked as the command will use it (reads and writes nothing)."""
    from ..mf import DEFAULT_EPOCHS, check_mf_options

    resolve_out(args, {k: getattr(args, k) for k in ("seed", "epochs", "patience", "dim", "lr", "batch_size",
                                                     "recipe")}, ".npz")
    check_mf_options(epochs=DEFAULT_EPOCHS if args.epochs is None else args.epochs,
                     patience=_patience(args), dim=args.dim, batch_size=args.batch_size, lr=args.lr,
                     recipe=args.recipe)


def _patience(args: argparse.Namespace) -> int:
    from ..mf import DEFAULT_PATIENCE, REFERENCE_PATIENCE

    if args.patience is not None:
        return args.patience
    return REFERENCE_PATIENCE if args.recipe == "reference" else DEFAULT_PATIENCE


def cmd_train_mf(args: argparse.Namespace) -> int:
    from ..mf import DEFAULT_EPOCHS, train_mf

    mf = train_mf(
        args.dataset, args.out, seed=args.seed,
        epochs=DEFAULT_EPOCHS if args.epochs is None else args.epochs,
        patience=_patience(args),
        dim=args.dim, lr=args.lr, batch_size=args.batch_size, overwrite=args.overwrite, progress=not args.no_progress,
        logdir=args.logdir, device=args.device, trackers=args.trackers, recipe=args.recipe,
        max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes,
    )
    m = mf.metrics
    if args.recipe == "reference":
        ended = {"patience": "early stop", "epochs": "epoch cap", "time": "time limit"}[m["stopped"]]
        print(f"wrote {mf.path}: {mf.num_items} x {mf.dim} item embeddings (reference recipe); best validation "
              f"{m['best_validation']} of {m['validations']} ({m['epochs_run']} epochs, ended by the {ended}), "
              f"validation BPR loss {m['val_bpr_loss']:.4f}")
        return 0
    print(
        f"wrote {mf.path}: {mf.num_items} x {mf.dim} item embeddings; best epoch {m['best_epoch']} of {m['epochs_run']}, "
        f"validation BPR loss {m['val_bpr_loss']:.4f}, AUC {m['val_auc']:.3f}"
    )
    return 0


def gems_config(args: argparse.Namespace) -> "GeMSConfig":  # noqa: F821
    """The checked GeMSConfig of ``pretrain-gems``'s options (reads and writes nothing)."""
    from ..gems import GeMSConfig

    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be a positive integer, got {args.max_steps}")
    config = GeMSConfig(
        latent_dim=args.latent_dim, lambda_kl=args.lambda_kl, lambda_click=args.lambda_click, lr=args.lr,
        batch_size=args.batch_size, epochs=args.epochs, item_init=args.item_init, freeze_items=args.freeze_items,
        seed=args.seed, eval_every=args.eval_every, patience=args.patience, val_max_samples=args.val_max_samples,
        sample_noise="variance" if args.recipe == "reference" else "std",
    )
    config.validate()
    resolve_out(args, {**dataclasses.asdict(config), "max_steps": args.max_steps}, ".pt")
    return config


def cmd_pretrain_gems(args: argparse.Namespace) -> int:
    import torch

    from ..gems import train_gems
    from ..gems.train import TrainingInterrupted

    config = gems_config(args)
    torch.set_num_threads(args.threads)  # when sharded: for validation and bounds only
    try:
        ckpt = train_gems(args.dataset, config, args.out, overwrite=args.overwrite, logdir=args.logdir,
                          max_steps=args.max_steps, init_from=args.init_from, device=args.device,
                          snapshots=args.snapshots, progress=not args.no_progress,
                          workers=1 if args.thread_mode == "ops" else args.threads,
                          shards="processes" if args.thread_mode == "processes" else "threads",
                          trackers=args.trackers)
    except TrainingInterrupted as exc:  # a Ctrl-C before training starts is the CLI's plain interruption
        import sys

        kept = f"; {args.out} was left as it was" if exc.path != args.out else ""
        print(f"slaterec pretrain-gems: interrupted; wrote the best weights so far to {exc.path}, marked PARTIAL "
              f"(train, export and train-offline refuse it without --allow-partial){kept}", file=sys.stderr)
        return 130
    from ..gems.train import snapshot_path

    for step in ckpt.training.get("snapshots", []):
        print(f"wrote {snapshot_path(args.out, step)}: the checkpoint of {step} steps")
    missed = sorted(set(args.snapshots) - set(ckpt.training.get("snapshots", [])))
    if missed:
        print(f"no snapshot at steps {missed}: training stopped at step {ckpt.training['steps']}")
    m = ckpt.val_metrics
    print(
        f"wrote {ckpt.path}: validation loss {m['loss']:.4f} (slate CE {m['slate']:.4f}, click BCE {m['click']:.4f}, "
        f"KL {m['kl']:.4f}), slate accuracy {m['slate_acc']:.3f}, click accuracy {m['click_acc']:.3f}"
    )
    return 0


def cmd_gems_info(args: argparse.Namespace) -> int:
    import warnings

    from ..gems import GeMSCheckpoint

    with warnings.catch_warnings():  # gems-info shows the partial state itself
        warnings.simplefilter("ignore")
        ckpt = GeMSCheckpoint.load(args.checkpoint, allow_env_mismatch=True, allow_partial=True)
    info = ckpt.summary()
    if args.json:
        from gym_slaterec.provenance import dumps_strict
        print(dumps_strict(info, indent=2, default=str))
        return 0
    prov = ckpt.provenance
    print(f"GeMS checkpoint {ckpt.path}  (sha256 {str(ckpt.fingerprint)[:16]})")
    print(f"  environment       {ckpt.env_id}  (item embeddings {str(ckpt.item_embeddings_fingerprint)[:12]})")
    print(f"  dataset           {prov.get('dataset_path')}  ({prov.get('dataset_episodes')} episodes, fingerprint {str(prov.get('inputs', {}).get('dataset'))[:12]})")
    print(f"  created           {prov.get('created_utc')} by slaterec {prov.get('package_version')}")
    init = prov.get("inputs", {})
    if "init_gems" in init:
        print(f"  warm start        from GeMS {init['init_gems'][:12]} (training counts below exclude its steps)")
    if "mf_embeddings" in init:
        print(f"  item table init   MF embeddings {init['mf_embeddings'][:12]}")
    print("  hyper-parameters")
    for key, value in ckpt.config.to_dict().items():
        print(f"    {key:20s} {value}")
    tr = ckpt.training
    if tr:
        print(f"  training          {tr.get('steps')} steps ({tr.get('epochs_run', 0):.2f} epochs) in {tr.get('seconds', 0):.0f} s; best at step {tr.get('best_step')}"
              + ("  [interrupted]" if tr.get("interrupted") else ""))
    if ckpt.partial:
        print(f"  PARTIAL           {ckpt.partial_note()}; consumers refuse it without --allow-partial")
    print("  validation metrics")
    for key, value in ckpt.val_metrics.items():
        print(f"    {key:20s} {value:.4f}")
    print("  action bounds (latent z = center + scale * a, a in [-1, 1])")
    print("    low   " + " ".join(f"{v:6.2f}" for v in ckpt.low))
    print("    high  " + " ".join(f"{v:6.2f}" for v in ckpt.high))
    return 0
