"""Pre-training GeMS on a logged dataset (docs/method.md section 6)."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from ..logged_data import LoggedDataset
from ..provenance import (PathLike, ProvenanceMismatchError, TrainingDiverged, check_free_memory, check_writable,
                          provenance)
from .checkpoint import GeMSCheckpoint
from .config import GeMSConfig
from .data import TurnSampler
from .model import GeMS
from .parallel import ProcessShards, ShardedGradients, check_shards, check_workers
from ..progress import progress as progress_bar

DatasetLike = Union[LoggedDataset, str, Path]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a GeMS training after its first step; the best weights so far were
    written to ``path`` (when the training had one) as a partial checkpoint."""

    def __init__(self, path: Optional[Path]) -> None:
        super().__init__(f"GeMS training interrupted; partial checkpoint: {path}")
        self.path = path


def as_dataset(dataset: DatasetLike) -> LoggedDataset:
    if isinstance(dataset, LoggedDataset):
        return dataset
    if isinstance(dataset, (str, Path)):
        return LoggedDataset.load(dataset, verify=True)  # arrays edited since written: refused, not re-fingerprinted
    raise ValueError(f"expected a LoggedDataset or a dataset folder, got {type(dataset).__name__}")


def env_item_embeddings(dataset: LoggedDataset) -> np.ndarray:
    """The item embeddings of the environment a dataset came from (privileged)."""
    from ..core.embeddings import fingerprint, load_item_embeddings

    prov = dataset.provenance
    source = prov.get("item_embeddings_source") or (prov.get("env_params") or {}).get("item_embeddings")
    if not source or source == "array":
        raise ValueError(
            f"cannot recover the environment's item embeddings of dataset {dataset.path}: it was generated from an "
            "in-memory array; save that matrix as .npy and use it explicitly"
        )
    emb, _ = load_item_embeddings(source)
    expected = dataset.item_embeddings_fingerprint
    if expected and fingerprint(emb) != expected:
        raise ProvenanceMismatchError(
            f"item embeddings {source!r} (fingerprint {fingerprint(emb)[:12]}) are not the ones dataset "
            f"{dataset.path} was collected with ({expected[:12]})"
        )
    return emb


def initial_item_table(dataset: LoggedDataset, config: GeMSConfig) -> tuple[Optional[np.ndarray], dict[str, str]]:
    """The item-table initialisation named by ``config.item_init`` and the inputs it adds to the provenance."""
    if config.item_init == "scratch":
        return None, {}
    if config.item_init == "ideal":
        emb = env_item_embeddings(dataset)
        inputs: dict[str, str] = {}
    else:
        from ..mf import MFEmbeddings

        mf = MFEmbeddings.load(config.item_init[3:])
        mf.check_dataset(dataset)
        emb, inputs = mf.embeddings, {"mf_embeddings": mf.fingerprint}
    if emb.shape != (dataset.num_items, config.item_dim):
        raise ValueError(
            f"item_init {config.item_init!r} gives a {emb.shape} table; GeMS needs ({dataset.num_items}, {config.item_dim})"
        )
    return emb, inputs


def _evaluate(model: GeMS, sampler: TurnSampler, config: GeMSConfig, batch_size: int = 4096) -> dict[str, float]:
    """Validation metrics (posterior-mean decoding), averaged over samples."""
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    n = 0
    click_correct = 0.0
    with torch.inference_mode():
        for slates, clicks in sampler.batches(batch_size):
            slates, clicks = slates.to(device), clicks.to(device)
            terms = model.loss(slates, clicks, config.lambda_kl, config.lambda_click, sample=False)
            b = len(slates)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value) * b
            _, click_logits = model.decode(model.encode(slates, clicks)[0])
            click_correct += float(((click_logits > 0).float() == clicks).float().mean()) * b
            n += b
    model.train()
    metrics = {key: value / n for key, value in sums.items()}
    metrics["click_acc"] = click_correct / n
    return metrics


