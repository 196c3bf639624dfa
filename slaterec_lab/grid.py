"""Grids of experiments: a small YAML file expanded into the trials of a sweep.

A grid names environments, seeds and methods, the pretraining stages they need
(logged data, GeMS, MF: built once per environment and stage settings, then
shared) and lists of values to cross::

    name: tiny
    environments: [FocusedTopDown]
    seeds: [0, 1]
    logged: {episodes: 2000}              # slaterec generate options
    gems: {max_steps: 200, latent_dim: 16} # slaterec pretrain-gems options; {seed: run}: one GeMS per run seed;
                                          # {item_init: mf}: on the sweep's MF stage (built first)
    set: {val_users: 50}                  # slaterec train --set, every method
    methods:
      sac-gems: {episodes: 20, set: {val_every: 10}, grid: {agent.gamma: [0.8, 0.0]}}
      random: {}
    grid: {gems.lambda_kl: [0.5, 1.0]}    # stage keys (logged./gems./mf.) or train keys, crossed
    zip: {gems.lambda_click: [0.2, 0.5], gems.latent_dim: [16, 32]}  # paired: (0.2, 16) and (0.5, 32)
    resources: {cpus: 1, gpus: 0}         # per trial (a method may override); a run's cpus are its torch threads
    device: auto                          # --device of the GeMS/MF/agent trainings (a method may override)

Every trial is one ``slaterec`` command writing one artifact; a trial's id is
the artifact's path inside the sweep directory (``runs/METHOD_ENV_sSEED_point`` for a run,
or ``runs/`` + ``name_template`` filled with the run's fields and its grid point, e.g.
``name_template: "{method}/g{agent.gamma}_s{seed}"``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from gym_slaterec import yaml_values

TOP_KEYS = {"name", "description", "environments", "seeds", "methods", "logged", "gems", "mf", "set", "grid", "zip",
            "offline",
            "resources", "retries", "item_embeddings", "preset", "device", "name_template", "trackers", "group_seeds"}
METHOD_KEYS = {"episodes", "preset", "set", "grid", "resources", "device"}
STAGES = ("logged", "gems", "mf")
#: how the keys of a stage's options begin in ``grid`` and ``zip``
STAGE_PREFIXES = tuple(s + "." for s in STAGES)
#: the ``slaterec`` command of each stage
STAGE_COMMANDS = {"logged": "generate", "gems": "pretrain-gems", "mf": "train-mf"}


class GridError(ValueError):
    """A grid file that cannot be expanded (the message names the key)."""


def _trackers(value: Any) -> list[str]:
    """``trackers: [tensorboard, wandb]`` -> the training commands' ``--tracker`` arguments."""
    from gym_slaterec.trackers import TRACKERS

    if value is None:
        return []
    names = _as_list("trackers", value)
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise GridError(f"trackers: unknown tracker {bad[0]!r}; choose among {', '.join(TRACKERS)}")
    return [a for n in dict.fromkeys(names) for a in ("--tracker", str(n))]


@dataclass
class Trial:
    """One command of a sweep and the artifact it writes."""

    id: str                 # the artifact's path relative to the sweep directory
    kind: str               # logged | gems | mf | run | seeds (group_seeds) | collect | export | offline
    argv: list[str]         # arguments of ``slaterec``
    deps: list[str] = field(default_factory=list)
    point: dict[str, Any] = field(default_factory=dict)  # the grid values and seed that define it
    method: Optional[str] = None
    env_id: Optional[str] = None
    seed: Optional[int] = None
    cpus: float = 1.0
    gpus: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _short(key: str) -> str:
    return key.split(".")[-1]


def _name(parts: list[str]) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", "_".join(parts))


def _fmt(value: Any) -> str:
    """A value as ``--set`` reads it back (YAML): JSON for mappings, lists, booleans and null."""
    return json.dumps(value) if value is None or isinstance(value, (dict, list, bool)) else str(value)


def _options(stage: str, settings: dict[str, Any]) -> list[str]:
    """``{"max_steps": 200, "freeze_items": true}`` -> ``["--max-steps", "200", "--freeze-items"]``."""
    out: list[str] = []
    for key, value in settings.items():
        flag = "--" + str(key).replace("_", "-")
        if isinstance(value, bool):
            if value:
                out.append(flag)
        elif value is None or isinstance(value, (dict, list)):
            raise GridError(f"{stage}.{key}: expected a number or a string, got {value!r}")
        else:
            out += [flag, str(value)]
    return out


def _as_list(where: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise GridError(f"{where}: expected a non-empty list of values, got {value!r}")
    return value


def _mapping(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GridError(f"{where}: expected a mapping, got {value!r}")
    return dict(value)


def _resources(where: str, value: Any, base: dict[str, float]) -> dict[str, float]:
    res = dict(base)
    for key, v in _mapping(where, value).items():
        if key not in ("cpus", "gpus"):
            raise GridError(f"{where}: unknown key {key!r} (cpus, gpus)")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (key == "cpus" and v == 0):
            raise GridError(f"{where}.{key}: expected a {'positive' if key == 'cpus' else 'non-negative'} number, got {v!r}")
        res[key] = float(v)
    return res


def _product(grid: dict[str, list], zips: list[dict[str, list]] = ()) -> list[dict[str, Any]]:
    """Every point of the grid: each ``grid`` key is an axis of its own, each ``zips`` group one
    axis whose keys move together (Params1 / Params2 pairs)."""
    axes = [[{key: value} for value in values] for key, values in grid.items()]
    axes += [[dict(zip(group, values)) for values in zip(*group.values())] for group in zips]
    return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*axes)]


