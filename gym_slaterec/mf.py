"""BPR matrix-factorisation item embeddings trained on a logged dataset (docs/method.md section 7).

Each episode is a user; the items it clicked are its positives; every positive
is paired with one item drawn uniformly from the catalogue as the negative, and
the model ``score(u, i) = <p_u, q_i>`` is trained with the BPR loss
``-log sigmoid(score(u, pos) - score(u, neg))`` (Adam, batch 256; lazy Adam
on the sparse user table). Training stops
when the validation BPR loss (10 % of the positives of every user, held out)
has not improved for ``patience`` epochs; the best item table is kept.

The file is an ``.npz`` holding ``embeddings`` (N, dim) float32 and the
provenance (JSON) — no pickle.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from .core.embeddings import MATRIX_SUFFIXES, load_matrix_file
from .logged_data import LoggedDataset
from .provenance import (
    PathLike,
    ProvenanceFields,
    ProvenanceMismatchError,
    TrainingDiverged,
    check_free_memory,
    check_writable,
    provenance,
    sha256_file,
    write_bytes_atomic,
)
from .progress import progress as progress_bar

FORMAT = "slaterec.mf/1"
#: Defaults chosen so that Adam at the SPEC's lr 1e-4 converges (see BENCHMARKS.md).
DEFAULT_EPOCHS = 200
DEFAULT_PATIENCE = 5


@dataclass
class MFEmbeddings(ProvenanceFields):
    """BPR item embeddings with their provenance."""

    embeddings: np.ndarray  # (N, dim) float32
    provenance: dict[str, Any]
    metrics: dict[str, Any]
    path: Optional[Path] = None
    fingerprint: Optional[str] = None

    @property
    def num_items(self) -> int:
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def save(self, path: PathLike, overwrite: bool = False) -> Path:
        if not np.isfinite(self.embeddings).all():
            raise ValueError(f"refusing to write MF embeddings {path}: they hold NaN or infinite values (training diverged)")
        buf = io.BytesIO()
        np.savez(
            buf,
            format=np.array(FORMAT),
            embeddings=self.embeddings.astype(np.float32),
            provenance=np.array(json.dumps(self.provenance)),
            metrics=np.array(json.dumps(self.metrics)),
        )
        self.fingerprint = write_bytes_atomic(path, buf.getvalue(), overwrite, kind="mf_embeddings")
        self.path = Path(path)
        return self.path

    @classmethod
    def load(cls, path: PathLike) -> "MFEmbeddings":
        """Read an MF file written by :func:`train_mf`, or a plain N x d matrix
        (``.pt`` tensor as the reference code saves it, or ``.npy``), imported as it is.

        A corrupt, truncated or foreign file raises ``ValueError``.
        """
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"MF embeddings file not found: {p}")
        if not p.is_file():
            raise ValueError(f"{p} is not a file (expected MF embeddings written by train_mf)")
        if p.suffix in MATRIX_SUFFIXES and not _is_mf_archive(p):
            return cls._import_matrix(p)
        try:
            with np.load(p, allow_pickle=False) as data:
                fmt = str(data["format"]) if "format" in data.files else None
                if fmt != FORMAT:
                    raise ValueError(f"{p} is not an MF embeddings file (format {fmt!r}, expected {FORMAT!r})")
                emb = np.asarray(data["embeddings"], dtype=np.float32)
                prov = json.loads(str(data["provenance"]))
                metrics = json.loads(str(data["metrics"]))
        except ValueError as exc:
            if "MF embeddings file" in str(exc):
                raise
            raise ValueError(f"{p} is not a readable MF embeddings file (corrupt or truncated?): {exc}") from exc
        except Exception as exc:
            raise ValueError(f"{p} is not a readable MF embeddings file (corrupt or truncated?): {exc}") from exc
        if emb.ndim != 2 or not np.isfinite(emb).all():
            raise ValueError(f"{p}: embeddings must be a finite 2-D matrix, got shape {emb.shape}")
        return cls(emb, prov, metrics, p, sha256_file(p))

    @classmethod
    def _import_matrix(cls, p: Path) -> "MFEmbeddings":
        emb = load_matrix_file(p, "MF embeddings").astype(np.float32)
        if emb.shape[0] < 1 or emb.shape[1] < 1 or not np.isfinite(emb).all():
            raise ValueError(f"{p}: MF embeddings must be a non-empty finite matrix, got shape {emb.shape}")
        digest = sha256_file(p)
        # Where such a matrix was learnt is unknown: no environment to check against.
        prov = provenance("mf_embeddings", imported_from=str(p.resolve()), inputs={"matrix": digest},
                          note="plain matrix imported as it is; its environment and item embeddings are unknown")
        return cls(emb, prov, {}, p, digest)

    def check_env(self, env_id: Optional[str], item_embeddings_fingerprint: Optional[str] = None) -> None:
        """Refuse embeddings learnt on another environment / item table."""
        where = f"MF embeddings {self.path}" if self.path else "these MF embeddings"
        if env_id is not None and self.env_id is not None and env_id != self.env_id:
            raise ProvenanceMismatchError(
                f"{where} were trained on data from {self.env_id!r}, but the environment is {env_id!r}"
            )
        fp = self.item_embeddings_fingerprint
        if item_embeddings_fingerprint is not None and fp is not None and fp != item_embeddings_fingerprint:
            raise ProvenanceMismatchError(
                f"{where} were trained on {self.env_id!r} with item embeddings {fp[:12]}, but the environment uses "
                f"{item_embeddings_fingerprint[:12]}"
            )

    def check_dataset(self, dataset: LoggedDataset) -> None:
        """Refuse to combine these embeddings with a dataset of another environment."""
        self.check_env(dataset.env_id, dataset.item_embeddings_fingerprint)
        if self.num_items != dataset.num_items:
            raise ProvenanceMismatchError(
                f"MF embeddings {self.path} have {self.num_items} items; dataset {dataset.path} has {dataset.num_items}"
            )


def _is_mf_archive(path: Path) -> bool:
    """Whether ``path`` is an archive written by :meth:`MFEmbeddings.save` (whatever its suffix)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return "format.npy" in z.namelist() and "embeddings.npy" in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def click_pairs(dataset: LoggedDataset, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) of every click: user = episode index. Read chunk by chunk."""
    users, items = [], []
    for start, slates, clicks in dataset.iter_chunks(chunk):
        e, t, r = np.nonzero(clicks)
        users.append((e + start).astype(np.int32))
        items.append(slates[e, t, r].astype(np.int32))
    if not users:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    return np.concatenate(users), np.concatenate(items)


def bpr_auc(user_vecs: np.ndarray, item_vecs: np.ndarray, users: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
    """Fraction of (user, positive, negative) triples ranked correctly (ties count half)."""
    su = np.einsum("bd,bd->b", user_vecs[users], item_vecs[pos])
    sn = np.einsum("bd,bd->b", user_vecs[users], item_vecs[neg])
    return float(np.mean((su > sn) + 0.5 * (su == sn)))


#: early-stopping patience of the reference recipe, in validation passes
REFERENCE_PATIENCE = 3
#: MF training recipes: this package's (default) and the reference implementation's
MF_RECIPES = ("default", "reference")


def check_mf_options(epochs: int, patience: int, dim: int, batch_size: int, lr: float,
                     val_fraction: float = 0.1, recipe: str = "default") -> None:
    """The options of :func:`train_mf`, checked before anything is read or written."""
    if recipe not in MF_RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(MF_RECIPES)}, got {recipe!r}")
    for name, v in (("epochs", epochs), ("patience", patience), ("dim", dim), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not (isinstance(lr, (int, float)) and 0 < lr < math.inf):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")


def train_mf(
    dataset: Union[LoggedDataset, str, Path],
    out: Optional[PathLike] = None,
    seed: int = 0,
    epochs: int = DEFAULT_EPOCHS,
    patience: int = DEFAULT_PATIENCE,
    dim: int = 20,
    lr: float = 1e-4,
    batch_size: int = 256,
    overwrite: bool = False,
    progress: bool = True,
    val_fraction: float = 0.1,
    logdir: Optional[PathLike] = None,
    max_seconds: Optional[float] = None,
    device: str = "auto",
    trackers: Optional[Sequence[str]] = None,
    recipe: str = "default",
) -> MFEmbeddings:
    """BPR matrix factorisation on the clicks of ``dataset``; returns (and writes) the item table.

    ``val_fraction`` of each dataset's clicks (a seeded random subset) are held out;
    their BPR loss drives early stopping and their AUC (a held-out click scored
    above a uniform random item) is reported in ``metrics``. ``max_seconds``
    bounds the wall-clock time (used by the demo). ``device``: auto (CUDA when present),
    cpu or cuda[:N]. ``recipe="reference"``: the reference implementation's recipe, its defects
    included (:mod:`gym_slaterec.mf_reference`; ``epochs`` caps it, ``val_fraction`` is its
    episode split).
    """
    from .devices import resolve_device
    from .trackers import RunIdentity, artifact_writer, check_trackers, env_tag

    device = resolve_device(device)
    if trackers:
        check_trackers(trackers)

    check_mf_options(epochs=epochs, patience=patience, dim=dim, batch_size=batch_size, lr=lr, val_fraction=val_fraction,
                     recipe=recipe)
    ds = dataset if isinstance(dataset, LoggedDataset) else LoggedDataset.load(dataset, verify=True)
    if out is not None:
        check_writable(out, overwrite, "mf_embeddings")

    users, items = click_pairs(ds)
    if len(users) < 10:
        raise ValueError(f"dataset {ds.path} has only {len(users)} clicks; MF needs positives to learn from")
    writer = artifact_writer(trackers, None if logdir is None else Path(logdir), RunIdentity(
        Path(out).parent if out is not None else Path(logdir or "."), Path(out).stem if out is not None else "mf",
        ["mf", env_tag(ds.env_id), f"seed{seed}"],
        config={"mf": {"dim": dim, "lr": lr, "batch_size": batch_size, "epochs": epochs, "patience": patience,
                       "seed": seed, "recipe": recipe}, "dataset": str(ds.path), "env_id": ds.env_id}))
    hyper = {"dim": dim, "lr": lr, "batch_size": batch_size, "epochs": epochs, "patience": patience,
             "val_fraction": val_fraction, "negatives_per_positive": 1, "max_seconds": max_seconds}
    if recipe == "reference":
        from .mf_reference import train_reference_recipe

        check_free_memory(4 * 4 * dim * (len(ds) + ds.num_items), f"MF tables of dim {dim} for {len(ds):,} users")
        bar = progress_bar(progress, total=None, unit="validation", desc="MF (BPR, reference recipe)")

        def report(record: dict) -> None:
            if writer is not None:
                writer.add_scalar("val/bpr_loss", record["val_loss"], record["validation"])
                if record["train_loss"] is not None:
                    writer.add_scalar("train/bpr_loss", record["train_loss"], record["validation"])
            bar.update(1)
            bar.set_postfix(epoch=record["epoch"], val=f"{record['val_loss']:.4f}")

        with contextlib.closing(bar):
            table, metrics = train_reference_recipe(
                users, items, len(ds), ds.num_items, seed=seed, epochs=epochs, patience=patience, dim=dim, lr=lr,
                batch_size=batch_size, val_fraction=val_fraction, device=device, report=report,
                max_seconds=max_seconds)
        if writer is not None:
            writer.close()
        return _finish_mf(ds, table, metrics, {**hyper, "recipe": "reference"}, seed, device, out, overwrite)

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    is_val = rng.random(len(users)) < val_fraction
    tr_u = torch.from_numpy(users[~is_val].astype(np.int64)).to(device)
    tr_i = torch.from_numpy(items[~is_val].astype(np.int64)).to(device)
    va_u, va_i = users[is_val].astype(np.int64), items[is_val].astype(np.int64)
    va_neg = rng.integers(0, ds.num_items, size=len(va_u))  # fixed negatives: a stable criterion

    n_users, n_items = len(ds), ds.num_items
    # the two tables, the item table's gradient and Adam moments (the user table's are sparse)
    check_free_memory(4 * dim * (n_users + 4 * n_items), f"MF tables of dim {dim} for {n_users:,} users")
    # A batch touches at most batch_size users out of up to 100,000: the user table
    # gets sparse gradients and lazy Adam (SparseAdam), the small item table dense Adam.
    user_emb = torch.nn.Embedding(n_users, dim, sparse=True)
    item_emb = torch.nn.Embedding(n_items, dim)
    for emb in (user_emb, item_emb):
        torch.nn.init.normal_(emb.weight, std=0.1)  # drawn on the CPU: the same start on every device
    user_emb.to(device)
    item_emb.to(device)
    opts = [torch.optim.SparseAdam([user_emb.weight], lr=lr), torch.optim.Adam([item_emb.weight], lr=lr)]
    gen = torch.Generator(device=device).manual_seed(seed)

    def val_loss() -> tuple[float, float]:
        with torch.no_grad():
            U, Q = user_emb.weight.cpu().numpy(), item_emb.weight.cpu().numpy()
            diff = np.einsum("bd,bd->b", U[va_u], Q[va_i]) - np.einsum("bd,bd->b", U[va_u], Q[va_neg])
            loss = float(np.mean(np.logaddexp(0.0, -diff)))
            auc = float(np.mean((diff > 0) + 0.5 * (diff == 0)))
        return loss, auc

    best = {"loss": math.inf, "items": item_emb.weight.detach().clone(), "epoch": 0, "auc": 0.5}
    history = []
    bad = 0
    started = time.time()
    n = len(tr_u)
    bar = progress_bar(progress, total=epochs, unit="epoch", desc="MF (BPR)")
    epoch = 0
    with contextlib.closing(bar):  # closed on every exit (a diverged run raises)
        for epoch in range(1, epochs + 1):
            perm = torch.randperm(n, generator=gen, device=device)
            negs = torch.randint(0, n_items, (n,), generator=gen, device=device)
            total = 0.0
            for start in range(0, n, batch_size):
                idx = perm[start : start + batch_size]
                u = user_emb(tr_u[idx])
                diff = (u * (item_emb(tr_i[idx]) - item_emb(negs[idx]))).sum(-1)
                loss = torch.nn.functional.softplus(-diff).mean()
                for opt in opts:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                for opt in opts:
                    opt.step()
                total += float(loss.detach()) * len(idx)
            if not (math.isfinite(total) and bool(torch.isfinite(item_emb.weight).all())):
                raise TrainingDiverged(f"training diverged at epoch {epoch} (BPR loss {total / n}); lower the learning "
                                       f"rate (--lr, now {lr})")
            v_loss, v_auc = val_loss()
            history.append({"epoch": epoch, "train_loss": total / n, "val_loss": v_loss, "val_auc": v_auc})
            if writer is not None:
                writer.add_scalar("train/bpr_loss", total / n, epoch)
                writer.add_scalar("val/bpr_loss", v_loss, epoch)
                writer.add_scalar("val/auc", v_auc, epoch)
            bar.update(1)
            bar.set_postfix(train=f"{total / n:.4f}", val=f"{v_loss:.4f}", auc=f"{v_auc:.3f}")
            if v_loss < best["loss"] - 1e-5:
                best.update(loss=v_loss, items=item_emb.weight.detach().clone(), epoch=epoch, auc=v_auc)
                bad = 0
            else:
                bad += 1
                if bad >= patience:
                    break
            if max_seconds is not None and time.time() - started > max_seconds:
                break
    if writer is not None:
        writer.close()

    metrics = {
        "val_bpr_loss": best["loss"], "val_auc": best["auc"], "best_epoch": best["epoch"], "epochs_run": epoch,
        "train_clicks": int(n), "val_clicks": int(len(va_u)), "seconds": time.time() - started, "history": history,
    }
    return _finish_mf(ds, best["items"].cpu().numpy().astype(np.float32), metrics, hyper, seed, device, out, overwrite)


def _finish_mf(ds: LoggedDataset, table: np.ndarray, metrics: dict, hyper: dict, seed: int, device: str,
               out: Optional[PathLike], overwrite: bool) -> MFEmbeddings:
    """The MF embeddings of a finished training, with their provenance; written to ``out``."""
    prov = provenance(
        "mf_embeddings",
        env_id=ds.env_id,
        env_params=ds.provenance.get("env_params"),
        item_embeddings_fingerprint=ds.item_embeddings_fingerprint,
        inputs={"dataset": ds.fingerprint},
        seed=seed,
        hyperparameters=hyper,
        dataset_path=str(ds.path) if ds.path else None,
        device=device,
    )
    mf = MFEmbeddings(table, prov, metrics)
    if out is not None:
        mf.save(out, overwrite)
    return mf