def compute_action_bounds(
    model: GeMS, sampler: TurnSampler, batch_size: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension ``min(mu - sigma)`` and ``max(mu + sigma)`` over the sampler's turns."""
    low = np.full(model.latent_dim, np.inf, dtype=np.float32)
    high = np.full(model.latent_dim, -np.inf, dtype=np.float32)
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        for slates, clicks in sampler.batches(batch_size):
            mu, logvar = model.encode(slates.to(device), clicks.to(device))
            sigma = torch.exp(0.5 * logvar)
            low = np.minimum(low, (mu - sigma).min(0).values.cpu().numpy())
            high = np.maximum(high, (mu + sigma).max(0).values.cpu().numpy())
    return low, high


class TrainingStep:
    """One optimiser step of GeMS pre-training: the batch's loss terms, their gradients,
    then Adam. With ``workers`` > 1 on the CPU the gradients come in ``workers`` equal shares
    of the batch, computed at once on threads (``shards="threads"``,
    :class:`~gym_slaterec.gems.parallel.ShardedGradients`) or in processes
    (``shards="processes"``, :class:`~gym_slaterec.gems.parallel.ProcessShards`).

    While sharding, torch's intra-op threads are 1 (the shards use the cores); :meth:`close`
    restores them and stops the shards' threads or processes. Returns the loss terms of each
    batch. ``chunk``: rank rows per chunk of the slate cross-entropy (None: ``GeMS.loss``'s).
    """

    def __init__(self, model: GeMS, config: GeMSConfig, workers: int = 1, chunk: Optional[int] = None,
                 shards: str = "threads") -> None:
        check_workers(workers)
        check_shards(shards)
        self.model, self.config = model, config
        self._chunk: dict[str, Any] = {"noise": config.sample_noise, **({} if chunk is None else {"chunk": chunk})}
        params = [p for p in model.parameters() if p.requires_grad]
        # fused: one kernel per parameter for the whole update (same Adam; x1.1 a step on one CPU core)
        self.optimizer = torch.optim.Adam(params, lr=config.lr, fused=True)
        on_cpu = next(model.parameters()).device.type == "cpu"
        self.sharded: Optional[Union[ShardedGradients, ProcessShards]] = None
        if workers > 1 and on_cpu:
            self.sharded = ShardedGradients(model, workers) if shards == "threads" else ProcessShards(model, workers)
        self.workers = workers if self.sharded is not None else 1
        self.shards = shards if self.sharded is not None else None
        self._threads = torch.get_num_threads()
        if self.sharded is not None:
            torch.set_num_threads(1)

    def __call__(self, slates: torch.Tensor, clicks: torch.Tensor, generator: Optional[torch.Generator] = None,
                 accuracy: bool = True) -> dict[str, torch.Tensor]:
        cfg = self.config
        if self.sharded is not None:  # sets the gradients itself
            terms = self.sharded(slates, clicks, cfg.lambda_kl, cfg.lambda_click, generator=generator,
                                 accuracy=accuracy, **self._chunk)
        else:
            terms = self.model.loss(slates, clicks, cfg.lambda_kl, cfg.lambda_click, generator=generator,
                                    accuracy=accuracy, **self._chunk)
            self.optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
        self.optimizer.step()
        return terms

    def close(self) -> None:
        """Stop the shards' threads or processes and give torch its intra-op threads back."""
        if self.sharded is not None:
            self.sharded.close()
            self.sharded = None
            torch.set_num_threads(self._threads)


def train_gems(
    dataset: DatasetLike,
    config: Optional[GeMSConfig] = None,
    out: Optional[PathLike] = None,
    overwrite: bool = False,
    logdir: Optional[PathLike] = None,
    progress: bool = True,
    max_steps: Optional[int] = None,
    init_from: Optional[Union[GeMSCheckpoint, str, Path]] = None,
    device: str = "auto",
    snapshots: Sequence[int] = (),
    workers: int = 1,
    shards: str = "threads",
    trackers: Optional[Sequence[str]] = None,
) -> GeMSCheckpoint:
    """Train GeMS on ``dataset``; keep the weights with the best validation loss.

    Every (episode, turn) of the training episodes is a sample; ``config.val_fraction``
    of the episodes are held out (``dataset.split(val_fraction, seed)``). With
    ``out`` the checkpoint is written there (refusing an existing file unless
    ``overwrite``); ``logdir`` receives TensorBoard curves of every loss term.
    ``max_steps`` caps the number of optimiser steps. Ctrl-C during training stops it early
    and still writes the best checkpoint so far (marked partial), then raises
    :class:`TrainingInterrupted` (a KeyboardInterrupt); before training it writes nothing.
    ``init_from`` (a checkpoint or its path) starts from its weights instead of
    ``config.item_init`` (fine-tuning, e.g. on data collected later by an agent);
    its architecture must match ``config`` and it must come from the same
    environment and item table as ``dataset``. ``device``: auto (CUDA when present),
    cpu or cuda[:N]; the checkpoint is saved on the CPU either way.
    ``snapshots``: steps at which to also write the checkpoint that ``max_steps`` = that
    step would have written (best validated weights so far, validated at that step,
    their action bounds) to :func:`snapshot_path` ``(out, step)``: one run gives GeMS of
    several budgets.
    ``workers``: on the CPU, CPU threads that each compute the loss and gradients of an
    equal share of every batch (:class:`~gym_slaterec.gems.parallel.ShardedGradients`;
    torch's intra-op threads are set to 1 meanwhile); equal to one worker up to float
    rounding. Ignored on CUDA. ``shards``: where those shares run, ``threads`` or
    ``processes`` (one per worker beyond the first, forked; no shared GIL).
    ``trackers``: where the scalars go (:mod:`gym_slaterec.trackers`; default: TensorBoard in
    ``logdir`` when given).
    """
    from ..devices import resolve_device
    from ..trackers import check_trackers

    config = config or GeMSConfig()
    config.validate()
    device = resolve_device(device)
    ds = as_dataset(dataset)
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
    snapshots = sorted(set(snapshots))
    if any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in snapshots):
        raise ValueError(f"snapshots must be positive step counts, got {snapshots!r}")
    check_workers(workers)  # before any work
    if trackers:
        check_trackers(trackers)
    check_shards(shards)
    if snapshots and out is None:
        raise ValueError("snapshots are written beside out: give out")
    if out is not None:
        for path in [out, *(snapshot_path(out, x) for x in snapshots)]:
            check_writable(path, overwrite, "gems_checkpoint")  # refuse before training, not after
    if len(ds) < 2:
        raise ValueError(f"dataset {ds.path} has {len(ds)} episode(s); GeMS needs at least 2 (train + validation)")
    if init_from is None:
        init, init_inputs = initial_item_table(ds, config)
    else:
        from .checkpoint import as_checkpoint

        start = as_checkpoint(init_from, allow_env_mismatch=True, allow_partial=True)
        start.check_env(ds.env_id, ds.item_embeddings_fingerprint)
        init, init_inputs = None, {"init_gems": str(start.fingerprint)}

    with torch.device("meta"):  # the model's size, counted without allocating it
        params = sum(p.numel() for p in GeMS(ds.num_items, ds.slate_size, config.latent_dim, config.item_dim,
                                             config.encoder_hidden, config.decoder_hidden).parameters())
    # weights, gradients and Adam's two moments, plus a batch of (B, k, N) decoder logits and their gradient
    need = 16 * params + 8 * config.batch_size * ds.slate_size * ds.num_items
    check_free_memory(need, f"a GeMS of {params:,} parameters (latent_dim {config.latent_dim})")
    torch.manual_seed(config.seed)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = GeMS(
        ds.num_items, ds.slate_size, config.latent_dim, config.item_dim, config.encoder_hidden,
        config.decoder_hidden, None if init is None else torch.from_numpy(init), config.freeze_items,
    )
    if init_from is not None:
        try:
            model.load_state_dict(start.model.state_dict())
        except RuntimeError as exc:
            raise ValueError(f"init_from checkpoint does not match the configured architecture: {exc}") from exc
    model.to(device)
    train_eps, val_eps = ds.split(config.val_fraction, config.seed)
    if len(val_eps) == 0:
        val_eps, train_eps = train_eps[-1:], train_eps[:-1]
    train = TurnSampler(ds, train_eps)
    val = TurnSampler(ds, val_eps).subset(config.val_max_samples, config.seed + 1)

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch if max_steps is None else min(max_steps, config.epochs * steps_per_epoch)
    if snapshots and snapshots[-1] >= total_steps:
        raise ValueError(f"snapshots must come before the last step ({total_steps}), got {snapshots}")
    eval_every = config.eval_every or steps_per_epoch
    from ..trackers import RunIdentity, artifact_writer, env_tag

    writer = artifact_writer(trackers, None if logdir is None else Path(logdir), RunIdentity(
        Path(out).parent if out is not None else Path(logdir or "."), Path(out).stem if out is not None else "gems",
        ["gems", env_tag(ds.env_id), f"seed{config.seed}"],
        config={"gems": dataclasses.asdict(config), "dataset": str(ds.path), "env_id": ds.env_id}))
    bar = progress_bar(progress, total=total_steps, unit="step", desc="GeMS")
    best: dict[str, Any] = {"loss": math.inf, "state": copy.deepcopy(model.state_dict()), "metrics": {}, "step": 0}
    history: list[dict[str, Any]] = []
    bad_evals = 0
    step = 0
    started = time.time()
    interrupted = False
    running: dict[str, float] = {}
    counts: dict[str, int] = {}

    def validate() -> bool:
        nonlocal bad_evals
        metrics = _evaluate(model, val, config)
        history.append({"step": step, "epoch": step / steps_per_epoch, **metrics})
        if writer is not None:
            for key, value in metrics.items():
                writer.add_scalar(f"val/{key}", value, step)
        improved = metrics["loss"] < best["loss"]
        if improved:
            best.update(loss=metrics["loss"], state=copy.deepcopy(model.state_dict()), metrics=metrics, step=step)
            bad_evals = 0
        else:
            bad_evals += 1
        bar.set_postfix(val_loss=f"{metrics['loss']:.3f}", val_acc=f"{metrics['slate_acc']:.3f}")
        return config.patience is not None and bad_evals >= config.patience

    written: list[int] = []  # snapshot steps written so far (an early stop can leave later ones out)

    def checkpoint_of(weights: GeMS, steps: int, planned: int, complete: bool, chosen: dict[str, Any],
                      validations: list[dict[str, Any]]) -> GeMSCheckpoint:
        """The checkpoint of ``weights`` (those of ``chosen``, the best validation) after ``steps`` steps, on the CPU."""
        bounds_sampler = train.subset(config.bounds_max_samples, config.seed + 2)
        low, high = compute_action_bounds(weights, bounds_sampler)
        weights.to("cpu")
        prov = provenance(
            "gems_checkpoint",
            env_id=ds.env_id,
            env_params=ds.provenance.get("env_params"),
            item_embeddings_fingerprint=ds.item_embeddings_fingerprint,
            inputs={"dataset": ds.fingerprint, **init_inputs},
            seed=config.seed,
            hyperparameters=config.to_dict(),
            dataset_path=str(ds.path) if ds.path else None,
            dataset_episodes=len(ds),
            dataset_policy=ds.provenance.get("policy"),
            complete=complete,
            steps_done=steps,
            steps_planned=planned,
            device=device,
        )
        training = {
            "steps": steps,
            "best_step": chosen["step"],
            "epochs_run": steps / steps_per_epoch,
            "train_samples": len(train),
            "val_samples": len(val),
            "bounds_samples": len(bounds_sampler),
            "seconds": time.time() - started,
            "interrupted": not complete,
            "history": list(validations),
            "snapshots": list(written),
            "cpu_workers": train_step.workers,
            "cpu_shards": train_step.shards,
        }
        return GeMSCheckpoint(weights, config, low, high, prov, dict(chosen["metrics"]), training=training)

    def write_snapshot() -> None:
        # What max_steps=step would have written: validated at this step, best so far. A
        # validation off the eval_every grid is for the snapshot only, so the run itself
        # (its best weights, history and patience) goes on as if there were no snapshots.
        chosen, validations = best, history
        if not history or history[-1]["step"] != step:
            metrics = _evaluate(model, val, config)
            validations = history + [{"step": step, "epoch": step / steps_per_epoch, **metrics}]
            if metrics["loss"] < best["loss"]:
                chosen = dict(loss=metrics["loss"], state=copy.deepcopy(model.state_dict()), metrics=metrics, step=step)
        weights = copy.deepcopy(model)
        weights.load_state_dict(chosen["state"])
        checkpoint_of(weights, step, step, True, chosen, validations).save(snapshot_path(out, step), overwrite)
        written.append(step)
        model.train()

    train_step = TrainingStep(model, config, workers, shards=shards)
    model.train()
    try:
        stop = False
        for _epoch in range(config.epochs):
            for slates, clicks in train.batches(config.batch_size, rng):
                slates, clicks = slates.to(device, non_blocking=True), clicks.to(device, non_blocking=True)
                # The accuracy needs an argmax over (B, k, N): measure it on every 10th batch only.
                terms = train_step(slates, clicks, generator=gen, accuracy=step % 10 == 0)
                step += 1
                bar.update(1)
                for key, value in terms.items():
                    running[key] = running.get(key, 0.0) + float(value.detach())
                    counts[key] = counts.get(key, 0) + 1
                if not math.isfinite(float(terms["loss"].detach())):
                    raise TrainingDiverged(f"training diverged at step {step} (loss {float(terms['loss'].detach())}); lower the "
                                           f"learning rate (--lr, now {config.lr})")
                if step % 50 == 0:
                    means = {key: value / counts[key] for key, value in running.items()}
                    if writer is not None:
                        for key, value in means.items():
                            writer.add_scalar(f"train/{key}", value, step)
                    bar.set_postfix(loss=f"{means['loss']:.3f}", acc=f"{means.get('slate_acc', float('nan')):.3f}")
                    running.clear()
                    counts.clear()
                if step % eval_every == 0 or step == total_steps:
                    stop = validate()
                if step in snapshots:
                    write_snapshot()
                if stop or step >= total_steps:
                    stop = True
                    break
            if stop:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        train_step.close()
    if not history or history[-1]["step"] != step:
        if step > 0 and not interrupted:
            validate()
    if not best["metrics"]:  # interrupted before the first validation
        best.update(metrics=_evaluate(model, val, config), state=copy.deepcopy(model.state_dict()), step=step)
    model.load_state_dict(best["state"])
    if writer is not None:
        writer.close()
    ckpt = checkpoint_of(model, step, total_steps, not interrupted, best, history)
    if out is not None and interrupted and Path(out).exists():
        # an interrupted --overwrite leaves the existing checkpoint as it was; the partial one goes beside it
        out = partial_path(out)
        ckpt.save(out, overwrite=True)
    elif out is not None:
        ckpt.save(out, overwrite)
    if interrupted:
        raise TrainingInterrupted(None if out is None else Path(out))
    return ckpt


def partial_path(out: PathLike) -> Path:
    """Where an interrupted training that was to replace ``out`` leaves its partial checkpoint."""
    out = Path(out)
    return out.with_name(f"{out.stem}.partial{out.suffix}")


def snapshot_path(out: PathLike, step: int) -> Path:
    """Where ``train_gems(..., snapshots=[step])`` writes the checkpoint of ``step`` steps."""
    out = Path(out)
    return out.with_name(f"{out.stem}.step{step}{out.suffix}")

