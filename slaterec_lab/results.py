"""Reading run directories (online and offline) into comparable records."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from gym_slaterec.names import flat_fields
from gym_slaterec.provenance import machine_label

RUN_KINDS = ("sb3_run", "offline_run")


@dataclass
class RunRecord:
    """What a table or a figure needs from one run directory."""

    path: Path
    method: str
    env_id: str
    seed: Optional[int]
    test_mean: Optional[float]
    curve: list[tuple[float, float]] = field(default_factory=list)  # (episodes or steps, validation return)
    x_label: str = "episodes"
    validation: list[dict] = field(default_factory=list)  # the raw validation records (turns, wall_s...)
    config: dict[str, Any] = field(default_factory=dict)  # the resolved configuration, flattened
    item_matrix: str = "?"  # the environment's item embeddings: name or file, and fingerprint
    budget: dict[str, int] = field(default_factory=dict)  # episodes and turns (offline: gradient steps) it ran
    wall_s: Optional[float] = None  # wall time of the whole run (training, validation, test)
    base_method: str = ""  # the label before :func:`label_variants` adds the differing settings
    settings: dict[str, str] = field(default_factory=dict)  # those settings as the label shows them, per key
    dataset_return: Optional[float] = None  # an offline run's dataset: its mean episode return
    machine: str = ""  # the processor it ran on (gym_slaterec.provenance.machine_label; "" if not recorded)
    inputs: dict[str, str] = field(default_factory=dict)  # fingerprints of its input files (gems, mf), by role

    def curve_over(self, x: str) -> list[tuple[float, float]]:
        """The validation curve against ``x``: "episodes" (or gradient steps offline), "turns" or "wall_s"."""
        if x == "episodes":
            return self.curve
        return [(float(v[x]), float(v["mean"])) for v in self.validation if x in v and "mean" in v]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


#: files of a run directory (never a run summary of their own)
_RUN_FILES = frozenset({"provenance.json", "state.json", "results.json", "config.json", "best_validation.json",
                        "summary.json", "sweep.json"})


def is_run_summary(path: Path) -> bool:
    """Whether ``path`` is a run summary file (``slaterec summaries``; a run's summary.json)."""
    from gym_slaterec.run_dirs import SUMMARY_FORMAT

    try:
        with open(path, "rb") as f:
            head = f.read(200)
    except OSError:
        return False
    return SUMMARY_FORMAT.encode() in head


def find_runs(paths: Iterable[Path], allow_empty: bool = False, include_damaged: bool = False) -> list[Path]:
    """Run directories and run summary files among ``paths`` and below them (any folder whose
    provenance is a run, any JSON file holding a run summary outside a run directory;
    ``include_damaged``: also folders with an unreadable provenance.json beside a state.json)."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"no such run directory or folder: {p}")
        if p.is_file():
            if not is_run_summary(p):
                raise ValueError(f"{p} is not a run summary (nor a run directory)")
            found.append(p)
            continue
        candidates = [p / "provenance.json"] if (p / "provenance.json").is_file() else sorted(p.rglob("provenance.json"))
        for prov in candidates:
            try:
                kind = json.loads(prov.read_text()).get("kind")
            except (OSError, ValueError, AttributeError):
                if include_damaged and (prov.parent / "state.json").is_file() and prov.parent not in found:
                    found.append(prov.parent)
                continue
            if kind in RUN_KINDS and prov.parent not in found:
                found.append(prov.parent)
        runs = [f for f in found if f.is_dir()]
        for f in sorted(p.rglob("*.json")):
            if f.name not in _RUN_FILES and not any(r in f.parents for r in runs) and is_run_summary(f):
                found.append(f)
    if not found and not allow_empty:
        raise ValueError(f"no run directories under {', '.join(map(str, paths))}")
    return found


#: what ``slaterec runs`` calls a run
STATUSES = ("complete", "running", "unfinished", "dead", "failed", "damaged")


def _wall_limited(run: Path) -> str:
    """For a finished run its wall-time limit stopped short of its budget: where, and how to go on."""
    try:
        state, config = _read(run / "state.json"), _read(run / "config.json")
    except ValueError:
        return ""
    done, budget = state.get("episodes"), config.get("episodes")
    if not state.get("stopped_by_wall_budget") or not isinstance(done, int) or not isinstance(budget, int) \
            or done >= budget:
        return ""
    return (f"stopped by its wall-time limit at {done:,} of {budget:,} episodes; the same command with a larger "
            f"--set max_wall_s continues it")


def run_status(run: Path) -> tuple[str, str]:
    """``(status, detail)`` of a run directory:

    - complete: results.json with a test return, and its best checkpoint;
    - running: a live process holds the run's writer lock (detail: its pid and host);
    - unfinished: stopped cleanly (Ctrl-C, SIGTERM) at a resume point;
    - dead: its state says running but no process holds it (killed, crashed): resumable
      from its last checkpoint by the same command;
    - failed: training diverged (detail: the error);
    - damaged: a file it needs is missing or unreadable (detail: which).
    """
    from gym_slaterec import run_dirs
    from gym_slaterec.locks import lock_owner

    if run.is_file():
        return "complete", "a run summary"
    owner = lock_owner(run)
    if owner is not None:
        where = live_progress(run)
        return "running", f"{owner}; {where}" if where else owner
    try:
        prov = _read(run / "provenance.json")
    except ValueError as exc:
        return "damaged", str(exc)
    layout = run_dirs.LAYOUTS.get(prov.get("kind"), run_dirs.LAYOUTS["sb3_run"])
    if (run / "results.json").exists():
        try:
            results = _read(run / "results.json")
        except ValueError as exc:
            return "damaged", str(exc)
        if not isinstance(results.get("test"), dict) or not isinstance(results["test"].get("mean"), (int, float)):
            return "damaged", f"{run / 'results.json'} has no test return"
        if "best" not in run_dirs.list_checkpoints(run):
            return "damaged", "results.json names a best checkpoint that is missing"
        return "complete", _wall_limited(run)
    try:
        state = run_dirs.read_state(run, layout, resume=False)
    except (OSError, ValueError) as exc:
        return "damaged", str(exc)
    status, where = state["status"], run_dirs.position(state, layout)
    if status == "failed":
        return "failed", str(state.get("error", "training failed"))
    if status == "interrupted":
        return "unfinished", f"stopped at {where}; the same command resumes it"
    if status == "running":
        return "dead", f"its process ended at {where} without stopping cleanly (killed?); the same command resumes it"
    return "damaged", f"{run / 'state.json'} says complete but has no results.json"


def _duration(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def live_progress(run: Path, window_s: float = 600.0) -> str:
    """Where a running run stands and about when its training ends, from what it has logged so far
    (an online run: its progress.csv, rate over its last ``window_s`` of wall time; an offline run:
    its state at the last resume point): ``32,000 of 100,000 episodes, 8.3 episodes/s, training
    ends in ~2 h 16 min``. "" when it has not logged enough to tell."""
    import csv

    try:
        config = _read(run / "config.json")
    except ValueError:
        return ""
    limit = config.get("max_wall_s")
    if (run / "tb" / "progress.csv").is_file():  # online: a row per batch of episodes
        unit, budget = "episodes", config.get("episodes")
        try:
            with (run / "tb" / "progress.csv").open() as f:
                rows = [(float(r["train_episode/episodes"]), float(r["time/wall_s"])) for r in csv.DictReader(f)
                        if r.get("train_episode/episodes") and r.get("time/wall_s")]
        except (OSError, ValueError, KeyError, csv.Error):
            return ""
    else:  # offline: the last resume point
        unit, budget = "steps", config.get("steps")
        try:
            state = _read(run / "state.json")
        except ValueError:
            return ""
        rows = [(0.0, 0.0), (float(state.get("step", 0)), float(state.get("wall_s", 0.0)))]
    if len(rows) < 2 or not isinstance(budget, (int, float)):
        return ""
    done, wall = rows[-1]
    recent = [r for r in rows if r[1] >= wall - window_s and r[1] < wall] or rows[-2:-1]
    first_done, first_wall = recent[0]
    if wall <= first_wall or done <= first_done:
        return f"{done:,.0f} of {budget:,.0f} {unit}"
    rate = (done - first_done) / (wall - first_wall)
    left, why = (budget - done) / rate, ""
    if isinstance(limit, (int, float)) and limit - wall < left:
        left, why = max(0.0, limit - wall), f" (its wall-time limit, {limit:,.0f} s)"
    return f"{done:,.0f} of {budget:,.0f} {unit}, {rate:.3g} {unit}/s, training ends in ~{_duration(left)}{why}"


def run_summary(run: Path) -> dict[str, Any]:
    """What ``slaterec runs`` lists: method, regime, environment, seed, status (and its
    detail), best validation and test return (fields of unreadable files are left empty)."""
    def read(name: str) -> dict:
        try:
            return _read(run / name)
        except ValueError:
            return {}

    if run.is_file():
        results = _summary(run)["results"]
        prov, state = results.get("provenance") or {}, {}
    else:
        prov, state, results = read("provenance.json"), read("state.json"), read("results.json")
    hyper = prov.get("hyperparameters") or {}
    status, detail = run_status(run)
    return {"run": str(run), "method": prov.get("method"), "replay": hyper.get("replay"), "tag": hyper.get("tag"),
            "env_id": prov.get("env_id"), "seed": prov.get("seed", hyper.get("seed")),
            "status": status, "detail": detail, "episodes": state.get("episodes", state.get("step")),
            "best_validation": (results.get("best") or {}).get("validation_return", state.get("best_validation")),
            "test": (results.get("test") or {}).get("mean"), "created_utc": prov.get("created_utc")}


#: configuration keys that do not change what a run learns (bookkeeping), ignored when
#: deciding whether two runs of a method are seeds of one configuration
BOOKKEEPING_KEYS = frozenset({"seed", "tag", "notes", "torch_threads", "save_replay_buffer", "checkpoint_every",
                              "allow_partial", "log_every", "replay_snapshots"})  # max_wall_s is a budget: it splits rows


def _input_file_name(value: str) -> str:
    """A GeMS / MF file as a label names it: its file name, or for a file of a shipped policy
    bundle (``.../data/benchmark/ENV/QUALITY/inputs/gems.pt``, as
    :func:`d3rlpy_adapters.benchmark.bundle_run` lays it out) the bundle (``shipped:ENV/QUALITY``),
    whose files all share one name. Matched on the recorded path's parts, since a summary's path
    may come from another machine's installation."""
    parts = Path(value).parts
    for i in range(1, len(parts) - 4):
        if parts[i - 1:i + 1] == ("data", "benchmark") and parts[i + 3] == "inputs":
            return f"shipped:{parts[i + 1]}/{parts[i + 2]}"
    return Path(value).stem


def _shown(key: str, value: Any) -> str:
    name = key.split(".")[-1]
    if key in ("gems", "mf") and isinstance(value, str):
        value = _input_file_name(value)  # a GeMS / MF file: its name tells the variants apart
    elif name == "item_embeddings":  # a matrix file by its name, not the path it had on one machine
        value = "default" if value is None else Path(str(value)).stem
    return f"{name}={value}"


def _per_seed_as_one(key: str, value: Any, seed: Optional[int]) -> Any:
    """A GeMS or MF built once per run seed (a sweep's ``seed: run`` stage, ``NAME_s{seed}``)
    stands for one setting across the seeds: the path without its seed suffix."""
    if key in ("gems", "mf") and isinstance(value, str) and seed is not None:
        path = Path(value)
        suffix = f"_s{seed}"
        if path.stem.endswith(suffix):
            return str(path.with_name(path.stem[: -len(suffix)] + path.suffix))
    return value


@functools.lru_cache(maxsize=None)
def paper_settings(method: str, variant: str) -> frozenset[str]:
    """The method's settings in the paper's regime, as row labels show them (``gamma=0.8``)."""
    from sb3_slate.methods import METHOD_TABLE, resolve_config

    if method not in METHOD_TABLE:
        return frozenset()
    try:  # placeholder inputs: only the settings are read
        cfg = resolve_config(method, "SlateRec/FocusedTopDown-v0", {"variant": variant, "gems": "-", "mf": "-"})
    except ValueError:
        return frozenset()
    return frozenset(_shown(k, v) for k, v in flat_fields(cfg.to_dict()).items())


#: the sections of a configuration that hold a method's hyper-parameters (not its inputs or budget)
HYPER_SECTIONS = ("agent.", "belief.")


@functools.lru_cache(maxsize=None)
def method_defaults(method: str, env_id: str, variant: str, replay: Optional[str]) -> dict[str, str]:
    """The hyper-parameters a run of ``method`` gets in its regime and variant when none is set,
    as labels show them, by flat key (``agent.gamma`` -> ``gamma=0.8``); {} for an unknown method."""
    from sb3_slate.methods import METHOD_TABLE, resolve_config

    if method not in METHOD_TABLE:
        return {}
    overrides: dict[str, Any] = {"variant": variant, "gems": "-", "mf": "-"}
    if replay:
        overrides["replay"] = replay
    try:  # placeholder inputs: only the settings are read
        cfg = resolve_config(method, env_id, overrides)
    except ValueError:
        return {}
    return {k: _shown(k, v) for k, v in flat_fields(cfg.to_dict()).items() if k.startswith(HYPER_SECTIONS)}


def own_settings(r: RunRecord) -> dict[str, str]:
    """The hyper-parameters a run set away from its method's defaults (``gamma=0.0``), whatever
    other runs stand beside it: a lone run at gamma 0 is never shown as the plain method."""
    method = r.config.get("method")
    if not isinstance(method, str):
        return {}
    defaults = method_defaults(method, r.env_id, str(r.config.get("variant") or "corrected"),
                               r.config.get("replay") if isinstance(r.config.get("replay"), str) else None)
    return {k: text for k in sorted(r.config) if k in defaults
            and (text := _shown(k, r.config[k])) != defaults[k]}


def label_variants(records: list[RunRecord]) -> list[RunRecord]:
    """Runs of one method and environment whose configurations differ (other than in
    seed and bookkeeping) are not seeds of one setting: their labels get the differing
    values other than the paper's own (``sac-gems [gamma=0.0]``, :func:`paper_settings`), so a
    table or a figure never averages them together; runs at the paper's values keep the plain name.
    A run's own hyper-parameters away from its method's defaults (:func:`own_settings`) are named
    even where no other run stands beside it."""
    groups: dict[tuple, list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.env_id, r.method), []).append(r)
    for members in groups.values():
        if len(members) < 2:
            _add_settings(members[0], own_settings(members[0]))
            continue
        keys = sorted({k for r in members for k in r.config} - BOOKKEEPING_KEYS)
        settings = [{k: _per_seed_as_one(k, r.config.get(k), r.seed) for k in keys} for r in members]
        _one_file_one_setting(members, settings)
        for r, c in zip(members, settings):
            if c.get("max_wall_s") is not None and _reached_budget(r):
                c["max_wall_s"] = None  # a limit that never bound changes nothing about the run
        differing = [k for k in keys if len({json.dumps(c[k], sort_keys=True, default=str) for c in settings}) > 1]
        _one_name_for_the_matrix(differing, settings)
        # a value at the paper's own setting is left out of the label (two labels that name the
        # same values then stand for the same configuration); none left: the plain name. One
        # group is one method label, so one method and variant.
        first = members[0]
        as_published = paper_settings(first.base_method.split(" ")[0], str(first.config.get("variant") or "corrected"))
        for r, c in zip(members, settings):
            shown = {k: text for k in differing if (text := _shown(k, c[k])) not in as_published}
            _add_settings(r, {**own_settings(r), **shown})
    return records


