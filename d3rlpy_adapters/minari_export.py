"""Export a collected dataset as a Minari dataset (local, no network).

Each logged episode becomes a Minari episode:

- observations: the environment's observation ``{"slate": (k,) int64, "clicks": (k,) int8}``
  for turns ``0 .. T`` (``T + 1`` of them, as Minari expects);
- actions: the GeMS latent of each turn's (slate, clicks), normalised to ``[-1, 1]``
  (``Box(-1, 1, (latent_dim,))``), exactly the actions of the d3rlpy export;
- rewards (clicks per turn), terminations (last turn), truncations (never).

``out`` is a folder used as ``MINARI_DATASETS_PATH``; the dataset id is recorded in
``out/slaterec_export.json`` together with the provenance. Load it with::

    os.environ["MINARI_DATASETS_PATH"] = str(out)
    minari.load_dataset(dataset_id)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from gym_slaterec.provenance import MINARI_MARKER, PathLike, atomic_path, check_writable, write_json_atomic

from .export import DatasetLike, _load_gems, action_arrays, check_dataset, export_provenance, resolve_action_source

SIDECAR = MINARI_MARKER  # marks the folder as this package's export


def default_dataset_id(env_id: str, name: str) -> str:
    env = env_id.split("/")[-1].split("-")[0].lower()
    clean = "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-") or "dataset"
    return f"slaterec/{env}/{clean}-v0"


def export_minari(
    dataset: DatasetLike,
    gems: Any,
    out: PathLike,
    dataset_id: Optional[str] = None,
    overwrite: bool = False,
    actions: str = "auto",
    allow_partial: bool = False,
) -> tuple[Path, str]:
    """Write ``dataset`` as a Minari dataset under the folder ``out``; returns ``(out, dataset_id)``.

    ``actions`` as in :func:`d3rlpy_adapters.export.export_d3rlpy`."""
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    out = Path(out)
    check_writable(out, overwrite, "minari_dataset")
    ds = check_dataset(dataset)
    ckpt = _load_gems(gems, ds, allow_partial)
    dataset_id = dataset_id or default_dataset_id(ds.env_id, ds.path.name if ds.path else "dataset")
    source = resolve_action_source(ds, ckpt, actions)
    acts, clipped = action_arrays(ds, ckpt, source)
    rewards = ds.rewards()
    T, k = ds.turns, ds.slate_size
    obs_space = gym.spaces.Dict({
        "slate": gym.spaces.Box(0, ds.num_items - 1, (k,), np.int64),
        "clicks": gym.spaces.Box(0, 1, (k,), np.int8),
    })
    act_space = gym.spaces.Box(-1.0, 1.0, (ckpt.latent_dim,), np.float32)
    buffers = []
    for e in range(len(ds)):
        terminations = np.zeros(T, dtype=bool)
        terminations[-1] = True
        buffers.append(EpisodeBuffer(
            id=e,
            observations={"slate": np.asarray(ds.slates[e]).astype(np.int64),
                          "clicks": np.asarray(ds.clicks[e]).astype(np.int8)},
            actions=acts[e],
            rewards=rewards[e].astype(np.float64),
            terminations=terminations,
            truncations=np.zeros(T, dtype=bool),
            infos={},
        ))
    prov = export_provenance(
        "minari_dataset",
        ds,
        ckpt,
        dataset_id=dataset_id,
        action={"space": "continuous", "size": ckpt.latent_dim, "source": source, "clipped_fraction": clipped},
        episodes=len(ds),
    )
    old = os.environ.get("MINARI_DATASETS_PATH")
    with atomic_path(out, overwrite, directory=True, kind="minari_dataset") as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        os.environ["MINARI_DATASETS_PATH"] = str(tmp.resolve())  # Minari reads a relative path elsewhere
        try:
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id, buffer=buffers, env=None,
                observation_space=obs_space, action_space=act_space,
                algorithm_name=str((ds.provenance.get("policy") or {}).get("name")
                                   or (ds.provenance.get("policy") or {}).get("method")),
                description=(f"SlateRec {ds.env_id}: {len(ds)} episodes; actions are GeMS {str(ckpt.fingerprint)[:12]} "
                             "latents normalised to [-1, 1] (decode with that GeMS checkpoint)"),
                author="slaterec", data_format="hdf5",
            )
        finally:
            if old is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = old
        write_json_atomic(tmp / SIDECAR, prov)
    return out, dataset_id


def load_minari(path: PathLike):
    """Open a dataset written by :func:`export_minari` (returns the ``MinariDataset``)."""
    import json

    import minari

    p = Path(path)
    side = p / SIDECAR
    if not side.is_file():
        raise FileNotFoundError(f"{p} is not a SlateRec Minari export (no {SIDECAR})")
    dataset_id = json.loads(side.read_text())["dataset_id"]
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(p.resolve())
    try:
        return minari.load_dataset(dataset_id)
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
