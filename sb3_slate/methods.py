"""The methods of the benchmark (docs/method.md section 7), declared once in :data:`METHOD_TABLE`.

A method is a name (``sac-gems``, ``sac-topk-ideal``, ``sac-topk-mf``, ``sac-wknn``,
``reinforce-softmax``, ``slateq``, ``random``, ``oracle``, and sb3-contrib's
``recurrentppo-gems``, ``recurrentppo-topk-ideal``, ``tqc-gems``, ``crossq-gems``) with:
the artifacts it needs (GeMS, MF), its action wrapper, the item table its belief starts
from, its training regimes (``window``: transitions with a history window; ``episode``:
the paper's episode replay; ``rollout``: on-policy rollouts with a recurrent policy), each
with a typed agent configuration (:mod:`sb3_slate.agent_configs`) and a model builder,
the devices it trains on, and its published Table 2 returns.

A run's configuration (:class:`RunConfig`) is resolved in one path: dataclass defaults
<- the method's run defaults <- a preset (``configs/presets/<name>.yaml``) <- ``--config``
file <- ``--set`` overrides, then checked completely (:func:`resolve_config`).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import yaml

from gym_slaterec import yaml_values

from .agent_configs import (
    WKNN_SWITCHES, AgentConfig, BeliefConfig, CrossQConfig, EpisodeReinforceConfig, EpisodeSACConfig,
    EpisodeSlateQConfig, EpisodeWkNNConfig, NoAgentConfig,
    SLATEQ_SWITCHES, RecurrentPPOConfig, ReinforceConfig, SlateQConfig, TQCConfig, WindowSACConfig, WindowWkNNConfig,
)

CONFIG_DIR = Path(__file__).parent / "configs"
#: Named training regimes (sb3_slate/configs/presets/<name>.yaml), applied over the defaults.
PRESETS = ("paper", "window")
#: the version of config.json's layout: 2 = typed agent configs (keys named for what they count)
CONFIG_SCHEMA = 2
#: what a run computes: "corrected" (the paper's text, done right) or "reference" (what the
#: reference implementation computes, its defects included; docs/method.md section 7)
VARIANTS = ("corrected", "reference")


@dataclass
class RunConfig:
    """Everything that defines a run (saved, resolved, in the run directory)."""

    method: str
    env_id: str
    seed: int = 0
    #: training budget in episodes (turns = episodes * episode_length)
    episodes: int = 1000
    #: users simulated in parallel for training (episodes advance n_envs at a time)
    n_envs: int = 8
    #: history window length in turns (episode_length + 1 = the whole episode); regime "window" only
    window: int = 10
    #: the training regime, one of the method's (METHOD_TABLE[method].regimes): "window" (transitions
    #: with a ``window``-turn history), "episode" (the paper's episode-replay recurrent SAC),
    #: "rollout" (on-policy rollouts, recurrent policy); None: the method's first
    replay: Optional[str] = None
    #: one of VARIANTS; "reference" applies the method's reference settings (Method.reference_variant)
    #: under the config file and --set, so any one difference can be switched back alone
    variant: str = "corrected"
    val_every: int = 100
    val_users: int = 200
    test_users: int = 500
    checkpoint_every: int = 500
    save_replay_buffer: bool = True
    #: episode counts whose periodic checkpoint also keeps the replay memory as it is then
    #: (checkpoints/replay_epNNNNNNN.npz: D4RL's medium-replay, ``slaterec collect --replay``)
    replay_snapshots: list = field(default_factory=list)
    torch_threads: int = 1
    #: optional wall-clock budget in seconds: training stops at the first episode end past it
    max_wall_s: Optional[float] = None
    gems: Optional[str] = None
    mf: Optional[str] = None
    #: accept a GeMS checkpoint whose training was interrupted (--allow-partial)
    allow_partial: bool = False
    #: a short label (letters, digits, ".", "_", "-") and free-text notes, recorded with the run
    tag: Optional[str] = None
    notes: Optional[str] = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    belief: BeliefConfig = field(default_factory=BeliefConfig)
    #: the regime's agent configuration (a mapping is converted to it)
    agent: Any = None
    config_schema: int = CONFIG_SCHEMA

    def __post_init__(self) -> None:
        m = method_of(self.method)
        if self.replay is None:
            self.replay = next(iter(m.regimes))
        if self.replay not in m.regimes:
            raise ValueError(f"{self.method} trains in regime {' or '.join(repr(r) for r in m.regimes)}, "
                             f"not replay={self.replay!r}")
        check_variant(m, self.variant, self.replay)
        cls = m.regimes[self.replay].config
        owner = f"{self.method} (replay={self.replay})"
        self.agent = cls.from_dict({} if self.agent is None else self.agent, "agent", owner)
        self.belief = BeliefConfig.from_dict(self.belief, "belief", self.method)

    @property
    def spec(self) -> "Method":
        """The method's entry of :data:`METHOD_TABLE`."""
        return METHOD_TABLE[self.method]

    @property
    def regime(self) -> "Regime":
        return self.spec.regimes[self.replay]

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunConfig":
        """The configuration of a run's ``config.json``; one written before typed configs
        (no ``config_schema``) has its old keys renamed and its absent keys filled with the
        defaults the code of its time used."""
        data = dict(data)
        data.pop("format", None)
        if "config_schema" not in data:
            method = method_of(data.get("method"))
            regime = data.get("replay") or "window"
            if regime not in method.regimes:
                raise ValueError(f"replay={regime!r} is not a regime of {method.name}")
            data["agent"] = method.regimes[regime].config.from_legacy(data.get("agent") or {})
            data["config_schema"] = CONFIG_SCHEMA
        elif data["config_schema"] != CONFIG_SCHEMA:
            raise ValueError(f"config_schema {data['config_schema']!r} is not one this version reads ({CONFIG_SCHEMA})")
        return cls(**data)

    def validate(self) -> None:
        m = method_of(self.method)
        for name in ("episodes", "n_envs", "window", "val_users", "test_users", "torch_threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("val_every", "checkpoint_every", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if self.seed > 2**32 - 1:
            raise ValueError(f"seed must be an integer in [0, {2**32 - 1}], got {self.seed}")
        if self.max_wall_s is not None and (isinstance(self.max_wall_s, bool) or not isinstance(self.max_wall_s, (int, float)) or self.max_wall_s <= 0):
            raise ValueError(f"max_wall_s must be a positive number of seconds, got {self.max_wall_s!r}")
        for name in ("save_replay_buffer", "allow_partial"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("gems", "mf", "notes"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        snaps = self.replay_snapshots
        if not isinstance(snaps, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in snaps):
            raise ValueError(f"replay_snapshots must be a list of positive episode counts, got {snaps!r}")
        if snaps:
            if not (self.regime.own_loop and self.regime.model in ("EpisodeSAC", "EpisodeSlateQ")):
                raise ValueError(f"replay_snapshots: {self.method} (replay={self.replay}) keeps no replay memory of "
                                 "episodes to snapshot (the episode regime of the SAC methods and SlateQ does)")
            off = [v for v in snaps if not self.checkpoint_every or v % self.checkpoint_every]
            if off:
                raise ValueError(f"replay_snapshots {off} are not periodic checkpoints (multiples of checkpoint_every="
                                 f"{self.checkpoint_every})")
        if self.tag is not None and (not isinstance(self.tag, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", self.tag)):
            raise ValueError(f"tag must be 1-64 letters, digits, '.', '_' or '-' (it names run directories), got {self.tag!r}")
        if not isinstance(self.agent, m.regimes[self.replay].config):
            raise ValueError(f"agent must be a {m.regimes[self.replay].config.__name__} for {self.method} "
                             f"(replay={self.replay}), got {type(self.agent).__name__}")
        self.agent.check("agent")
        self.belief.check("belief")
        if not isinstance(self.env_kwargs, dict):
            raise ValueError(f"env_kwargs must be a mapping of simulator parameters, got {self.env_kwargs!r}")
        from gym_slaterec.core.config import preset

        # every key and value checked now, not when the first environment is built
        preset(self.env_id).config.replace(**{k: v for k, v in self.env_kwargs.items() if k != "item_embeddings"})
        for need in m.needs(self.agent):
            if not getattr(self, need):
                raise ValueError(f"{self.method} needs {ARTIFACT_HELP[need]}{m.needs_hint}")


ARTIFACT_HELP = {"gems": "a GeMS checkpoint (--gems FILE)", "mf": "MF embeddings (--mf FILE)"}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"configuration file not found: {path}")
    try:
        data = yaml_values.load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of configuration keys")
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["agent.gamma=0.9", "episodes=50"]`` -> nested dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml_values.load(raw)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: cannot parse value: {exc}") from exc
        node = out
        parts = key.strip().split(".")
        if not all(parts):
            raise ValueError(f"--set {item!r}: empty key")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def check_variant(m: "Method", variant: Any, regime: str) -> None:
    """Refuse a variant that is not one of VARIANTS, or that ``m`` does not define in ``regime``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if variant == "reference" and regime not in m.reference_variant:
        if m.reference_variant:
            raise ValueError(f"{m.name} has its reference variant in the {' and '.join(m.reference_variant)} regime, "
                             f"not replay={regime!r} (the paper's regime: --preset paper)")
        raise ValueError(f"{m.name} has no reference variant yet (docs/method.md section 7 lists the methods that "
                         "have one)")


def resolve_config(method: str, env_id: str, overrides: Optional[dict[str, Any]] = None,
                   config_file: Optional[Path] = None, preset: Optional[str] = None) -> RunConfig:
    """Defaults (RunConfig's and the method's) <- preset <- variant <- config file <- overrides, checked.

    ``variant: reference`` (from the file or the overrides) applies the method's reference
    settings for the run's regime (:attr:`Method.reference_variant`).

    ``preset`` None: the method's default regime (``METHOD_TABLE[method].default_preset``), if any.
    """
    m = method_of(method)
    if preset is None:
        preset = m.default_preset
    data = copy.deepcopy(m.run_defaults)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        data = _merge(data, _read_yaml(CONFIG_DIR / "presets" / f"{preset}.yaml"))
        if data.get("replay") not in m.regimes:
            raise ValueError(f"preset {preset!r} is the {data.get('replay')!r} regime, which {method} does not "
                             f"have (its regimes: {', '.join(m.regimes)})")
    from_file = _read_yaml(Path(config_file)) if config_file is not None else {}
    later = _merge(from_file, overrides or {})
    variant = later.get("variant", data.get("variant", "corrected"))
    regime = later.get("replay", data.get("replay")) or next(iter(m.regimes))
    if regime in m.regimes:  # else RunConfig names the regimes
        check_variant(m, variant, regime)
        if variant == "reference":
            data = _merge(data, m.reference_variant[regime])
    data = _merge(data, later)
    data.update(method=method, env_id=env_id)
    env_kwargs = data.get("env_kwargs")
    if isinstance(env_kwargs, dict) and env_kwargs.get("item_embeddings") is not None:
        from gym_slaterec.core.embeddings import normalise_matrix_spec

        env_kwargs["item_embeddings"] = normalise_matrix_spec(env_kwargs["item_embeddings"])
    known = {f.name for f in fields(RunConfig)} - {"config_schema"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown configuration keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    for section in ("agent", "belief"):
        if section in data and not isinstance(data[section], dict):
            raise ValueError(f"{section} must be a mapping of settings, got {data[section]!r}")
    cfg = RunConfig(**data)
    cfg.validate()
    return cfg


# ------------------------------------------------------------------ artifacts
@dataclass
class Artifacts:
    gems: Any = None  # GeMSCheckpoint
    mf: Any = None  # MFEmbeddings

    def fingerprints(self) -> dict[str, str]:
        out = {}
        if self.gems is not None:
            out["gems"] = self.gems.fingerprint
        if self.mf is not None:
            out["mf"] = self.mf.fingerprint
        return out


def load_artifacts(cfg: RunConfig, env_id: str, item_fingerprint: Optional[str]) -> Artifacts:
    """GeMS / MF artifacts of a run, refused when they come from another environment."""
    art = Artifacts()
    needs = cfg.spec.needs(cfg.agent)
    if cfg.gems and "gems" in needs:
        from gym_slaterec.gems import GeMSCheckpoint

        art.gems = GeMSCheckpoint.load(cfg.gems, expect_env_id=env_id, expect_item_embeddings_fingerprint=item_fingerprint,
                                       allow_partial=cfg.allow_partial)
    if cfg.mf and ("mf" in needs or cfg.belief.item_init == "mf"):
        from gym_slaterec.mf import MFEmbeddings

        art.mf = MFEmbeddings.load(cfg.mf)
        art.mf.check_env(env_id, item_fingerprint)
    return art


def _ideal(venv: Any) -> np.ndarray:
    from gym_slaterec.policies import simulator_of

    return np.asarray(simulator_of(venv).items, dtype=np.float32)


def item_table_of(kind: str, art: Artifacts, venv: Any) -> Optional[np.ndarray]:
    """An item table by kind: ideal (the simulator's), mf, gems (GeMS's item table), scratch (None)."""
    if kind == "scratch":
        return None
    if kind == "ideal":
        return _ideal(venv)
    if kind == "mf":
        if art.mf is None:
            raise ValueError("the mf item table needs MF embeddings (--mf FILE)")
        return np.asarray(art.mf.embeddings, dtype=np.float32)
    if kind == "gems":
        if art.gems is None:
            raise ValueError("the gems item table needs a GeMS checkpoint (--gems FILE)")
        return art.gems.item_embedding_table()
    raise ValueError(f"unknown item table {kind!r}")


def action_table(cfg: RunConfig, art: Artifacts, venv: Any) -> Optional[np.ndarray]:
    """The item table the method acts with (TopK / WkNN), or None."""
    kind = cfg.spec.action_items(cfg.agent)
    return None if kind is None else item_table_of(kind, art, venv)


def wrap_env(cfg: RunConfig, art: Artifacts, venv: Any) -> Any:
    """The method's env stack around a native SlateRec vector env: action wrapper, history window (+ privileged)."""
    from .agents import PrivilegedRelevance
    from .envs import VectorFlatWindow, VectorHistoryWindow

    m = cfg.spec
    if m.act is not None:
        venv = m.act(cfg, art, venv)
    window = m.regimes[cfg.replay].window
    if window is None:  # the recurrent agent reads raw (slate, clicks) turns and carries its belief
        if m.privileged:
            from .agents import PrivilegedUserState

            venv = PrivilegedUserState(venv, cfg.agent.relevance)
        return venv
    venv = VectorHistoryWindow(venv, cfg.window if window == "config" else window)
    if m.privileged:
        venv = PrivilegedRelevance(venv)
    if m.regimes[cfg.replay].flat:
        venv = VectorFlatWindow(venv)
    return venv


def belief_table(cfg: RunConfig, art: Artifacts, venv: Any) -> Optional[np.ndarray]:
    """Initial item table of the belief encoder (None: scratch)."""
    init = cfg.belief.item_init
    if init == "auto":
        init = cfg.spec.belief_items(cfg.agent)
    if init in ("mf", "gems") and getattr(art, init) is None:
        raise ValueError(f"belief.item_init={init} needs {ARTIFACT_HELP[init]}")
    return item_table_of(init, art, venv)


def _policy_kwargs(cfg: RunConfig, art: Artifacts, venv: Any) -> dict[str, Any]:
    from .belief import GRUBeliefExtractor

    b = cfg.belief
    return {
        "features_extractor_class": GRUBeliefExtractor,
        "features_extractor_kwargs": {"item_embeddings": belief_table(cfg, art, venv), "embedding_dim": b.embedding_dim,
                                      "freeze": b.freeze, "hidden_size": b.hidden_size},
        "net_arch": list(cfg.agent.net_arch),
    }


def episode_length(cfg: RunConfig) -> int:
    from gym_slaterec.core.config import preset

    return int(cfg.env_kwargs.get("episode_length", preset(cfg.env_id).config.episode_length))


# ------------------------------------------------------------------ builders (one per regime)
Builder = Callable[[RunConfig, Artifacts, Any, Any, str], Any]


def _window_sac(cls_name: str) -> Builder:
    def build(cfg: RunConfig, art: Artifacts, vec_env: Any, wrapped: Any, device: str) -> Any:
        from . import agents

        a = cfg.agent
        pk = _policy_kwargs(cfg, art, wrapped)
        if isinstance(a, WindowWkNNConfig):
            pk.update(item_table=action_table(cfg, art, wrapped), k_neighbours=a.k_neighbours)
        pk["share_features_extractor"] = False
        return getattr(agents, cls_name)(
            "MultiInputPolicy", vec_env, learning_rate=float(a.learning_rate),
            actor_learning_rate=float(a.actor_learning_rate), gamma=float(a.gamma), tau=float(a.tau),
            batch_size=a.batch_transitions, buffer_size=a.buffer_transitions,
            learning_starts=a.warmup_episodes * episode_length(cfg), train_freq=a.train_freq,
            gradient_steps=a.gradient_steps, ent_coef=a.ent_coef, target_entropy=a.target_entropy,
            policy_kwargs=pk, seed=cfg.seed, device=device, verbose=0,
        )
    return build


def _episode_sac(cfg: RunConfig, art: Artifacts, vec_env: Any, wrapped: Any, device: str) -> Any:
    """The paper-regime :class:`~sb3_slate.agents.EpisodeSAC` acting in ``wrapped``'s action space."""
    from gym_slaterec.policies import simulator_of

    from .agents import EpisodeSAC

    a, b = cfg.agent, cfg.belief
    sim = simulator_of(wrapped)
    table = belief_table(cfg, art, wrapped)
    common = dict(
        num_items=sim.num_items, slate_size=sim.slate_size, episode_length=episode_length(cfg),
        actor_items=table, critic_items=table,
        embedding_dim=b.embedding_dim, belief_size=b.hidden_size, freeze_items=b.freeze, net_arch=list(a.net_arch),
        gamma=float(a.gamma), tau=float(a.tau), learning_rate=float(a.learning_rate),
        actor_learning_rate=float(a.actor_learning_rate), ent_coef=a.ent_coef, target_entropy=a.target_entropy,
        batch_size=a.batch_episodes, buffer_size=a.buffer_episodes, warmup_episodes=a.warmup_episodes,
        gradient_steps=float(a.updates_per_episode), scratch_std=b.scratch_std, alpha_loss=a.alpha_loss,
        warmup_scale=0.5 if a.warmup_actions == "middle_half" else 1.0,
        seed=cfg.seed, device=device,
    )
    if _item_id_wknn(cfg):
        from .agents.episode_sac.wknn import EpisodeWkNN

        switches = a.switches()
        items = None if switches["item_source"] == "belief_copy" else action_table(cfg, art, wrapped)
        dim = b.embedding_dim if items is None else items.shape[1]
        return EpisodeWkNN(action_dim=sim.slate_size * dim, wknn_items=items, k_neighbours=a.k_neighbours,
                           switches=switches, **common)
    return EpisodeSAC(
        action_dim=int(np.prod(wrapped.single_action_space.shape)),
        wolpertinger_items=action_table(cfg, art, wrapped) if isinstance(a, EpisodeWkNNConfig) else None,
        k_neighbours=getattr(a, "k_neighbours", 10), **common,
    )


def _item_id_wknn(cfg: RunConfig) -> bool:
    """SAC+WkNN with a reference-code switch on: the agent gives the env item ids (EpisodeWkNN)."""
    return isinstance(cfg.agent, EpisodeWkNNConfig) and cfg.agent.switched()


def _reinforce(cfg: RunConfig, art: Artifacts, vec_env: Any, wrapped: Any, device: str) -> Any:
    from .agents import REINFORCE

    a = cfg.agent
    return REINFORCE("MultiInputPolicy", vec_env, learning_rate=float(a.learning_rate), n_steps=episode_length(cfg),
                     gamma=float(a.gamma), ent_coef=float(a.ent_coef), policy_kwargs=_policy_kwargs(cfg, art, wrapped),
                     seed=cfg.seed, device="cpu")


def _episode_reinforce(cfg: RunConfig, art: Artifacts, vec_env: Any, wrapped: Any, device: str) -> Any:
    from gym_slaterec.policies import simulator_of

    from .agents import EpisodeREINFORCE

    a, b = cfg.agent, cfg.belief
    sim = simulator_of(wrapped)
    return EpisodeREINFORCE(
        num_items=sim.num_items, slate_size=sim.slate_size, episode_length=episode_length(cfg),
        item_table=belief_table(cfg, art, wrapped), embedding_dim=b.embedding_dim, belief_size=b.hidden_size,
        freeze_items=b.freeze, scratch_std=b.scratch_std, net_arch=list(a.net_arch), gamma=float(a.gamma),
        learning_rate=float(a.learning_rate), batch_episodes=a.batch_episodes, warmup_episodes=a.warmup_episodes,
        loss=a.loss, train_on_warmup=a.train_on_warmup, seed=cfg.seed, device=device,
    )


def _slateq(cfg: RunConfig, art: Artifacts, vec_env: Any, wrapped: Any, device: str) -> Any:
    from gym_slaterec.policies import simulator_of

    from .agents import SlateQ

    a = cfg.agent
    pk = _policy_kwargs(cfg, art, wrapped)
    sim = simulator_of(wrapped)
    pk.update(examination=sim.examination.astype(np.float32), item_topics=sim.item_topics,
              diversity_penalty=sim.config.diversity_penalty, diversity_threshold=sim.config.diversity_threshold)
    return SlateQ(
        "MultiInputPolicy", vec_env, learning_rate=float(a.learning_rate), buffer_size=a.buffer_transitions,
        learning_starts=a.warmup_episodes * episode_length(cfg), batch_size=a.batch_transitions, tau=float(a.tau),
        gamma=float(a.gamma), train_freq=a.train_freq, gradient_steps=a.gradient_steps,
        exploration_fraction=float(a.exploration_fraction), exploration_final_eps=float(a.exploration_final_eps),
        policy_kwargs=pk, seed=cfg.seed, device="cpu",
    )


def _episode_slateq(cfg: RunConfig, art: Artifacts, vec_env: Any, wrapped: Any, device: str) -> Any:
    from gym_slaterec.policies import simulator_of

    from .agents import EpisodeSlateQ

    a, b = cfg.agent, cfg.belief
    sim = simulator_of(wrapped)
    sc = sim.config
    return EpisodeSlateQ(
        num_items=sim.num_items, slate_size=sim.slate_size, episode_length=episode_length(cfg), items=_ideal(wrapped),
        item_topics=sim.item_topics, examination=sim.examination, offset=sc.offset, slope=sc.slope,
        max_score=sim.max_score, diversity_penalty=sc.diversity_penalty, diversity_threshold=sc.diversity_threshold,
        item_table=belief_table(cfg, art, wrapped), embedding_dim=b.embedding_dim, belief_size=b.hidden_size,
        freeze_items=b.freeze, scratch_std=b.scratch_std, net_arch=list(a.net_arch), gamma=float(a.gamma),
        tau=float(a.tau), learning_rate=float(a.learning_rate), batch_episodes=a.batch_episodes,
        buffer_episodes=a.buffer_episodes, warmup_episodes=a.warmup_episodes,
        updates_per_episode=float(a.updates_per_episode), epsilon_start=float(a.epsilon_start),
        epsilon_end=float(a.epsilon_end), epsilon_decay_episodes=float(a.epsilon_decay_episodes), seed=cfg.seed,
        device=device, **a.switches(),
    )


def _recurrent_ppo(cfg: RunConfig, art: Artifacts, vec_env: Any, wrapped: Any, device: str) -> Any:
    from sb3_contrib import RecurrentPPO

    from .belief import TurnFeatures

    a, b = cfg.agent, cfg.belief
    pk = {"features_extractor_class": TurnFeatures,
          "features_extractor_kwargs": {"item_embeddings": belief_table(cfg, art, wrapped),
                                        "embedding_dim": b.embedding_dim, "freeze": b.freeze},
          "lstm_hidden_size": b.hidden_size, "net_arch": {"pi": list(a.net_arch), "vf": list(a.net_arch)}}
    return RecurrentPPO("MultiInputLstmPolicy", vec_env, learning_rate=float(a.learning_rate), n_steps=a.rollout_turns,
                        batch_size=a.batch_transitions, n_epochs=a.epochs, gamma=float(a.gamma),
                        gae_lambda=float(a.gae_lambda), clip_range=float(a.clip_range), ent_coef=float(a.ent_coef),
                        policy_kwargs=pk, seed=cfg.seed, device=device, verbose=0)


def _off_policy_contrib(cls_name: str) -> Builder:
    def build(cfg: RunConfig, art: Artifacts, vec_env: Any, wrapped: Any, device: str) -> Any:
        import sb3_contrib

        a = cfg.agent
        pk = _policy_kwargs(cfg, art, wrapped)
        pk["share_features_extractor"] = False
        extra: dict[str, Any] = {}
        if isinstance(a, TQCConfig):
            pk.update(n_quantiles=a.n_quantiles, n_critics=a.n_critics)
            extra = {"tau": float(a.tau), "top_quantiles_to_drop_per_net": a.top_quantiles_to_drop_per_net}
        policy: Any = "MultiInputPolicy"
        if isinstance(a, CrossQConfig):
            from sb3_contrib.crossq.policies import CrossQPolicy

            from .belief import FlatGRUBeliefExtractor
            from gym_slaterec.policies import simulator_of

            extra, policy = {"policy_delay": a.policy_delay}, CrossQPolicy
            sim = simulator_of(wrapped)
            pk["features_extractor_class"] = FlatGRUBeliefExtractor
            pk["features_extractor_kwargs"].update(window=wrapped.window, slate_size=sim.slate_size,
                                                   num_items=sim.num_items)
        return getattr(sb3_contrib, cls_name)(
            policy, vec_env, learning_rate=float(a.learning_rate),
            gamma=float(a.gamma), batch_size=a.batch_transitions, buffer_size=a.buffer_transitions,
            learning_starts=a.warmup_episodes * episode_length(cfg), train_freq=a.train_freq,
            gradient_steps=a.gradient_steps, ent_coef=a.ent_coef, policy_kwargs=pk, seed=cfg.seed, device=device,
            verbose=0, **extra,
        )
    return build


def _own_format(cls_name: str) -> Callable[[Path, str, Any], Any]:
    def load(path: Path, device: str, vec_env: Any) -> Any:
        from . import agents
        from .runs import load_sb3_model

        return load_sb3_model(getattr(agents, cls_name), path, device, env=vec_env)
    return load


# ------------------------------------------------------------------ the method table
@dataclass(frozen=True)
class Regime:
    """How a method trains in one regime: its agent configuration and model builder."""

    config: type[AgentConfig]
    build: Optional[Builder] = None
    #: history window the model observes: "config" (RunConfig.window turns), a fixed number of
    #: turns, or None (raw turns: the model keeps its own belief over the episode)
    window: Any = "config"
    #: the window flattened into one array (algorithms without dict observations)
    flat: bool = False
    #: the model steps the gymnasium vector env itself (no SB3 VecEnv)
    own_loop: bool = False
    #: loads its own checkpoint format, (path, device, vec_env) -> model (else sb3_slate.checkpoints)
    load: Optional[Callable[[Path, str, Any], Any]] = None
    #: the model's class, by name: "SlateSAC" (sb3_slate.agents), "sb3_contrib.TQC"
    model: str = ""

    def model_class(self) -> type:
        import importlib

        module, _, name = self.model.rpartition(".")
        return getattr(importlib.import_module(module or "sb3_slate.agents"), name)


def _gems(cfg: RunConfig, art: Artifacts, venv: Any) -> Any:
    from gym_slaterec.wrappers import GeMSAction

    return GeMSAction(venv, art.gems)


def _topk(cfg: RunConfig, art: Artifacts, venv: Any) -> Any:
    from gym_slaterec.wrappers import TopKAction

    return TopKAction(venv, action_table(cfg, art, venv))


def _wknn(cfg: RunConfig, art: Artifacts, venv: Any) -> Any:
    from .agents import NearestItemPerRank

    if _item_id_wknn(cfg):
        return venv  # the agent picks item ids itself

    return NearestItemPerRank(venv, action_table(cfg, art, venv), unit=cfg.replay == "episode")


def _none(agent: AgentConfig) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Method:
    """One method of the benchmark, declared once."""

    name: str
    summary: str
    #: training regimes (the first is the default when no preset names one)
    regimes: dict[str, Regime]
    #: run-level defaults that differ from RunConfig's
    run_defaults: dict[str, Any] = field(default_factory=dict)
    default_preset: Optional[str] = None
    #: input artifacts ("gems", "mf") the method needs under an agent configuration
    needs: Callable[[AgentConfig], tuple[str, ...]] = _none
    needs_hint: str = ""
    #: action wrapper around the native vector env (None: the agent picks slates itself)
    act: Optional[Callable[[RunConfig, Artifacts, Any], Any]] = None
    #: the item table the method acts with (TopK, WkNN): "ideal", "mf" or None
    action_items: Callable[[AgentConfig], Optional[str]] = lambda agent: None
    #: the item table its belief starts from under belief.item_init=auto
    belief_items: Callable[[AgentConfig], str] = lambda agent: "scratch"
    #: observes the true relevances and click model (SlateQ)
    privileged: bool = False
    #: trains on CUDA too (the others run on the CPU only)
    cuda: bool = False
    #: a reference policy: nothing to train, validated and tested through the same protocol
    reference: bool = False
    #: published test returns (Deffayet et al. 2023, Table 2; docs/method.md section 8)
    published: dict[str, float] = field(default_factory=dict)
    #: the settings of the ``reference`` variant per regime (what the reference implementation
    #: computes; docs/method.md section 7); a regime absent here has no reference variant
    reference_variant: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: published test returns of the method with other settings, by the label those settings give a
    #: table row (``gamma=0.0``: the paper's SAC+GeMS with discount 0)
    published_settings: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def trains(self) -> bool:
        return not self.reference

    @property
    def default_regime(self) -> str:
        """The regime a run trains in when no preset or ``replay`` is given."""
        if self.default_preset is not None:
            return _read_yaml(CONFIG_DIR / "presets" / f"{self.default_preset}.yaml")["replay"]
        return next(iter(self.regimes))


_EPISODE = {"window": None, "own_loop": True, "load": _own_format("EpisodeSAC"), "model": "EpisodeSAC"}
_SAC_REGIMES = {"window": Regime(WindowSACConfig, _window_sac("SlateSAC"), model="SlateSAC"),
                "episode": Regime(EpisodeSACConfig, _episode_sac, **_EPISODE)}
_SAC_RUN = {"n_envs": 4}  # 1 gradient step per 4 turns in the window regime
_REFERENCE = {"window": Regime(NoAgentConfig, model="ReferenceAgent")}
# What the reference implementation computes in the paper's regime (docs/method.md section 7):
# belief item tables from scratch, N(0, 1); the entropy loss taken on alpha, alpha 0.2 at step 1;
# warm-up actions in the middle half of the action box
_SAC_REFERENCE = {"episode": {"belief": {"item_init": "scratch", "scratch_std": 1.0},
                              "agent": {"alpha_loss": "alpha", "warmup_actions": "middle_half"}}}
# SAC+WkNN's k-NN table is a frozen copy of the critic belief's scratch table (the configured
# "ideal" table never reaches the agent), and every switch of EpisodeWkNNConfig takes its reading
# (its warm-up plays random items: warmup_actions, the box's middle half of the others, does not apply)
_WKNN_REFERENCE = {"episode": _merge(_SAC_REFERENCE["episode"], {"agent": {
    "embeddings": "ideal", "warmup_actions": "full_box",
    **{f"wknn_{name}": values[1] for name, values in WKNN_SWITCHES.items()}}})}
_REFERENCE_RUN = {"episodes": 1, "save_replay_buffer": False}

METHOD_TABLE: dict[str, Method] = {m.name: m for m in [
    Method("sac-gems", "SAC in GeMS's latent space (the paper's method)", _SAC_REGIMES, _SAC_RUN, "paper",
           needs=lambda a: ("gems",), act=_gems, belief_items=lambda a: "gems", cuda=True,
           published={"FocusedTopDown": 305.3, "FocusedMixed": 242.6, "FocusedDivPen": 254.1},
           published_settings={"gamma=0.0": {"FocusedTopDown": 194.3}}, reference_variant=_SAC_REFERENCE),
    Method("sac-topk-ideal", "SAC scoring items against the simulator's item table (privileged)", _SAC_REGIMES,
           _SAC_RUN, "paper", act=_topk, action_items=lambda a: "ideal", belief_items=lambda a: "ideal", cuda=True,
           published={"FocusedTopDown": 429.0, "FocusedMixed": 384.1, "FocusedDivPen": 386.3},
           reference_variant=_SAC_REFERENCE),
    Method("sac-topk-mf", "SAC scoring items against MF embeddings", _SAC_REGIMES, _SAC_RUN, "paper",
           needs=lambda a: ("mf",), act=_topk, action_items=lambda a: "mf", belief_items=lambda a: "mf", cuda=True,
           published={"FocusedTopDown": 254.4, "FocusedMixed": 232.7, "FocusedDivPen": 242.2},
           reference_variant=_SAC_REFERENCE),
    Method("sac-wknn", "SAC+WkNN (Wolpertinger): a proto-slate refined among each rank's nearest items",
           {"window": Regime(WindowWkNNConfig, _window_sac("WolpertingerSAC"), model="WolpertingerSAC"),
            "episode": Regime(EpisodeWkNNConfig, _episode_sac, **_EPISODE)},
           _SAC_RUN, "paper", needs=lambda a: ("mf",) if a.embeddings == "mf" else (),
           needs_hint=", or --set agent.embeddings=ideal (privileged)", act=_wknn,
           action_items=lambda a: a.embeddings, belief_items=lambda a: a.embeddings,
           reference_variant=_WKNN_REFERENCE),
    Method("reinforce-softmax", "REINFORCE with a softmax over the items",
           {"window": Regime(ReinforceConfig, _reinforce, model="REINFORCE"),
            "episode": Regime(EpisodeReinforceConfig, _episode_reinforce, window=None, own_loop=True,
                              load=_own_format("EpisodeREINFORCE"), model="EpisodeREINFORCE")},
           default_preset="paper", published={"FocusedTopDown": 248.1, "FocusedMixed": 233.5, "FocusedDivPen": 249.1},
           reference_variant={"episode": {"belief": {"item_init": "scratch", "scratch_std": 1.0},
                                          "agent": {"loss": "first_click", "train_on_warmup": True}}}),
    Method("slateq", "SlateQ (privileged: true relevances and click model)",
           {"window": Regime(SlateQConfig, _slateq, model="SlateQ"),
            "episode": Regime(EpisodeSlateQConfig, _episode_slateq, window=None, own_loop=True,
                              load=_own_format("EpisodeSlateQ"), model="EpisodeSlateQ")},
           default_preset="paper", belief_items=lambda a: "ideal", privileged=True,
           reference_variant={"episode": {"belief": {"item_init": "scratch", "scratch_std": 1.0},
                                          "agent": {name: values[1] for name, values in SLATEQ_SWITCHES.items()}}}),
    Method("random", "uniformly random slates (reference)", _REFERENCE, _REFERENCE_RUN, reference=True,
           reference_variant={"window": {}}),
    Method("oracle", "the short-term oracle: the k most relevant items (reference, privileged)", _REFERENCE,
           _REFERENCE_RUN, reference=True, published={"FocusedTopDown": 107.7}, reference_variant={"window": {}}),
    # sb3-contrib's algorithms, each a few lines: a regime (config + builder) over an existing action wrapper
    Method("recurrentppo-gems", "sb3-contrib RecurrentPPO in GeMS's latent space (its LSTM is the belief)",
           {"rollout": Regime(RecurrentPPOConfig, _recurrent_ppo, window=1, model="sb3_contrib.RecurrentPPO")}, needs=lambda a: ("gems",), act=_gems,
           belief_items=lambda a: "gems"),
    Method("recurrentppo-topk-ideal", "sb3-contrib RecurrentPPO scoring items against the ideal table (privileged)",
           {"rollout": Regime(RecurrentPPOConfig, _recurrent_ppo, window=1, model="sb3_contrib.RecurrentPPO")}, act=_topk,
           action_items=lambda a: "ideal", belief_items=lambda a: "ideal"),
    Method("tqc-gems", "sb3-contrib TQC in GeMS's latent space, GRU belief over a history window",
           {"window": Regime(TQCConfig, _off_policy_contrib("TQC"), model="sb3_contrib.TQC")}, _SAC_RUN, needs=lambda a: ("gems",), act=_gems,
           belief_items=lambda a: "gems"),
    Method("crossq-gems", "sb3-contrib CrossQ in GeMS's latent space, GRU belief over a history window",
           {"window": Regime(CrossQConfig, _off_policy_contrib("CrossQ"), flat=True, model="sb3_contrib.CrossQ")}, _SAC_RUN, needs=lambda a: ("gems",),
           act=_gems, belief_items=lambda a: "gems"),
]}
METHODS = tuple(METHOD_TABLE)
#: reference policies (nothing to train)
REFERENCE_METHODS = tuple(m.name for m in METHOD_TABLE.values() if m.reference)
#: the paper's SAC methods (the window and episode regimes)
SAC_METHODS = tuple(m.name for m in METHOD_TABLE.values()
                    if "episode" in m.regimes and issubclass(m.regimes["episode"].config, EpisodeSACConfig))


def method_of(name: Any) -> Method:
    """The table entry of method ``name``; an unknown name is refused with the list."""
    if name not in METHOD_TABLE:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHOD_TABLE)}")
    return METHOD_TABLE[name]


def artifacts_needed(method: str, agent_settings: Optional[dict[str, Any]] = None,
                     variant: Optional[str] = None) -> tuple[str, ...]:
    """The input artifacts (``gems``, ``mf``) a run of ``method`` needs with these ``agent.*`` settings
    (a mapping of some keys; the rest default, or the ``variant``'s)."""
    m = method_of(method)
    regime = next(iter(m.reference_variant)) if variant == "reference" and m.reference_variant else next(iter(m.regimes))
    cls = m.regimes[regime].config
    known = {f.name for f in dataclasses.fields(cls)}
    base = m.reference_variant[regime].get("agent", {}) if variant == "reference" and m.reference_variant else {}
    agent = cls(**{k: v for k, v in {**base, **(agent_settings or {})}.items() if k in known})
    return m.needs(agent)


def model_class(cfg: RunConfig) -> type:
    """The class of a run's model (its method and regime)."""
    return cfg.regime.model_class()


def build_model(cfg: RunConfig, art: Artifacts, vec_env: Any, wrapped: Any, device: str = "cpu") -> Any:
    """A fresh model of the method on the SB3 vec env ``vec_env`` (``wrapped``: its gymnasium
    stack), its networks on ``device`` (a resolved torch device name)."""
    regime = cfg.regime
    if regime.build is None:
        raise ValueError(f"{cfg.method} has no trainable model")
    return regime.build(cfg, art, vec_env, wrapped, device)
