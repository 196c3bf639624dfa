"""Item embeddings: generation (docs/method.md section 1), loading, validation, fingerprints."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional, Union

import numpy as np

#: Named matrices shipped with the package and the power each recipe raises entries to
#: before normalising. "focused" and "diffuse" follow the unpowered recipe that made
#: the matrices behind every published number (docs/method.md, section 1);
#: "peaked" is the paper's textual "focused" description (power 1.5, as in the
#: reference generator), a more concentrated environment kept for comparison.
RECIPE_POWER = {"focused": 1.0, "diffuse": 1.0, "peaked": 1.5}
EMBEDDING_KINDS = tuple(RECIPE_POWER)
#: Seeds of the shipped matrices (scripts/make_item_embeddings.py). The focused and
#: diffuse seeds were chosen so that the random, short-term-oracle and
#: epsilon-greedy returns of their three environments land inside the reference
#: intervals (scripts/choose_embedding_seeds.py, BENCHMARKS.md).
SHIPPED_SEEDS = {"focused": 2027, "diffuse": 2047, "peaked": 2023}
#: File formats accepted for a matrix given by path.
MATRIX_SUFFIXES = (".npy", ".pt", ".pth")

EmbeddingsLike = Union[str, Path, np.ndarray]


def generate_item_embeddings(
    kind: str,
    seed: int,
    num_items: int = 1000,
    num_topics: int = 10,
    topic_size: int = 2,
    power: Optional[float] = None,
) -> np.ndarray:
    """Draw an item embedding matrix (docs/method.md section 1; float32, unit rows).

    ``kind`` picks the recipe's power (``RECIPE_POWER``); ``power`` overrides it.
    """
    if kind not in EMBEDDING_KINDS:
        raise ValueError(f"unknown embedding kind {kind!r}; expected one of {EMBEDDING_KINDS}")
    for name, v in (("num_items", num_items), ("num_topics", num_topics), ("topic_size", topic_size)):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    p = RECIPE_POWER[kind] if power is None else float(power)
    if not np.isfinite(p) or p <= 0:
        raise ValueError(f"power must be a positive finite number, got {power!r}")
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.0, 1.0, size=(num_items, num_topics))
    w /= w.sum(axis=1, keepdims=True)
    c = np.abs(np.clip(0.4 * rng.standard_normal((num_items, num_topics, topic_size)), -1.0, 1.0))
    e = (w[:, :, None] * c).reshape(num_items, num_topics * topic_size)
    if p != 1.0:
        e = e**p
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return e.astype(np.float32)


def fingerprint(array: np.ndarray) -> str:
    """SHA-256 of the array's float32 C-contiguous bytes, prefixed with its shape."""
    a = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    h = hashlib.sha256()
    h.update(repr(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def validate_item_embeddings(emb: np.ndarray, topic_size: int | None = None, source: str = "item_embeddings") -> np.ndarray:
    """Check an N x d matrix for use by the simulator; returns it as float32.

    Requirements: 2-D, finite, non-negative, no all-zero row, and d divisible by
    ``topic_size`` when given. Rows need not be unit-norm (scores are divided by
    the largest row norm), but the shipped and reference matrices are.
    """
    a = np.asarray(emb)
    if a.ndim != 2:
        raise ValueError(f"{source} must be a 2-D array (num_items x dim), got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{source} must be non-empty, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"{source} must hold real numbers, got dtype {a.dtype}")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        bad = int(np.argwhere(~np.isfinite(a))[0][0])
        raise ValueError(f"{source} contain NaN or infinite values (first in row {bad})")
    if np.any(a < 0):
        bad = int(np.argwhere(a < 0)[0][0])
        raise ValueError(f"{source} must be non-negative (row {bad} has a negative entry)")
    if np.any(np.all(a == 0, axis=1)):
        bad = int(np.argwhere(np.all(a == 0, axis=1))[0][0])
        raise ValueError(f"{source}: row {bad} is all zeros; every item needs a non-zero embedding")
    if topic_size is not None and a.shape[1] % topic_size != 0:
        raise ValueError(
            f"{source} have dimension {a.shape[1]}, which is not a multiple of topic_size={topic_size}"
        )
    return a


def _package_file(name: str) -> Path:
    return Path(str(resources.files("gym_slaterec") / "data" / name))


def shipped_fingerprints() -> dict:
    """Fingerprints recorded when the shipped matrices were generated."""
    return json.loads(_package_file("item_embeddings.json").read_text())


def load_item_embeddings(spec: EmbeddingsLike, topic_size: int | None = None) -> tuple[np.ndarray, str]:
    """Resolve a shipped name (``EMBEDDING_KINDS``), a ``.npy`` or ``.pt`` path, or an array.

    A ``.pt``/``.pth`` file must hold one N x d tensor (the reference code's format);
    it is read without executing code. Returns the validated float32 matrix and a
    short description of its source.
    """
    if isinstance(spec, np.ndarray):
        return validate_item_embeddings(spec, topic_size, "item_embeddings (array)"), "array"
    if isinstance(spec, str) and spec in EMBEDDING_KINDS:
        path = _package_file(f"item_embeddings_{spec}.npy")
        emb = np.load(path)
        expected = shipped_fingerprints()[spec]["sha256"]
        if fingerprint(emb) != expected:
            raise RuntimeError(f"shipped {spec} item embeddings are corrupt (fingerprint mismatch): reinstall slaterec")
        return validate_item_embeddings(emb, topic_size, f"{spec} item embeddings"), spec
    path = _matrix_path(spec, ", an array or ")
    emb = load_matrix_file(path, "item_embeddings")
    return validate_item_embeddings(emb, topic_size, f"item_embeddings {path}"), str(path.resolve())


def _matrix_path(spec: Union[str, Path], choices: str = " or ") -> Path:
    """``spec`` as a path with a matrix suffix; anything else is refused naming the choices."""
    path = Path(spec)
    if path.suffix not in MATRIX_SUFFIXES:
        raise ValueError(
            f"item_embeddings must be one of {list(EMBEDDING_KINDS)}{choices}a "
            f"{'/'.join(MATRIX_SUFFIXES)} file; got {str(spec)!r}"
        )
    return path


def normalise_matrix_spec(spec: Union[str, Path]) -> str:
    """A shipped name as it is, or a matrix file's absolute path (checked to exist),
    for recording in a configuration that may be read from another directory."""
    spec = str(spec)
    if spec in EMBEDDING_KINDS:
        return spec
    path = _matrix_path(Path(spec).expanduser())
    if not path.is_file():
        raise FileNotFoundError(f"item_embeddings file not found: {path}")
    return str(path.resolve())


def load_matrix_file(path: Union[str, Path], what: str = "matrix") -> np.ndarray:
    """Read a 2-D matrix from a ``.npy`` file or a ``.pt``/``.pth`` file holding one tensor.

    Neither format may execute code: ``.npy`` without pickles, ``.pt`` with torch's
    ``weights_only`` loader. Anything else, or a file that is not a 2-D matrix,
    raises ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if path.suffix in (".pt", ".pth"):
        from ..torch_files import load_tensor

        arr = load_tensor(path, what)
    else:
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # corrupt, truncated or pickled content
            raise ValueError(f"cannot read {what} from {path}: {exc}") from exc
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{what} file {path} holds an archive of several arrays, not one matrix")
    if arr.ndim != 2:
        raise ValueError(f"{what} in {path} must be a 2-D matrix (num_items x dim), got shape {tuple(arr.shape)}")
    return arr


@dataclass(frozen=True)
class ItemCatalogue:
    """An embedding matrix and everything derived from it once."""

    embeddings: np.ndarray  # (N, d) float32
    topic_size: int
    source: str = "array"

    def __post_init__(self) -> None:
        emb = self.embeddings
        n, d = emb.shape
        k_topics = d // self.topic_size
        blocks = emb.reshape(n, k_topics, self.topic_size)
        topic_norms = np.linalg.norm(blocks, axis=2)
        object.__setattr__(self, "topic_norms", topic_norms)
        object.__setattr__(self, "item_topics", np.argmax(topic_norms, axis=1).astype(np.int64))
        object.__setattr__(self, "max_score", float(np.max(np.linalg.norm(emb, axis=1))))
        object.__setattr__(self, "fingerprint", fingerprint(emb))

    @property
    def num_items(self) -> int:
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    @property
    def num_topics(self) -> int:
        return self.dim // self.topic_size

    def initial_slate(self, slate_size: int) -> np.ndarray:
        """For topic 0, 1, ...: the item with the largest block norm in that topic.

        With fewer topics than ranks the next-best items per topic follow in the
        same round-robin order; an item is never listed twice.
        """
        order = np.argsort(-self.topic_norms, axis=0, kind="stable")  # (N, K) best first per topic
        slate: list[int] = []
        seen: set[int] = set()
        depth = 0
        while len(slate) < slate_size:
            for t in range(self.num_topics):
                item = int(order[depth, t])
                if item not in seen:
                    seen.add(item)
                    slate.append(item)
                    if len(slate) == slate_size:
                        break
            depth += 1
        return np.asarray(slate, dtype=np.int64)
