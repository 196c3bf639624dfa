"""Run directories: train with the protocol, resume, load agents, evaluate.

A run directory holds::

    config.json          the resolved configuration (RunConfig)
    provenance.json      env id and parameters, item-embedding / GeMS / MF fingerprints, seed
    state.json           progress: episodes, turns, validation curve, best checkpoint, status
    tb/                  TensorBoard scalars (+ progress.csv)
    checkpoints/         best.zip, last.zip, epNNNNNNN.zip (periodic; weights only, sb3_slate.checkpoints),
                         last_replay_buffer.npz, replay_epNNNNNNN.npz (the replay memory at the
                         checkpoints named by replay_snapshots)
    best_validation.json episode and validation return of checkpoints/best
    results.json         validation curve and test return (mean, std, ci95, episodes) when complete

A run directory is never overwritten: ``train_run`` on an existing directory
resumes it from its last checkpoint when it holds the same, unfinished run, and
refuses otherwise.
"""

from __future__ import annotations

import datetime
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from gym_slaterec.provenance import (
    ArtifactExistsError,
    PathLike,
    ProvenanceMismatchError,
    atomic_path,
    provenance,
    TrainingDiverged,
    run_status_on_exit,
    strict_json,
    write_json_atomic,
)

from gym_slaterec import run_dirs
from gym_slaterec.interrupts import StopRequest, graceful_stop
from gym_slaterec.provenance import machine_label, machine_record
from gym_slaterec.run_dirs import RUN_STATUSES, list_checkpoints, read_run_json, write_run_summary  # noqa: F401  (re-exported)

from .methods import Artifacts, RunConfig, episode_length, load_artifacts, method_of, wrap_env
from .protocol import TEST_SEED, VALIDATION_SEED, ProtocolCallback, evaluate_agent, training_seed

RUN_FORMAT = "slaterec.sb3_run/1"
#: the replay memory of the last checkpoint (npz; runs before the pickle-free format wrote a .pkl)
REPLAY_FILE = "last_replay_buffer.npz"
#: the replay memory kept with periodic checkpoint epNNNNNNN (RunConfig.replay_snapshots)
REPLAY_SNAPSHOT_PREFIX = "replay_"
LEGACY_REPLAY_FILE = "last_replay_buffer.pkl"
LAYOUT = run_dirs.LAYOUTS["sb3_run"]


def default_run_dir(cfg: RunConfig, workspace: Optional[PathLike] = None, template: Optional[str] = None) -> Path:
    """``WORKSPACE/METHOD_ENV_sSEED[_TAG]_YYYYmmdd-HHMMSS`` (UTC), or ``WORKSPACE/`` + ``template``
    filled by :func:`fill_name_template`; the workspace defaults to ``$SLATEREC_WORKSPACE``, else ``./runs``."""
    from gym_slaterec.names import workspace as workspace_of

    root = workspace_of(workspace)
    if template is not None:
        return root / fill_name_template(template, cfg)
    f = name_fields(cfg)
    return root / "_".join([cfg.method, f["env"], f"s{cfg.seed}", *([cfg.tag] if cfg.tag else []), f"{f['date']}-{f['time']}"])


def name_fields(cfg: RunConfig) -> dict[str, Any]:
    """What a name template may use: ``method``, ``env`` (short), ``env_id``, ``seed``, ``tag``,
    ``date`` (YYYYmmdd), ``time`` (HHMMSS, UTC) and every configuration key, dotted
    (``episodes``, ``agent.gamma``, ``belief.hidden_size``...)."""
    from gym_slaterec.names import common_fields, flat_fields

    return {**flat_fields(cfg.to_dict()), **common_fields(cfg.env_id), "tag": cfg.tag or ""}


def fill_name_template(template: str, cfg: RunConfig, extra: Optional[dict[str, Any]] = None) -> str:
    """``template`` (``log_{seed}/{method}/{tag}_{date}``, ``{env}_gamma{agent.gamma}``) with the
    run's fields (:func:`name_fields`) and ``extra`` ones (a sweep's grid point); an unknown
    field or a name leaving the workspace is refused."""
    from gym_slaterec.names import fill_template

    return fill_template(template, {**name_fields(cfg), **(extra or {})})