def _one_name_for_the_matrix(differing: list[str], settings: list[dict[str, Any]]) -> None:
    """Where the matrix files' names already tell the runs' matrices apart, the fingerprint
    (``items``) is not named beside them; where two matrices share a file name, it is."""
    files = [k for k in differing if k.split(".")[-1] == "item_embeddings"]
    if "items" not in differing or len(files) != 1:
        return
    pairs = {(_shown(files[0], c.get(files[0])), c.get("items")) for c in settings}
    if len({name for name, _ in pairs}) == len(pairs):
        differing.remove("items")


def _add_settings(r: RunRecord, shown: dict[str, str]) -> None:
    if shown:
        shown = dict(sorted(shown.items()))
        r.settings = shown
        r.method = f"{r.method} [{', '.join(shown.values())}]"


def _reached_budget(r: RunRecord) -> bool:
    """Whether the run trained its whole budget (episodes online, gradient steps offline)."""
    for unit, ran in (("episodes", "episodes"), ("steps", "gradient steps")):
        planned, done = r.config.get(unit), r.budget.get(ran)
        if isinstance(planned, (int, float)) and isinstance(done, (int, float)):
            return done >= planned
    return False


def _one_file_one_setting(members: list[RunRecord], settings: list[dict[str, Any]]) -> None:
    """A GeMS or MF file reached by two paths (a copy, another checkout, a shipped bundle) is one
    setting: runs whose input fingerprints agree compare by the first such run's path."""
    for role in ("gems", "mf"):
        first: dict[str, Any] = {}
        for r, c in zip(members, settings):
            fp = r.inputs.get(role)
            if fp and c.get(role) is not None:
                c[role] = first.setdefault(fp, c[role])


