"""Offline RL with d3rlpy on exported datasets, evaluated in the environment.

:func:`train_offline` trains one of TD3+BC, CQL, IQL, BCQ or BC (d3rlpy 2.8) with
the history-window GRU encoder (:mod:`.encoders`) on an exported dataset, logs
the losses to TensorBoard, evaluates the deterministic policy every
``eval_every`` gradient steps in the environment through the
:class:`~gym_slaterec.wrappers.GeMSAction` wrapper on the fixed validation users
of the online protocol, keeps the best-validation model, tests it on the fixed
test users and writes a run directory::

    RUN_DIR/
      config.json       resolved OfflineConfig
      provenance.json   env, dataset and GeMS fingerprints, seed
      tb/               TensorBoard scalars (losses, validation return)
      model_best.pt     weights with the best validation return (state dicts only: read weights-only,
                        the learner rebuilt from config.json)
      model_last.pt     weights and optimiser states at the last checkpoint / the end
      model_stepNNNNNNN.pt  the model at every periodic checkpoint (evaluate --checkpoint stepN)
      state.json        progress while unfinished: step, curve, best, RNG states (the resume point)
      results.json      validation curve, best step, test return (mean, ci95, episodes)

The run directory exists from the first step: every ``checkpoint_every`` steps
``model_last.pt`` and ``state.json`` are replaced atomically, and training the
same configuration into an unfinished run directory resumes from there (with the
random generators restored, so the resumed run ends where an uninterrupted one would).

The dataset's GeMS must be the GeMS given here: actions of one GeMS mean nothing
to another, so any other checkpoint is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from gymnasium.vector import VectorEnv, VectorWrapper
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from gym_slaterec.provenance import (ArtifactExistsError, PathLike, ProvenanceMismatchError, atomic_path, check_writable,
                                    TrainingDiverged, provenance, run_status_on_exit, strict_json,
                                    write_json_atomic)

from sb3_slate.agent_configs import AgentConfig, setting
from sb3_slate.settings import BOOL, DISCOUNT, NON_NEGATIVE, OPEN_UNIT, OPTIONAL_POSITIVE, POSITIVE_INT, SEED, one_of

from .export import load_d3rlpy, read_sidecar, require_gems
from .window import WindowBuffer, WindowLayout
from gym_slaterec.core.allocator import keep_freed_memory
from gym_slaterec.interrupts import graceful_stop
from gym_slaterec.progress import progress as progress_bar
from gym_slaterec.run_dirs import write_run_summary

ALGORITHMS = ("td3bc", "cql", "iql", "bcq", "bc")
RESULTS_FORMAT = "slaterec.offline_run/1"


#: settings added after runs were written, with what those runs ran with (a run's config.json
#: without the key is read with this value, whatever today's default)
WRITTEN_BEFORE: dict[str, Any] = {"shared_encoder": False}


def written_config(data: dict[str, Any]) -> dict[str, Any]:
    """A run's written configuration with every setting of this version: a setting added since
    gets what such runs ran with (:data:`WRITTEN_BEFORE`), else its default."""
    return {**OfflineConfig().to_dict(), **WRITTEN_BEFORE, **data}


@dataclass
class OfflineConfig(AgentConfig):
    """Hyper-parameters of an offline run (d3rlpy defaults unless set): the only code defaults,
    each field documented and checked (:mod:`sb3_slate.agent_configs`).

    ``eval_every`` counts gradient steps; validation uses ``val_users`` fixed users,
    the final test ``test_users`` fixed users (the online protocol's sets).
    """

    algo: str = setting("td3bc", "offline algorithm: " + ", ".join(ALGORITHMS), one_of(*ALGORITHMS))
    steps: int = setting(10_000, "gradient steps of the run", POSITIVE_INT)
    seed: int = setting(0, "seed of d3rlpy, torch and the batch sampling", SEED)
    batch_size: int = setting(256, "transitions per gradient batch", POSITIVE_INT)
    gamma: float = setting(0.8, "discount factor (the paper's online SAC value, docs/method.md section 7)", DISCOUNT)
    eval_every: int = setting(1_000, "gradient steps between validations on the validation users", POSITIVE_INT)
    checkpoint_every: int = setting(1_000, "gradient steps between resume points (model_last.pt + state.json)",
                                    POSITIVE_INT)
    val_users: int = setting(200, "fixed validation users (the online protocol's)", POSITIVE_INT)
    test_users: int = setting(500, "fixed test users (the online protocol's)", POSITIVE_INT)
    item_dim: int = setting(20, "dimension of the history encoder's item table", POSITIVE_INT)
    gru_hidden: int = setting(20, "hidden size of the history encoder's GRU (the belief)", POSITIVE_INT)
    feature_size: int = setting(256, "width of the encoder's output layer", POSITIVE_INT)
    actor_lr: Optional[float] = setting(None, "learning rate of the actor (None: d3rlpy's default)", OPTIONAL_POSITIVE)
    critic_lr: Optional[float] = setting(None, "learning rate of the critics (None: d3rlpy's default)",
                                         OPTIONAL_POSITIVE)
    td3bc_alpha: float = setting(10.0, "TD3+BC's alpha: best on the validation users (BENCHMARKS.md); d3rlpy's "
                                 "default is 2.5", NON_NEGATIVE)
    cql_conservative_weight: float = setting(5.0, "CQL's weight of the conservative loss", NON_NEGATIVE)
    iql_expectile: float = setting(0.7, "IQL's expectile of the value loss", OPEN_UNIT)
    bcq_action_samples: int = setting(10, "BCQ's actions sampled from the generative model per state", POSITIVE_INT)
    encoder_items: str = setting("scratch", "initial item table of every history encoder: scratch, gems (the run's "
                                 "GeMS's), ideal (the simulator's, privileged) or mf:FILE (MF embeddings)",
                                 ("scratch, gems, ideal or mf:FILE", lambda v: isinstance(v, str) and (
                                     v in ("scratch", "gems", "ideal") or (v.startswith("mf:") and len(v) > 3))))
    shared_encoder: bool = setting(True, "one history belief for all networks, trained by the critics' losses and "
                                   "read without gradient by the actor (BC: no effect; 2-3x faster steps, the "
                                   "same returns in the measured slice: docs/offline.md); false: one per network, "
                                   "as the paper separates actor and critic encoders", BOOL)
    encoder_freeze: bool = setting(False, "keep the encoders' item tables fixed (needs encoder_items other than "
                                   "scratch)", BOOL)
    log_every: int = setting(50, "gradient steps between TensorBoard scalars", POSITIVE_INT)
    allow_partial: bool = setting(False, "accept a GeMS checkpoint whose training was interrupted (--allow-partial)",
                                  BOOL)

    def validate(self) -> None:
        self.check("OfflineConfig")
        if self.encoder_freeze and self.encoder_items == "scratch":
            raise ValueError("OfflineConfig.encoder_freeze=true with encoder_items=scratch would keep random item "
                             "tables; give encoder_items=gems, ideal or mf:FILE")

    def with_overrides(self, overrides: dict[str, Any]) -> "OfflineConfig":
        """A copy with ``{field: value}`` applied; unknown fields are refused by name."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown offline setting(s) {unknown}; known: {sorted(names)}")
        out = dataclasses.replace(self, **overrides)
        out.validate()
        return out


