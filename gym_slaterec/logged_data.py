"""Logged datasets of (slate, clicks) episodes: format, loading, writing.

On disk a dataset is a folder::

    DATASET/
      meta.json      provenance, shapes, array fingerprints
      slates.npy     (episodes, turns + 1, k) int16/int32 item ids
      clicks.npy     (episodes, turns + 1, k) uint8 in {0, 1}
      <extra>.npy    optional per-turn arrays (e.g. actions.npy: (episodes, turns, A))

Index 0 of the turn axis is the reset observation (initial slate, its clicks, no
reward); turn ``t >= 1`` is the agent's ``t``-th slate and the clicks it got, and
its reward is ``clicks[:, t].sum(-1)``. Arrays are plain ``.npy`` files opened as
memory maps: a 100,000-episode dataset opens instantly and uses memory only for
the pages actually read. Writing goes to a temporary folder that is renamed into
place when complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from .provenance import (
    DATASET_KINDS,
    PathLike,
    ProvenanceFields,
    ProvenanceMismatchError,
    atomic_path,
    check_free_disk,
    sha256_array,
    write_json_atomic,
)

FORMAT = "slaterec.logged/1"
REQUIRED_META = ("format", "episodes", "turns", "slate_size", "num_items", "provenance", "arrays")


class DatasetError(ValueError):
    """A dataset folder is missing, malformed or inconsistent."""


def slate_dtype(num_items: int) -> np.dtype:
    return np.dtype(np.int16) if num_items <= np.iinfo(np.int16).max else np.dtype(np.int32)


@dataclass
class LoggedDataset(ProvenanceFields):
    """Episodes of (slate, clicks), memory-mapped, with their provenance."""

    slates: np.ndarray  # (E, T + 1, k)
    clicks: np.ndarray  # (E, T + 1, k) uint8
    meta: dict[str, Any]
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    path: Optional[Path] = None

    # ------------------------------------------------------------- properties
    def __len__(self) -> int:
        return self.slates.shape[0]

    @property
    def num_episodes(self) -> int:
        return self.slates.shape[0]

    @property
    def turns(self) -> int:
        return self.slates.shape[1] - 1

    @property
    def slate_size(self) -> int:
        return self.slates.shape[2]

    @property
    def num_items(self) -> int:
        return int(self.meta["num_items"])

    @property
    def provenance(self) -> dict[str, Any]:
        return self.meta["provenance"]

    @property
    def has_initial_turn(self) -> bool:
        """False for data imported from a format without the reset interaction
        (turn 0 then holds the initial slate with no clicks, not an observation)."""
        return bool(self.provenance.get("has_initial_turn", True))

    @property
    def first_turn(self) -> int:
        """Index of the first turn that was really observed (0, or 1 for imported data)."""
        return 0 if self.has_initial_turn else 1

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the dataset's content (slates and clicks, and extras)."""
        return self.meta["fingerprint"]

    def rewards(self, episodes: Any = slice(None)) -> np.ndarray:
        """Per-turn rewards (E', T) of the selected episodes."""
        return self.clicks[episodes, 1:].sum(axis=-1, dtype=np.int64).astype(np.float32)

    def returns(self) -> np.ndarray:
        """Return of every episode, (E,), computed chunk by chunk."""
        out = np.empty(len(self), dtype=np.float64)
        for start in range(0, len(self), 8192):
            out[start : start + 8192] = self.clicks[start : start + 8192, 1:].sum(axis=(1, 2), dtype=np.int64)
        return out

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Episode indices (train, validation), a seeded random partition."""
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
        perm = np.random.default_rng(seed).permutation(len(self))
        n_val = int(round(val_fraction * len(self)))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    def iter_chunks(self, size: int = 4096) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for start in range(0, len(self), size):
            yield start, np.asarray(self.slates[start : start + size]), np.asarray(self.clicks[start : start + size])

    # ------------------------------------------------------------------- I/O
    def check_content(self, chunk: int = 8192) -> None:
        """Refuse item ids outside the catalogue, clicks other than 0/1 and non-finite
        extras (``DatasetError`` naming the file, episode and value). One pass over the
        arrays in chunks: 0.05 s for 100,000 episodes in the page cache, 0.6 s from disk."""
        where = self.path or "dataset"
        n = self.num_items
        for start in range(0, len(self), chunk):
            s = np.asarray(self.slates[start : start + chunk])
            c = np.asarray(self.clicks[start : start + chunk])
            lo, hi = int(s.min()), int(s.max())
            if lo < 0 or hi >= n:
                bad = np.argwhere((s < 0) | (s >= n))[0]
                raise DatasetError(f"{where}/slates.npy: episode {start + bad[0]}, turn {bad[1]} holds item id "
                                   f"{s[tuple(bad)]}, outside [0, {n - 1}] (corrupt dataset)")
            if int(c.max()) > 1:
                bad = np.argwhere(c > 1)[0]
                raise DatasetError(f"{where}/clicks.npy: episode {start + bad[0]}, turn {bad[1]} holds click value "
                                   f"{c[tuple(bad)]}; clicks must be 0 or 1 (corrupt dataset)")
            for name, arr in self.extras.items():
                part = np.asarray(arr[start : start + chunk])
                if np.issubdtype(part.dtype, np.floating) and not np.isfinite(part).all():
                    bad = int(np.argwhere(~np.isfinite(part))[0][0])
                    raise DatasetError(f"{where}/{name}.npy: episode {start + bad} holds NaN or infinite values")

    @classmethod
    def load(cls, path: PathLike, mmap: bool = True, verify: bool = False, check: bool = True) -> "LoggedDataset":
        """Open a dataset folder, its content checked (:meth:`check_content`) unless
        ``check=False``; ``verify=True`` also re-hashes the arrays."""
        p = Path(path)
        if not p.exists():
            raise DatasetError(f"dataset not found: {p}")
        if not p.is_dir():
            raise DatasetError(f"{p} is not a dataset folder (expected a folder with meta.json, slates.npy, clicks.npy)")
        meta_path = p / "meta.json"
        if not meta_path.is_file():
            raise DatasetError(f"{p} has no meta.json: not a SlateRec dataset, or an interrupted write")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{meta_path} is corrupt: {exc}") from exc
        missing = [key for key in REQUIRED_META if key not in meta]
        if missing:
            raise DatasetError(f"{meta_path} lacks {missing}")
        if meta["format"] != FORMAT:
            raise DatasetError(f"{p}: unsupported dataset format {meta['format']!r} (this version reads {FORMAT!r})")
        arrays = {}
        for name in meta["arrays"]:
            file = p / f"{name}.npy"
            if not file.is_file():
                raise DatasetError(f"{p} lacks {file.name}")
            try:
                arrays[name] = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
            except Exception as exc:
                raise DatasetError(f"cannot read {file}: {exc}") from exc
            expected = tuple(meta["arrays"][name]["shape"])
            if arrays[name].shape != expected:
                raise DatasetError(f"{file} has shape {arrays[name].shape}, meta.json says {expected} (truncated?)")
        for name in ("slates", "clicks"):
            if name not in arrays:
                raise DatasetError(f"{p} lacks {name}.npy")
        E, T1, k = meta["episodes"], meta["turns"] + 1, meta["slate_size"]
        for name in ("slates", "clicks"):
            if arrays[name].shape != (E, T1, k):
                raise DatasetError(f"{p}/{name}.npy has shape {arrays[name].shape}, expected {(E, T1, k)}")
        for name in ("slates", "clicks"):
            if arrays[name].dtype.kind not in "iu":
                raise DatasetError(f"{p}/{name}.npy holds {arrays[name].dtype} values; integers expected (corrupt dataset)")
        ds = cls(arrays["slates"], arrays["clicks"], meta, {k: v for k, v in arrays.items() if k not in ("slates", "clicks")}, p)
        if check:  # values out of range are named first: the more precise message
            ds.check_content()
        if verify:
            for name, arr in arrays.items():
                if sha256_array(arr) != meta["arrays"][name]["sha256"]:
                    raise DatasetError(f"{p}/{name}.npy does not match its recorded fingerprint: it was modified or "
                                       "corrupted after it was written (regenerate it, so that its provenance "
                                       "describes its content)")
        return ds

    @classmethod
    def from_arrays(
        cls,
        slates: np.ndarray,
        clicks: np.ndarray,
        provenance: dict[str, Any],
        num_items: int,
        extras: Optional[dict[str, np.ndarray]] = None,
    ) -> "LoggedDataset":
        """An in-memory dataset (validated); :meth:`save` writes it."""
        slates = np.asarray(slates)
        clicks = np.asarray(clicks)
        if slates.ndim != 3 or slates.shape != clicks.shape:
            raise DatasetError(f"slates and clicks must both be (episodes, turns + 1, k); got {slates.shape} and {clicks.shape}")
        if slates.size and (slates.min() < 0 or slates.max() >= num_items):
            raise DatasetError(f"slates hold item ids outside [0, {num_items - 1}]")
        if clicks.size and not np.isin(clicks, (0, 1)).all():
            raise DatasetError("clicks must be 0 or 1")
        extras = {k: np.asarray(v) for k, v in (extras or {}).items()}
        for name, arr in extras.items():
            if arr.shape[0] != slates.shape[0]:
                raise DatasetError(f"extra array {name!r} has {arr.shape[0]} episodes, expected {slates.shape[0]}")
            if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                raise DatasetError(f"extra array {name!r} contains NaN or infinite values")
        arrays = {"slates": slates.astype(slate_dtype(num_items)), "clicks": clicks.astype(np.uint8), **extras}
        meta = _meta(arrays, provenance, num_items)
        return cls(arrays["slates"], arrays["clicks"], meta, extras)

    def save(self, path: PathLike, overwrite: bool = False) -> Path:
        with atomic_path(path, overwrite, directory=True, kind=DATASET_KINDS) as tmp:
            tmp.mkdir(parents=True, exist_ok=True)
            arrays = {"slates": self.slates, "clicks": self.clicks, **self.extras}
            for name, arr in arrays.items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr))
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=2) + "\n")
        self.path = Path(path)
        return self.path

    # ------------------------------------------------------------ provenance
    def require_env(self, env_id: str, item_embeddings_fingerprint: Optional[str] = None) -> None:
        """Refuse a dataset that came from another environment or embedding matrix."""
        if self.env_id != env_id:
            raise ProvenanceMismatchError(
                f"dataset {self.path or ''} was collected on {self.env_id!r}, not on {env_id!r}"
            )
        if item_embeddings_fingerprint and self.item_embeddings_fingerprint != item_embeddings_fingerprint:
            raise ProvenanceMismatchError(
                f"dataset {self.path or ''} was collected with item embeddings {str(self.item_embeddings_fingerprint)[:12]}, "
                f"the environment uses {item_embeddings_fingerprint[:12]}"
            )


def _meta(arrays: dict[str, np.ndarray], provenance: dict[str, Any], num_items: int) -> dict[str, Any]:
    slates = arrays["slates"]
    info = {name: {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": sha256_array(a)} for name, a in arrays.items()}
    return _meta_from_info(info, provenance, num_items, slates.shape)


def _meta_from_info(info: dict, provenance: dict, num_items: int, shape: tuple) -> dict[str, Any]:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(info):
        h.update(f"{name}:{info[name]['sha256']}".encode())
    return {
        "format": FORMAT,
        "episodes": int(shape[0]),
        "turns": int(shape[1]) - 1,
        "slate_size": int(shape[2]),
        "num_items": int(num_items),
        "fingerprint": h.hexdigest(),
        "arrays": info,
        "provenance": provenance,
    }


def annotate_provenance(path: PathLike, key: str, value: Any) -> None:
    """Add ``key: value`` to the provenance in a dataset's meta.json (atomically); the arrays and
    so the fingerprint are untouched."""
    meta_path = Path(path) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["provenance"][key] = value
    write_json_atomic(meta_path, meta, overwrite=True)


class DatasetWriter:
    """Writes a dataset chunk by chunk into memory-mapped files, then renames it into place.

    Use as a context manager::

        with DatasetWriter(path, episodes, turns, k, num_items, provenance) as w:
            w.write(start, slates_chunk, clicks_chunk)
    """

    def __init__(
        self,
        path: PathLike,
        episodes: int,
        turns: int,
        slate_size: int,
        num_items: int,
        provenance: dict[str, Any],
        overwrite: bool = False,
        extras: Optional[dict[str, tuple[tuple[int, ...], Any]]] = None,
    ) -> None:
        self.path = Path(path)
        self.shape = (int(episodes), int(turns) + 1, int(slate_size))
        self.num_items = int(num_items)
        per_episode = self.shape[1] * self.shape[2] * (np.dtype(slate_dtype(self.num_items)).itemsize + 1) + sum(
            int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in (extras or {}).values())
        check_free_disk(self.path, per_episode * self.shape[0], f"{self.shape[0]:,} episodes")
        self.provenance = provenance
        self.overwrite = overwrite
        self.extra_specs = dict(extras or {})  # name -> (per-episode shape, dtype)
        self._ctx = None
        self.dataset: Optional[LoggedDataset] = None

    def __enter__(self) -> "DatasetWriter":
        self._ctx = atomic_path(self.path, self.overwrite, directory=True, kind=DATASET_KINDS)
        self.tmp = self._ctx.__enter__()
        self.tmp.mkdir(parents=True, exist_ok=True)
        open_mm = np.lib.format.open_memmap
        self.arrays = {
            "slates": open_mm(self.tmp / "slates.npy", mode="w+", dtype=slate_dtype(self.num_items), shape=self.shape),
            "clicks": open_mm(self.tmp / "clicks.npy", mode="w+", dtype=np.uint8, shape=self.shape),
        }
        for name, (shape, dtype) in self.extra_specs.items():
            self.arrays[name] = open_mm(self.tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=(self.shape[0],) + tuple(shape))
        self._written = np.zeros(self.shape[0], dtype=bool)
        return self

    def write(self, start: int, slates: np.ndarray, clicks: np.ndarray, **extras: np.ndarray) -> None:
        n = len(slates)
        for name, arr in extras.items():  # refused before anything is written
            a = np.asarray(arr)
            if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
                raise DatasetError(f"refusing to write {self.path}: extra array {name!r} holds NaN or infinite values")
        self.arrays["slates"][start : start + n] = slates
        self.arrays["clicks"][start : start + n] = clicks
        for name, arr in extras.items():
            self.arrays[name][start : start + n] = arr
        self._written[start : start + n] = True

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                if not self._written.all():
                    raise DatasetError(f"only {int(self._written.sum())} of {self.shape[0]} episodes were written")
                info = {}
                for name, arr in self.arrays.items():
                    arr.flush()
                    info[name] = {"shape": list(arr.shape), "dtype": arr.dtype.str, "sha256": sha256_array(arr)}
                meta = _meta_from_info(info, self.provenance, self.num_items, self.shape)
                (self.tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
            self.arrays.clear()
        except BaseException:
            self._ctx.__exit__(*__import__("sys").exc_info())
            raise
        self._ctx.__exit__(exc_type, exc, tb)
        if exc_type is None:
            self.dataset = LoggedDataset.load(self.path)
        return False