def base_env(cfg: RunConfig, n: int, analysis: bool = True, item_embeddings: Any = None) -> Any:
    """The native vector env of ``n`` users of a run's environment (its overrides and item
    matrix; ``analysis``: with ``analysis_info``)."""
    from gym_slaterec.rollouts import make_vector_env

    return make_vector_env(cfg.env_id, n, item_embeddings, analysis_info=analysis, **cfg.env_kwargs)


def read_state(run_dir: Path) -> dict[str, Any]:
    """A run's state.json, checked field by field (:func:`gym_slaterec.run_dirs.read_state`)."""
    return run_dirs.read_state(run_dir, LAYOUT)


def load_sb3_model(cls: type, path: Path, device: str = "cpu", **kwargs: Any) -> Any:
    """``cls.load(path)`` for the models with a pickle-free ``load`` of their own (the
    episode-replay SAC), a damaged or foreign file reported by name."""
    try:
        return cls.load(path, device=device, **kwargs)
    except (ValueError, KeyError, AssertionError, RuntimeError) as exc:
        raise ValueError(f"checkpoint {path} is damaged or not a {cls.__name__} checkpoint "
                         f"({type(exc).__name__}: {exc})") from exc


def rebuild_model(cfg: RunConfig, art: Artifacts, path: Path, device: str = "cpu", vec_env: Any = None,
                  wrapped: Any = None) -> Any:
    """The model of checkpoint ``path``: built from the run's configuration (on ``vec_env`` /
    ``wrapped``, or a one-user env for acting only), then its weights loaded without unpickling."""
    import dataclasses

    from .agent_configs import acting_only
    from .checkpoints import load_checkpoint
    from .envs import SB3VecEnv
    from .methods import build_model

    if cfg.regime.load is not None:
        return cfg.regime.load(path, device, vec_env)
    if vec_env is None:  # acting only: no replay memory to allocate
        cfg = dataclasses.replace(cfg, agent=acting_only(cfg.agent))
        wrapped = wrap_env(cfg, art, base_env(cfg, 1, analysis=False))
        vec_env = SB3VecEnv(wrapped, seed=0)
    return load_checkpoint(build_model(cfg, art, vec_env, wrapped, device), path)


class RunAgent:
    """A trained (or reference) agent of a run directory, ready to act on a SlateRec vector env."""

    def __init__(self, run_dir: Path, config: RunConfig, prov: dict[str, Any], model: Any, checkpoint: str,
                 artifacts: Optional[Artifacts] = None) -> None:
        self.run_dir = run_dir
        self.config = config
        self.method = config.method
        self.provenance = prov
        self.model = model
        self.checkpoint = checkpoint
        self._artifacts = artifacts

    @property
    def gems_fingerprint(self) -> Optional[str]:
        return self.provenance.get("inputs", {}).get("gems")

    @property
    def gems_path(self) -> Optional[str]:
        return self.config.gems if "gems" in self.config.spec.needs(self.config.agent) else None

    def artifacts(self) -> Artifacts:
        if self._artifacts is None:
            self._artifacts = load_artifacts(self.config, self.config.env_id, self.provenance.get("item_embeddings_fingerprint"))
            for role, fp in self._artifacts.fingerprints().items():
                want = self.provenance.get("inputs", {}).get(role)
                if want is not None and want != fp:
                    raise ProvenanceMismatchError(
                        f"{role} file {getattr(self.config, role)} has fingerprint {fp[:12]}, but run {self.run_dir} "
                        f"was trained with {want[:12]}; the file changed since training"
                    )
        return self._artifacts

    def wrap_env(self, vector_env: Any) -> Any:
        """``vector_env`` (native SlateRec vector env) wrapped exactly as in training."""
        env = wrap_env(self.config, self.artifacts(), vector_env)
        if self.config.spec.reference:
            self.model.bind(env)
        return env

    def predict(self, obs: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """Actions in the wrapped env's action space and the recurrent state (None for
        window agents; the belief for the episode-replay SAC)."""
        return self.model.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)

    def list_checkpoints(self) -> list[str]:
        return list_checkpoints(self.run_dir)