def make_algorithm(config: OfflineConfig, layout: WindowLayout, device: str = "cpu"):
    """The d3rlpy algorithm (not yet built) for ``config`` with the GRU window encoder everywhere,
    on ``device`` (a resolved torch device name)."""
    import d3rlpy

    from .encoders import SlateHistoryEncoderFactory

    enc = SlateHistoryEncoderFactory(
        num_items=layout.num_items, slate_size=layout.slate_size, window=layout.window,
        item_dim=config.item_dim, hidden=config.gru_hidden, feature_size=config.feature_size,
    )
    lr: dict[str, float] = {}
    if config.actor_lr is not None:
        lr["actor_learning_rate"] = config.actor_lr
    if config.critic_lr is not None:
        lr["critic_learning_rate"] = config.critic_lr
    common = dict(batch_size=config.batch_size, gamma=config.gamma)
    a = config.algo
    if a == "td3bc":
        cfg = d3rlpy.algos.TD3PlusBCConfig(actor_encoder_factory=enc, critic_encoder_factory=enc,
                                           alpha=config.td3bc_alpha, **common, **lr)
    elif a == "cql":
        cfg = d3rlpy.algos.CQLConfig(actor_encoder_factory=enc, critic_encoder_factory=enc,
                                     conservative_weight=config.cql_conservative_weight, **common, **lr)
    elif a == "iql":
        cfg = d3rlpy.algos.IQLConfig(actor_encoder_factory=enc, critic_encoder_factory=enc, value_encoder_factory=enc,
                                     expectile=config.iql_expectile, **common, **lr)
    elif a == "bcq":
        cfg = d3rlpy.algos.BCQConfig(actor_encoder_factory=enc, critic_encoder_factory=enc,
                                     imitator_encoder_factory=enc, n_action_samples=config.bcq_action_samples,
                                     **common, **lr)
    else:
        kw = {"learning_rate": config.actor_lr} if config.actor_lr is not None else {}
        cfg = d3rlpy.algos.BCConfig(encoder_factory=enc, batch_size=config.batch_size, **kw)
    return cfg.create(device=False if device == "cpu" else device)


