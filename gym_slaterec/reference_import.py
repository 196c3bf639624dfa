"""Import the reference implementation's logged datasets into the memory-mapped format.

The reference code saves a logged dataset with ``torch.save`` as a dict of
sessions, ``{session_id: {"slate": (T, k) int tensor, "clicks": (T, k) tensor}}``,
in one file or in a folder of chunk files. Its sessions hold the ``T`` turns the
logging policy played but not the reset interaction (the initial slate and its
clicks), which this package stores at turn index 0. An imported dataset
therefore has turn 0 filled with the environment's initial slate and no clicks,
and its provenance says ``has_initial_turn: false``; the GeMS and MF trainers
skip that turn for such datasets.

Files are read with torch's ``weights_only`` loader (no code runs); anything but
tensors in the expected layout is refused with the file and the problem named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from .logged_data import DatasetWriter, LoggedDataset
from .provenance import DATASET_KINDS, PathLike, check_writable, provenance, sha256_file
from .torch_files import load_pt, tensor_to_numpy

SESSION_KEYS = ("slate", "clicks")
PT_SUFFIXES = (".pt", ".pth")


def reference_files(source: Path) -> list[Path]:
    """The ``.pt`` file itself, or a folder's ``.pt`` chunk files in name order."""
    if not source.exists():
        raise FileNotFoundError(f"reference dataset not found: {source}")
    if source.is_file():
        if source.suffix not in PT_SUFFIXES:
            raise ValueError(f"{source} is not a .pt file; a reference dataset is a torch file or a folder of them")
        return [source]
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix in PT_SUFFIXES)
    if not files:
        raise ValueError(f"folder {source} holds no .pt chunk files")
    return files


def _session_order(keys: Iterable[Any]) -> list[Any]:
    keys = list(keys)
    try:
        return sorted(keys)
    except TypeError:  # mixed key types: keep the file's order
        return keys


def read_sessions(path: Path, slate_size: Optional[int], num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Slates (S, T, k) int64 and clicks (S, T, k) uint8 of one reference file, checked."""
    content = load_pt(path, "reference dataset")
    if isinstance(content, dict):
        sessions = [content[key] for key in _session_order(content)]
    elif isinstance(content, (list, tuple)):
        sessions = list(content)
    else:
        raise ValueError(f"{path} holds a {type(content).__name__}; a reference dataset is a dict of sessions "
                         "{id: {'slate': (T, k) tensor, 'clicks': (T, k) tensor}}")
    if not sessions:
        raise ValueError(f"{path} holds no sessions")
    slates, clicks = [], []
    for i, session in enumerate(sessions):
        where = f"{path}, session {i}"
        if not isinstance(session, dict) or any(key not in session for key in SESSION_KEYS):
            got = sorted(map(str, session)) if isinstance(session, dict) else type(session).__name__
            raise ValueError(f"{where}: expected a dict with keys {list(SESSION_KEYS)}, got {got}")
        s = tensor_to_numpy(session["slate"], path, f"{where} 'slate'")
        c = tensor_to_numpy(session["clicks"], path, f"{where} 'clicks'")
        if s.ndim != 2 or c.shape != s.shape:
            raise ValueError(f"{where}: 'slate' and 'clicks' must both be (turns, k); got {s.shape} and {c.shape}")
        if s.dtype.kind not in "iu":
            raise ValueError(f"{where}: 'slate' must hold integer item ids, got dtype {s.dtype}")
        slates.append(s)
        clicks.append(c)
    shapes = {s.shape for s in slates}
    if len(shapes) != 1:
        raise ValueError(f"{path}: sessions have different shapes {sorted(shapes)}")
    S = np.stack(slates).astype(np.int64)
    C = np.stack(clicks)
    if slate_size is not None and S.shape[2] != slate_size:
        raise ValueError(f"{path}: slates have {S.shape[2]} items, the environment's slate size is {slate_size}")
    if S.min() < 0 or S.max() >= num_items:
        bad = int(S[(S < 0) | (S >= num_items)].ravel()[0])
        raise ValueError(f"{path}: slates hold item id {bad}, outside [0, {num_items - 1}] for this environment")
    if not np.isin(C, (0, 1)).all():
        bad = C[~np.isin(C, (0, 1))].ravel()[0]
        raise ValueError(f"{path}: clicks must be 0 or 1, found {bad}")
    return S, C.astype(np.uint8)


def import_reference_dataset(
    source: PathLike,
    env_id: str,
    out: PathLike,
    item_embeddings: Optional[str] = None,
    overwrite: bool = False,
    progress: bool = True,
) -> LoggedDataset:
    """Convert a reference logged dataset (a ``.pt`` file or folder of chunks) into a
    :class:`LoggedDataset` at ``out``, recorded as played on ``env_id`` with
    ``item_embeddings`` (default: the environment's own matrix)."""
    from tqdm.auto import tqdm

    from .core.config import resolve_env_id
    from .progress import bar_can_draw
    from .rollouts import make_vector_env, recorded_env_kwargs

    source = Path(source)
    env_id = resolve_env_id(env_id)
    files = reference_files(source)
    check_writable(out, overwrite, DATASET_KINDS)  # before the (long) read
    sim = make_vector_env(env_id, 1, item_embeddings).simulator
    parts = []
    for f in tqdm(files, desc="read reference dataset", unit="file", disable=not (progress and bar_can_draw())):
        parts.append(read_sessions(f, sim.slate_size, sim.num_items))
    turns = {p[0].shape[1] for p in parts}
    if len(turns) != 1:
        raise ValueError(f"the chunk files of {source} have sessions of different lengths {sorted(turns)}")
    T = turns.pop()
    if T != sim.config.episode_length:
        raise ValueError(f"{source}: sessions have {T} turns, the environment's episodes {sim.config.episode_length}")
    episodes = sum(len(p[0]) for p in parts)
    prov = provenance(
        "logged_dataset",
        env_id=env_id,
        env_params={**sim.config.to_dict(), "item_embeddings": sim.catalogue.source},
        item_embeddings_fingerprint=sim.catalogue.fingerprint,
        inputs={f.name: sha256_file(f) for f in files},
        hyperparameters={"episodes": episodes},
        item_embeddings_source=sim.catalogue.source,
        env_kwargs=recorded_env_kwargs(item_embeddings, None),
        policy={"name": "unknown (imported)"},
        imported_from=str(source.resolve()),
        has_initial_turn=False,
        note="imported from the reference implementation's format, which does not log the reset interaction: "
             "turn 0 holds the environment's initial slate with no clicks",
    )
    k = sim.slate_size
    with DatasetWriter(out, episodes, T, k, sim.num_items, prov, overwrite) as writer:
        start = 0
        for S, C in parts:
            n = len(S)
            slates = np.empty((n, T + 1, k), dtype=np.int64)
            clicks = np.zeros((n, T + 1, k), dtype=np.uint8)
            slates[:, 0] = sim.initial_slate
            slates[:, 1:], clicks[:, 1:] = S, C
            writer.write(start, slates, clicks)
            start += n
    assert writer.dataset is not None
    return writer.dataset