def _summary(path: Path) -> dict[str, Any]:
    from gym_slaterec.run_dirs import SUMMARY_FORMAT

    data = _read(path)
    if data.get("format") != SUMMARY_FORMAT or not isinstance(data.get("results"), dict) \
            or not isinstance(data.get("config"), dict):
        raise ValueError(f"{path} is not a run summary ({SUMMARY_FORMAT})")
    return data


def read_run(run: Path, label: Optional[str] = None) -> RunRecord:
    """A run's method (or ``label``), environment, seed, test return and validation curve, from
    its directory or its summary file."""
    if run.is_file():
        summary = _summary(run)
        results, state, config_data = summary["results"], {}, summary["config"]
        prov = results.get("provenance") or {}
    else:
        prov = _read(run / "provenance.json")
        results = _read(run / "results.json") if (run / "results.json").is_file() else {}
        state = _read(run / "state.json") if (run / "state.json").is_file() else {}
        config_data = None
    validation = results.get("validation") or state.get("validation") or []
    offline = prov.get("kind") == "offline_run"
    x_key = "step" if offline else "episodes"
    curve = [(float(v[x_key]), float(v["mean"])) for v in validation if x_key in v and "mean" in v]
    test = (results.get("test") or {}).get("mean")
    seed = prov.get("seed")
    try:
        config = flat_fields(_complete_config(config_data if config_data is not None else _read(run / "config.json"),
                                              offline))
    except ValueError:
        config = flat_fields(prov.get("hyperparameters") or {})
    method = method_label(str(prov.get("method")), (prov.get("hyperparameters") or {}).get("replay"),
                          config.get("variant"))
    # what a run was trained on splits rows as its settings do: the item matrix, and an offline
    # run's dataset and GeMS (its config does not name them)
    fp = prov.get("item_embeddings_fingerprint")
    if fp:
        config["items"] = str(fp)[:12]
    if offline:
        for role in ("dataset", "gems"):
            value = (prov.get("inputs") or {}).get(role)
            if value:
                config[role] = str(value)[:12]
        quality = (prov.get("dataset") or {}).get("quality")
        if quality and "dataset" in config:  # a benchmark dataset: its quality names the row, its fingerprint pins it
            config["dataset"] = f"{quality} {config['dataset']}"
    dataset_return = (results.get("dataset") or {}).get("mean_return") if offline else None
    return RunRecord(run, label or method, str(prov.get("env_id")), seed,
                     None if test is None else float(test), curve, "gradient steps" if offline else "episodes",
                     list(validation), config, item_matrix(prov), run_budget(results, state, offline),
                     results.get("wall_time_s", state.get("wall_s")), base_method=label or method,
                     dataset_return=None if dataset_return is None else float(dataset_return),
                     machine=run_machines(prov, results),
                     inputs={k: str(v) for k, v in (prov.get("inputs") or {}).items() if isinstance(v, str)})


