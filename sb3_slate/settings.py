"""The checks of configuration values (what a value must be, and the test), used as the
field metadata of the typed configs (:mod:`sb3_slate.agent_configs`)."""

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


SEED = ("an integer in [0, 2**32 - 1]", lambda v: _int(v) and 0 <= v <= 2**32 - 1)
OPTIONAL_POSITIVE = ("a positive number or null (the library's default)", lambda v: v is None or (_number(v) and v > 0))
OPEN_UNIT = ("a number in (0, 1)", lambda v: _number(v) and 0 < v < 1)
