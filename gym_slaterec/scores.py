"""Normalised scores (D4RL's): ``100 x (R - random) / (expert - random)`` with the reference
returns shipped in ``gym_slaterec/data/reference_returns.json`` (random and expert test returns
per environment, on its shipped item matrix); 0 is the random policy, 100 the expert."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Optional

@functools.lru_cache(maxsize=1)
def reference_returns() -> dict[str, dict[str, Any]]:
    """Per environment (``FocusedTopDown``...): item_matrix (fingerprint prefix), random, expert (or None)."""
    import gym_slaterec

    path = Path(gym_slaterec.__file__).parent / "data" / "reference_returns.json"
    data = json.loads(path.read_text())
    if data.get("format") != "slaterec.reference_returns/1":
        raise ValueError(f"{path}: not a reference-returns file of this version")
    return data["environments"]


def normalised(value: float, env: str, item_fingerprint: Optional[str]) -> Optional[float]:
    """``value``'s normalised score in ``env`` (short name), or None when the environment has no
    expert reference yet or the run used another item matrix than the references'."""
    ref = reference_returns().get(env)
    if ref is None or ref.get("expert") is None or ref.get("random") is None:
        return None
    if not item_fingerprint or not str(ref["item_matrix"]).startswith(str(item_fingerprint)[:12]):
        return None
    return 100.0 * (value - ref["random"]) / (ref["expert"] - ref["random"])