def _complete_config(data: dict[str, Any], offline: bool) -> dict[str, Any]:
    """An online run's configuration with every setting of this version (one written before a
    setting existed gets its default, which is what it ran with), so that runs of different
    versions compare setting by setting (offline runs too: a setting added since gets the value
    such runs ran with, :data:`d3rlpy_adapters.offline.WRITTEN_BEFORE`, else its default)."""
    if offline:
        from d3rlpy_adapters.offline import written_config

        return written_config(data)
    from sb3_slate.methods import RunConfig

    try:
        return RunConfig.from_json(data).to_dict()
    except (TypeError, ValueError):
        return data


def method_label(method: str, replay: Optional[str], variant: Optional[str]) -> str:
    """A table row's / figure line's name: the method, then its regime when it is the paper's
    (``episode replay``) and its variant when it is the reference code's, each its own row."""
    notes = [n for n, on in (("episode replay", replay == "episode"), ("reference", variant == "reference")) if on]
    return f"{method} ({', '.join(notes)})" if notes else method


def run_machines(prov: dict[str, Any], results: dict[str, Any]) -> str:
    """The processor(s) a run ran on: those of its sessions (a resumed run may have moved), else the
    one its provenance recorded at its start; "" when neither is recorded."""
    seen = [s.get("machine") for s in results.get("sessions") or [] if isinstance(s, dict) and s.get("machine")]
    seen = list(dict.fromkeys(seen)) or [machine_label(prov.get("runtime"))]
    return " + ".join(m for m in seen if m)


