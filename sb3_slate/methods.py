"""The methods of the benchmark (docs/method.md section 7): configuration, env stack and model per method.

A method is a name (``sac-gems``, ``sac-topk-ideal``, ``sac-topk-mf``, ``sac-wknn``,
``reinforce-softmax``, ``slateq``, ``random``, ``oracle``) with default
hyper-parameters in ``sb3_slate/configs/<method>.yaml`` (over ``common.yaml``).
:func:`wrap_env` builds the observation/action stack of a method around a native
SlateRec vector env; :func:`build_model` the SB3 model.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from gym_slaterec import yaml_values

METHODS = ("sac-gems", "sac-topk-ideal", "sac-topk-mf", "sac-wknn", "reinforce-softmax", "slateq", "random", "oracle")
SAC_METHODS = ("sac-gems", "sac-topk-ideal", "sac-topk-mf", "sac-wknn")
REFERENCE_METHODS = ("random", "oracle")
CONFIG_DIR = Path(__file__).parent / "configs"
#: Named training regimes (sb3_slate/configs/presets/<name>.yaml), applied over the method's defaults.
PRESETS = ("paper", "window")
#: The regime a method trains in when none is named: the one that reached the higher test
#: return at equal wall time (BENCHMARKS.md, issue #11: SAC+GeMS over the chain's budget,
#: SAC+TopK over 12 minutes each, SAC+WkNN over 35 minutes: the window regime led it at 12).
DEFAULT_PRESETS = {"sac-gems": "paper", "sac-topk-ideal": "paper", "sac-topk-mf": "paper", "sac-wknn": "paper"}


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
    #: history window length in turns (episode_length + 1 = the whole episode); replay "window" only
    window: int = 10
    #: "window": SB3 SAC on transitions with a ``window``-turn history; "episode": the paper's
    #: episode-replay recurrent SAC (:class:`sb3_slate.agents.EpisodeSAC`), SAC methods only
    replay: str = "window"
    val_every: int = 100
    val_users: int = 200
    test_users: int = 500
    checkpoint_every: int = 500
    save_replay_buffer: bool = True
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
    belief: dict[str, Any] = field(default_factory=dict)
    agent: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(asdict(self))

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
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
        if self.tag is not None and (not isinstance(self.tag, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", self.tag)):
            raise ValueError(f"tag must be 1-64 letters, digits, '.', '_' or '-' (it names run directories), got {self.tag!r}")
        from .settings import AGENT_SETTINGS, BELIEF_SETTINGS, EPISODE_SAC_AGENT, WKNN_KEYS, check_section

        if self.replay not in ("window", "episode"):
            raise ValueError(f"replay must be 'window' or 'episode', got {self.replay!r}")
        if self.replay == "episode" and self.method not in SAC_METHODS:
            raise ValueError(f"replay=episode is implemented for the SAC methods ({', '.join(SAC_METHODS)}), "
                             f"not {self.method}")
        schema = AGENT_SETTINGS[self.method]
        if self.replay == "episode":
            schema = {**EPISODE_SAC_AGENT, **{k: v for k, v in schema.items() if k in WKNN_KEYS}}
        check_section("agent", self.agent, schema, f"{self.method} (replay={self.replay})")
        check_section("belief", self.belief, BELIEF_SETTINGS, self.method)
        if not isinstance(self.env_kwargs, dict):
            raise ValueError(f"env_kwargs must be a mapping of simulator parameters, got {self.env_kwargs!r}")
        from gym_slaterec.core.config import preset

        # every key and value checked now, not when the first environment is built
        preset(self.env_id).config.replace(**{k: v for k, v in self.env_kwargs.items() if k != "item_embeddings"})
        if self.method == "sac-gems" and not self.gems:
            raise ValueError("sac-gems needs a GeMS checkpoint (--gems FILE)")
        if self.method == "sac-topk-mf" and not self.mf:
            raise ValueError("sac-topk-mf needs MF embeddings (--mf FILE)")
        if self.method == "sac-wknn" and self.agent.get("embeddings", "mf") == "mf" and not self.mf:
            raise ValueError("sac-wknn needs MF embeddings (--mf FILE), or --set agent.embeddings=ideal (privileged)")


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


def resolve_config(method: str, env_id: str, overrides: Optional[dict[str, Any]] = None,
                   config_file: Optional[Path] = None, preset: Optional[str] = None) -> RunConfig:
    """Defaults (common + method) <- preset <- config file <- overrides, checked.

    ``preset`` None: the method's default regime (:data:`DEFAULT_PRESETS`), if it has one.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if preset is None:
        preset = DEFAULT_PRESETS.get(method)
    data = _merge(_read_yaml(CONFIG_DIR / "common.yaml"), _read_yaml(CONFIG_DIR / f"{method}.yaml"))
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        data = _merge(data, _read_yaml(CONFIG_DIR / "presets" / f"{preset}.yaml"))
    if config_file is not None:
        data = _merge(data, _read_yaml(Path(config_file)))
    data = _merge(data, overrides or {})
    data.update(method=method, env_id=env_id)
    env_kwargs = data.get("env_kwargs")
    if isinstance(env_kwargs, dict) and env_kwargs.get("item_embeddings") is not None:
        from gym_slaterec.core.embeddings import normalise_matrix_spec

        env_kwargs["item_embeddings"] = normalise_matrix_spec(env_kwargs["item_embeddings"])
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown configuration keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
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
    if cfg.gems and cfg.method == "sac-gems":
        from gym_slaterec.gems import GeMSCheckpoint

        art.gems = GeMSCheckpoint.load(cfg.gems, expect_env_id=env_id, expect_item_embeddings_fingerprint=item_fingerprint,
                                       allow_partial=cfg.allow_partial)
    needs_mf = cfg.method == "sac-topk-mf" or (cfg.method == "sac-wknn" and cfg.agent.get("embeddings", "mf") == "mf")
    if cfg.mf and (needs_mf or cfg.belief.get("item_init") == "mf"):
        from gym_slaterec.mf import MFEmbeddings

        art.mf = MFEmbeddings.load(cfg.mf)
        art.mf.check_env(env_id, item_fingerprint)
    return art


