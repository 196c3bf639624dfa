"""Export a collected dataset to d3rlpy (``MDPDataset``) with GeMS latent actions.

Transitions: for every episode and turn ``t = 0 .. T-1``

- observation: the history window ending at turn ``t`` (:mod:`.window`);
- action: the GeMS encoder mean of the logged (slate, clicks) of turn ``t + 1``,
  normalised to ``[-1, 1]`` with the checkpoint's bounds (clipped there: the
  bounds cover the GeMS training data, other data can fall slightly outside);
- reward: the clicks of turn ``t + 1``; terminal at ``t = T - 1`` (the session ends).

The d3rlpy file (``.h5``, :meth:`d3rlpy.dataset.ReplayBuffer.dump`) gets a sidecar
``<file>.provenance.json`` that names the GeMS which produced the actions, the
source dataset, the window layout and the file's own SHA-256. :func:`load_d3rlpy`
refuses a file without its sidecar, a modified file, or another GeMS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from gym_slaterec.logged_data import DatasetError, LoggedDataset
from gym_slaterec.provenance import (
    ArtifactExistsError,
    PathLike,
    ProvenanceMismatchError,
    atomic_path,
    check_writable,
    provenance,
    sha256_file,
    write_json_atomic,
)

from .window import WindowLayout, episode_windows

EXPORT_FORMAT = "slaterec.d3rlpy/1"
DEFAULT_WINDOW = 10
DatasetLike = Union[LoggedDataset, str, Path]


def _is_our_sidecar(path: Path) -> bool:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("package") == "slaterec" and meta.get("format") == EXPORT_FORMAT


def sidecar_path(path: PathLike) -> Path:
    """The provenance JSON that accompanies an exported d3rlpy file."""
    p = Path(path)
    return p.with_name(p.name + ".provenance.json")


def check_dataset(dataset: DatasetLike) -> LoggedDataset:
    """Open a collected (or logged) dataset and refuse one that cannot be exported or trained on."""
    ds = dataset if isinstance(dataset, LoggedDataset) else LoggedDataset.load(dataset, verify=True)
    where = ds.path or "dataset"
    if not ds.env_id:
        raise DatasetError(f"{where} records no env_id in its provenance; cannot tell which environment it comes from")
    if ds.turns < 1 or len(ds) < 1:
        raise DatasetError(f"{where} is empty ({len(ds)} episodes x {ds.turns} turns)")
    for name, arr in ds.extras.items():
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(np.asarray(arr)).all():
            raise DatasetError(f"{where}: extra array {name!r} contains NaN or infinite values")
    if "rewards" in ds.extras:
        rewards = np.asarray(ds.extras["rewards"])
        if rewards.shape != (len(ds), ds.turns):
            raise DatasetError(f"{where}: rewards.npy has shape {rewards.shape}, expected {(len(ds), ds.turns)}")
        if not np.array_equal(rewards, ds.rewards()):
            raise DatasetError(f"{where}: stored rewards disagree with the clicks (reward = number of clicks)")
    return ds


def _load_gems(gems: Any, ds: LoggedDataset, allow_partial: bool = False):
    from gym_slaterec.gems import GeMSCheckpoint

    if isinstance(gems, GeMSCheckpoint):
        gems.check_env(ds.env_id, ds.item_embeddings_fingerprint)
        ckpt = gems
    else:
        ckpt = GeMSCheckpoint.load(
            gems, expect_env_id=ds.env_id, expect_item_embeddings_fingerprint=ds.item_embeddings_fingerprint,
            allow_partial=allow_partial,
        )
    if ckpt.num_items != ds.num_items or ckpt.slate_size != ds.slate_size:
        raise ProvenanceMismatchError(
            f"GeMS {ckpt.path} models {ckpt.num_items} items / slates of {ckpt.slate_size}, "
            f"the dataset has {ds.num_items} items / slates of {ds.slate_size}"
        )
    return ckpt


def latent_actions(ds: LoggedDataset, ckpt, chunk: int = 2048) -> tuple[np.ndarray, float]:
    """Normalised GeMS actions (E, T, latent_dim) of every logged turn, and the fraction clipped."""
    E, T, k = len(ds), ds.turns, ds.slate_size
    out = np.empty((E, T, ckpt.latent_dim), dtype=np.float32)
    clipped = 0
    for start in range(0, E, chunk):
        s = np.asarray(ds.slates[start : start + chunk, 1:]).reshape(-1, k)
        c = np.asarray(ds.clicks[start : start + chunk, 1:]).reshape(-1, k)
        a = ckpt.to_action(ckpt.encode_latent(s, c))
        clipped += int((np.abs(a) > 1).sum())
        out[start : start + chunk] = np.clip(a, -1.0, 1.0).reshape(-1, T, ckpt.latent_dim)
    return out, clipped / max(1, out.size)


ACTION_SOURCES = ("auto", "policy", "encoded")


def resolve_action_source(ds: LoggedDataset, ckpt, source: str = "auto") -> str:
    """Which actions to export: ``"policy"`` (the latents the collecting policy sent to
    this very GeMS, stored in ``actions.npy``) or ``"encoded"`` (the GeMS encoder mean of
    each logged slate and clicks). ``"auto"`` takes the policy's own when it acted through
    this GeMS, since re-encoding a decoded slate only approximates the latent that chose it."""
    if source not in ACTION_SOURCES:
        raise ValueError(f"actions must be one of {ACTION_SOURCES}, got {source!r}")
    acted_through = (ds.provenance.get("gems") or {}).get("fingerprint")
    has_own = "actions" in ds.extras and acted_through == ckpt.fingerprint
    if source == "policy" and not has_own:
        why = ("it stores no policy actions" if "actions" not in ds.extras else
               f"its policy acted through GeMS {str(acted_through)[:12]}, not {ckpt.fingerprint[:12]}")
        raise ProvenanceMismatchError(f"cannot export the policy's own actions of {ds.path}: {why}; "
                                      "use actions='encoded' (or 'auto')")
    if source == "auto":
        return "policy" if has_own else "encoded"
    return source


def policy_actions(ds: LoggedDataset, ckpt) -> tuple[np.ndarray, float]:
    """The collecting policy's own normalised GeMS actions (E, T, latent_dim), validated."""
    a = np.asarray(ds.extras["actions"], dtype=np.float32)
    if a.shape != (len(ds), ds.turns, ckpt.latent_dim):
        raise DatasetError(f"{ds.path}: actions.npy has shape {a.shape}, expected "
                           f"{(len(ds), ds.turns, ckpt.latent_dim)} for GeMS latent dimension {ckpt.latent_dim}")
    if not np.isfinite(a).all():
        raise DatasetError(f"{ds.path}: actions.npy contains NaN or infinite values")
    clipped = int((np.abs(a) > 1).sum())
    return np.clip(a, -1.0, 1.0), clipped / max(1, a.size)