def item_matrix(prov: dict[str, Any]) -> str:
    """``name-or-file fingerprint`` of the item embeddings a run's environment used."""
    source = (prov.get("env_params") or {}).get("item_embeddings") or prov.get("item_embeddings_source") or "?"
    if isinstance(source, str) and ("/" in source or source.endswith((".npy", ".pt"))):
        source = Path(source).name
    fp = prov.get("item_embeddings_fingerprint")
    return f"{source} {str(fp)[:12]}" if fp else str(source)


def run_budget(results: dict[str, Any], state: dict[str, Any], offline: bool) -> dict[str, int]:
    """What a run trained on: episodes and turns collected (offline: gradient steps)."""
    budget = results.get("budget") or {}
    if offline:
        steps = budget.get("gradient_steps", state.get("step"))
        return {} if steps is None else {"gradient steps": int(steps)}
    out = {k: budget.get(k, state.get(k)) for k in ("episodes", "turns")}
    return {k: int(v) for k, v in out.items() if v is not None}


def trained_whole_budget(r: RunRecord) -> bool:
    """Whether a run trained its whole budget: a training that no wall-time limit stopped short,
    or a reference policy (nothing to train)."""
    from sb3_slate.methods import REFERENCE_METHODS

    return r.config.get("method") in REFERENCE_METHODS or _reached_budget(r)


