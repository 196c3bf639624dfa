"""Checkpoints and replay buffers of the SB3-based agents, read without unpickling.

SB3's own ``save``/``load`` keep spaces, schedules and classes as cloudpickled entries
and its replay buffers as pickles: reading such a file runs whatever code it holds. A
SlateRec checkpoint holds data only:

- ``NAME.zip``: ``slaterec.json`` (format, model class, counters) and ``state.pt``
  (the state dicts of :meth:`get_parameters` and the torch variables such as the
  entropy coefficient), read with ``torch.load(weights_only=True)``; the model itself
  is rebuilt from the run's own configuration before the weights are loaded into it;
- ``last_replay_buffer.npz``: the buffer's arrays, read with ``allow_pickle=False``.

Files in SB3's pickle-based format (runs written before this format) are refused with
a message naming ``slaterec convert-run RUN --trust``, which rewrites a trusted run in
this format (:func:`convert_run`).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any, Union

import numpy as np

FORMAT = "slaterec.sb3_checkpoint/1"
BUFFER_FORMAT = "slaterec.replay_buffer/1"
#: what a refused pickle-based file tells the user
CONVERT_HINT = ("it may run code when read, so SlateRec does not read it; if you trust where the run came from, "
                "convert it with: slaterec convert-run {run} --trust")


class LegacyFormatError(ValueError):
    """A file in a pickle-based format that SlateRec refuses to read."""


def _run_of(path: Path) -> Path:
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def legacy_message(path: Path, what: str) -> str:
    return f"{path} is {what} in a pickle-based format: " + CONVERT_HINT.format(run=_run_of(Path(path)))


def _scalars(model: Any) -> dict[str, Any]:
    out = {"num_timesteps": int(model.num_timesteps), "n_updates": int(getattr(model, "_n_updates", 0)),
           "episode_num": int(getattr(model, "_episode_num", 0))}
    if hasattr(model, "exploration_rate"):
        out["exploration_rate"] = float(model.exploration_rate)
    return out


def save_checkpoint(model: Any, path: Union[str, Path]) -> None:
    """Write ``model``'s weights, optimiser states and counters to ``path`` (a zip, no pickle)."""
    import torch
    from stable_baselines3.common.save_util import recursive_getattr

    _, variable_names = model._get_torch_save_params()
    variables = {name: recursive_getattr(model, name).detach().cpu() for name in variable_names}
    buf = io.BytesIO()
    torch.save({"params": model.get_parameters(), "variables": variables}, buf)
    meta = {"format": FORMAT, "class": type(model).__name__, **_scalars(model)}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("slaterec.json", json.dumps(meta, indent=2))
        z.writestr("state.pt", buf.getvalue())