def action_arrays(ds: LoggedDataset, ckpt, source: str) -> tuple[np.ndarray, float]:
    """Normalised actions (E, T, latent_dim) from ``source`` (``"policy"`` or ``"encoded"``),
    and the fraction clipped to [-1, 1]. Non-finite actions are refused, never written."""
    acts, clipped = policy_actions(ds, ckpt) if source == "policy" else latent_actions(ds, ckpt)
    if not np.isfinite(acts).all():
        raise ValueError(f"GeMS {ckpt.path} encodes {ds.path} into NaN or infinite latents; refusing to export them")
    return acts, clipped


def build_arrays(ds: LoggedDataset, ckpt, window: int, actions: str = "encoded") -> dict[str, np.ndarray]:
    """Flat transition arrays: observations (N, W*(2k+1)), actions (N, A), rewards (N,), terminals (N,).

    ``actions`` is ``"encoded"`` or ``"policy"`` (see :func:`resolve_action_source`)."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or not 1 <= window <= ds.turns:
        raise ValueError(f"window must be an integer in [1, {ds.turns}] (turns per episode), got {window!r}")
    E, T = len(ds), ds.turns
    obs = np.empty((E, T, WindowLayout(window, ds.slate_size, ds.num_items).size), dtype=WindowLayout(window, ds.slate_size, ds.num_items).dtype)
    for start, slates, clicks in ds.iter_chunks(2048):
        obs[start : start + len(slates)] = episode_windows(slates, clicks, window, ds.num_items)
    acts, clipped = action_arrays(ds, ckpt, actions)
    rewards = ds.rewards()
    terminals = np.zeros((E, T), dtype=np.float32)
    terminals[:, -1] = 1.0
    return {
        "observations": obs.reshape(E * T, -1),
        "actions": acts.reshape(E * T, -1),
        "rewards": rewards.reshape(E * T),
        "terminals": terminals.reshape(E * T),
        "clipped_fraction": np.float64(clipped),
    }


def to_mdp_dataset(arrays: dict[str, np.ndarray]):
    """A d3rlpy ``MDPDataset`` with an explicitly continuous action space."""
    from d3rlpy.constants import ActionSpace
    from d3rlpy.dataset import MDPDataset

    return MDPDataset(
        observations=arrays["observations"],
        actions=arrays["actions"],
        rewards=arrays["rewards"],
        terminals=arrays["terminals"],
        action_space=ActionSpace.CONTINUOUS,
        action_size=int(arrays["actions"].shape[1]),
    )


def benchmark_quality(provenance: dict) -> "str | None":
    """The benchmark quality a dataset was built as (``expert``, ...), from its provenance's
    ``benchmark`` record, or, for a merge of such datasets, their qualities joined
    (``medium`` + ``expert`` is D4RL's ``medium-expert``); None for any other dataset."""
    record = provenance.get("benchmark")
    if isinstance(record, dict) and record.get("quality"):
        return str(record["quality"])
    policy = provenance.get("policy") or {}
    parts = policy.get("parts") if isinstance(policy, dict) and policy.get("kind") == "merged" else None
    if parts:
        qualities = [p.get("quality") for p in parts]
        if all(qualities):
            return "-".join(qualities)
    return None


def export_provenance(kind: str, ds: Any, ckpt: Any, **extra: Any) -> dict[str, Any]:
    """Provenance of a dataset exported with GeMS actions: the source dataset's env and
    seed, and the fingerprints of the dataset and of the GeMS that encoded the actions."""
    return provenance(
        kind,
        env_id=ds.env_id,
        env_params=ds.provenance.get("env_params"),
        item_embeddings_fingerprint=ds.item_embeddings_fingerprint,
        inputs={"dataset": ds.fingerprint, "gems": ckpt.fingerprint},
        seed=ds.provenance.get("seed"),
        source_dataset={"path": str(ds.path) if ds.path else None, "fingerprint": ds.fingerprint,
                        "policy": ds.provenance.get("policy"), "kind": ds.provenance.get("kind"),
                        "quality": benchmark_quality(ds.provenance)},
        gems={"fingerprint": ckpt.fingerprint, "path": str(ckpt.path) if ckpt.path else None,
              "latent_dim": ckpt.latent_dim, "low": ckpt.low, "high": ckpt.high},
        **extra,
    )


def export_d3rlpy(
    dataset: DatasetLike,
    gems: Any,
    out: PathLike,
    window: int = DEFAULT_WINDOW,
    overwrite: bool = False,
    actions: str = "auto",
    allow_partial: bool = False,
) -> Path:
    """Write ``dataset`` as a d3rlpy file at ``out`` (plus its provenance sidecar); returns ``out``.

    ``actions``: ``"auto"`` (default), ``"policy"`` or ``"encoded"``; see :func:`resolve_action_source`.
    ``allow_partial`` accepts a GeMS checkpoint whose training was interrupted."""
    out = Path(out)
    side = sidecar_path(out)
    check_writable(out, overwrite, "d3rlpy_dataset")
    check_writable(side, overwrite)
    if side.exists() and not _is_our_sidecar(side):  # --overwrite replaces our sidecar only, never a user's file
        raise ArtifactExistsError(f"{side} is not a provenance sidecar written by SlateRec; refusing to replace it even "
                                  "with --overwrite (move it away or choose another --out)")
    ds = check_dataset(dataset)
    ckpt = _load_gems(gems, ds, allow_partial)
    source = resolve_action_source(ds, ckpt, actions)
    arrays = build_arrays(ds, ckpt, window, source)
    mdp = to_mdp_dataset(arrays)
    layout = WindowLayout(window, ds.slate_size, ds.num_items)
    with atomic_path(out, overwrite, kind="d3rlpy_dataset") as tmp:
        with open(tmp, "w+b") as f:
            mdp.dump(f)
    prov = export_provenance(
        "d3rlpy_dataset",
        ds,
        ckpt,
        hyperparameters={"window": window},
        format=EXPORT_FORMAT,
        env_kwargs=ds.provenance.get("env_kwargs") or {},
        file_sha256=sha256_file(out),
        observation=layout.describe(),
        action={"space": "continuous", "size": ckpt.latent_dim, "low": -1.0, "high": 1.0,
                "source": source,
                "meaning": ("the collecting policy's own GeMS action" if source == "policy" else
                            "GeMS encoder mean of the logged (slate, clicks), (z - center) / scale"),
                "clipped_fraction": float(arrays["clipped_fraction"])},
        episodes=len(ds),
        turns=ds.turns,
        transitions=int(len(arrays["rewards"])),
        slate_size=ds.slate_size,
        num_items=ds.num_items,
        mean_return=float(arrays["rewards"].reshape(len(ds), -1).sum(1).mean()),
    )
    write_json_atomic(side, prov, overwrite=True)
    return out


class OfflineData:
    """An exported d3rlpy dataset with its provenance (see :func:`load_d3rlpy`)."""

    def __init__(self, path: Path, replay_buffer: Any, meta: dict[str, Any], sampler: Any = None) -> None:
        self.path = path
        self.buffer = replay_buffer
        self.meta = meta
        self.sampler = sampler

    def sample_batch(self, batch_size: int, returns_to_go: bool = False) -> Any:
        """A mini-batch of transitions: d3rlpy's, drawn by the vectorised sampler (the same batches)
        unless the algorithm needs each transition's returns-to-go, which only d3rlpy's picker gives."""
        if self.sampler is None or returns_to_go:
            return self.buffer.sample_transition_batch(batch_size)
        return self.sampler.sample(batch_size)

    @property
    def env_id(self) -> str:
        return self.meta["env_id"]

    @property
    def gems_fingerprint(self) -> str:
        return self.meta["gems"]["fingerprint"]

    @property
    def layout(self) -> WindowLayout:
        o = self.meta["observation"]
        return WindowLayout(o["window"], o["slate_size"], o["num_items"])

    @property
    def action_size(self) -> int:
        return int(self.meta["action"]["size"])


def read_sidecar(path: PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"exported dataset not found: {p}")
    side = sidecar_path(p)
    if not side.is_file():
        raise DatasetError(
            f"{p} has no provenance sidecar {side.name}: cannot tell which GeMS produced its actions; "
            "re-export it with `slaterec export`"
        )
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{side} is corrupt: {exc}") from exc
    missing = [k for k in ("format", "env_id", "gems", "observation", "action", "file_sha256") if k not in meta]
    if missing or meta.get("format") != EXPORT_FORMAT:
        raise DatasetError(f"{side} is not a SlateRec d3rlpy export sidecar (format {meta.get('format')!r}, missing {missing})")
    return meta


def require_gems(meta: dict[str, Any], gems_fingerprint: Optional[str], where: str = "dataset") -> None:
    """Refuse a GeMS other than the one that produced the dataset's actions."""
    expected = meta["gems"]["fingerprint"]
    if gems_fingerprint is not None and gems_fingerprint != expected:
        raise ProvenanceMismatchError(
            f"{where} has actions in the latent space of GeMS {str(expected)[:12]} "
            f"({meta['gems'].get('path')}), but GeMS {gems_fingerprint[:12]} was given; "
            "actions of one GeMS mean nothing to another: export the dataset again with this GeMS"
        )


def load_d3rlpy(path: PathLike, gems_fingerprint: Optional[str] = None, verify: bool = True) -> OfflineData:
    """Open an exported d3rlpy file; refuse a changed file, bad values or another GeMS."""
    from d3rlpy.constants import ActionSpace
    from d3rlpy.dataset import InfiniteBuffer, ReplayBuffer

    from .sampler import read_d3rlpy_file

    p = Path(path)
    meta = read_sidecar(p)
    require_gems(meta, gems_fingerprint, str(p))
    if verify and sha256_file(p) != meta["file_sha256"]:
        raise DatasetError(f"{p} does not match the SHA-256 recorded in its sidecar (modified or corrupt)")
    try:
        sampler = read_d3rlpy_file(p)  # one array per column (d3rlpy's reader makes one per episode)
    except Exception as exc:
        raise DatasetError(f"cannot read d3rlpy dataset {p}: {exc}") from exc
    layout = WindowLayout(**{k: meta["observation"][k] for k in ("window", "slate_size", "num_items")})
    A = int(meta["action"]["size"])
    obs, actions = sampler.observations, sampler.actions
    if obs.ndim != 2 or obs.shape[1] != layout.size:
        raise DatasetError(f"{p}: observations must be (turns, {layout.size}) arrays; got rows of shape {obs.shape[1:]}")
    if actions.shape[1:] != (A,):
        raise DatasetError(f"{p}: actions must have {A} dimensions; got shape {actions.shape[1:]}")
    if not (np.isfinite(actions).all() and np.isfinite(sampler.rewards).all()):
        raise DatasetError(f"{p} contains NaN or infinite actions or rewards")
    if np.abs(actions).max(initial=0) > 1.0 + 1e-6:
        raise DatasetError(f"{p}: actions must lie in [-1, 1]")
    buffer = ReplayBuffer(InfiniteBuffer(), episodes=sampler.episodes(), action_space=ActionSpace.CONTINUOUS, action_size=A)
    return OfflineData(p, buffer, meta, sampler)
