"""What a trained policy recommends: relevance and boredom of its slates (Fig. 2), and
the test return over a two-key grid of a sweep (Fig. 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .grid import seed_run_ids


def slate_statistics(run_dir: Path, users: int = 200, first_seed: Optional[int] = None,
                     checkpoint: str = "best") -> dict[str, Any]:
    """Play a run's policy on ``users`` test users with ``analysis_info`` and keep, for
    every shown item, its relevance score, and for every slate, how many of its items
    belong to a topic the user is bored of."""
    from sb3_slate.protocol import TEST_SEED, evaluate_agent
    from sb3_slate.runs import base_env, load_agent

    agent = load_agent(run_dir, checkpoint, warn_unfinished=False)
    scores: list[np.ndarray] = []
    bored_items: list[np.ndarray] = []

    def on_turn(info: dict) -> None:
        scores.append(np.asarray(info["scores"], dtype=np.float32).ravel())
        bored = np.asarray(info["bored"], dtype=bool)  # (users, topics)
        topics = np.asarray(info["slate_topics"])      # (users, k)
        bored_items.append(np.take_along_axis(bored, topics, axis=1).sum(axis=1).astype(np.int16))

    res = evaluate_agent(agent, lambda n: base_env(agent.config, n, True), users,
                         TEST_SEED if first_seed is None else first_seed, on_turn=on_turn)
    return {"run": str(run_dir), "method": agent.method, "gamma": getattr(agent.config.agent, "gamma", None),
            "scores": np.concatenate(scores), "bored_items": np.concatenate(bored_items),
            "return_mean": float(res.returns.mean()), "boredom": res.boredom, "users": users}


def heatmap_data(sweep_dir: Path, x_key: str, y_key: str, method: Optional[str] = None,
                 env: Optional[str] = None) -> dict[str, Any]:
    """Mean test return over seeds for every (x, y) of a sweep's grid; the runs used."""
    record = json.loads((Path(sweep_dir) / "sweep.json").read_text())
    cells: dict[tuple, list[float]] = {}
    runs: list[str] = []
    methods = set()
    for t in record["trials"]:
        if t["kind"] not in ("run", "seeds") or (method and t["method"] != method) or (env and env not in t["env_id"]):
            continue
        if x_key not in t["point"] or y_key not in t["point"]:
            continue
        for _, rel in seed_run_ids(t):
            try:
                res = json.loads((Path(sweep_dir) / rel / "results.json").read_text())
            except (OSError, ValueError):
                continue  # not finished
            methods.add((t["method"], t["env_id"]))
            cells.setdefault((t["point"][x_key], t["point"][y_key]), []).append(float(res["test"]["mean"]))
            runs.append(str(Path(sweep_dir) / rel))
    if not cells:
        raise ValueError(f"no finished run of {sweep_dir} has both {x_key!r} and {y_key!r} in its grid point"
                         + (f" (method {method})" if method else ""))
    if len(methods) > 1:
        raise ValueError(f"the runs with {x_key} and {y_key} span {len(methods)} methods/environments "
                         f"({', '.join(sorted(m for m, _ in methods))}); choose one with --method/--env")
    xs = sorted({x for x, _ in cells}, key=_order)
    ys = sorted({y for _, y in cells}, key=_order)
    mean = np.full((len(ys), len(xs)), np.nan)
    count = np.zeros((len(ys), len(xs)), dtype=int)
    for (x, y), values in cells.items():
        mean[ys.index(y), xs.index(x)] = float(np.mean(values))
        count[ys.index(y), xs.index(x)] = len(values)
    (m, e), = methods
    return {"x": xs, "y": ys, "mean": mean, "n": count, "runs": runs, "method": m, "env_id": e,
            "x_key": x_key, "y_key": y_key}


def _order(v: Any) -> tuple:
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))