def encoder_item_table(config: OfflineConfig, gems: Any, catalogue: Any) -> tuple[Optional[np.ndarray], dict[str, str]]:
    """The initial item table of the history encoders (None: scratch) and the fingerprints of the
    inputs it comes from (an MF file's)."""
    kind = config.encoder_items
    if kind == "scratch":
        return None, {}
    if kind == "gems":
        table = np.asarray(gems.item_embedding_table(), dtype=np.float32)
        source, inputs = f"the GeMS's item table", {}
    elif kind == "ideal":
        table = np.asarray(catalogue.embeddings, dtype=np.float32)
        source, inputs = "the simulator's item table", {}
    else:
        from gym_slaterec.mf import MFEmbeddings

        mf = MFEmbeddings.load(kind[3:])
        mf.check_env(gems.env_id, catalogue.fingerprint)
        table, source, inputs = np.asarray(mf.embeddings, dtype=np.float32), f"MF file {kind[3:]}", {"mf": mf.fingerprint}
    if table.shape[1] != config.item_dim:
        raise ValueError(f"encoder_items={kind}: {source} has {table.shape[1]} dimensions per item, but item_dim is "
                         f"{config.item_dim}; --set item_dim={table.shape[1]}")
    return table, inputs


def tie_encoders(learner: Any, config: OfflineConfig) -> None:
    """Share one history belief between a built learner's networks when ``config.shared_encoder``
    (:func:`d3rlpy_adapters.encoders.share_beliefs`); nothing otherwise."""
    from .encoders import share_beliefs

    if config.shared_encoder:
        share_beliefs(_modules(learner))


def fuse_optimisers(learner: Any) -> int:
    """Run every Adam of a built learner on torch's fused kernel where its parameters' device has
    one (CPU, CUDA): the same update rule in one kernel per parameter tensor instead of about ten,
    2-8 % of an offline gradient step on one core (BENCHMARKS.md "fused Adam"). A step hook counts
    the kernel's in-place writes in the parameters' versions (:func:`_count_updates`). Called again
    after optimiser states are loaded, which bring their own setting. Returns the optimisers changed."""
    import torch

    try:  # torch's own list (CPU from torch 2.4 on); a private helper, so a conservative fallback
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        supported = set(_get_fused_kernels_supported_devices())
    except ImportError:
        supported = {"cuda"}
    changed = 0
    for module in _modules(learner).values():
        optim = getattr(module, "optim", None)
        if type(optim) is not torch.optim.Adam:
            continue
        params = [p for g in optim.param_groups for p in g["params"]]
        if not params or any(p.device.type not in supported or not p.is_floating_point() for p in params):
            continue
        for group in optim.param_groups:
            group["fused"], group["foreach"] = True, False
        if not getattr(optim, "_slaterec_versions_hook", False):
            optim.register_step_post_hook(_count_updates)
            optim._slaterec_versions_hook = True
        changed += 1
    return changed


def _count_updates(optim: Any, args: Any, kwargs: Any) -> None:
    """Bump the version counters of the tensors a fused Adam step updated: its kernel writes them
    in place without doing so, and the belief's caches (item-slot tables, encodings of a batch)
    tell changed weights by their versions."""
    from torch.autograd.graph import increment_version

    for group in optim.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                increment_version(p)  # one at a time: torch before 2.5 takes a single tensor


def history_beliefs(learner: Any) -> list[Any]:
    """The history encoders' beliefs (item table + GRU) of every network of a built learner."""
    import torch

    from .encoders import _Belief

    return [m for module in _modules(learner).values() if isinstance(module, torch.nn.Module)
            for m in module.modules() if isinstance(m, _Belief)]


def policy_belief(learner: Any) -> Any:
    """The history belief the learner's policy reads (its own, or the shared one)."""
    from .encoders import _BeliefReader

    modules = _modules(learner)
    for name in ("policy", "imitator"):
        for m in getattr(modules.get(name), "modules", lambda: [])():
            if isinstance(m, _BeliefReader):
                return m.current_belief()
    return history_beliefs(learner)[0]


def set_encoder_items(learner: Any, table: Optional[np.ndarray], freeze: bool) -> None:
    """Copy ``table`` into every history encoder's item table (None: leave them as they are) and
    freeze them if asked (their optimisers then skip them: no gradient)."""
    import torch

    beliefs = history_beliefs(learner)
    if not beliefs:
        raise ValueError("the learner has no history encoder to give an item table")
    for belief in beliefs:
        if table is not None:
            if tuple(belief.items.weight.shape) != table.shape:
                raise ValueError(f"item table of shape {table.shape} does not fit the encoder's "
                                 f"{tuple(belief.items.weight.shape)}")
            with torch.no_grad():
                belief.items.weight.copy_(torch.as_tensor(table))
        belief.items.weight.requires_grad_(not freeze)


