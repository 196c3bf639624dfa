"""Datasets made of other datasets (``slaterec merge-datasets``): D4RL's medium-expert is the
medium and the expert datasets together.

Inputs must come from the same environment (id, parameters, item matrix) and have the same
episode shape. The collecting policies' own GeMS actions are kept only when every input has
them from the same GeMS (else the export encodes the slates, and the merge says so). The
provenance lists each part: its path, fingerprint, episode count and collecting policy.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from gym_slaterec.logged_data import DatasetWriter, LoggedDataset
from gym_slaterec.progress import progress as progress_bar
from gym_slaterec.provenance import PathLike, ProvenanceMismatchError, check_writable, provenance

from .export import benchmark_quality, check_dataset

#: what must agree between the parts of a merged dataset
_SAME = ("env_id", "env_params", "item_embeddings_fingerprint")


def merge_datasets(inputs: Sequence[PathLike], out: PathLike, overwrite: bool = False,
                   progress: bool = True) -> tuple[LoggedDataset, list[str]]:
    """Write the episodes of ``inputs``, in order, as one dataset ``out``; returns it and notes
    (e.g. that the policies' actions were left out)."""
    if len(inputs) < 2:
        raise ValueError("merge-datasets needs at least two datasets")
    paths = [Path(p).resolve() for p in inputs]
    if len(set(paths)) != len(paths):
        raise ValueError("merge-datasets: a dataset is named twice")
    check_writable(out, overwrite, ("collected_dataset",))
    parts = [check_dataset(p) for p in paths]
    first = parts[0]
    for ds in parts[1:]:
        for key in _SAME:
            if ds.provenance.get(key) != first.provenance.get(key):
                raise ProvenanceMismatchError(f"{ds.path} and {first.path} differ in {key} ({ds.provenance.get(key)!r} "
                                              f"vs {first.provenance.get(key)!r}): their episodes do not belong together")
        if (ds.turns, ds.slate_size, ds.num_items) != (first.turns, first.slate_size, first.num_items):
            raise ProvenanceMismatchError(f"{ds.path} holds episodes of {ds.turns} turns x {ds.slate_size} items of "
                                          f"{ds.num_items}, {first.path} of {first.turns} x {first.slate_size} of "
                                          f"{first.num_items}")
    notes: list[str] = []
    extras = {}
    for name, arr in first.extras.items():
        if all(name in ds.extras and ds.extras[name].shape[1:] == arr.shape[1:] for ds in parts):
            extras[name] = (tuple(arr.shape[1:]), arr.dtype)
    gems = [(ds.provenance.get("gems") or {}).get("fingerprint") for ds in parts]
    if "actions" in extras and (None in gems or len(set(gems)) > 1):
        del extras["actions"]
        notes.append("the policies' own GeMS actions are left out: the parts did not all act through one GeMS "
                     "(export encodes the slates)")
    elif "actions" in first.extras and "actions" not in extras:
        notes.append("the policies' own GeMS actions are left out: not every part stores them")
    total = sum(len(ds) for ds in parts)
    src = first.provenance
    prov = provenance(
        "collected_dataset", env_id=src.get("env_id"), env_params=src.get("env_params"),
        item_embeddings_fingerprint=src.get("item_embeddings_fingerprint"),
        item_embeddings_source=src.get("item_embeddings_source"), episode_length=first.turns,
        env_kwargs=src.get("env_kwargs") or {}, seed=None, hyperparameters={"episodes": total},
        inputs={f"part{i}": ds.fingerprint for i, ds in enumerate(parts)},
        policy={"kind": "merged", "parts": [{"path": str(ds.path), "fingerprint": ds.fingerprint, "episodes": len(ds),
                                             "policy": ds.provenance.get("policy"),
                                             "quality": benchmark_quality(ds.provenance)} for ds in parts]},
        gems=src.get("gems") if "actions" in extras else None,
        users=[ds.provenance.get("users") for ds in parts],
    )
    bar = progress_bar(progress, total=total, unit="ep", desc="merge")
    with contextlib.closing(bar), DatasetWriter(out, total, first.turns, first.slate_size, first.num_items, prov,
                                                overwrite, extras) as writer:
        start = 0
        for ds in parts:
            for a in range(0, len(ds), 4096):
                e = min(a + 4096, len(ds))
                writer.write(start + a, np.asarray(ds.slates[a:e]), np.asarray(ds.clicks[a:e]),
                             **{name: np.asarray(ds.extras[name][a:e]) for name in extras})
                bar.update(e - a)
            start += len(ds)
    assert writer.dataset is not None
    return writer.dataset, notes


def describe_parts(ds: LoggedDataset) -> Optional[list[dict[str, Any]]]:
    """The parts of a merged dataset (None for a dataset collected in one go)."""
    pol = ds.provenance.get("policy") or {}
    return pol.get("parts") if pol.get("kind") == "merged" else None
