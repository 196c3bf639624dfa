"""The settings each method accepts under ``agent.`` and ``belief.``, with their types
and ranges: a configuration is checked completely, naming the key, before a run
directory is created."""

from __future__ import annotations

import math
from typing import Any, Callable

Check = Callable[[Any], bool]


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _int(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int)


POSITIVE = ("a positive number", lambda v: _number(v) and v > 0)
NON_NEGATIVE = ("a number >= 0", lambda v: _number(v) and v >= 0)
DISCOUNT = ("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1)
UNIT = ("a number in [0, 1]", lambda v: _number(v) and 0 <= v <= 1)
SMOOTHING = ("a number in (0, 1]", lambda v: _number(v) and 0 < v <= 1)
POSITIVE_INT = ("a positive integer", lambda v: _int(v) and v >= 1)
NON_NEGATIVE_INT = ("an integer >= 0", lambda v: _int(v) and v >= 0)
BOOL = ("true or false", lambda v: isinstance(v, bool))
LAYERS = ("a list of positive integers (hidden layer sizes)",
          lambda v: isinstance(v, list) and all(_int(x) and x >= 1 for x in v))
ENT_COEF = ("'auto', 'auto_<initial value>' or a number >= 0",
            lambda v: (isinstance(v, str) and (v == "auto" or _auto_value(v))) or (_number(v) and v >= 0))
TARGET_ENTROPY = ("'auto' or a number", lambda v: v == "auto" or _number(v))


def _auto_value(v: str) -> bool:
    if not v.startswith("auto_"):
        return False
    try:
        return float(v[5:]) > 0
    except ValueError:
        return False


def one_of(*values: str) -> tuple[str, Check]:
    return f"one of {', '.join(values)}", lambda v: v in values


SAC_AGENT = {
    "gamma": DISCOUNT, "tau": SMOOTHING, "learning_rate": POSITIVE, "actor_learning_rate": POSITIVE,
    "net_arch": LAYERS, "ent_coef": ENT_COEF, "target_entropy": TARGET_ENTROPY, "batch_size": POSITIVE_INT,
    "buffer_size": POSITIVE_INT, "warmup_episodes": NON_NEGATIVE_INT, "train_freq": POSITIVE_INT,
    "gradient_steps": POSITIVE_INT,
}
#: The episode-replay SAC: batch_size and buffer_size count episodes, gradient_steps
#: is per collected episode.
EPISODE_SAC_AGENT = {
    **{k: SAC_AGENT[k] for k in ("gamma", "tau", "learning_rate", "actor_learning_rate", "net_arch", "ent_coef",
                                 "target_entropy", "batch_size", "buffer_size", "warmup_episodes")},
    "gradient_steps": POSITIVE,
}
#: SAC+WkNN's own keys, kept in both regimes
WKNN_KEYS = ("k_neighbours", "embeddings")
AGENT_SETTINGS: dict[str, dict[str, tuple[str, Check]]] = {
    "sac-gems": SAC_AGENT,
    "sac-topk-ideal": SAC_AGENT,
    "sac-topk-mf": SAC_AGENT,
    "sac-wknn": {**SAC_AGENT, "k_neighbours": POSITIVE_INT, "embeddings": one_of("mf", "ideal")},
    "reinforce-softmax": {"gamma": DISCOUNT, "learning_rate": POSITIVE, "net_arch": LAYERS, "ent_coef": NON_NEGATIVE},
    "slateq": {
        "gamma": DISCOUNT, "learning_rate": POSITIVE, "tau": SMOOTHING, "net_arch": LAYERS, "batch_size": POSITIVE_INT,
        "buffer_size": POSITIVE_INT, "warmup_episodes": NON_NEGATIVE_INT, "exploration_fraction": UNIT,
        "exploration_final_eps": UNIT, "train_freq": POSITIVE_INT, "gradient_steps": POSITIVE_INT,
    },
    "random": {},
    "oracle": {},
}
BELIEF_SETTINGS = {
    "item_init": one_of("auto", "scratch", "ideal", "mf", "gems"),
    "freeze": BOOL,
    "hidden_size": POSITIVE_INT,
    "embedding_dim": POSITIVE_INT,
}


def check_section(section: str, values: Any, schema: dict[str, tuple[str, Check]], method: str) -> None:
    """Raise ``ValueError`` naming the first unknown key or ill-typed value of ``section``."""
    if not isinstance(values, dict):
        raise ValueError(f"{section} must be a mapping of settings, got {values!r}")
    unknown = sorted(set(values) - set(schema))
    if unknown:
        known = ", ".join(sorted(schema)) or "none"
        raise ValueError(f"unknown setting {section}.{unknown[0]} for {method} (its {section} settings: {known})")
    for key, value in values.items():
        what, ok = schema[key]
        if not ok(value):
            raise ValueError(f"{section}.{key} must be {what}, got {value!r}")