class FlatHistoryWindow(VectorWrapper):
    """A SlateRec vector env observed through flat history windows (:mod:`.window`)."""

    def __init__(self, env: VectorEnv, layout: WindowLayout) -> None:
        super().__init__(env)
        self.layout = layout
        info = np.iinfo(layout.dtype)
        self.single_observation_space = spaces.Box(0, min(info.max, layout.num_items), (layout.size,), layout.dtype)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._buf = WindowBuffer(self.num_envs, layout)
        self._ended = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: Optional[Any] = None, options: Optional[dict] = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._ended[:] = False
        return self._buf.reset(obs["slate"], obs["clicks"]), info

    def step(self, actions: Any):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if self._ended.any():  # next-step autoreset: these users started a new episode
            self._buf.clear(self._ended)
        out = self._buf.push(obs["slate"], obs["clicks"])
        self._ended = np.asarray(terminated) | np.asarray(truncated)
        return out, reward, terminated, truncated, info


class OfflineAgent:
    """A d3rlpy policy acting through a GeMS: the agent interface of the online protocol."""

    def __init__(self, algo: Any, gems: Any, layout: WindowLayout, env_kwargs: Optional[dict] = None,
                 provenance: Optional[dict] = None, checkpoint: str = "live") -> None:
        self.algo = algo
        self.gems = gems
        self.layout = layout
        self.env_kwargs = dict(env_kwargs or {})
        self.provenance = dict(provenance or {})
        self.method = self.provenance.get("method", "offline")
        self.checkpoint = checkpoint

    @property
    def gems_fingerprint(self) -> str:
        return self.gems.fingerprint

    @property
    def gems_path(self) -> str:
        return str(self.gems.path)

    def wrap_env(self, vector_env: VectorEnv) -> VectorEnv:
        from gym_slaterec.wrappers import GeMSAction

        return FlatHistoryWindow(GeMSAction(vector_env, self.gems), self.layout)

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        obs = np.asarray(obs)
        a = self.algo.predict(obs) if deterministic else self.algo.sample_action(obs)
        return np.clip(np.asarray(a, dtype=np.float32), -1.0, 1.0), None


def evaluate_offline_agent(agent: OfflineAgent, env_id: str, users: int, first_seed: int, batch_size: int = 500) -> dict[str, Any]:
    """Return statistics (and clicks per turn, boredom, diversity, coverage) on users ``first_seed ..``."""
    from gym_slaterec.rollouts import make_vector_env
    from sb3_slate.protocol import evaluate_agent

    def make_env(n: int):
        return make_vector_env(env_id, n, analysis_info=True, **agent.env_kwargs)

    res = evaluate_agent(agent, make_env, users, first_seed, batch_size)
    return res.summary()


def _user_seeds() -> tuple[int, int]:
    from sb3_slate.protocol import TEST_SEED, VALIDATION_SEED

    return VALIDATION_SEED, TEST_SEED


def train_offline(
    algo: str,
    dataset: PathLike,
    gems: PathLike,
    out: PathLike,
    config: Optional[OfflineConfig] = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
    trackers: Optional[Sequence[str]] = None,
    tag: Optional[str] = None,
    notes: Optional[str] = None,
) -> dict[str, Any]:
    """Train ``algo`` on the exported ``dataset`` and write the run directory ``out``; returns results.

    ``device``: auto (CUDA when present), cpu or cuda[:N]; recorded in the provenance (a
    run may resume on another device). ``trackers``: where the scalars go besides
    TensorBoard's default (:mod:`gym_slaterec.trackers`), the run named after ``out``,
    tagged with ``tag``, described by ``notes``."""
    from gym_slaterec.trackers import check_trackers

    from gym_slaterec.devices import resolve_device
    from gym_slaterec.locks import remove_debris, writer_lock

    config = dataclasses.replace(config or OfflineConfig(), algo=algo)
    config.validate()
    trackers = check_trackers(trackers)
    device = resolve_device(device)
    out = Path(out)
    with writer_lock(out):  # one writer per run directory
        replacing = overwrite and out.exists()  # the new run is built aside: an interruption leaves the old one
        try:
            with run_status_on_exit(out, enabled=not replacing):
                return _train_offline_into(config, dataset, gems, out, overwrite, progress, device,
                                           (trackers, tag, notes))
        finally:
            remove_debris(out)  # a staged replacement that did not complete