def comparable_records(paths: Iterable[Path], need_test: bool,
                       whole_budget: bool = False) -> tuple[list[RunRecord], list[str]]:
    """The runs under ``paths`` ready to be averaged over seeds, and notes on what was left out.

    Damaged runs are skipped; with ``need_test``, runs without a finite test return (unfinished,
    or NaN) are too; with ``whole_budget``, runs stopped before their whole budget
    (:func:`trained_whole_budget`; before labelling, so the rows left are named among themselves);
    labels split runs whose settings differ (:func:`label_variants`); and runs
    of one label, environment and seed (a copy, or the same command run twice) count once."""
    notes: list[str] = []
    records = []
    for run in find_runs(paths):
        try:
            records.append(read_run(run))
        except ValueError as exc:
            notes.append(f"skipped damaged run {run}: {exc}")
    if whole_budget:
        whole = [r for r in records if trained_whole_budget(r)]
        if (short := len(records) - len(whole)):
            notes.append(f"left out {short} {'run' if short == 1 else 'runs'} that did not train the whole budget "
                         "(--whole-budget)")
        records = whole
    records = label_variants(records)
    if need_test:
        kept = []
        for r in records:
            if r.test_mean is None:
                notes.append(f"left out {r.path}: no test return yet (unfinished)")
            elif not math.isfinite(r.test_mean):
                notes.append(f"left out {r.path}: its test return is {r.test_mean}")
            else:
                kept.append(r)
        records = kept
    def sample(r: RunRecord) -> tuple:
        return r.env_id, r.method, r.seed

    kept: dict[tuple, RunRecord] = {}  # per sample: a finished run first, then the longest curve
    for r in sorted(records, key=lambda r: (r.test_mean is None, -len(r.curve), str(r.path))):
        kept.setdefault(sample(r), r)
    for key, first in kept.items():
        copies = [r for r in records if sample(r) == key and r is not first]
        if copies:
            notes.append(f"{len(copies) + 1} runs of {key[1]} on {key[0]} with seed {key[2]} and the same settings "
                         f"count as one sample ({first.path}); duplicates: {', '.join(str(r.path) for r in copies)}")
    unique = [r for r in records if kept[sample(r)] is r]
    return unique, notes


