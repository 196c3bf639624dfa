"""How far apart the item tables of two artifacts are (``slaterec drift A B``).

An item table is read from a GeMS checkpoint, an MF file, a plain ``.npy``/``.pt``
matrix, an environment (its id or a shipped matrix name: the true item embeddings),
or a run directory (the actor's belief item table; an offline run's policy encoder's). Two tables of the same items are
compared by: the mean cosine between an item's two vectors (raw, then with each table
centred); the centred one after the orthogonal Procrustes rotation that best aligns the
tables (tables learnt separately live in arbitrary rotations, so only this one says
whether they carry the same geometry);
the Procrustes disparity (1 - R^2 of the aligned, centred, scaled tables); and the
overlap of each item's 10 nearest neighbours (rotation-free). When B is a topic matrix
(non-negative, topics of ``topic_size`` = 2 dimensions: an environment's), also the share of
each item's 10 nearest neighbours in A that have its main topic in B (chance: 1 / topics):
whether A carries the topic structure at all (the reference code's MF tables do not).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def item_table(spec: str) -> tuple[np.ndarray, str]:
    """The (N, d) item table named by ``spec`` and a description of where it came from."""
    path = Path(spec)
    if path.is_dir():
        prov = json.loads((path / "provenance.json").read_text()) if (path / "provenance.json").is_file() else {}
        if prov.get("kind") == "offline_run":
            from d3rlpy_adapters.offline import load_offline_policy, policy_belief

            belief = policy_belief(load_offline_policy(path).algo)
            return belief.items.weight.detach().numpy().astype(np.float64), f"policy encoder of offline run {path}"
        if prov.get("kind") != "sb3_run":
            raise ValueError(f"{path} is not a run directory (no online or offline run's provenance.json)")
        from sb3_slate.runs import load_agent

        model = load_agent(path, "best", warn_unfinished=False).model
        if hasattr(model, "actor") and hasattr(model.actor, "belief"):  # the episode-replay SAC
            weight = model.actor.belief.items.weight
        elif hasattr(model, "belief"):  # the paper-regime REINFORCE
            weight = model.belief.items.weight
        else:
            weight = model.policy.actor.features_extractor.items.weight
        return weight.detach().numpy().astype(np.float64), f"actor belief of run {path}"
    if path.is_file():
        if path.suffix in (".pt", ".pth"):
            from gym_slaterec.gems import GeMSCheckpoint

            try:
                ckpt = GeMSCheckpoint.load(path, allow_env_mismatch=True, allow_partial=True)
                return ckpt.item_embedding_table().astype(np.float64), f"GeMS {path}"
            except ValueError:
                pass  # a plain tensor file
        from gym_slaterec.mf import MFEmbeddings

        mf = MFEmbeddings.load(path)
        return mf.embeddings.astype(np.float64), f"MF/matrix {path}"
    from gym_slaterec.core.config import ENV_PRESETS, ENV_ALIASES
    from gym_slaterec.core.embeddings import EMBEDDING_KINDS, load_item_embeddings
    from gym_slaterec.rollouts import make_vector_env

    if spec in EMBEDDING_KINDS:
        return load_item_embeddings(spec)[0].astype(np.float64), f"shipped matrix {spec!r}"
    if f"SlateRec/{spec}" in ENV_PRESETS or spec in ENV_PRESETS or spec.lower() in ENV_ALIASES:
        sim = make_vector_env(spec, 1).simulator
        return sim.items.astype(np.float64), f"environment {sim.config.item_embeddings!r} matrix"
    raise FileNotFoundError(f"{spec!r} is neither a file, a run directory, an environment nor a shipped matrix name")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12)


def _neighbours(x: np.ndarray, k: int) -> np.ndarray:
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = xn @ xn.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1)[:, :k]


def main_topics(table: np.ndarray, topic_size: int = 2) -> "np.ndarray | None":
    """Each item's main topic (its largest block of ``topic_size`` dimensions) in a topic
    matrix, or None when ``table`` is not one (negative entries, or no whole blocks)."""
    if table.shape[1] % topic_size or (table < 0).any():
        return None
    return (table.reshape(len(table), -1, topic_size) ** 2).sum(axis=2).argmax(axis=1)


def topic_agreement(table: np.ndarray, topics: np.ndarray, k: int = 10) -> float:
    """Share of each item's ``k`` nearest neighbours in ``table`` (cosine) with its main topic."""
    return float((topics[_neighbours(table, k)] == topics[:, None]).mean())


def compare(a: np.ndarray, b: np.ndarray, k: int = 10) -> dict[str, Any]:
    """Drift measures between two item tables of the same items (dimensions may differ)."""
    from scipy.linalg import orthogonal_procrustes

    if a.shape[0] != b.shape[0]:
        raise ValueError(f"the tables describe different catalogues: {a.shape[0]} and {b.shape[0]} items")
    d = max(a.shape[1], b.shape[1])
    a = np.pad(a, ((0, 0), (0, d - a.shape[1])))
    b = np.pad(b, ((0, 0), (0, d - b.shape[1])))
    ca, cb = a - a.mean(axis=0), b - b.mean(axis=0)
    ca /= np.linalg.norm(ca)
    cb /= np.linalg.norm(cb)
    rotation, _ = orthogonal_procrustes(ca, cb)
    aligned = ca @ rotation
    same_shape = a.shape == b.shape
    na, nb = _neighbours(a, k), _neighbours(b, k)
    overlap = np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb)])
    return {
        "items": int(a.shape[0]),
        "mean_cosine": float(_cosines(a, b).mean()) if same_shape else None,
        "mean_cosine_centred": float(_cosines(ca, cb).mean()),
        "mean_cosine_aligned": float(_cosines(aligned, cb).mean()),
        "procrustes_disparity": float(((aligned - cb) ** 2).sum()),
        f"neighbour_overlap_at_{k}": float(overlap),
        **_topic_measures(a, b, k),
    }


def _topic_measures(a: np.ndarray, b: np.ndarray, k: int) -> dict[str, float]:
    topics = main_topics(b)
    if topics is None:
        return {}
    return {f"topic_agreement_at_{k}_a": topic_agreement(a, topics, k),
            f"topic_agreement_at_{k}_b": topic_agreement(b, topics, k),
            "topic_agreement_chance": float(1.0 / (b.shape[1] // 2))}