def _train_offline_into(config: "OfflineConfig", dataset: PathLike, gems: PathLike, out: Path, overwrite: bool,
                        progress: bool, device: str, tracking: tuple = (("tensorboard",), None, None)) -> dict[str, Any]:
    import d3rlpy
    import torch

    from gym_slaterec.trackers import RunIdentity, ScalarWriter, env_tag, resume_id

    from gym_slaterec.gems import GeMSCheckpoint

    meta = read_sidecar(dataset)
    ckpt = GeMSCheckpoint.load(
        gems, expect_env_id=meta["env_id"], expect_item_embeddings_fingerprint=meta.get("item_embeddings_fingerprint"),
        allow_partial=config.allow_partial,
    )
    require_gems(meta, ckpt.fingerprint, str(dataset))
    inputs = {"dataset": meta["file_sha256"], "source_dataset": meta["inputs"].get("dataset"), "gems": ckpt.fingerprint}
    from gym_slaterec.rollouts import make_vector_env

    # the evaluation users must live in the item space the dataset was logged in
    eval_items = make_vector_env(meta["env_id"], 1, **(meta.get("env_kwargs") or {})).simulator.catalogue
    item_table, table_inputs = encoder_item_table(config, ckpt, eval_items)
    inputs.update(table_inputs)
    resume = _resume_point(out, config, inputs, overwrite)
    data = load_d3rlpy(dataset, ckpt.fingerprint)
    if data.action_size != ckpt.latent_dim:
        raise ProvenanceMismatchError(f"dataset actions have {data.action_size} dimensions, GeMS latent_dim is {ckpt.latent_dim}")
    layout = data.layout
    val_seed, test_seed = _user_seeds()

    torch.set_num_threads(1)
    keep_freed_memory()  # CQL's and BCQ's steps reallocate MB-sized tensors (gym_slaterec.core.allocator)
    d3rlpy.seed(config.seed)
    torch.manual_seed(config.seed)
    learner = make_algorithm(config, layout, device)
    learner.build_with_dataset(data.buffer)
    tie_encoders(learner, config)
    fuse_optimisers(learner)
    set_encoder_items(learner, item_table if resume is None else None, config.encoder_freeze)
    env_kwargs = meta.get("env_kwargs") or {}
    if meta.get("item_embeddings_fingerprint") not in (None, eval_items.fingerprint):
        raise ProvenanceMismatchError(
            f"dataset {dataset} was logged with item embeddings {str(meta['item_embeddings_fingerprint'])[:12]}, but "
            f"its recorded environment overrides rebuild {eval_items.fingerprint[:12]} ({eval_items.source}); "
            "re-export it from a dataset that records its item matrix"
        )
    agent = OfflineAgent(learner, ckpt, layout, env_kwargs)
    prov = provenance(
        "offline_run",
        env_id=data.env_id,
        env_params=meta.get("env_params"),
        item_embeddings_fingerprint=meta.get("item_embeddings_fingerprint"),
        inputs=inputs,
        seed=config.seed,
        hyperparameters=config.to_dict(),
        method=f"offline-{config.algo}",
        dataset={"path": str(Path(dataset)), "policy": meta.get("source_dataset", {}).get("policy"),
                 "quality": meta.get("source_dataset", {}).get("quality"),
                 "episodes": meta.get("episodes"), "mean_return": meta.get("mean_return")},
        gems={"fingerprint": ckpt.fingerprint, "path": str(ckpt.path), "latent_dim": ckpt.latent_dim},
        observation=layout.describe(),
        d3rlpy_version=d3rlpy.__version__,
        users={"validation_first_seed": val_seed, "test_first_seed": test_seed},
        env_kwargs=env_kwargs,
        device=device,
    )

    started = time.time()
    final = out
    if resume is None:
        if out.exists():  # --overwrite: the new run is built aside, the old one replaced only once it is complete
            import tempfile

            out = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
            out.rmdir()
        out.mkdir(parents=True)
        write_json_atomic(out / "config.json", config.to_dict())
        write_json_atomic(out / "provenance.json", prov)
        state: dict[str, Any] = {"status": "running", "step": 0, "validation": [], "best": {"mean": -math.inf, "step": 0},
                                 "train_s": 0.0, "eval_s": 0.0, "wall_s": 0.0}
        write_json_atomic(out / "state.json", state)  # the run's status from its first step (slaterec runs)
    else:
        state = resume
        state["status"] = "running"
        state.pop("error", None)
        _load_learner(learner, _model_file(out, "last"))
        learner._grad_step = int(state["step"])  # d3rlpy's own counter (TD3's delayed actor updates)
        _set_rng_state(state["rng"])
    names, tag, notes = tracking
    writer = ScalarWriter(names, out / "tb", RunIdentity(
        final, final.name, [f"offline-{config.algo}", env_tag(data.env_id), f"seed{config.seed}", *([tag] if tag else [])],
        notes, {"config": config.to_dict(), "provenance": prov}, resume_id(final)))
    curve: list[dict[str, Any]] = state["validation"]
    best: dict[str, Any] = state["best"]
    running: dict[str, list[float]] = {}
    wall_before = float(state["wall_s"])

    def checkpoint(step: int, periodic: bool = True) -> None:
        if periodic:
            _save_learner(learner, out / f"model_step{step:07d}{MODEL_SUFFIX}")
        _save_learner(learner, out / f"model_last{MODEL_SUFFIX}")
        state.update(step=step, wall_s=wall_before + time.time() - started, rng=_rng_state())
        write_json_atomic(out / "state.json", state, overwrite=True)

    def validate(step: int) -> None:
        t0 = time.time()
        stats = evaluate_offline_agent(agent, data.env_id, config.val_users, val_seed)
        state["eval_s"] += time.time() - t0
        curve.append({"step": step, "transitions_seen": step * config.batch_size, **{
            k: stats[k] for k in ("mean", "std", "ci95", "clicks_per_turn", "boredom", "diversity", "coverage")},
            "wall_time_s": wall_before + time.time() - started})
        writer.add_scalar("val/return", stats["mean"], step)
        writer.add_scalar("val/clicks_per_turn", stats["clicks_per_turn"], step)
        writer.add_scalar("val/boredom", stats["boredom"], step)
        if stats["mean"] > best["mean"]:
            best.update(mean=stats["mean"], step=step)
            _save_learner(learner, out / f"model_best{MODEL_SUFFIX}")
        bar.set_postfix(val=f"{stats['mean']:.1f}", best=f"{best['mean']:.1f}")

    first = int(state["step"]) + 1
    bar = progress_bar(progress, total=config.steps, initial=first - 1, unit="step", desc=f"offline {config.algo}")
    with graceful_stop(f"offline {config.algo} training") as stop, contextlib.closing(bar):  # closed on every exit
        for step in range(first, config.steps + 1):
            if stop.requested:
                if out == final:  # a resume point at the last step done (a staged --overwrite is discarded anyway)
                    checkpoint(step - 1, periodic=False)
                raise KeyboardInterrupt
            t0 = time.time()
            batch = data.sample_batch(config.batch_size, learner.need_returns_to_go)
            losses = learner.update(batch)
            state["train_s"] += time.time() - t0
            for key, value in losses.items():
                running.setdefault(key, []).append(float(value))
            if step % config.log_every == 0:
                for key, values in running.items():
                    if values:
                        writer.add_scalar(f"train/{key}", float(np.mean(values)), step)
                        if not np.isfinite(np.mean(values)):
                            raise TrainingDiverged(f"training diverged at step {step} ({config.algo} loss {key} "
                                                   f"{np.mean(values)}); lower the learning rate")
                running = {}
            bar.update(1)
            if step % config.eval_every == 0 or step == config.steps:
                validate(step)
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint(step)
    best_model = _built_learner(config, layout, data.action_size)
    _load_learner(best_model, out / f"model_best{MODEL_SUFFIX}")
    t0 = time.time()
    test = evaluate_offline_agent(OfflineAgent(best_model, ckpt, layout, env_kwargs), data.env_id, config.test_users, test_seed)
    state["eval_s"] += time.time() - t0
    writer.add_scalar("test/return", test["mean"], config.steps)
    writer.close()
    results = {
        "format": RESULTS_FORMAT,
        "method": f"offline-{config.algo}",
        "env_id": data.env_id,
        "seed": config.seed,
        "budget": {"gradient_steps": config.steps, "batch_size": config.batch_size,
                   "dataset_transitions": int(data.buffer.transition_count),
                   "dataset_episodes": int(len(data.buffer.episodes))},
        "wall_time_s": wall_before + time.time() - started,
        "wall_time_breakdown_s": {"train": state["train_s"], "evaluation": state["eval_s"]},
        "resumed": resume is not None,
        "validation": curve,
        "best": {"step": best["step"], "validation_return": best["mean"], "checkpoint": f"model_best{MODEL_SUFFIX}"},
        "test": {**test, "checkpoint": "best", "users_first_seed": test_seed},
        "dataset": {"path": str(Path(dataset)), "mean_return": meta.get("mean_return"),
                    "policy": meta.get("source_dataset", {}).get("policy"),
                    "quality": meta.get("source_dataset", {}).get("quality")},
        "provenance": prov,
    }
    write_json_atomic(out / "results.json", strict_json(results))
    state.update(status="complete", resumed=results["resumed"])
    write_json_atomic(out / "state.json", state, overwrite=True)
    if out != final:
        _swap_in(out, final)
    write_run_summary(final)
    return results