def _ideal(venv: Any) -> np.ndarray:
    from gym_slaterec.policies import simulator_of

    return np.asarray(simulator_of(venv).items, dtype=np.float32)


def action_table(cfg: RunConfig, art: Artifacts, venv: Any) -> Optional[np.ndarray]:
    """The item table the method acts with (TopK / WkNN), or None."""
    if cfg.method == "sac-topk-ideal":
        return _ideal(venv)
    if cfg.method == "sac-topk-mf":
        return np.asarray(art.mf.embeddings, dtype=np.float32)
    if cfg.method == "sac-wknn":
        return _ideal(venv) if cfg.agent.get("embeddings", "mf") == "ideal" else np.asarray(art.mf.embeddings, dtype=np.float32)
    return None


def wrap_env(cfg: RunConfig, art: Artifacts, venv: Any) -> Any:
    """The method's env stack around a native SlateRec vector env: action wrapper, history window (+ privileged)."""
    from gym_slaterec.wrappers import GeMSAction, TopKAction

    from .agents import NearestItemPerRank, PrivilegedRelevance
    from .envs import VectorHistoryWindow

    if cfg.method == "sac-gems":
        venv = GeMSAction(venv, art.gems)
    elif cfg.method in ("sac-topk-ideal", "sac-topk-mf"):
        venv = TopKAction(venv, action_table(cfg, art, venv))
    elif cfg.method == "sac-wknn":
        venv = NearestItemPerRank(venv, action_table(cfg, art, venv), unit=cfg.replay == "episode")
    if cfg.replay == "episode":
        return venv  # the recurrent agent reads raw (slate, clicks) turns and carries its belief
    venv = VectorHistoryWindow(venv, cfg.window)
    if cfg.method == "slateq":
        venv = PrivilegedRelevance(venv)
    return venv


def belief_table(cfg: RunConfig, art: Artifacts, venv: Any) -> Optional[np.ndarray]:
    """Initial item table of the belief encoder (None: scratch)."""
    init = cfg.belief.get("item_init", "auto")
    if init == "auto":
        init = {"sac-gems": "gems", "sac-topk-ideal": "ideal", "sac-topk-mf": "mf", "slateq": "ideal"}.get(cfg.method, "scratch")
        if cfg.method == "sac-wknn":
            init = cfg.agent.get("embeddings", "mf")
    if init == "scratch":
        return None
    if init == "ideal":
        return _ideal(venv)
    if init == "mf":
        if art.mf is None:
            raise ValueError("belief.item_init=mf needs MF embeddings (--mf FILE)")
        return np.asarray(art.mf.embeddings, dtype=np.float32)
    if init == "gems":
        if art.gems is None:
            raise ValueError("belief.item_init=gems needs a GeMS checkpoint (--gems FILE)")
        return art.gems.item_embedding_table()
    raise ValueError(f"belief.item_init must be auto, scratch, ideal, mf or gems; got {init!r}")


def _policy_kwargs(cfg: RunConfig, art: Artifacts, venv: Any) -> dict[str, Any]:
    from .belief import GRUBeliefExtractor

    b = cfg.belief
    return {
        "features_extractor_class": GRUBeliefExtractor,
        "features_extractor_kwargs": {
            "item_embeddings": belief_table(cfg, art, venv),
            "embedding_dim": int(b.get("embedding_dim", 20)),
            "freeze": bool(b.get("freeze", False)),
            "hidden_size": int(b.get("hidden_size", 20)),
        },
        "net_arch": list(cfg.agent.get("net_arch", [256])),
    }


def episode_length(cfg: RunConfig) -> int:
    from gym_slaterec.core.config import preset

    return int(cfg.env_kwargs.get("episode_length", preset(cfg.env_id).config.episode_length))


def model_class(cfg: RunConfig) -> type:
    from .agents import REINFORCE, EpisodeSAC, SlateQ, SlateSAC, WolpertingerSAC

    if cfg.replay == "episode":
        return EpisodeSAC
    return {"sac-wknn": WolpertingerSAC, "reinforce-softmax": REINFORCE, "slateq": SlateQ}.get(cfg.method, SlateSAC)