def keep_summaries(paths: Iterable[Path], out: Path, overwrite: bool = False) -> tuple[int, int, list[str]]:
    """Write the summary of every complete run under ``paths`` to ``out/RUN-NAME.json``.

    Returns (written, already there, notes on runs skipped). A file of the same name holding
    another run's summary is refused (ValueError) unless ``overwrite``; nothing is written then.
    """
    from gym_slaterec.provenance import strict_json, write_json_atomic
    from gym_slaterec.run_dirs import run_summary_of

    todo: list[tuple[Path, dict]] = []
    skipped: list[str] = []
    for run in find_runs(paths):
        if run.is_file():
            continue  # already a summary
        status, detail = run_status(run)
        if status != "complete":
            skipped.append(f"{run}: {status}{': ' + detail if detail else ''}")
            continue
        todo.append((out / f"{run.name}.json", strict_json(run_summary_of(run))))
    names = [dest.name for dest, _ in todo]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"several runs are named {', '.join(twice)}; copy them to different folders")
    clashes = []
    for dest, summary in todo:
        if dest.is_file():
            try:
                same = json.loads(dest.read_text()) == json.loads(json.dumps(summary))
            except ValueError:
                same = False
            if not same:
                clashes.append(dest)
    if clashes and not overwrite:
        raise ValueError(f"{', '.join(map(str, clashes))} hold(s) another run's summary; pass --overwrite to replace")
    out.mkdir(parents=True, exist_ok=True)
    written = kept = 0
    for dest, summary in todo:
        if dest.is_file() and dest not in clashes:
            kept += 1
            continue
        write_json_atomic(dest, summary, overwrite=True)
        written += 1
    return written, kept, skipped
