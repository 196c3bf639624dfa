"""Simulator parameters (docs/method.md section 3) and the six published environment presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

CLICK_MODELS = ("TopDown", "Mixed")


@dataclass(frozen=True)
class SimulatorConfig:
    """Every parameter of one TopicRec turn. Defaults are the published values."""

    item_embeddings: str = "focused"  # a shipped name ("focused", "diffuse", "peaked") or a .npy/.pt path
    click_model: str = "TopDown"
    diversity_penalty: float = 1.0
    slate_size: int = 10
    topic_size: int = 2
    episode_length: int = 100
    offset: float = 0.28
    slope: float = 100.0
    omega: float = 0.9
    position_decay: float = 0.85
    diversity_threshold: int = 4
    boredom_threshold: int = 5
    boredom_timeout: int = 5
    boredom_moving_window: int = 5
    recent_items_maxlen: int = 10
    short_term_boost: float = 1.0
    user_component_std: float = 0.4
    user_weight_power: float = 3.0

    def __post_init__(self) -> None:
        validate_config(self)

    def replace(self, **overrides: Any) -> "SimulatorConfig":
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(
                f"unknown simulator parameter(s) {unknown}; valid: {sorted(f.name for f in dataclasses.fields(self))}"
            )
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_POSITIVE_INTS = (
    "slate_size",
    "topic_size",
    "episode_length",
    "diversity_threshold",
    "boredom_threshold",
    "boredom_timeout",
    "recent_items_maxlen",
)
_NONNEG_INTS = ("boredom_moving_window",)
#: Upper bounds that keep memory finite: a user's whole episode of click uniforms is
#: drawn at reset ((episode_length + 1) x slate_size numbers), logs are (users, maxlen).
_MAX_INTS = {"episode_length": 100_000, "slate_size": 10_000, "topic_size": 10_000, "recent_items_maxlen": 100_000,
             "diversity_threshold": 10**9, "boredom_threshold": 10**9, "boredom_timeout": 10**9,
             "boredom_moving_window": 10**9}
_FINITE = ("offset", "slope", "omega", "position_decay", "diversity_penalty", "short_term_boost",
           "user_component_std", "user_weight_power")


def validate_config(cfg: SimulatorConfig) -> None:
    """Raise ``ValueError`` naming the first parameter that is out of range."""
    for name in _POSITIVE_INTS + _NONNEG_INTS:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must be an integer, got {v!r}")
        low = 1 if name in _POSITIVE_INTS else 0
        if v < low:
            raise ValueError(f"{name} must be >= {low}, got {v}")
        if v > _MAX_INTS[name]:
            raise ValueError(f"{name} must be <= {_MAX_INTS[name]:,}, got {v}")
    for name in _FINITE:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if cfg.click_model not in CLICK_MODELS:
        raise ValueError(f"click_model must be one of {CLICK_MODELS}, got {cfg.click_model!r}")
    if not 0.0 <= cfg.omega <= 1.0:
        raise ValueError(f"omega must lie in [0, 1], got {cfg.omega}")
    if not 0.0 < cfg.position_decay <= 1.0:
        raise ValueError(f"position_decay must lie in (0, 1], got {cfg.position_decay}")
    if cfg.diversity_penalty <= 0:
        raise ValueError(f"diversity_penalty must be > 0, got {cfg.diversity_penalty}")
    if cfg.short_term_boost < 0:
        raise ValueError(f"short_term_boost must be >= 0, got {cfg.short_term_boost}")
    if cfg.user_component_std <= 0:
        raise ValueError(f"user_component_std must be > 0, got {cfg.user_component_std}")
    if not isinstance(cfg.item_embeddings, str):
        raise ValueError(
            "item_embeddings in a SimulatorConfig must be a shipped name ('focused', 'diffuse', 'peaked') "
            "or a .npy/.pt path; "
            "pass an array to the environment's item_embeddings argument instead"
        )


@dataclass(frozen=True)
class EnvPreset:
    env_id: str
    class_name: str
    config: SimulatorConfig = field(default_factory=SimulatorConfig)


ENV_PRESETS: dict[str, EnvPreset] = {}
for _emb in ("focused", "diffuse"):
    for _name, _click, _pen in (("TopDown", "TopDown", 1.0), ("Mixed", "Mixed", 1.0), ("DivPen", "Mixed", 3.0)):
        _cls = f"{_emb.capitalize()}{_name}"
        _id = f"SlateRec/{_cls}-v0"
        ENV_PRESETS[_id] = EnvPreset(
            _id, _cls, SimulatorConfig(item_embeddings=_emb, click_model=_click, diversity_penalty=_pen)
        )


#: The reference implementation's environment names (its dataset and run names),
#: accepted wherever an environment id is.
ENV_ALIASES: dict[str, str] = {}
for _emb in ("focused", "diffuse"):
    for _alias, _name in (("topdown", "TopDown"), ("mix", "Mixed"), ("mixed", "Mixed"), ("divpen", "DivPen")):
        ENV_ALIASES[f"{_emb}_{_alias}"] = f"SlateRec/{_emb.capitalize()}{_name}-v0"


def env_of_reference_file(name: str) -> Optional[str]:
    """The environment a reference-code file name stands for: ``focused_topdown.pt``,
    ``focused_topdown_moving_env.pt`` (the reference code's default name), ``diffuse_mix_x.pt``...
    (the longest alias the file's stem is or begins with, followed by ``_``); None when none fits."""
    stem = Path(name).name.split(".")[0].lower()
    fits = [alias for alias in ENV_ALIASES if stem == alias or stem.startswith(alias + "_")]
    return ENV_ALIASES[max(fits, key=len)] if fits else None


def resolve_env_id(name: str) -> str:
    """The registered id of ``name``: an id with or without ``SlateRec/``, or a
    reference-code alias such as ``focused_topdown`` or ``diffuse_mix``."""
    if not isinstance(name, str):
        raise ValueError(f"environment must be a string id, got {type(name).__name__}")
    key = name if name.startswith("SlateRec/") else f"SlateRec/{name}"
    if key in ENV_PRESETS:
        return key
    if f"{key}-v0" in ENV_PRESETS:  # "FocusedTopDown": the only version there is
        return f"{key}-v0"
    alias = ENV_ALIASES.get(name.strip().lower())
    if alias is not None:
        return alias
    raise ValueError(
        f"unknown environment {name!r}; available: {sorted(ENV_PRESETS)} "
        f"(or the reference code's names: {', '.join(sorted(ENV_ALIASES))})"
    )


def preset(env_id: str) -> EnvPreset:
    """The preset of a registered environment id (with or without the ``SlateRec/``
    namespace, or a reference-code alias, see :func:`resolve_env_id`)."""
    return ENV_PRESETS[resolve_env_id(env_id)]