def _swap_in(staged: Path, final: Path) -> None:
    """Replace the run directory ``final`` by the complete ``staged`` one (the old run is removed
    only after the new one is in place)."""
    import os
    import shutil

    backup = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.replace(final, backup)
    os.replace(staged, final)
    shutil.rmtree(backup, ignore_errors=True) if backup.is_dir() else backup.unlink(missing_ok=True)


#: an offline checkpoint: torch.save of {"format", "algo", "modules": {name: state_dict}}, read weights-only
MODEL_FORMAT = "slaterec.offline_model/1"
#: what a checkpoint of the run is called (``model_best.pt``, ``model_step0001000.pt``)
MODEL_SUFFIX = ".pt"


def _modules(learner: Any) -> dict[str, Any]:
    """The networks and optimisers of a built d3rlpy learner, by name (what d3rlpy's checkpointer saves)."""
    import torch

    mods = learner.impl.modules
    named = {f.name: getattr(mods, f.name) for f in dataclasses.fields(mods)}
    return {name: m for name, m in named.items() if isinstance(m, torch.nn.Module) or hasattr(m, "optim")}


def _save_learner(learner: Any, path: Path) -> None:
    """The learner's weights and optimiser states (no pickled objects) into ``path``, atomically."""
    import torch

    state = {"format": MODEL_FORMAT, "algo": type(learner).__name__,
             "modules": {name: m.state_dict() for name, m in _modules(learner).items()}}
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(state, tmp)


