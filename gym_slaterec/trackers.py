"""Experiment trackers as plug-ins: TensorBoard (the default), SwanLab, Weights & Biases, MLflow.

Every training command takes ``--tracker NAME`` (repeatable; grids: ``trackers: [...]``).
A run's trackers receive the same scalars as its TensorBoard files (validation return,
losses, entropy coefficient, throughput, boredom, diversity...), at the same steps, and
the run's resolved configuration and provenance as their config. The run is named after
its directory (the experiment name), tagged with its method, environment, seed and
``--tag``, described by its ``--notes``; the project is ``$SLATEREC_PROJECT`` (a sweep
sets it to the grid's name), else ``slaterec``.

Where the records go is each tool's own setting: ``WANDB_MODE`` (``offline`` keeps them
on the machine, under the run directory), ``SWANLAB_MODE`` (``cloud``, ``local``,
``offline``; default ``offline``, under the run directory) and ``MLFLOW_TRACKING_URI``
(a server, or a local store; default a file store ``mlruns/`` beside the run directory).
The three are optional extras: ``pip install 'slaterec[wandb]'`` (``[swanlab]``,
``[mlflow]``); choosing one that is not installed is refused before anything runs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .names import flat_fields

TRACKERS = ("tensorboard", "swanlab", "wandb", "mlflow")
#: tracker -> (module it imports, the extra that installs it)
EXTRAS = {"swanlab": ("swanlab", "slaterec[swanlab]"), "wandb": ("wandb", "slaterec[wandb]"),
          "mlflow": ("mlflow", "slaterec[mlflow]")}


def check_trackers(names: Optional[Sequence[str]]) -> tuple[str, ...]:
    """The chosen trackers (default: TensorBoard), each known and installed, in order, once."""
    chosen = tuple(dict.fromkeys(names or ("tensorboard",)))
    for name in chosen:
        if name not in TRACKERS:
            raise ValueError(f"unknown tracker {name!r}; choose among {', '.join(TRACKERS)}")
        if name in EXTRAS and importlib.util.find_spec(EXTRAS[name][0]) is None:
            raise ValueError(f"tracker {name!r} is chosen but {EXTRAS[name][0]} is not installed: "
                             f"pip install '{EXTRAS[name][1]}'")
    return chosen


@dataclass
class RunIdentity:
    """What a tracker shows of a run."""

    run_dir: Path
    name: str
    tags: list[str] = field(default_factory=list)
    notes: Optional[str] = None
    config: dict[str, Any] = field(default_factory=dict)
    #: the same id for every session of one run (a resumed run continues its tracker run)
    resume_id: Optional[str] = None

    @property
    def project(self) -> str:
        return os.environ.get("SLATEREC_PROJECT") or "slaterec"


def _quiet() -> Any:
    """Hides a tracker library's notices on stdout (its warnings on stderr stay) unless
    ``--verbose`` / ``$SLATEREC_VERBOSE``."""
    import contextlib
    import io

    if os.environ.get("SLATEREC_VERBOSE") == "1":
        return contextlib.nullcontext()
    return contextlib.redirect_stdout(io.StringIO())


class Tracker:
    """A tracker's run: scalars by step, then finish."""

    def log(self, scalars: dict[str, float], step: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def finish(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class WandbTracker(Tracker):
    def __init__(self, run: RunIdentity) -> None:
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        resume = {"id": run.resume_id, "resume": "allow"} if run.resume_id else {}
        self.run = wandb.init(project=run.project, name=run.name, tags=run.tags, notes=run.notes, config=run.config,
                              dir=str(run.run_dir), reinit="create_new", **resume)

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def finish(self) -> None:
        self.run.finish()


class SwanLabTracker(Tracker):
    def __init__(self, run: RunIdentity) -> None:
        import swanlab

        mode = os.environ.get("SWANLAB_MODE") or "offline"
        logdir = os.environ.get("SWANLAB_LOG_DIR") or str(run.run_dir / "swanlog")
        with _quiet():
            self.run = swanlab.init(project=run.project, experiment_name=run.name, tags=run.tags, config=run.config,
                                    mode=mode, logdir=logdir, **({"description": run.notes} if run.notes else {}))

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def finish(self) -> None:
        with _quiet():
            self.run.finish()


class MLflowTracker(Tracker):
    def __init__(self, run: RunIdentity) -> None:
        import logging

        import mlflow

        if os.environ.get("SLATEREC_VERBOSE") != "1":
            logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Creating a new experiment" and the like

        if not os.environ.get("MLFLOW_TRACKING_URI"):  # a local store beside the run, as MLflow's own ./mlruns
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((run.run_dir.resolve().parent / "mlruns").as_uri())
        self.mlflow = mlflow
        mlflow.set_experiment(run.project)
        tags = {"tag." + re.sub(r"[^A-Za-z0-9_\-. :/]", "_", t): "1" for t in run.tags}
        earlier = None
        if run.resume_id:  # a resumed run continues the MLflow run of its first session
            tags["slaterec.resume_id"] = run.resume_id
            found = mlflow.search_runs(filter_string=f"tags.`slaterec.resume_id` = '{run.resume_id}'",
                                       output_format="list")
            earlier = found[0].info.run_id if found else None
        if earlier is not None:
            self.active = mlflow.start_run(run_id=earlier)
            return
        self.active = mlflow.start_run(run_name=run.name, tags=tags, description=run.notes)
        params = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in flat_fields(run.config).items()}
        items = [(k[:250], v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per call
            mlflow.log_params(dict(items[i:i + 100]))
        mlflow.log_dict(run.config, "config.json")

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({k.replace(":", "_"): v for k, v in scalars.items()}, step=step)

    def finish(self) -> None:
        self.mlflow.end_run()


_CLASSES = {"wandb": WandbTracker, "swanlab": SwanLabTracker, "mlflow": MLflowTracker}


class ScalarWriter:
    """TensorBoard's ``SummaryWriter`` (when chosen) and the other trackers behind one
    ``add_scalar``: every scalar reaches every chosen tracker at the same step."""

    def __init__(self, names: Sequence[str], logdir: Path, run: Optional[RunIdentity] = None) -> None:
        names = check_trackers(names)
        self.tensorboard = None
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(logdir))
        others = [n for n in names if n != "tensorboard"]
        if others and run is None:
            raise ValueError("trackers other than tensorboard need the run's identity")
        self.trackers: list[Tracker] = [_CLASSES[n](run) for n in others]

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        if self.tensorboard is not None:
            self.tensorboard.add_scalar(tag, value, step)
        self.log({tag: value}, step)

    def log(self, scalars: dict[str, float], step: int) -> None:
        """Scalars of one step to the trackers other than TensorBoard."""
        clean = {k: float(v) for k, v in scalars.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                 and math.isfinite(float(v))}
        if clean:
            for t in self.trackers:
                t.log(clean, int(step))

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        for t in self.trackers:
            t.finish()
        self.trackers = []


def sb3_output_format(writer: ScalarWriter) -> Any:
    """An SB3 logger output (``KVWriter``) that forwards each dump's scalars to ``writer``'s
    trackers other than TensorBoard (SB3 writes TensorBoard itself)."""
    from stable_baselines3.common.logger import KVWriter

    class _TrackerOutput(KVWriter):
        def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
            writer.log(key_values, step)

        def close(self) -> None:
            writer.close()

    return _TrackerOutput()


def continued_csv_output(path: Path) -> Any:
    """SB3's CSV log (``progress.csv``) continued where an earlier session of the run left it.

    SB3's own ``CSVOutputFormat`` opens its file anew, which empties it: a resumed run would lose
    every row written before the resume. This one opens an existing file for update at its end
    and takes its header as the known columns; a new column still rewrites the file with it, as
    SB3's does."""
    from stable_baselines3.common.logger import CSVOutputFormat

    class _ContinuedCSV(CSVOutputFormat):
        def __init__(self, filename: Path) -> None:  # noqa: D107 - SB3's, without emptying the file
            old = Path(filename)
            previous = old.read_text() if old.is_file() else ""
            self.file = open(filename, "r+" if previous else "w+")
            self.keys = previous.splitlines()[0].split(",") if previous.strip() else []
            self.separator, self.quotechar = ",", '"'
            if previous and not previous.endswith("\n"):  # a row cut short by a kill: end it
                self.file.seek(0, 2)
                self.file.write("\n")
            self.file.seek(0, 2)

    return _ContinuedCSV(path)


def add_tracker_argument(parser: Any) -> None:
    """``--tracker NAME`` (repeatable) on a training command."""
    parser.add_argument("--tracker", dest="trackers", action="append", choices=TRACKERS, default=None,
                        help="where scalars go besides progress.csv/train.log (repeatable; default tensorboard): "
                        "tensorboard, swanlab, wandb, mlflow (extras: pip install 'slaterec[wandb]'...; "
                        "modes: WANDB_MODE, SWANLAB_MODE, MLFLOW_TRACKING_URI; project: $SLATEREC_PROJECT)")


def artifact_writer(trackers: Optional[Sequence[str]], logdir: Optional[Path], run: RunIdentity) -> Optional[ScalarWriter]:
    """The scalar writer of a GeMS / MF training: TensorBoard in ``logdir`` when one is given (as
    before trackers existed) or when ``tensorboard`` is named (then ``NAME_tb`` beside the
    artifact), plus the other chosen trackers; None when nothing is to be written."""
    names = list(check_trackers(trackers)) if trackers else (["tensorboard"] if logdir is not None else [])
    if not names:
        return None
    if "tensorboard" in names and logdir is None:
        logdir = run.run_dir / f"{run.name}_tb"
    return ScalarWriter(names, Path(logdir) if logdir is not None else run.run_dir, run)


def resume_id(run_dir: Path) -> str:
    """A run directory's tracker id: the same in every session that trains it."""
    import hashlib

    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def env_tag(env_id: Optional[str]) -> str:
    return str(env_id or "").split("/")[-1].split("-v")[0]
