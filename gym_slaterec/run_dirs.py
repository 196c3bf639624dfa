"""Run directories, online (``sb3_slate``) and offline (``d3rlpy_adapters``) alike: one set
of status words, one state check, one resume comparison, one checkpoint listing and one
evaluation entry point.

A run directory holds ``config.json`` (the resolved configuration), ``provenance.json``
(its ``kind``: ``sb3_run`` or ``offline_run``), ``state.json`` (``status`` and the
progress counter: ``episodes`` online, ``step`` offline) and, once complete,
``results.json``. Checkpoints are named ``best``, ``last`` and periodic ones
(``epNNNNNNN`` online, ``stepNNNNNNN`` offline); online ones lie in ``checkpoints/``
(``NAME.zip``, or ``NAME.json`` for reference policies), offline ones beside the config
(``model_NAME.pt``, or an older run's pickle-based ``model_NAME.d3``).

This module imports nothing above the simulator layer: the package that wrote a run is
found through its provenance kind (entry points ``slaterec.run_evaluators``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

PathLike = Union[str, Path]

#: state.json's status: running (or killed while running), interrupted (Ctrl-C / SIGTERM),
#: failed (diverged), complete
RUN_STATUSES = ("running", "interrupted", "failed", "complete")
#: words of runs written before the shared ones (offline runs said "unfinished" while running)
LEGACY_STATUSES = {"unfinished": "running"}


@dataclass(frozen=True)
class RunLayout:
    """Where a kind of run keeps its progress counter and checkpoints."""

    kind: str
    #: state.json's progress counter
    counter: str
    #: what the counter counts, for messages ("episode 400", "step 3000")
    unit: str
    #: checkpoint file of ``name``: (folder relative to the run, file-name prefix, suffixes by preference)
    folder: str
    prefix: str
    suffixes: tuple[str, ...]
    #: prefix of the periodic checkpoints' names
    periodic: str
    #: other counters a resumable state.json holds
    more_counters: tuple[str, ...] = ()

    def checkpoint_files(self, run_dir: Path) -> dict[str, Path]:
        """name -> file of every checkpoint in ``run_dir`` (the preferred suffix when two exist)."""
        folder = run_dir / self.folder
        found: dict[str, Path] = {}
        if not folder.is_dir():
            return found
        for suffix in reversed(self.suffixes):
            for p in folder.glob(f"{self.prefix}*{suffix}"):
                if not p.name.startswith("."):
                    found[p.name[len(self.prefix):-len(suffix)]] = p
        return found


LAYOUTS = {
    "sb3_run": RunLayout("sb3_run", "episodes", "episode", "checkpoints", "", (".zip", ".json"), "ep", ("turns",)),
    "offline_run": RunLayout("offline_run", "step", "step", ".", "model_", (".pt", ".d3"), "step"),
}


def read_run_json(path: Path) -> Any:
    """A JSON file of a run directory; a damaged one is named (ValueError), not a traceback."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON (damaged run directory?): {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a text file (damaged run directory?)") from exc


#: the format of a finished run's summary (``summary.json``; copies kept under ``results/``)
SUMMARY_FORMAT = "slaterec.run_summary/1"
SUMMARY_FILE = "summary.json"


def run_summary_of(run_dir: PathLike) -> dict[str, Any]:
    """The small record of a finished run that tables and curves are built from: its resolved
    configuration and its results (provenance, budget, wall time, validation curve, best
    validation, test return with its interval), without checkpoints or per-user returns."""
    run_dir = Path(run_dir)
    results = dict(read_run_json(run_dir / "results.json"))
    test = dict(results.get("test") or {})
    test.pop("returns", None)
    results["test"] = test
    return {"format": SUMMARY_FORMAT, "run": run_dir.name, "config": read_run_json(run_dir / "config.json"),
            "results": results}


def write_run_summary(run_dir: PathLike) -> Path:
    """Write ``summary.json`` into a finished run directory (atomically); returns its path."""
    from .provenance import strict_json, write_json_atomic

    path = Path(run_dir) / SUMMARY_FILE
    write_json_atomic(path, strict_json(run_summary_of(run_dir)), overwrite=True)
    return path


def run_kind(run_dir: PathLike) -> str:
    """The provenance kind of a run directory (``sb3_run``, ``offline_run``)."""
    path = Path(run_dir) / "provenance.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a run directory (no provenance.json)")
    prov = read_run_json(path)
    kind = prov.get("kind") if isinstance(prov, dict) else None
    if kind not in LAYOUTS:
        raise ValueError(f"{run_dir} holds a {kind!r}, not a run (known run kinds: {', '.join(LAYOUTS)})")
    return kind