def _load_learner(learner: Any, path: Path) -> None:
    """Weights and optimiser states of ``path`` into a built learner, read with ``weights_only``; a
    d3rlpy ``.d3`` file (a pickle) is refused unread."""
    import torch

    from sb3_slate.checkpoints import LegacyFormatError, legacy_message

    path = Path(path)
    if path.suffix == ".d3":
        raise LegacyFormatError(legacy_message(path, "a d3rlpy model"))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign, or holding objects other than weights
        raise ValueError(f"{path} is damaged or not a SlateRec offline model ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT or not isinstance(state.get("modules"), dict):
        raise ValueError(f"{path} is not a SlateRec offline model (format {state.get('format') if isinstance(state, dict) else None!r})")
    if state.get("algo") != type(learner).__name__:
        raise ValueError(f"{path} holds a {state.get('algo')} model, the run's algorithm is {type(learner).__name__}")
    modules = _modules(learner)
    if set(state["modules"]) != set(modules):
        raise ValueError(f"{path} does not fit the run's {type(learner).__name__} (modules {sorted(state['modules'])})")
    try:
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ValueError(f"{path} does not fit the run's {type(learner).__name__} ({type(exc).__name__}: {exc})") from exc
    fuse_optimisers(learner)  # a checkpoint written before fused Adam brings fused=None back


def _built_learner(config: "OfflineConfig", layout: WindowLayout, action_size: int, device: str = "cpu") -> Any:
    """A fresh learner of ``config`` with its networks created (weights still to be loaded)."""
    learner = make_algorithm(config, layout, device)
    learner.create_impl((layout.size,), int(action_size))
    tie_encoders(learner, config)
    fuse_optimisers(learner)
    return learner


def _rng_state() -> dict[str, Any]:
    """numpy's global generator (d3rlpy samples batches with it) and torch's, as JSON."""
    import base64

    import torch

    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}


def _set_rng_state(rng: dict[str, Any]) -> None:
    import base64

    import torch

    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.from_numpy(np.frombuffer(base64.b64decode(rng["torch"]), dtype=np.uint8).copy()))


def _resume_point(out: Path, config: OfflineConfig, inputs: dict[str, Any], overwrite: bool) -> Optional[dict[str, Any]]:
    """The saved state of an unfinished run of this configuration and these inputs in
    ``out`` (None: start afresh, after the usual overwrite checks)."""
    from gym_slaterec import run_dirs
    from gym_slaterec.provenance import identify_artifact

    if out.is_dir() and not (out / "results.json").exists() and (out / "state.json").is_file() and not overwrite:
        kind, _ = identify_artifact(out)
        if kind == "offline_run":
            try:
                state = run_dirs.read_state(out, run_dirs.LAYOUTS["offline_run"])
                # a setting added since the run was written: what it ran with (written_config)
                saved_cfg = written_config(run_dirs.read_run_json(out / "config.json"))
                saved_inputs = run_dirs.read_run_json(out / "provenance.json").get("inputs")
            except (OSError, ValueError) as exc:
                raise ValueError(f"{out} is an unfinished offline run whose state cannot be read ({exc}); "
                                 "pass --overwrite to start it afresh") from exc
            try:
                run_dirs.check_same_run(out, saved_cfg, config.to_dict())
                run_dirs.check_same_run(out, saved_inputs or {}, inputs, "dataset or GeMS")
            except ValueError as exc:
                raise ArtifactExistsError(f"{exc}; or pass --overwrite to start afresh") from None
            if state.get("step", 0) > 0 and "rng" in state and _model_file(out, "last").is_file():
                return state
            # interrupted before its first checkpoint: nothing to resume, start afresh in place
            overwrite = True
    check_writable(out, overwrite, "offline_run")
    return None