#: methods whose models train on CUDA too (the others run on the CPU only)
CUDA_METHODS = ("sac-gems", "sac-topk-ideal", "sac-topk-mf")


def build_model(cfg: RunConfig, art: Artifacts, vec_env: Any, wrapped: Any, device: str = "cpu") -> Any:
    """A fresh SB3 model of the method on the SB3 vec env ``vec_env`` (``wrapped``: its gymnasium
    stack), its networks on ``device`` (a resolved torch device name)."""
    a = dict(cfg.agent)
    T = episode_length(cfg)
    cls = model_class(cfg)
    if cfg.replay == "episode":
        return build_episode_sac(cfg, art, wrapped, device)
    pk = _policy_kwargs(cfg, art, wrapped)
    if cfg.method in SAC_METHODS:
        if cfg.method == "sac-wknn":
            pk.update(item_table=action_table(cfg, art, wrapped), k_neighbours=int(a.get("k_neighbours", 10)))
        pk["share_features_extractor"] = False
        return cls(
            "MultiInputPolicy", vec_env,
            learning_rate=float(a.get("learning_rate", 1e-3)),
            actor_learning_rate=float(a.get("actor_learning_rate", 3e-3)),
            gamma=float(a.get("gamma", 0.8)), tau=float(a.get("tau", 0.002)),
            batch_size=int(a.get("batch_size", 256)), buffer_size=int(a.get("buffer_size", 1_000_000)),
            learning_starts=int(a.get("warmup_episodes", 0)) * T,
            train_freq=int(a.get("train_freq", 1)), gradient_steps=int(a.get("gradient_steps", 1)),
            ent_coef=a.get("ent_coef", "auto"), target_entropy=a.get("target_entropy", "auto"),
            policy_kwargs=pk, seed=cfg.seed, device=device, verbose=0,
        )
    if cfg.method == "reinforce-softmax":
        return cls(
            "MultiInputPolicy", vec_env, learning_rate=float(a.get("learning_rate", 1e-3)), n_steps=T,
            gamma=float(a.get("gamma", 0.8)), ent_coef=float(a.get("ent_coef", 0.0)),
            policy_kwargs=pk, seed=cfg.seed, device="cpu",
        )
    if cfg.method == "slateq":
        from gym_slaterec.policies import simulator_of

        pk["examination"] = simulator_of(wrapped).examination.astype(np.float32)
        return cls(
            "MultiInputPolicy", vec_env, learning_rate=float(a.get("learning_rate", 1e-3)),
            buffer_size=int(a.get("buffer_size", 50_000)), learning_starts=int(a.get("warmup_episodes", 0)) * T,
            batch_size=int(a.get("batch_size", 64)), tau=float(a.get("tau", 0.005)), gamma=float(a.get("gamma", 0.8)),
            train_freq=int(a.get("train_freq", 1)), gradient_steps=int(a.get("gradient_steps", 1)),
            exploration_fraction=float(a.get("exploration_fraction", 0.2)),
            exploration_final_eps=float(a.get("exploration_final_eps", 0.05)),
            policy_kwargs={k: v for k, v in pk.items()}, seed=cfg.seed, device="cpu",
        )
    raise ValueError(f"{cfg.method} has no trainable model")


def build_episode_sac(cfg: RunConfig, art: Artifacts, wrapped: Any, device: str = "cpu") -> Any:
    """The paper-regime :class:`~sb3_slate.agents.EpisodeSAC` acting in ``wrapped``'s action space."""
    from gym_slaterec.policies import simulator_of

    from .agents import EpisodeSAC

    a, b = cfg.agent, cfg.belief
    sim = simulator_of(wrapped)
    table = belief_table(cfg, art, wrapped)
    return EpisodeSAC(
        num_items=sim.num_items, slate_size=sim.slate_size, episode_length=episode_length(cfg),
        action_dim=int(np.prod(wrapped.single_action_space.shape)), actor_items=table, critic_items=table,
        embedding_dim=int(b.get("embedding_dim", 20)), belief_size=int(b.get("hidden_size", 20)),
        freeze_items=bool(b.get("freeze", False)), net_arch=list(a.get("net_arch", [256])),
        gamma=float(a.get("gamma", 0.8)), tau=float(a.get("tau", 0.002)),
        learning_rate=float(a.get("learning_rate", 1e-3)), actor_learning_rate=float(a.get("actor_learning_rate", 3e-3)),
        ent_coef=a.get("ent_coef", "auto"), target_entropy=a.get("target_entropy", "auto"),
        batch_size=int(a.get("batch_size", 20)), buffer_size=int(a.get("buffer_size", 10_000)),
        warmup_episodes=int(a.get("warmup_episodes", 2_000)), gradient_steps=float(a.get("gradient_steps", 1)),
        wolpertinger_items=action_table(cfg, art, wrapped) if cfg.method == "sac-wknn" else None,
        k_neighbours=int(a.get("k_neighbours", 10)), seed=cfg.seed, device=device,
    )