def _zip_groups(where: str, value: Any) -> list[dict[str, list]]:
    """``zip: {a: [1, 2], b: [3, 4]}`` (one group) or a list of such groups; equal lengths."""
    if value is None:
        return []
    groups = []
    for i, group in enumerate(value if isinstance(value, list) else [value]):
        here = f"{where}[{i}]" if isinstance(value, list) else where
        lists = {str(k): _as_list(f"{here}.{k}", v) for k, v in _mapping(here, group).items()}
        if not lists:
            raise GridError(f"{here}: name at least one key and its list of values")
        lengths = {k: len(v) for k, v in lists.items()}
        if len(set(lengths.values())) != 1:
            raise GridError(f"{here}: paired lists must have equal lengths, got {lengths}")
        groups.append(lists)
    return groups


def _restricted(groups: list[dict[str, list]], keep: Any) -> list[dict[str, list]]:
    """The zip groups cut to the keys ``keep(key)`` accepts, repeated pairs dropped."""
    out = []
    for group in groups:
        keys = [k for k in group if keep(k)]
        if keys:
            pairs = list(dict.fromkeys(zip(*(group[k] for k in keys))))
            out.append({k: [p[i] for p in pairs] for i, k in enumerate(keys)})
    return out


def _set_args(settings: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in settings.items():
        out += ["--set", f"{key}={_fmt(value)}"]
    return out


def _flat_set(where: str, value: Any) -> dict[str, Any]:
    """``{agent: {gamma: 0}}`` or ``{agent.gamma: 0}`` -> ``{"agent.gamma": 0}``."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = node
    for k, v in _mapping(where, value).items():
        walk(str(k), v)
    return out


#: the grids shipped with the package (``sweeps/`` of the repository)
SHIPPED_DIR = Path(__file__).parent / "sweeps"


def shipped_grid(name: str) -> Path:
    """A shipped grid by name (``tiny``, ``table2``...)."""
    path = SHIPPED_DIR / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no grid file {name!r} and no shipped grid of that name (shipped: {', '.join(names)})")
    return path


def load_grid(path: Path) -> dict[str, Any]:
    """The grid file as a mapping (YAML), with a clear error when it is not one; a bare
    name that is not a file names a shipped grid (``slaterec sweep tiny``)."""
    path = Path(path)
    if not path.is_file() and path.suffix == "" and path.parent == Path("."):
        path = shipped_grid(path.name)
    if not path.is_file():
        raise FileNotFoundError(f"no such grid file: {path}")
    try:
        data = yaml_values.load(path.read_text())
    except UnicodeDecodeError:
        raise GridError(f"{path} is not a text file; a grid is a YAML file (see sweeps/tiny.yaml)") from None
    except yaml.YAMLError as exc:
        raise GridError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise GridError(f"{path} does not hold a mapping of grid settings")
    return data


def grid_name(grid: dict[str, Any]) -> Optional[str]:
    """The grid's ``name``, checked: it names a folder under the workspace, so it may not leave it."""
    name = grid.get("name")
    if name is None:
        return None
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise GridError(f"name: expected 1-100 letters, digits, '.', '_' or '-' starting with a letter or digit "
                        f"(it names the sweep's folder), got {name!r}")
    return name


@functools.lru_cache(maxsize=1)
def _parser() -> Any:
    """The ``slaterec`` parser, built once for every trial a grid checks or names."""
    from gym_slaterec.cli import build_parser

    return build_parser()


def check_trials(trials: list["Trial"]) -> None:
    """Every trial's command parsed and its options checked exactly as the command will at run
    time (``checker`` of each sub-command: configuration keys, types and ranges), so a grid
    fails at load or ``--dry-run``, not after its first stages have run."""
    import contextlib
    import io

    parser = _parser()
    for t in trials:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                args = parser.parse_args(t.argv)
        except SystemExit:
            lines = [line for line in err.getvalue().strip().splitlines() if line.strip()]
            raise GridError(f"trial {t.id}: {lines[-1] if lines else 'its command does not parse'}") from None
        checker = getattr(args, "checker", None)
        try:
            if checker is not None:
                checker(args)
        except (ValueError, FileNotFoundError) as exc:
            raise GridError(f"trial {t.id}: {exc}") from None


def templated_name(template: str, argv: list[str], point: dict[str, Any]) -> str:
    """The run directory name ``template`` gives the run of ``argv`` (its resolved configuration)
    at grid ``point`` (whose keys, ``gems.lambda_kl`` say, are fields too)."""
    from sb3_slate.cli import run_config
    from sb3_slate.runs import fill_name_template

    try:
        return fill_name_template(template, run_config(_parser().parse_args(argv)), point)
    except ValueError as exc:
        raise GridError(f"name_template: {exc}") from None


def stage_template_name(template: str, argv: list[str], env_id: str, point: dict[str, Any]) -> str:
    """The file name ``template`` gives the GeMS / MF stage of ``argv`` (its resolved options,
    ``latent_dim``, ``lambda_kl``..., plus ``env`` and the grid point)."""
    from gym_slaterec.names import common_fields, fill_template

    args = _parser().parse_args(argv)
    if args.command == "pretrain-gems":
        from gym_slaterec.cli.gems_commands import gems_config

        args.out = Path("unused.pt")  # the name is what is being made: no dataset read here
        fields = {**dataclasses.asdict(gems_config(args)), "max_steps": args.max_steps}
    else:
        fields = {k: getattr(args, k) for k in ("seed", "epochs", "patience", "dim", "lr", "batch_size")}
    try:
        return fill_template(template, {**fields, **common_fields(env_id), **point})
    except ValueError as exc:
        raise GridError(f"name_template: {exc}") from None


def _name_templates(value: Any) -> dict[str, str]:
    """``name_template``: a string (run directories) or ``{runs: ..., gems: ..., mf: ...}``."""
    if value is None:
        return {}
    found = {"runs": value} if isinstance(value, str) else value
    if not isinstance(found, dict) or set(found) - {"runs", "gems", "mf"}:
        raise GridError(f"name_template: expected a string (run directories) or a mapping with some of runs, gems, "
                        f"mf, got {value!r}")
    for key, template in found.items():
        if not isinstance(template, str) or re.search(r"\{(date|time)[^}]*\}", template):
            raise GridError(f"name_template{'' if isinstance(value, str) else '.' + key}: expected a string without "
                            f"{{date}} / {{time}} (a resumed sweep must find its artifacts under the same names), "
                            f"got {template!r}")
    return found


def grid_fingerprint(grid: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(grid, sort_keys=True, default=str).encode()).hexdigest()


def expand(grid: dict[str, Any], sweep_dir: Path) -> list[Trial]:
    """The trials of ``grid`` in dependency order (stages before the runs that use them)."""
    from gym_slaterec.core.config import preset
    from sb3_slate.methods import METHODS, PRESETS, artifacts_needed, method_of

    grid = copy.deepcopy(grid)
    unknown = set(grid) - TOP_KEYS
    if unknown:
        raise GridError(f"unknown grid key(s) {', '.join(sorted(unknown))}; expected some of {', '.join(sorted(TOP_KEYS))}")
    grid_name(grid)
    sweep_dir = Path(sweep_dir).resolve()
    envs = [preset(str(e)).env_id for e in _as_list("environments", grid.get("environments"))]
    seeds = _as_list("seeds", grid.get("seeds", [0]))
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= 2**32 - 1:
            raise GridError(f"seeds: every seed must be an integer in [0, {2**32 - 1}], got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise GridError(f"seeds: repeated values in {seeds}")
    methods = _mapping("methods", grid.get("methods"))
    if not methods and not grid.get("offline"):
        raise GridError("methods: name at least one method (or an offline: section)")
    for m in methods:
        if m not in METHODS:
            raise GridError(f"methods: unknown method {m!r}; choose among {', '.join(METHODS)}")
    base_res = _resources("resources", grid.get("resources"), {"cpus": 1.0, "gpus": 0.0})
    tracker_args = _trackers(grid.get("trackers"))
    common_set = _flat_set("set", grid.get("set"))
    top_preset = grid.get("preset")
    items = grid.get("item_embeddings")
    if items is not None:
        if not isinstance(items, str):
            raise GridError(f"item_embeddings: expected a shipped name or a file path, got {items!r}")
        if "/" in items or items.endswith((".npy", ".pt")):
            items = str(Path(items).resolve())
    device = grid.get("device")
    if device is not None and not isinstance(device, str):
        raise GridError(f"device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    stage_settings = {s: _mapping(s, grid.get(s)) for s in STAGES}
    for s in ("gems", "mf"):
        if device is not None:
            stage_settings[s].setdefault("device", device)
    # ``seed: run``: the stage is built once per run seed, with that seed (the paper pre-trains
    # GeMS with each run's seed); the logged data stay one dataset per environment.
    per_run_seed = {}
    for s in STAGES:
        seed = stage_settings[s].get("seed")
        if isinstance(seed, str) and (seed != "run" or s == "logged"):
            raise GridError(f"{s}.seed: expected an integer" + ("" if s == "logged" else " or 'run' (one per run seed)")
                            + f", got {seed!r}")
        per_run_seed[s] = seed == "run"
    top_grid = {str(k): _as_list(f"grid.{k}", v) for k, v in _mapping("grid", grid.get("grid")).items()}
    stage_grid = {s: {k: v for k, v in top_grid.items() if k.startswith(s + ".")} for s in STAGES}
    run_grid_top = {k: v for k, v in top_grid.items() if not k.startswith(STAGE_PREFIXES)}
    templates = _name_templates(grid.get("name_template"))
    template = templates.get("runs")
    zips = _zip_groups("zip", grid.get("zip"))
    for group in zips:
        both = sorted(set(group) & set(top_grid))
        if both:
            raise GridError(f"zip: {', '.join(both)} also in grid; a key is either crossed or paired")
    # a group of stage keys only, of train keys only, or of both (e.g. the variant paired with the
    # MF and GeMS recipes that go with it): the last moves a stage's and a run's settings together
    stage_zips = [g for g in zips if all(k.startswith(STAGE_PREFIXES) for k in g)]
    run_zips = [g for g in zips if not any(k.startswith(STAGE_PREFIXES) for k in g)]
    mixed_zips = [g for g in zips if g not in stage_zips and g not in run_zips]
    for s in STAGES:
        for key in stage_grid[s]:
            if key == f"{s}.":
                raise GridError(f"grid.{key}: empty option name")

    group_seeds = grid.get("group_seeds", False)
    if not isinstance(group_seeds, bool):
        raise GridError(f"group_seeds: expected true or false, got {group_seeds!r}")
    if group_seeds and template is not None:
        raise GridError("group_seeds: the seeds of a trial share one run-directory name with a {seed} field; "
                        "leave name_template out")
    if group_seeds and grid.get("offline") is not None:
        raise GridError("group_seeds: an offline: section collects from single-seed runs; leave group_seeds out")

    trials: list[Trial] = []
    by_id: dict[str, Trial] = {}

    def add(trial: Trial) -> Trial:
        if trial.id not in by_id:
            by_id[trial.id] = trial
            trials.append(trial)
        elif by_id[trial.id].argv != trial.argv:
            raise GridError(f"name_template {templates.get(trial.kind)!r} gives {trial.id} to two different "
                            f"{trial.kind} trials; add the options that differ between them")
        return by_id[trial.id]

    def stage_trial(stage: str, env_id: str, point: dict[str, Any], seed: Optional[int] = None) -> Trial:
        """The artifact of ``stage`` for ``env_id`` at the stage-grid ``point`` (with its own deps);
        ``seed``: the run seed of a stage built once per run seed."""
        env_short = env_id.split("/")[-1].split("-v")[0]
        own = {k: v for k, v in point.items() if k.startswith(stage + ".")}
        logged_point = {k: v for k, v in point.items() if k.startswith("logged.")}
        name = _name([env_short] + [f"{_short(k)}={_fmt(v)}" for k, v in own.items()]
                     + ([] if seed is None else [f"s{seed}"]))
        settings = {**stage_settings[stage], **{k.split(".", 1)[1]: v for k, v in own.items()}}
        if seed is not None:
            settings["seed"] = seed
            own = {**own, "seed": seed}
        deps: list[str] = []
        if stage == "logged":
            out = sweep_dir / "logged" / name
            argv = ["generate", env_id, "--out", str(out), "--no-progress"] + _options(stage, {"seed": 0, **settings})
            if items is not None:
                argv += ["--item-embeddings", items]
        else:
            logged = stage_trial("logged", env_id, logged_point)
            deps = [logged.id]
            init = settings.get("item_init")
            if stage == "gems" and init == "mf":  # the sweep's own MF stage of this environment, built first
                mf_trial = stage_trial("mf", env_id, logged_point)
                settings["item_init"] = f"mf:{sweep_dir / mf_trial.id}"
                deps.append(mf_trial.id)
            elif stage == "gems" and isinstance(init, str) and init.startswith("mf:") \
                    and Path(init[3:]).resolve().is_relative_to(sweep_dir):
                raise GridError(f"gems.item_init: {init[3:]} lies in the sweep's own folder; write item_init: mf "
                                "to use the sweep's MF stage (it then runs before the GeMS)")
            if logged_point:
                name = _name([name] + [f"{_short(k)}={_fmt(v)}" for k, v in logged_point.items()])
            suffix = ".pt" if stage == "gems" else ".npz"
            out = sweep_dir / stage / (name + suffix)
            argv = [STAGE_COMMANDS[stage], str(sweep_dir / logged.id), "--out", str(out), "--no-progress"] \
                + _options(stage, settings) + tracker_args
            if stage in templates:  # the file named by the grid's template for this stage
                filled = stage_template_name(templates[stage], argv, env_id, {**own, **logged_point})
                out = sweep_dir / stage / (filled if filled.endswith(suffix) else filled + suffix)
                argv[argv.index("--out") + 1] = str(out)
        rel = str(out.relative_to(sweep_dir))
        return add(Trial(rel, stage, argv, deps, {**own, **logged_point}, env_id=env_id,
                         cpus=base_res["cpus"], gpus=base_res["gpus"]))

    for method, spec in methods.items():
        spec = _mapping(f"methods.{method}", spec)
        bad = set(spec) - METHOD_KEYS
        if bad:
            raise GridError(f"methods.{method}: unknown key(s) {', '.join(sorted(bad))}; expected some of "
                            f"{', '.join(sorted(METHOD_KEYS))}")
        res = _resources(f"methods.{method}.resources", spec.get("resources"), base_res)
        method_preset = spec.get("preset", top_preset)
        if method_preset is not None and method_preset not in PRESETS:
            raise GridError(f"methods.{method}.preset: expected one of {', '.join(PRESETS)}, got {method_preset!r}")
        episodes = spec.get("episodes")
        if episodes is not None and (isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1):
            raise GridError(f"methods.{method}.episodes: expected a positive integer, got {episodes!r}")
        settings = {**common_set, **_flat_set(f"methods.{method}.set", spec.get("set"))}
        method_grid = {**run_grid_top, **{str(k): _as_list(f"methods.{method}.grid.{k}", v)
                                          for k, v in _mapping(f"methods.{method}.grid", spec.get("grid")).items()}}
        for k in method_grid:
            if k.startswith(STAGE_PREFIXES):
                raise GridError(f"methods.{method}.grid.{k}: stage keys belong in the top-level grid")
        def needs_at(run_settings: dict[str, Any]) -> list[str]:
            """The stages a run of this method needs with these train settings (its agent.* and variant)."""
            merged = {**settings, **run_settings}
            return [s for s in STAGES[1:] if s in artifacts_needed(
                method, {k.split(".", 1)[1]: v for k, v in merged.items() if k.startswith("agent.")},
                merged.get("variant"))]

        mixed_runs = _product({}, _restricted(mixed_zips, lambda k: not k.startswith(STAGE_PREFIXES)))
        needed_somewhere = {s for p in _product(method_grid, run_zips) for m in mixed_runs for s in needs_at({**m, **p})}
        needs = [s for s in STAGES[1:] if s in needed_somewhere]
        relevant = ["logged"] * bool(needs) + needs
        relevant_stage_grid = {k: v for s in relevant for k, v in stage_grid[s].items()}
        keep = lambda k: not k.startswith(STAGE_PREFIXES) or k.split(".", 1)[0] in relevant  # noqa: E731
        relevant_zips = _restricted(stage_zips, keep) + _restricted(mixed_zips, keep)
        seen_runs: set[tuple[str, str, int]] = set()
        for env_id in envs:
            env_short = env_id.split("/")[-1].split("-v")[0]
            for paired_point in _product(relevant_stage_grid, relevant_zips):
                stage_point = {k: v for k, v in paired_point.items() if k.startswith(STAGE_PREFIXES)}
                paired_run = {k: v for k, v in paired_point.items() if k not in stage_point}
                for own_run_point in _product(method_grid, run_zips):
                    members: list[Trial] = []  # the seeds of this cell (group_seeds)
                    run_point = {**paired_run, **own_run_point}
                    needs = needs_at(run_point)
                    # a run that needs no artifact of a stage is not repeated over that stage's values
                    stage_point = {k: v for k, v in stage_point.items()
                                   if k.split(".", 1)[0] in ["logged"] * bool(needs) + needs}
                    for seed in seeds:
                        key = (env_id, json.dumps({**stage_point, **run_point}, sort_keys=True, default=str), seed)
                        if key in seen_runs:
                            continue
                        seen_runs.add(key)
                        deps, stage_args = [], []
                        for stage in needs:
                            t = stage_trial(stage, env_id, stage_point, seed if per_run_seed[stage] else None)
                            deps.append(t.id)
                            stage_args += [f"--{stage}", str(sweep_dir / t.id)]
                        point = {**stage_point, **run_point}
                        name = _name([method, env_short, f"s{seed}"] + [f"{_short(k)}={_fmt(v)}" for k, v in point.items()])
                        out = sweep_dir / "runs" / name
                        argv = ["train", method, env_id, "--seed", str(seed), "--out", str(out), "--no-progress"]
                        argv += stage_args + tracker_args
                        if episodes is not None:
                            argv += ["--episodes", str(episodes)]
                        if method_preset is not None:
                            argv += ["--preset", str(method_preset)]
                        if items is not None:
                            argv += ["--item-embeddings", items]
                        if spec.get("device", device) is not None:
                            argv += ["--device", str(spec.get("device", device))]
                        threads = {} if res["cpus"] < 2 or method_of(method).reference or group_seeds else {
                            "torch_threads": int(res["cpus"])}
                        argv += _set_args({**threads, **settings, **run_point})  # a trial's cpus are its torch threads
                        if grid.get("name"):
                            argv += ["--notes", f"sweep {grid['name']}" + (f": {json.dumps(point, default=str)}"
                                                                           if point else "")]
                        if template is not None:  # the run directory named by the grid's template
                            out = sweep_dir / "runs" / templated_name(template, argv, point)
                            argv[argv.index("--out") + 1] = str(out)
                        rel = str(out.relative_to(sweep_dir))
                        if rel in by_id:
                            raise GridError(f"name_template {template!r} gives {rel} to two runs; add the keys that "
                                            "differ between them (e.g. {seed}, {agent.gamma})")
                        trial = Trial(rel, "run", argv, deps, {**point, "seed": seed},
                                      method=method, env_id=env_id, seed=seed, cpus=res["cpus"], gpus=res["gpus"])
                        members.append(trial) if group_seeds else add(trial)
                    if members:
                        name = _name([method, env_short, "sSEED"] + [f"{_short(k)}={_fmt(v)}" for k, v in point.items()])
                        add(seeds_trial(members, "runs/" + name.replace("sSEED", "s{seed}", 1), sweep_dir))
    if grid.get("offline") is not None:
        if any(k.startswith("env_kwargs") for k in common_set):
            raise GridError("offline: the datasets are collected in the environments as registered (collect takes no "
                            "environment overrides), so set: env_kwargs.* would give the runs other episodes than the "
                            "datasets; leave env_kwargs out of a grid with an offline section")
        _offline_trials(_mapping("offline", grid["offline"]), envs, seeds, trials, stage_trial, add, sweep_dir,
                        base_res, tracker_args, bool(stage_grid["gems"]) or any(
                            k.startswith("gems.") for g in zips for k in g), stage_settings["gems"])
    check_trials(trials)
    return trials


#: where a grouped trial's per-seed run directories are named (``group_seeds``)
SEED_FIELD = "{seed}"


def seeds_trial(members: list[Trial], rel: str, sweep_dir: Path) -> Trial:
    """One trial training the seeds of ``members`` (single-seed run trials of one cell) with
    ``train --seeds``: the same run directories, ``cpus`` seeds at a time (one thread each)."""
    first = members[0]
    argv = list(first.argv)
    i = argv.index("--seed")
    argv[i:i + 2] = ["--seeds", *[str(m.seed) for m in members]]
    argv[argv.index("--out") + 1] = str(sweep_dir / rel)
    for flag in ("--gems", "--mf"):
        if flag in argv:
            values = [m.argv[m.argv.index(flag) + 1] for m in members]
            j = argv.index(flag)
            argv[j:j + 2] = [flag, *(values if len(set(values)) > 1 else values[:1])]
    argv += ["--jobs", str(max(1, int(first.cpus)))]
    deps = list(dict.fromkeys(d for m in members for d in m.deps))
    point = {k: v for k, v in first.point.items() if k != "seed"}
    return Trial(rel, "seeds", argv, deps, {**point, "seeds": [m.seed for m in members]}, method=first.method,
                 env_id=first.env_id, cpus=first.cpus, gpus=first.gpus)


def seed_run_ids(trial: dict[str, Any]) -> list[tuple[int, str]]:
    """``(seed, run directory relative to the sweep)`` of a run trial, or of each seed of a grouped one."""
    if trial["kind"] == "seeds":
        return [(s, trial["id"].replace(SEED_FIELD, str(s))) for s in trial["point"]["seeds"]]
    return [(trial.get("seed"), trial["id"])]


OFFLINE_KEYS = {"datasets", "export", "gems", "algorithms", "seeds", "steps", "set", "resources", "policies",
                "allow_mismatch"}
#: where an offline dataset's export GeMS comes from: the sweep's GeMS stage, or one pretrained on
#: that dataset with the grid's gems options
OFFLINE_GEMS = ("online", "dataset")


def _offline_trials(spec: dict[str, Any], envs: list[str], seeds: list[int], trials: list[Trial], stage_trial: Any,
                    add: Any, sweep_dir: Path, base_res: dict[str, float], tracker_args: list[str],
                    gems_varies: bool, gems_options: dict[str, Any]) -> None:
    """The offline benchmark's trials: per environment and dataset, ``collect`` (from a reference
    policy or one of the sweep's runs), the export GeMS (the sweep's GeMS stage or one pretrained
    on the dataset), ``export``, then ``train-offline`` per algorithm and seed."""
    from d3rlpy_adapters.offline import ALGORITHMS

    bad = set(spec) - OFFLINE_KEYS
    if bad:
        raise GridError(f"offline: unknown key(s) {', '.join(sorted(bad))}; expected some of "
                        f"{', '.join(sorted(OFFLINE_KEYS))}")
    datasets = _mapping("offline.datasets", spec.get("datasets"))
    if not datasets:
        raise GridError("offline.datasets: name at least one dataset (name: {policy: ..., episodes: N})")
    algorithms = _as_list("offline.algorithms", spec.get("algorithms", ["td3bc"]))
    for a in algorithms:
        if a not in ALGORITHMS:
            raise GridError(f"offline.algorithms: unknown algorithm {a!r}; choose among {', '.join(ALGORITHMS)}")
    off_seeds = _as_list("offline.seeds", spec.get("seeds", [0]))
    gems_from = spec.get("gems", "online")
    if gems_from not in OFFLINE_GEMS:
        raise GridError(f"offline.gems: expected online (the sweep's GeMS stage) or dataset (one pretrained on each "
                        f"dataset), got {gems_from!r}")
    gems_settings = {k: v for k, v in gems_options.items() if not (k == "seed" and v == "run")}
    if gems_from == "dataset" and gems_settings.get("item_init") == "mf":
        raise GridError("offline.gems: dataset with gems.item_init: mf is not supported (the MF stage is built on the "
                        "logged data, not on a collected dataset); give item_init: scratch, ideal or mf:FILE")
    if gems_from == "online" and gems_varies:
        raise GridError("offline.gems: online is ambiguous when grid or zip vary the GeMS options; use gems: dataset "
                        "or a grid without gems keys")
    export_opts = _mapping("offline.export", spec.get("export"))
    settings = _flat_set("offline.set", spec.get("set"))
    steps = spec.get("steps")
    if not isinstance(spec.get("allow_mismatch", False), bool):
        raise GridError(f"offline.allow_mismatch: expected true or false, got {spec['allow_mismatch']!r}")
    res = _resources("offline.resources", spec.get("resources"), base_res)
    runs = [t for t in trials if t.kind == "run"]
    for env_id in envs:
        env_short = env_id.split("/")[-1].split("-v")[0]
        # datasets made of others (merge: [medium, expert]) after the ones they merge
        ordered = sorted(datasets.items(), key=lambda kv: isinstance(kv[1], dict) and "merge" in kv[1])
        data_ids: dict[str, str] = {}
        data_gems: dict[str, Optional[str]] = {}
        for name, dspec in ordered:
            if not re.fullmatch(r"[A-Za-z0-9._-]+", str(name)):
                raise GridError(f"offline.datasets: {name!r} must be letters, digits, '.', '_' or '-' (it names files)")
            dspec = dict(_mapping(f"offline.datasets.{name}", dspec))
            data_id = f"offline/data/{env_short}_{name}"
            export_gems: Optional[str] = None  # the GeMS a benchmark dataset's policies acted through
            if "benchmark" in dspec:  # one of the benchmark's standard datasets, rebuilt from its policies folder
                # the section's policies folder and allow_mismatch apply unless the dataset gives its own
                section = {key: spec[key] for key in ("policies", "allow_mismatch") if key in spec}
                data_id, argv, export_gems = _benchmark_dataset(name, {**section, **dspec}, env_id, sweep_dir)
                add(Trial(data_id, "collect", argv, [], {"dataset": name}, env_id=env_id, cpus=res["cpus"],
                          gpus=res["gpus"]))
            elif "merge" in dspec:
                parts = dspec.pop("merge")
                if dspec or not isinstance(parts, list) or len(parts) < 2 or not all(
                        p in datasets and "merge" not in (datasets[p] or {}) for p in parts):
                    raise GridError(f"offline.datasets.{name}: merge takes a list of two or more of the other "
                                    f"(collected) datasets and nothing else, got {parts!r}")
                part_ids = [data_ids[p] for p in parts]
                part_gems = {data_gems[p] for p in parts}
                if len(part_gems) > 1 and gems_from == "online":  # exported through which GeMS, then?
                    raise GridError(f"offline.datasets.{name}: merges datasets acted through different GeMS "
                                    f"({', '.join(sorted(g or 'the sweep GeMS stage' for g in part_gems))}); merge "
                                    "datasets of one source")
                export_gems = part_gems.pop() if len(part_gems) == 1 else None
                argv = ["merge-datasets", *(str(sweep_dir / p) for p in part_ids), "--out", str(sweep_dir / data_id),
                        "--no-progress"]
                add(Trial(data_id, "collect", argv, part_ids, {"dataset": name}, env_id=env_id, cpus=res["cpus"],
                          gpus=res["gpus"]))
            else:
                policy = dspec.pop("policy", None)
                if not isinstance(policy, str):
                    raise GridError(f"offline.datasets.{name}.policy: expected random, oracle, epsilon-greedy or "
                                    f"run:METHOD (or benchmark: QUALITY instead of policy), got {policy!r}")
                deps: list[str] = []
                if policy.startswith("run:"):
                    method = policy[4:]
                    run_seed = dspec.pop("run_seed", seeds[0])
                    found = [t for t in runs if t.method == method and t.env_id == env_id and t.seed == run_seed]
                    if len(found) != 1:
                        raise GridError(f"offline.datasets.{name}.policy: {policy} names {len(found)} runs of the grid "
                                        f"on {env_short} with seed {run_seed} ({', '.join(t.id for t in found) or 'none'}"
                                        "); it must name exactly one (methods: {" + method + ": ...}, run_seed: S)")
                    deps.append(found[0].id)
                    policy = str(sweep_dir / found[0].id)
                if "replay" in dspec:  # the run's replay memory at a periodic checkpoint (medium-replay)
                    replay = dspec.pop("replay")
                    if not deps or dspec:
                        raise GridError(f"offline.datasets.{name}: replay takes a run's policy (run:METHOD) and "
                                        f"nothing else but run_seed, got {sorted(dspec) or policy!r}")
                    argv = ["replay-dataset", policy, "--checkpoint", str(replay), "--out", str(sweep_dir / data_id),
                            "--no-progress"]
                else:
                    argv = ["collect", env_id, "--policy", policy, "--out", str(sweep_dir / data_id), "--no-progress"]
                    argv += _options("collect", dspec)
                add(Trial(data_id, "collect", argv, deps, {"dataset": name}, env_id=env_id, cpus=res["cpus"],
                          gpus=res["gpus"]))
            data_ids[name], data_gems[name] = data_id, export_gems
            gems_deps: list[str] = []
            if gems_from == "online" and export_gems is not None:
                gems_path = export_gems
            elif gems_from == "online":
                gems_trial = stage_trial("gems", env_id, {})
                gems_path, gems_deps = str(sweep_dir / gems_trial.id), [gems_trial.id]
            else:  # the grid's GeMS options, trained on this dataset
                gems_id = f"offline/gems/{env_short}_{name}.pt"
                gems_argv = ["pretrain-gems", str(sweep_dir / data_id), "--out", str(sweep_dir / gems_id),
                             "--no-progress"] + _options("gems", gems_settings) + tracker_args
                gems_trial = add(Trial(gems_id, "gems", gems_argv, [data_id], {"dataset": name}, env_id=env_id,
                                       cpus=res["cpus"], gpus=res["gpus"]))
                gems_path, gems_deps = str(sweep_dir / gems_trial.id), [gems_trial.id]
            export_id = f"offline/export/{env_short}_{name}.h5"
            argv = ["export", str(sweep_dir / data_id), "--gems", gems_path,
                    "--out", str(sweep_dir / export_id)] + _options("export", export_opts)
            export_trial = add(Trial(export_id, "export", argv, [data_id, *gems_deps], {"dataset": name},
                                     env_id=env_id, cpus=res["cpus"], gpus=res["gpus"]))
            for algo in algorithms:
                for seed in off_seeds:
                    run_id = f"offline/runs/{algo}_{env_short}_{name}_s{seed}"
                    argv = ["train-offline", algo, str(sweep_dir / export_id), "--gems", gems_path,
                            "--seed", str(seed), "--out", str(sweep_dir / run_id), "--no-progress"] + tracker_args
                    if steps is not None:
                        argv += ["--steps", str(steps)]
                    argv += _set_args(settings)
                    add(Trial(run_id, "offline", argv, [export_trial.id, *gems_deps],
                              {"dataset": name, "algorithm": algo, "seed": seed}, env_id=env_id, seed=seed,
                              method=f"offline-{algo}", cpus=res["cpus"], gpus=res["gpus"]))


BENCHMARK_DATASET_KEYS = {"benchmark", "policies", "episodes", "allow_mismatch"}


def _benchmark_dataset(name: str, dspec: dict[str, Any], env_id: str, sweep_dir: Path) -> tuple[str, list[str], str]:
    """``(trial id, argv, the policies' GeMS)`` of ``{benchmark: QUALITY, policies: DIR, episodes: N,
    allow_mismatch: BOOL}``: a standard dataset rebuilt by ``slaterec benchmark datasets`` from a
    policies folder (default: the one shipped for the environment; ``{env}`` in DIR is the
    environment's short name). ``allow_mismatch`` keeps a dataset whose fingerprint differs from the
    recorded one (another CPU rounds the policy's actions differently), the mismatch recorded in its
    provenance; its runs then form rows of their own (the table keys on the dataset's fingerprint)."""
    from d3rlpy_adapters.benchmark import QUALITIES, policies_folder, read_policies

    bad = set(dspec) - BENCHMARK_DATASET_KEYS
    if bad:
        raise GridError(f"offline.datasets.{name}: unknown key(s) {', '.join(sorted(bad))} beside benchmark; expected "
                        f"some of {', '.join(sorted(BENCHMARK_DATASET_KEYS))}")
    quality = dspec["benchmark"]
    if quality not in QUALITIES:
        raise GridError(f"offline.datasets.{name}.benchmark: unknown quality {quality!r}; expected one of "
                        f"{', '.join(QUALITIES)}")
    env_short = env_id.split("/")[-1].split("-v")[0]
    where = dspec.get("policies")
    if where is not None and not isinstance(where, str):
        raise GridError(f"offline.datasets.{name}.policies: expected a folder path, got {where!r}")
    if where is not None:
        where = where.replace("{env}", env_short)
    try:
        folder = policies_folder(str(Path(where).resolve()) if where is not None else env_short).resolve()
        manifest = read_policies(folder)
    except (FileNotFoundError, ValueError) as exc:
        raise GridError(f"offline.datasets.{name}: {exc}") from None
    if manifest["env_id"] != env_id:
        raise GridError(f"offline.datasets.{name}: the policies folder {folder} is of {manifest['env_id']}, not of "
                        f"{env_id}")
    medium = manifest["policies"]["medium"]
    if quality == "medium-replay" and not medium.get("replay") and not medium.get("episodes"):
        raise GridError(f"offline.datasets.{name}: {folder} kept no replay memory and its medium is no periodic "
                        "checkpoint, so medium-replay can be neither copied nor retrained; give policies: a folder "
                        "built by slaterec benchmark train-policies")
    argv = ["benchmark", "datasets", str(folder), "--qualities", quality, "--out",
            str(sweep_dir / "offline" / "data" / f"{env_short}_{name}"), "--overwrite", "--no-progress"]
    episodes = dspec.get("episodes")
    if episodes is not None:
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
            raise GridError(f"offline.datasets.{name}.episodes: expected a positive integer, got {episodes!r}")
        argv += ["--episodes", str(episodes)]
    allow = dspec.get("allow_mismatch", False)
    if not isinstance(allow, bool):
        raise GridError(f"offline.datasets.{name}.allow_mismatch: expected true or false, got {allow!r}")
    if allow:
        argv.append("--allow-mismatch")
    gems = folder / manifest["policies"]["expert"]["dir"] / "inputs" / "gems.pt"
    return f"offline/data/{env_short}_{name}/{env_short}/{quality}", argv, str(gems)


def retries_of(grid: dict[str, Any]) -> int:
    r = grid.get("retries", 1)
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise GridError(f"retries: expected a non-negative integer, got {r!r}")
    return r