def _model_file(run: Path, name: str) -> Path:
    """Checkpoint ``name`` of a run: ``model_NAME.pt``, or an older run's pickle-based ``model_NAME.d3``
    (refused when read, with the ``convert-run`` hint)."""
    new = run / f"model_{name}{MODEL_SUFFIX}"
    old = run / f"model_{name}.d3"
    return new if new.is_file() or not old.is_file() else old


def load_offline_policy(run_dir: PathLike, gems: Optional[PathLike] = None, checkpoint: str = "best") -> OfflineAgent:
    """The agent of an offline run (for evaluation); refuses a GeMS other than the run's.

    The learner is rebuilt from the run's ``config.json`` and its weights read without
    unpickling; a pickle-based ``.d3`` model is refused with the ``convert-run`` hint."""
    from gym_slaterec import run_dirs
    from gym_slaterec.gems import GeMSCheckpoint
    from gym_slaterec.run_dirs import read_run_json

    run = Path(run_dir)
    prov_file = run / "provenance.json"
    if not prov_file.is_file() or not (run / "config.json").is_file():
        raise FileNotFoundError(f"{run} is not an offline run directory (no provenance.json / config.json)")
    prov = read_run_json(prov_file)
    model, name = run_dirs.checkpoint_file(run, checkpoint)
    model = _model_file(run, name)
    config = read_offline_config(run)
    try:
        o = prov["observation"]
        layout = WindowLayout(o["window"], o["slate_size"], o["num_items"])
        gems_fp, env_id = prov["gems"]["fingerprint"], prov["env_id"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{prov_file} is damaged (lacks {exc})") from exc
    ckpt = GeMSCheckpoint.load(gems or prov["gems"]["path"], expect_env_id=env_id,
                               expect_item_embeddings_fingerprint=prov.get("item_embeddings_fingerprint"),
                               allow_partial=config.allow_partial)
    if ckpt.fingerprint != gems_fp:
        raise ProvenanceMismatchError(
            f"offline run {run} acts in the latent space of GeMS {gems_fp[:12]}, not of {ckpt.path} ({ckpt.fingerprint[:12]})"
        )
    learner = _built_learner(config, layout, ckpt.latent_dim)
    _load_learner(learner, model)
    agent = OfflineAgent(learner, ckpt, layout, prov.get("env_kwargs"), prov, name)
    agent.checkpoint_path = model
    return agent


def read_offline_config(run_dir: PathLike) -> OfflineConfig:
    """The checked :class:`OfflineConfig` of an offline run directory."""
    from gym_slaterec.run_dirs import read_run_json

    path = Path(run_dir) / "config.json"
    data = read_run_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is damaged: expected a JSON object")
    try:
        config = OfflineConfig(**written_config(data))
        config.validate()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path} is damaged or from another version: {exc}") from exc
    return config


def evaluate_run_dir(run_dir: PathLike, env_id: str, episodes: int, seed: int, item_embeddings: Any = None,
                     checkpoint: str = "best") -> dict[str, Any]:
    """``slaterec evaluate --policy RUN_DIR`` for an offline run: its agent at ``checkpoint``
    (best, last) on users ``seed .. seed + episodes - 1`` of ``env_id``."""
    agent = load_offline_policy(run_dir, checkpoint=checkpoint)
    prov = json.loads((Path(run_dir) / "provenance.json").read_text())
    if env_id != prov["env_id"]:
        raise ProvenanceMismatchError(f"offline run {run_dir} was trained on {prov['env_id']!r}, cannot evaluate it on {env_id!r}")
    if item_embeddings is not None:
        agent.env_kwargs = {**agent.env_kwargs, "item_embeddings": item_embeddings}
    stats = evaluate_offline_agent(agent, env_id, episodes, seed)
    return {"policy": str(run_dir), "method": prov.get("method"), "checkpoint": checkpoint, "env_id": env_id, **stats}


def convert_run(run_dir: PathLike) -> list[str]:
    """Rewrite a trusted offline run's d3rlpy ``.d3`` models (pickles) as weights-only ``.pt``
    files (``slaterec convert-run --trust``). Reading a ``.d3`` unpickles it: trusted runs only."""
    import d3rlpy

    from . import encoders  # noqa: F401  (registers the history encoder the .d3 files name)

    changed = []
    for path in sorted(Path(run_dir).glob("model_*.d3")):
        learner = d3rlpy.load_learnable(str(path), device=False)  # unpickles: the caller vouched for the run
        _save_learner(learner, path.with_suffix(MODEL_SUFFIX))
        path.unlink()
        changed.append(str(path))
    return changed