def read_run(run_dir: PathLike) -> tuple[Path, RunConfig, dict[str, Any]]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    for name in ("config.json", "provenance.json"):
        if not (run_dir / name).is_file():
            raise ValueError(f"{run_dir} is not an agent run directory (no {name})")
    data = read_run_json(run_dir / "config.json")
    if not isinstance(data, dict):
        raise ValueError(f"{run_dir / 'config.json'} is damaged: expected a JSON object")
    try:
        cfg = RunConfig.from_json(data)
        for key in ("gems", "mf"):  # a policy bundle names its own copies relative to itself; a run
            value = getattr(cfg, key)  # trained with a relative --gems keeps it relative to where it runs
            if value and not Path(value).is_absolute() and (run_dir / value).is_file():
                setattr(cfg, key, str(run_dir / value))
        cfg.validate()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{run_dir / 'config.json'} is damaged or from another version: {exc}") from exc
    return run_dir, cfg, read_run_json(run_dir / "provenance.json")


def load_agent(run_dir: PathLike, checkpoint: Union[str, int] = "best", warn_unfinished: bool = True) -> RunAgent:
    """The agent of ``run_dir`` at ``checkpoint`` ("best", "last", "epNNNNNNN" or an episode count);
    warns when the run has not finished (its checkpoints are then partial results)."""
    from .agents import ReferenceAgent

    run_dir, cfg, prov = read_run(run_dir)
    if warn_unfinished and not (run_dir / "results.json").is_file():
        import warnings

        state = read_state(run_dir) if (run_dir / "state.json").is_file() else {"episodes": "?"}
        warnings.warn(f"run {run_dir} is unfinished ({state['episodes']} of {cfg.episodes} episodes): its "
                      f"{checkpoint!r} checkpoint is a partial result", UserWarning, stacklevel=2)
    path, name = run_dirs.checkpoint_file(run_dir, checkpoint)
    agent = RunAgent(run_dir, cfg, prov, None, name)
    if cfg.spec.reference:
        try:
            agent.model = ReferenceAgent.load(path)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"checkpoint {path} is damaged ({type(exc).__name__}: {exc})") from exc
    else:
        agent.model = rebuild_model(cfg, agent.artifacts(), path)
    return agent


def evaluate_run_dir(run_dir: PathLike, env_id: str, episodes: int, seed: int,
                     item_embeddings: Any = None, checkpoint: str = "best") -> dict[str, Any]:
    """Mean return (95 % interval) of a run's agent on users ``seed .. seed + episodes - 1`` of ``env_id``."""
    agent = load_agent(run_dir, checkpoint)
    if env_id != agent.config.env_id:
        raise ProvenanceMismatchError(f"run {run_dir} was trained on {agent.config.env_id!r}, cannot evaluate it on {env_id!r}")
    res = evaluate_agent(agent, lambda n: base_env(agent.config, n, True, item_embeddings), episodes, seed)
    return {"policy": str(run_dir), "method": agent.method, "checkpoint": agent.checkpoint, "env_id": env_id, **res.summary()}


def load_run_inputs(cfg: RunConfig) -> tuple[Any, Artifacts]:
    """A one-user env of the run's environment and the run's GeMS / MF artifacts, checked
    against it (an artifact of another environment or item matrix is refused here)."""
    probe = base_env(cfg, 1, analysis=False)
    art = load_artifacts(cfg, cfg.env_id, probe.simulator.catalogue.fingerprint)
    wrap_env(cfg, art, probe)
    return probe, art


