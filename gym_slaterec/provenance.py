"""Provenance records and safe (atomic, no-silent-overwrite) artifact writes.

Every artifact of the package (logged dataset, MF embeddings, GeMS checkpoint,
agent run, offline dataset) carries a provenance dict built with
:func:`provenance` and is written through :func:`atomic_path` or
:func:`write_json_atomic`, which refuse to replace an existing path unless asked.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np

PathLike = Union[str, os.PathLike]


class ArtifactExistsError(FileExistsError):
    """Raised when writing would replace an existing artifact without ``overwrite``."""


class ProvenanceMismatchError(ValueError):
    """Raised when artifacts that do not belong together are combined."""


class PartialArtifactError(ValueError):
    """Raised when an artifact whose job was interrupted is used without ``allow_partial``."""


def package_version() -> str:
    from . import __version__

    return __version__


def sha256_array(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and C-order bytes."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    if a.size:  # memoryview.cast rejects shapes with a zero
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def sha256_file(path: PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


#: How this version computes what rounds differently between versions of the package (the same
#: functions, other orders of summation), recorded in every artifact's runtime: a retraining that
#: must repeat an earlier run bit for bit (medium-replay, rebuilt from a shipped policy) computes
#: as that run did (:func:`arithmetic_of`). ``belief_unroll``: how the paper regime's agents
#: unroll their beliefs on a CPU, ``slot_projections`` (input projections from per-slot item
#: tables) or ``inputs`` (a product with the turns' concatenated inputs, before 2026-12-04).
_ARITHMETIC: dict[str, str] = {"belief_unroll": "slot_projections"}
#: what artifacts written before the record existed computed
ARITHMETIC_BEFORE: dict[str, str] = {"belief_unroll": "inputs"}


def arithmetic() -> dict[str, str]:
    """How computations round now (:data:`_ARITHMETIC`, or an :func:`arithmetic_of` block's)."""
    return dict(_ARITHMETIC)


@contextlib.contextmanager
def arithmetic_of(record: Optional[dict[str, Any]]) -> Iterator[None]:
    """Compute as an artifact's ``runtime["arithmetic"]`` ``record`` says inside the block (None or
    absent keys: as before the record existed)."""
    wanted = {**ARITHMETIC_BEFORE, **(record or {})}
    unknown = {k: v for k, v in wanted.items() if k not in ARITHMETIC_BEFORE or v not in ("slot_projections", "inputs")}
    if unknown:
        raise ValueError(f"arithmetic {unknown} is not one this version computes (belief_unroll: slot_projections "
                         "or inputs)")
    previous = dict(_ARITHMETIC)
    _ARITHMETIC.update(wanted)
    try:
        yield
    finally:
        _ARITHMETIC.clear()
        _ARITHMETIC.update(previous)


def runtime_record() -> dict[str, Any]:
    """The command line, the git commit of the package's checkout (if any), the versions of the
    libraries that shape results and how this version rounds (:func:`arithmetic`)."""
    return {**_static_runtime(), "arithmetic": arithmetic()}


@functools.lru_cache(maxsize=1)
def _static_runtime() -> dict[str, Any]:
    import platform
    import subprocess
    import sys
    from importlib.metadata import PackageNotFoundError, version

    libraries = {}
    for name in ("numpy", "scipy", "torch", "gymnasium", "stable-baselines3", "sb3-contrib", "d3rlpy"):
        try:
            libraries[name] = version(name)
        except PackageNotFoundError:
            pass
    commit = None
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            commit = out.stdout.strip() + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return {"command": list(sys.argv), "git_commit": commit, "python": platform.python_version(),
            "libraries": libraries, "machine": machine_record()}


def machine_record() -> dict[str, Any]:
    """The processor the work ran on: wall times (and float rounding) depend on it, and a CPU's
    marketing name alone ("AMD EPYC") does not tell its generations apart, so the family and model
    numbers, clock and vector extensions are kept too (Linux; elsewhere what ``platform`` knows)."""
    import platform

    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    record: dict[str, Any] = {"cpu": info.get("model name") or platform.processor() or platform.machine(),
                              "arch": platform.machine(), "cores": os.cpu_count()}
    if "cpu family" in info and "model" in info:
        record["family_model"] = f"{info['cpu family']}/{info['model']}"
    if "cpu MHz" in info:
        record["mhz"] = round(float(info["cpu MHz"]))
    if info.get("vendor_id"):
        record["vendor"] = info["vendor_id"]  # MKL rounds alike only within a vendor (core.portable.cpu_vendor)
    vector = [x for x in ("avx512f", "avx2", "asimd", "sve") if x in flags]
    if vector:
        record["vector"] = vector[0]
    return record


def machine_label(runtime: Optional[dict[str, Any]]) -> str:
    """A short name of the machine of an artifact's ``runtime`` record ("" when not recorded):
    ``AMD EPYC 23/1 2.0 GHz, 2 cores``."""
    machine = (runtime or {}).get("machine") or {}
    if not machine:
        return ""
    parts = [str(machine.get("cpu", "?"))]
    if machine.get("family_model"):
        parts.append(str(machine["family_model"]))
    if machine.get("mhz"):
        parts.append(f"{machine['mhz'] / 1000:.1f} GHz")
    return " ".join(parts) + (f", {machine['cores']} cores" if machine.get("cores") else "")


def provenance(
    kind: str,
    *,
    env_id: Optional[str] = None,
    env_params: Optional[dict] = None,
    item_embeddings_fingerprint: Optional[str] = None,
    inputs: Optional[dict[str, str]] = None,
    seed: Optional[int] = None,
    hyperparameters: Optional[dict] = None,
    **extra: Any,
) -> dict[str, Any]:
    """A provenance record: what made an artifact and from what.

    ``inputs`` maps the role of each input artifact (``"dataset"``, ``"gems"``...)
    to its fingerprint.
    """
    record = {
        "kind": kind,
        "package": "slaterec",
        "package_version": package_version(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "env_id": env_id,
        "env_params": env_params,
        "item_embeddings_fingerprint": item_embeddings_fingerprint,
        "inputs": dict(inputs or {}),
        "seed": seed,
        "hyperparameters": dict(hyperparameters or {}),
        "runtime": runtime_record(),
    }
    record.update(extra)
    return json.loads(json.dumps(record, default=_jsonable))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot record {type(obj).__name__} in provenance")


def strict_json(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, inf: an interval over one user, a diverged
    loss) replaced by None, so that it serialises as standard JSON."""
    if isinstance(data, dict):
        return {k: strict_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict_json(v) for v in data]
    if isinstance(data, (float, np.floating)):
        return float(data) if np.isfinite(data) else None
    return data


def dumps_strict(data: Any, default: Any = None, **kwargs: Any) -> str:
    """Standard JSON (no NaN / Infinity tokens) of ``data``: what every ``--json`` prints."""
    return json.dumps(strict_json(data), allow_nan=False, default=default or _jsonable, **kwargs)


class ProvenanceFields:
    """Read access to the fields every artifact's provenance carries.

    Subclasses provide ``provenance`` (a dict built by :func:`provenance`).
    """

    provenance: dict[str, Any]

    @property
    def env_id(self) -> Optional[str]:
        return self.provenance.get("env_id")

    @property
    def item_embeddings_fingerprint(self) -> Optional[str]:
        return self.provenance.get("item_embeddings_fingerprint")


#: Artifact families: ``--overwrite`` replaces an artifact only by one of its own family.
DATASET_KINDS = ("logged_dataset", "collected_dataset")
#: Top-level entries a run directory (online or offline) may hold; anything else is the user's.
RUN_ENTRIES = frozenset({
    "config.json", "provenance.json", "state.json", "tb", "checkpoints", "best_validation.json",
    "results.json", "summary.json", "progress.csv", "train.log", "command.txt",
    "inputs",  # a policy bundle's own copies of its GeMS / MF (d3rlpy_adapters.benchmark)
    "wall_limited",  # the results of a wall-limited run before it was continued (sb3_slate.runs)
})
#: ... and the offline runs' model files.
RUN_PATTERNS = ("model_*.pt", "model_*.d3")
#: What an empty folder is reported as: nothing to lose, so any writer may replace it.
EMPTY_FOLDER = "empty_folder"
DEMO_MARKER = "slaterec_demo.json"
MINARI_MARKER = "slaterec_export.json"
BENCHMARK_MARKER = "benchmark.json"


def _json_file(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _foreign(folder: Path, allowed: set, patterns: tuple[str, ...] = ()) -> list[str]:
    """Entries of ``folder`` neither in ``allowed`` nor matching a glob of ``patterns`` (dot files aside)."""
    from fnmatch import fnmatch

    def ours(name: str) -> bool:
        return name in allowed or name.startswith(".") or any(fnmatch(name, pat) for pat in patterns)
    return sorted(p.name for p in folder.iterdir() if not ours(p.name))


def identify_artifact(path: PathLike) -> tuple[Optional[str], str]:
    """``(kind, description)`` of what lies at ``path``: the provenance kind of an
    artifact this package wrote (``kind`` is None for anything else, or for an
    artifact that holds files the package did not write)."""
    p = Path(path)
    if p.is_dir():
        meta = _json_file(p / "meta.json")
        if meta is not None and str(meta.get("format", "")).startswith("slaterec.logged/"):
            kind = (meta.get("provenance") or {}).get("kind", "logged_dataset")
            foreign = _foreign(p, {"meta.json"} | {f"{n}.npy" for n in meta.get("arrays", {})})
            if foreign:
                return None, f"a {kind} folder that also holds files SlateRec did not write ({', '.join(foreign[:5])})"
            return kind, f"a {kind} folder"
        prov = _json_file(p / "provenance.json")
        if prov is not None and prov.get("package") == "slaterec":
            kind = str(prov.get("kind"))
            foreign = _foreign(p, set(RUN_ENTRIES), RUN_PATTERNS)
            if foreign:
                return None, f"a {kind} folder that also holds files SlateRec did not write ({', '.join(foreign[:5])})"
            return kind, f"a {kind} folder"
        for marker in (MINARI_MARKER, DEMO_MARKER, BENCHMARK_MARKER):
            record = _json_file(p / marker)
            if record is not None and record.get("package") == "slaterec":
                return str(record.get("kind")), f"a {record.get('kind')} folder"
        entries = _foreign(p, set())
        if not entries:
            return EMPTY_FOLDER, "an empty folder"
        return None, f"a folder that SlateRec did not write (holds {len(entries)} entries: {', '.join(entries[:5])})"
    if p.is_file():
        side = _json_file(p.with_name(p.name + ".provenance.json"))
        if side is not None and side.get("package") == "slaterec":
            return str(side.get("kind")), f"a {side.get('kind')} file"
        kind = _zip_artifact_kind(p)
        if kind is not None:
            return kind, f"a {kind} file"
        return None, "a file that SlateRec did not write"
    return None, "something that is neither a file nor a folder"


def _zip_artifact_kind(p: Path) -> Optional[str]:
    """MF files (``.npz`` archives) and GeMS checkpoints (torch zips) carry their format."""
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    try:
        if "format.npy" in names:
            with np.load(p, allow_pickle=False) as data:
                return "mf_embeddings" if str(data["format"]).startswith("slaterec.mf/") else None
        if any(n.endswith("data.pkl") for n in names):
            import torch

            payload = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(payload, dict) and str(payload.get("format", "")).startswith("slaterec.gems/"):
                return "gems_checkpoint"
    except Exception:  # unreadable: not something this package can vouch for
        return None
    return None


def check_writable(path: PathLike, overwrite: bool, kind: Union[str, tuple, None] = None) -> Path:
    """Refuse an existing ``path`` unless ``overwrite``; create the parent folder.

    With ``overwrite``, ``kind`` (one provenance kind or a tuple of them) names what
    may be replaced: anything else found there (a user's folder, a file of another
    kind, an artifact holding foreign files) is refused, so ``--overwrite`` can never
    destroy data this package did not write. ``kind=None`` is for the package's own
    internal files inside an artifact it is updating.
    """
    p = Path(path)
    if p.exists() or p.is_symlink():
        if not overwrite:
            raise ArtifactExistsError(f"{p} already exists; pass --overwrite (overwrite=True) to replace it")
        if kind is not None:
            kinds = (kind,) if isinstance(kind, str) else tuple(kind)
            found, description = identify_artifact(p)
            if found not in kinds and found != EMPTY_FOLDER:
                raise ArtifactExistsError(
                    f"{p} is {description}, not a {' or '.join(kinds)} written by SlateRec; "
                    "refusing to replace it even with --overwrite (move it away or choose another path)"
                )
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create the folder {p.parent} for {p}: {exc.strerror or exc}") from exc
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write to {p.parent} (permission denied) for {p}")
    return p


class OutputPathError(ValueError):
    """An output path that cannot be written (permissions, a file where a folder is needed)."""


@contextlib.contextmanager
def atomic_path(path: PathLike, overwrite: bool = False, directory: bool = False,
                kind: Union[str, tuple, None] = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only on success.

    The destination is either untouched (on error) or fully replaced: readers never
    see a half-written artifact, and an interrupted job leaves nothing behind but
    its temporary, which is removed.
    """
    dest = check_writable(path, overwrite, kind)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    target = tmp if directory else tmp / dest.name
    try:
        yield target
        if dest.exists():
            if not overwrite:  # appeared while we were writing
                raise ArtifactExistsError(f"{dest} appeared while writing; pass --overwrite to replace it")
            backup = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, backup)
            os.replace(target, dest)
            if backup.is_dir():
                shutil.rmtree(backup, ignore_errors=True)
            else:
                backup.unlink(missing_ok=True)
        else:
            os.replace(target, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(path: PathLike, data: bytes, overwrite: bool = False,
                       kind: Union[str, tuple, None] = None) -> str:
    """Write ``data`` to ``path`` atomically; returns its SHA-256 (the file's fingerprint)."""
    with atomic_path(path, overwrite, kind=kind) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def write_json_atomic(path: PathLike, data: Any, overwrite: bool = False,
                      kind: Union[str, tuple, None] = None) -> Path:
    with atomic_path(path, overwrite, kind=kind) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    return Path(path)


def check_free_disk(path: PathLike, nbytes: int, what: str) -> None:
    """Refuse to write ``nbytes`` at ``path`` when the disk it would land on has less free space."""
    where = Path(os.path.abspath(path))
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if nbytes > free:
        raise ValueError(f"{path} would take {nbytes / 1e9:,.1f} GB for {what}, but {where} has {free / 1e9:,.1f} GB "
                         "free; write fewer or choose another disk")


def check_free_memory(nbytes: int, what: str) -> None:
    """Refuse to allocate ``nbytes`` for ``what`` when the machine has less memory available."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return
    if nbytes > available:
        raise ValueError(f"{what} would need {nbytes / 1e9:,.1f} GB of memory, but {available / 1e9:,.1f} GB are "
                         "available")


class TrainingDiverged(ValueError):
    """A loss or a weight became non-finite: the run stops and is marked failed."""


def mark_run_status(run_dir: PathLike, status: str, **fields: Any) -> None:
    """Record ``status`` (interrupted, failed) in an unfinished run's ``state.json`` as it is on
    disk (the resume point's counters stay those of the last checkpoint)."""
    path = Path(run_dir) / "state.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(state, dict) and state.get("status") != "complete":
        state.update(status=status, **fields)
        write_json_atomic(path, state, overwrite=True)


@contextlib.contextmanager
def run_status_on_exit(run_dir: PathLike, enabled: bool = True) -> Iterator[None]:
    """Around a training into ``run_dir``: an interruption marks the run ``interrupted``, a
    divergence ``failed`` (with the error) in its state.json, then propagates."""
    try:
        yield
    except KeyboardInterrupt:
        if enabled:
            mark_run_status(run_dir, "interrupted")
        raise
    except TrainingDiverged as exc:
        if enabled:
            mark_run_status(run_dir, "failed", error=str(exc))
        raise


def require_match(what: str, expected: Any, found: Any, hint: str = "") -> None:
    """Raise :class:`ProvenanceMismatchError` when two provenance fields differ."""
    if expected != found:
        msg = f"{what} mismatch: expected {expected!r}, found {found!r}"
        raise ProvenanceMismatchError(msg + (f". {hint}" if hint else ""))