def read_checkpoint(path: Union[str, Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(meta, state) of a SlateRec checkpoint; a pickle-based SB3 file is refused unread."""
    import torch

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "slaterec.json" not in names:
                if "data" in names:
                    raise LegacyFormatError(legacy_message(path, "an SB3 checkpoint"))
                raise ValueError(f"checkpoint {path} is damaged or not a SlateRec checkpoint (no slaterec.json)")
            meta = json.loads(z.read("slaterec.json"))
            raw = z.read("state.pt")
    except (zipfile.BadZipFile, OSError, KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"checkpoint {path} is damaged or not a SlateRec checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} has format {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                         f"expected {FORMAT}")
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and plain containers
        raise ValueError(f"checkpoint {path} is damaged or holds more than weights ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or not isinstance(state.get("params"), dict) or not isinstance(state.get("variables"), dict):
        raise ValueError(f"checkpoint {path} is damaged: state.pt lacks params/variables")
    return meta, state


def load_checkpoint(model: Any, path: Union[str, Path]) -> Any:
    """Load the checkpoint at ``path`` into ``model`` (built from the run's configuration)."""
    import torch
    from stable_baselines3.common.save_util import recursive_getattr

    meta, state = read_checkpoint(path)
    if meta.get("class") != type(model).__name__:
        raise ValueError(f"checkpoint {path} holds a {meta.get('class')}, not a {type(model).__name__}")
    try:
        model.set_parameters(state["params"], exact_match=True, device=model.device)
        for name, value in state["variables"].items():
            target = recursive_getattr(model, name)
            with torch.no_grad():
                target.copy_(value.to(target.device))
    except (KeyError, RuntimeError, ValueError, AttributeError) as exc:
        raise ValueError(f"checkpoint {path} does not fit the run's model ({type(exc).__name__}: {exc})") from exc
    model.num_timesteps = int(meta.get("num_timesteps", 0))
    model._n_updates = int(meta.get("n_updates", 0))
    model._episode_num = int(meta.get("episode_num", 0))
    if "exploration_rate" in meta and hasattr(model, "exploration_rate"):
        model.exploration_rate = float(meta["exploration_rate"])
    return model


# ------------------------------------------------------------------ replay buffers
_BUFFER_ARRAYS = ("actions", "rewards", "dones", "timeouts")


def _buffer_arrays(buffer: Any) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for part in ("observations", "next_observations"):
        value = getattr(buffer, part, None)
        if isinstance(value, dict):
            out.update({f"{part}/{k}": v for k, v in value.items()})
        elif value is not None:
            out[part] = value
    out.update({k: getattr(buffer, k) for k in _BUFFER_ARRAYS})
    return out


def save_replay_buffer(buffer: Any, path: Union[str, Path]) -> None:
    """The filled part of an SB3 replay buffer as an ``.npz`` (no pickle)."""
    size = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {k: v[:size] for k, v in _buffer_arrays(buffer).items()}
    meta = json.dumps({"format": BUFFER_FORMAT, "pos": int(buffer.pos), "full": bool(buffer.full),
                       "buffer_size": int(buffer.buffer_size), "n_envs": int(buffer.n_envs)})
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.frombuffer(meta.encode(), dtype=np.uint8), **arrays)


def load_replay_buffer(buffer: Any, path: Union[str, Path]) -> None:
    """Fill the freshly built ``buffer`` from an ``.npz`` written by :func:`save_replay_buffer`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            stored = {k: data[k] for k in data.files if k != "__meta__"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"replay buffer {path} is damaged ({type(exc).__name__}: {exc}); delete it to resume with an "
                         "empty buffer, or start a new --out") from exc
    want = _buffer_arrays(buffer)
    if meta.get("format") != BUFFER_FORMAT or set(stored) != set(want):
        raise ValueError(f"replay buffer {path} does not fit the run's buffer (arrays {sorted(stored)})")
    if meta.get("buffer_size") != buffer.buffer_size or meta.get("n_envs") != buffer.n_envs:
        raise ValueError(f"replay buffer {path} holds {meta.get('buffer_size')} x {meta.get('n_envs')} slots, the run's "
                         f"buffer {buffer.buffer_size} x {buffer.n_envs}")
    size = buffer.buffer_size if meta["full"] else int(meta["pos"])
    for key, target in want.items():
        value = stored[key]
        if value.shape != (size,) + target.shape[1:]:
            raise ValueError(f"replay buffer {path}: {key} has shape {value.shape}, expected {(size,) + target.shape[1:]}")
        target[:size] = value
    buffer.pos, buffer.full = int(meta["pos"]) % buffer.buffer_size, bool(meta["full"])


# ------------------------------------------------------------------ conversion of trusted old runs
def is_legacy_checkpoint(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
    return "slaterec.json" not in names and "data" in names


def convert_run(run_dir: Union[str, Path]) -> list[str]:
    """Rewrite a trusted run's pickle-based files in the pickle-free formats (``slaterec
    convert-run --trust``): SB3 checkpoints and SB3's pickled replay buffer. Reading the old
    files unpickles them, so only runs of trusted origin may be given. Returns what changed."""
    from .methods import model_class
    from .runs import LEGACY_REPLAY_FILE, REPLAY_FILE, read_run
    from gym_slaterec.provenance import atomic_path

    run_dir, cfg, _ = read_run(run_dir)
    cls = model_class(cfg)
    changed: list[str] = []
    ck = run_dir / "checkpoints"
    last = None
    for path in sorted(ck.glob("*.zip")) if ck.is_dir() else []:
        if not is_legacy_checkpoint(path):
            continue
        model = cls.load(path, device="cpu")  # unpickles: the caller vouched for the run (--trust)
        with atomic_path(path, overwrite=True) as tmp:
            save_checkpoint(model, tmp)
        changed.append(str(path))
        if path.stem == "last":
            last = model
    legacy = ck / LEGACY_REPLAY_FILE
    if legacy.is_file():
        if zipfile.is_zipfile(legacy):  # the episode SAC's buffer: already an npz, only the name changes
            legacy.replace(ck / REPLAY_FILE)
        else:
            if last is None:
                last = cls.load(ck / "last.zip", device="cpu") if is_legacy_checkpoint(ck / "last.zip") else None
            if last is None or not hasattr(last, "load_replay_buffer"):
                raise ValueError(f"{legacy} cannot be converted without the run's pickle-based last.zip")
            last.load_replay_buffer(str(legacy))  # unpickles (trusted)
            with atomic_path(ck / REPLAY_FILE, overwrite=True) as tmp:
                save_replay_buffer(last.replay_buffer, tmp)
            legacy.unlink()
        changed.append(str(legacy))
    return changed