def layout_of(run_dir: PathLike) -> RunLayout:
    return LAYOUTS[run_kind(run_dir)]


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def read_state(run_dir: PathLike, layout: RunLayout, resume: bool = True) -> dict[str, Any]:
    """A run's state.json, checked field by field (a damaged file is named, not a KeyError);
    an older run's status words read as today's. ``resume``: also the counters and curve a
    resume needs (False: the status alone, for listings)."""
    path = Path(run_dir) / "state.json"
    state = read_run_json(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is damaged: expected a JSON object, got {type(state).__name__}")
    state["status"] = LEGACY_STATUSES.get(state.get("status"), state.get("status"))
    checks: dict[str, Callable[[Any], bool]] = {
        "status": lambda v: v in RUN_STATUSES,
        layout.counter: _count,
        **{name: _count for name in layout.more_counters},
        "validation": lambda v: isinstance(v, list) and all(isinstance(e, dict) and "mean" in e for e in v),
    }
    if not resume:
        checks = {"status": checks["status"]}
    for key, ok in checks.items():
        if key not in state:
            raise ValueError(f"{path} is damaged: it lacks {key!r}; the run cannot be resumed (start a new --out)")
        if not ok(state[key]):
            raise ValueError(f"{path} is damaged: {key} = {state[key]!r} is not valid; the run cannot be resumed")
    return state


def position(state: dict[str, Any], layout: RunLayout) -> str:
    """Where a run stands, for messages: ``episode 400``, ``step 3000``."""
    return f"{layout.unit} {state.get(layout.counter, 0)}"


def check_same_run(out: PathLike, saved: dict[str, Any], now: dict[str, Any], what: str = "configuration") -> None:
    """Refuse to resume ``out`` when its saved ``what`` differs from the one asked for now,
    naming the keys that differ."""
    saved, now = json.loads(json.dumps(saved)), json.loads(json.dumps(now))
    if saved != now:
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise ValueError(f"{out} holds an unfinished run with another {what} (differs in: {', '.join(diff)}); "
                         "resume it with the same arguments or choose a new --out")


def list_checkpoints(run_dir: PathLike) -> list[str]:
    """Checkpoint names of a run, online or offline: best, last, then the periodic ones in order."""
    run_dir = Path(run_dir)
    try:
        layout = layout_of(run_dir)
    except ValueError:
        layout = LAYOUTS["sb3_run"]
    names = layout.checkpoint_files(run_dir)
    return [n for n in ("best", "last") if n in names] + sorted(n for n in names if n not in ("best", "last"))


def checkpoint_name(layout: RunLayout, checkpoint: Union[str, int]) -> str:
    """``checkpoint`` as a name: best, last, or a count (``4000`` -> ``ep0004000`` / ``step0004000``)."""
    name = str(checkpoint)
    if name.startswith(layout.periodic) and name[len(layout.periodic):].isdigit():
        name = name[len(layout.periodic):]
    return f"{layout.periodic}{int(name):07d}" if name.isdigit() else name


def checkpoint_file(run_dir: PathLike, checkpoint: Union[str, int]) -> tuple[Path, str]:
    """(file, name) of checkpoint ``checkpoint`` of a run; a missing one is refused with the list."""
    run_dir = Path(run_dir)
    layout = layout_of(run_dir)
    name = checkpoint_name(layout, checkpoint)
    files = layout.checkpoint_files(run_dir)
    if name not in files:
        raise FileNotFoundError(f"run {run_dir} has no checkpoint {name!r} (available: "
                                f"{', '.join(list_checkpoints(run_dir)) or 'none'})")
    return files[name], name


def evaluator_of(run_dir: PathLike) -> Callable[..., dict[str, Any]]:
    """The ``evaluate_run_dir(run_dir, env_id, episodes, seed, item_embeddings=, checkpoint=)`` of
    the package that wrote ``run_dir`` (found by its provenance kind through the
    ``slaterec.run_evaluators`` entry points)."""
    from importlib.metadata import entry_points

    try:
        kind = read_run_json(Path(run_dir) / "provenance.json").get("kind")
    except (OSError, ValueError, AttributeError):
        raise ValueError(f"{run_dir} is not a run directory (no readable provenance.json)") from None
    found = {ep.name: ep for ep in entry_points(group="slaterec.run_evaluators")}
    if kind not in found:
        raise ValueError(f"{run_dir} holds a {kind!r}, which no installed package can evaluate "
                         f"(known run kinds: {', '.join(sorted(found)) or 'none'})")
    return found[kind].load()


def evaluate_run_dir(run_dir: PathLike, env_id: str, episodes: int, seed: int, item_embeddings: Any = None,
                     checkpoint: str = "best") -> dict[str, Any]:
    """Mean return (95 % interval) of any run's agent at ``checkpoint`` on users ``seed ..
    seed + episodes - 1`` of ``env_id``."""
    return evaluator_of(run_dir)(run_dir, env_id, episodes, seed, item_embeddings=item_embeddings,
                                 checkpoint=checkpoint)