def existing_run(cfg: RunConfig, out: Path) -> Optional[dict[str, Any]]:
    """The state of the run already in ``out`` (None when ``out`` does not exist); refuses a
    directory that holds something else, or an unfinished run with another configuration."""
    if not out.exists():
        return None
    if not (out / "state.json").is_file() or not (out / "config.json").is_file():
        raise ArtifactExistsError(f"{out} exists and is not a resumable run directory; choose a new --out")
    state = read_state(out)
    if state.get("status") == "complete":
        return state
    raw = read_run_json(out / "config.json")
    try:  # an older layout is read as the configuration it was written with
        saved = RunConfig.from_json(raw).to_dict()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{out / 'config.json'} is damaged or from another version: {exc}") from exc
    now = cfg.to_dict()
    # the wall-time limit is a resource, not a setting of the experiment: a resume may change it
    run_dirs.check_same_run(out, {**saved, "max_wall_s": None}, {**now, "max_wall_s": None})
    return state


class Run:
    """One training run in its directory (created or resumed by :func:`train_run`)."""

    def __init__(self, run_dir: Path, config: RunConfig, progress: bool = True, device: str = "cpu",
                 trackers: tuple[str, ...] = ("tensorboard",)) -> None:
        self.dir = run_dir
        self.config = config
        self.progress = progress
        self.device = device
        self.trackers = trackers
        self.state: dict[str, Any] = {}
        self.model: Any = None
        self.stop_request = StopRequest()  # set while training: a Ctrl-C / SIGTERM asks for a stop at a resume point
        probe, self.artifacts = load_run_inputs(config)  # inputs that do not fit fail now, before a run dir exists
        self.item_fingerprint = probe.simulator.catalogue.fingerprint
        self.env_params = probe.simulator.config.to_dict()
        self.T = episode_length(config)

    # ------------------------------------------------------------ bookkeeping
    @property
    def ckpt_dir(self) -> Path:
        return self.dir / "checkpoints"

    def provenance(self) -> dict[str, Any]:
        return provenance(
            "sb3_run", env_id=self.config.env_id, env_params=self.env_params,
            item_embeddings_fingerprint=self.item_fingerprint, inputs=self.artifacts.fingerprints(),
            seed=self.config.seed, hyperparameters=self.config.to_dict(), method=self.config.method,
            gems_path=self.config.gems, mf_path=self.config.mf, device=self.device,
        )

    def _agent(self) -> RunAgent:
        return RunAgent(self.dir, self.config, {}, self.model, "live", self.artifacts)

    def _write_state(self) -> None:
        write_json_atomic(self.dir / "state.json", self.state, overwrite=True)

    def save_checkpoint(self, name: str) -> None:
        """Write checkpoint ``name`` atomically; ``last`` also records the state (and replay buffer)."""
        from . import checkpoints
        from .agents import ReferenceAgent

        self.ckpt_dir.mkdir(exist_ok=True)
        is_ref = isinstance(self.model, ReferenceAgent)
        dest = self.ckpt_dir / f"{name}{'.json' if is_ref else '.zip'}"
        own_format = is_ref or self.config.regime.load is not None  # their save writes no pickle
        with atomic_path(dest, overwrite=True) as tmp:
            self.model.save(tmp) if own_format else checkpoints.save_checkpoint(self.model, tmp)
        if name.startswith("ep") and name[2:].isdigit() and int(name[2:]) in self.config.replay_snapshots:
            with atomic_path(self.ckpt_dir / f"{REPLAY_SNAPSHOT_PREFIX}{name}.npz", overwrite=True) as tmp:
                self.model.save_replay_buffer(tmp)
        if name == "last":
            if self.config.save_replay_buffer and getattr(self.model, "replay_buffer", None) is not None:
                with atomic_path(self.ckpt_dir / REPLAY_FILE, overwrite=True) as tmp:
                    if own_format:
                        self.model.save_replay_buffer(tmp)
                    else:
                        checkpoints.save_replay_buffer(self.model.replay_buffer, tmp)
            self.state["wall_s"] = self.state.get("wall_s_before", 0.0) + (time.time() - self._t0)
            self._write_state()

    def _load_replay_buffer(self) -> None:
        """The replay memory of the last checkpoint (none saved: training resumes with an empty one)."""
        from . import checkpoints

        rb = self.ckpt_dir / REPLAY_FILE
        legacy = self.ckpt_dir / LEGACY_REPLAY_FILE
        if not rb.is_file() and legacy.is_file():
            if not zipfile.is_zipfile(legacy):  # SB3's pickled buffer; the episode SAC's was an npz by this name
                raise checkpoints.LegacyFormatError(checkpoints.legacy_message(legacy, "a replay buffer"))
            rb = legacy
        if not rb.is_file() or getattr(self.model, "replay_buffer", None) is None:
            return
        if self.config.regime.load is not None:  # a model with its own formats
            self.model.load_replay_buffer(rb)
        else:
            checkpoints.load_replay_buffer(self.model.replay_buffer, rb)

    def validate(self) -> dict[str, Any]:
        """Deterministic policy on the fixed validation users; keeps the best checkpoint."""
        res = evaluate_agent(self._agent(), lambda n: base_env(self.config, n), self.config.val_users, VALIDATION_SEED)
        summary = res.summary()
        wall = self.state.get("wall_s_before", 0.0) + (time.time() - self._t0)
        entry = {"episodes": self.state["episodes"], "turns": self.state["turns"], "wall_s": round(wall, 1), **{
            k: summary[k] for k in ("mean", "std", "ci95", "clicks_per_turn", "boredom", "diversity", "coverage")}}
        seconds = getattr(self.model, "seconds", None)  # the episode-replay SAC times collection and updates
        if seconds:
            entry.update({f"{k}_s": round(v, 3) for k, v in seconds.items()})
        self.state["validation"].append(entry)
        best_so_far = max(v["mean"] for v in self.state["validation"])
        with open(self.dir / "train.log", "a", buffering=1) as log:  # readable with tail -f while training
            log.write(f"episode {entry['episodes']} turns {entry['turns']} validation {summary['mean']:.2f} "
                      f"best {best_so_far:.2f} wall {wall:.0f} s\n")
        best = self.state.get("best_validation")
        if best is None or summary["mean"] > best:
            self.state["best_validation"] = summary["mean"]
            self.state["best_episode"] = self.state["episodes"]
            self.save_checkpoint("best")
            write_json_atomic(self.dir / "best_validation.json", {"episodes": self.state["episodes"], "validation_return": summary["mean"]},
                              overwrite=True)
        if not self.config.checkpoint_every:
            self.save_checkpoint("last")  # no periodic checkpoints: keep the run resumable at every validation
        return summary

    # -------------------------------------------------------------- training
    def _make_vec_env(self):
        from .envs import SB3VecEnv

        wrapped = wrap_env(self.config, self.artifacts, base_env(self.config, self.config.n_envs))
        if self.config.regime.own_loop:  # e.g. EpisodeSAC steps the gymnasium vector env itself
            return wrapped, wrapped
        seed = training_seed(self.config.seed, self.state["episodes"])
        return SB3VecEnv(wrapped, seed=seed), wrapped

    def train(self, resume: bool) -> dict[str, Any]:
        import torch

        from .agents import ReferenceAgent
        from .methods import build_model

        from gym_slaterec.core.allocator import keep_freed_memory

        cfg = self.config
        torch.set_num_threads(cfg.torch_threads)
        keep_freed_memory()  # a paper-regime step reallocates MB-sized tensors (~4 % of its time in page faults)
        torch.manual_seed(cfg.seed)
        self._t0 = time.time()
        # where each stretch of the run ran (a resumed run may move to another machine): its wall time reads with it
        self.state.setdefault("sessions", []).append({
            "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "episodes": int(self.state.get("episodes", 0)), "machine": machine_label({"machine": machine_record()})})
        if cfg.spec.reference:
            self.model = ReferenceAgent(cfg.method, seed=cfg.seed)
            if not self.state["validation"]:
                self.validate()
            return self.finish()
        vec_env, wrapped = self._make_vec_env()
        if resume and (self.ckpt_dir / "last.zip").is_file():
            self.model = rebuild_model(cfg, self.artifacts, self.ckpt_dir / "last.zip", self.device, vec_env, wrapped)
            self._load_replay_buffer()
            self.model.num_timesteps = int(self.state["turns"])
        else:
            self.model = build_model(cfg, self.artifacts, vec_env, wrapped, self.device)
        if cfg.regime.own_loop:
            self.model.episodes_done = int(self.state["episodes"])
            self.model.set_env(wrapped, lambda done: training_seed(cfg.seed, done))
        self.model.set_logger(self._logger())
        try:
            self._learn(resume)
        finally:
            self.model.logger.close()  # flushes TensorBoard and ends the trackers' runs
        vec_env.close()
        return self.finish()

    def _learn(self, resume: bool) -> None:
        cfg = self.config
        if not self.state["validation"]:
            self.validate()  # the untrained policy: episode 0 of the learning curve
        total_turns = cfg.episodes * self.T
        remaining = total_turns - int(self.state["turns"])
        out_of_time = cfg.max_wall_s is not None and self.state.get("wall_s", 0.0) >= cfg.max_wall_s
        if out_of_time:
            self.state["stopped_by_wall_budget"] = True
        if remaining > 0 and not out_of_time:
            callback = ProtocolCallback(self, cfg.episodes, progress=self.progress)
            try:
                with graceful_stop(f"{cfg.method} training") as self.stop_request:
                    self.model.learn(total_timesteps=remaining, callback=callback, reset_num_timesteps=not resume,
                                     progress_bar=False)
                if self.stop_request.requested:  # the callback saved the resume point; no off-schedule validation
                    raise KeyboardInterrupt
            except (ValueError, RuntimeError) as exc:
                bad = [] if isinstance(exc, TrainingDiverged) else diverged_parameters(self.model)
                if bad:  # e.g. torch's "Expected parameter loc ... to satisfy the constraint Real()"
                    raise TrainingDiverged(f"training diverged at episode {self.state['episodes']} (weights blew up "
                                           f"in {', '.join(bad[:3])}); lower the learning rate") from exc
                raise
            finally:  # an interrupted or failed learn() skips the callback's end: its status-line timer would live on
                if callback.bar is not None:
                    callback.bar.close()
            if self.state["validation"][-1]["episodes"] != self.state["episodes"]:
                self.validate()
            self.save_checkpoint("last")

    def _logger(self) -> Any:
        """SB3's logger: progress.csv, and TensorBoard and the other chosen trackers (same scalars)."""
        from stable_baselines3.common.logger import Logger, make_output_format

        from gym_slaterec.trackers import (RunIdentity, ScalarWriter, continued_csv_output, env_tag, resume_id,
                                           sb3_output_format)

        folder = self.dir / "tb"
        folder.mkdir(parents=True, exist_ok=True)
        formats = [continued_csv_output(folder / "progress.csv")]  # a resumed run keeps its earlier rows
        if "tensorboard" in self.trackers:
            formats.append(make_output_format("tensorboard", str(folder)))
        logger = Logger(str(folder), formats)
        others = [t for t in self.trackers if t != "tensorboard"]
        if others:
            cfg = self.config
            tags = [cfg.method, env_tag(cfg.env_id), f"seed{cfg.seed}", *([cfg.tag] if cfg.tag else [])]
            writer = ScalarWriter(others, self.dir / "tb", RunIdentity(self.dir, self.dir.name, tags, cfg.notes, {
                "config": cfg.to_dict(), "provenance": read_run_json(self.dir / "provenance.json")},
                resume_id(self.dir)))
            logger.output_formats.append(sb3_output_format(writer))
        return logger

    def finish(self) -> dict[str, Any]:
        """Test the best-validation checkpoint on the fixed test users; write results.json."""
        agent = load_agent(self.dir, "best", warn_unfinished=False)
        res = evaluate_agent(agent, lambda n: base_env(self.config, n), self.config.test_users, TEST_SEED)
        self.state["status"] = "complete"
        self.state["wall_s"] = self.state.get("wall_s_before", 0.0) + (time.time() - self._t0)
        results = {
            "format": RUN_FORMAT,
            "method": self.config.method,
            "env_id": self.config.env_id,
            "seed": self.config.seed,
            "budget": {"episodes": self.state["episodes"], "turns": self.state["turns"]},
            "wall_time_s": self.state["wall_s"],
            "validation": self.state["validation"],
            "best": {"episodes": self.state.get("best_episode"), "validation_return": self.state.get("best_validation")},
            "test": {**res.summary(), "checkpoint": "best", "users_first_seed": TEST_SEED},
            "sessions": self.state.get("sessions", []),
            "provenance": read_run_json(self.dir / "provenance.json"),
        }
        write_json_atomic(self.dir / "results.json", strict_json(results), overwrite=True)
        write_run_summary(self.dir)
        self._write_state()
        return results


#: a weight this large (or NaN, inf) means the optimiser blew up, even before it overflows
DIVERGED_WEIGHT = 1e12


def diverged_parameters(model: Any) -> list[str]:
    """Names of the model's weights that are not finite or beyond :data:`DIVERGED_WEIGHT` (empty for a
    healthy model)."""
    import torch

    def bad(t: torch.Tensor) -> bool:
        return t.is_floating_point() and not bool((t.detach().abs() < DIVERGED_WEIGHT).all())

    out = []
    for name, value in vars(model).items():
        if isinstance(value, torch.nn.Module):
            out += [f"{name}.{p}" for p, t in value.named_parameters() if bad(t)]
        elif isinstance(value, torch.Tensor) and bad(value):
            out.append(name)
    return out


def run_device(method: str, spec: str = "auto") -> str:
    """The torch device a run of ``method`` trains on: ``spec`` resolved (auto: CUDA when
    present), except that methods not declared ``cuda`` in the method table run on the CPU
    (an explicit cuda for them is refused)."""
    from gym_slaterec.devices import resolve_device

    from .methods import METHOD_TABLE

    device = resolve_device(spec)
    if device.startswith("cuda") and not method_of(method).cuda:
        if spec != "auto":
            cuda = ", ".join(m.name for m in METHOD_TABLE.values() if m.cuda)
            raise ValueError(f"{method} trains on the CPU only (CUDA: {cuda}); use --device cpu or auto")
        device = "cpu"
    return device


def train_run(cfg: RunConfig, out: PathLike, progress: bool = True, device: str = "auto",
              trackers: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Train ``cfg`` into run directory ``out`` (new) or resume the unfinished run there.

    Refuses a directory that holds something else, a finished run, or a run with
    another configuration. Returns the results (also in ``out/results.json``).
    ``device`` (auto, cpu, cuda[:N]) is where the networks train; it is recorded in the
    provenance and the state, and a run may resume on another device. ``trackers``: where the
    scalars go besides progress.csv (:mod:`gym_slaterec.trackers`; default TensorBoard).
    """
    from gym_slaterec.locks import writer_lock
    from gym_slaterec.trackers import check_trackers

    cfg.validate()
    trackers = check_trackers(trackers)
    device = run_device(cfg.method, device)
    out = Path(out)
    with writer_lock(out), run_status_on_exit(out):  # one writer per run directory; a stop is recorded
        return _train_into(cfg, out, progress, device, trackers)


#: where a wall-limited run that is continued keeps the results of each earlier stop
WALL_LIMITED_DIR = "wall_limited"


def reopen_wall_limited_run(out: Path, state: dict[str, Any], cfg: RunConfig) -> None:
    """Make the finished run in ``out`` resumable when it stopped at its wall-time limit short of its
    episode budget and ``cfg`` allows it more time; refuse any other finished run.

    Its results at the stop (results.json, summary.json) move to ``wall_limited/epNNNNNNN/`` (kept,
    never overwritten), so the directory reads as a running run until the continued training
    writes the results of the longer run; ``state["continued"]`` records each such extension.
    """
    done, wall = int(state.get("episodes", 0)), float(state.get("wall_s", 0.0))
    if not state.get("stopped_by_wall_budget") or done >= cfg.episodes:
        raise ArtifactExistsError(f"{out} holds a finished run (results.json); run directories are never overwritten")
    if cfg.max_wall_s is not None and cfg.max_wall_s <= wall:
        raise ValueError(
            f"{out} stopped at its wall-time limit after {done:,} of {cfg.episodes:,} episodes ({wall:,.0f} s); to "
            f"continue it give a larger limit (--set max_wall_s=S with S > {wall:.0f}, or max_wall_s=null for none)")
    keep = out / WALL_LIMITED_DIR / f"ep{done:07d}"
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "summary.json"):
        if (out / name).is_file():
            if (keep / name).exists():
                raise ArtifactExistsError(f"{keep / name} exists; moving the results of the stop at {done:,} episodes "
                                          f"there would overwrite it")
            os.replace(out / name, keep / name)
    state["status"] = "interrupted"  # until the resume below marks it running: a crash leaves a resumable run
    state.pop("stopped_by_wall_budget", None)
    state.setdefault("continued", []).append({"episodes": done, "wall_s": round(wall, 1),
                                              "results": f"{WALL_LIMITED_DIR}/ep{done:07d}/results.json"})
    write_json_atomic(out / "state.json", state, overwrite=True)


def _train_into(cfg: RunConfig, out: Path, progress: bool, device: str, trackers: tuple[str, ...]) -> dict[str, Any]:
    resume = False
    state = existing_run(cfg, out)
    if state is not None:
        if state.get("status") == "complete":
            reopen_wall_limited_run(out, state, cfg)
        run = Run(out, cfg, progress, device, trackers)
        prov = read_run_json(out / "provenance.json")
        for role, fp in run.artifacts.fingerprints().items():
            if prov.get("inputs", {}).get(role) not in (None, fp):
                raise ProvenanceMismatchError(f"{role} file changed since the run started ({prov['inputs'][role][:12]} != {fp[:12]})")
        run.state = state
        best = out / "best_validation.json"
        if best.is_file():  # best.zip may be newer than the last checkpoint's state
            b = read_run_json(best)
            run.state["best_validation"], run.state["best_episode"] = b["validation_return"], b["episodes"]
        run.state["wall_s_before"] = state.get("wall_s", 0.0)
        run.state["resumed"] = state.get("resumed", 0) + 1
        saved_config = read_run_json(out / "config.json")
        if saved_config.get("max_wall_s") != cfg.max_wall_s:  # recorded in the config (what the run ran under) and in the state
            run.state.setdefault("max_wall_s_changes", []).append(
                {"episodes": state.get("episodes", 0), "wall_s": round(state.get("wall_s", 0.0), 1),
                 "from": saved_config.get("max_wall_s"), "to": cfg.max_wall_s})
            write_json_atomic(out / "config.json", {**saved_config, "max_wall_s": cfg.max_wall_s}, overwrite=True)
        resume = True
        run.state["device"] = device
        run.state["status"] = "running"
        run.state.pop("error", None)
    else:
        run = Run(out, cfg, progress, device, trackers)  # loads and checks the artifacts before anything is written
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out, directory=True) as tmp:
            tmp.mkdir(parents=True, exist_ok=True)
            (tmp / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
            (tmp / "provenance.json").write_text(json.dumps(run.provenance(), indent=2) + "\n")
            state = {"format": RUN_FORMAT, "status": "running", "episodes": 0, "turns": 0, "validation": [],
                     "best_validation": None, "best_episode": None, "device": device}
            (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
        run.state = state
    return run.train(resume)
