"""Learning curves (validation return against training progress) as PNG figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .results import RunRecord
from .stats import summarise


X_LABELS = {"episodes": None, "turns": "turns (user interactions)", "wall_s": "wall time (s)"}


def curve_groups(records: list[RunRecord], x: str = "episodes") -> dict[str, dict[float, list[float]]]:
    """{label: {x: [validation return of each seed at x]}} (wall times are per run: one seed per point)."""
    groups: dict[str, dict[float, list[float]]] = {}
    for r in records:
        g = groups.setdefault(f"{r.method} ({r.env_id.split('/')[-1]})", {})
        for xv, y in r.curve_over(x):
            g.setdefault(xv, []).append(y)
    return groups


def plot_curves(records: list[RunRecord], out: Path, title: str = "", x: str = "episodes") -> dict:
    """Mean validation return over seeds with its 95 % band, one line per method; the
    PNG's metadata lists the runs it was drawn from. Returns the plotted data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = {r.x_label for r in records}
    if len(units) > 1:
        raise ValueError(f"the runs mix curves over {' and '.join(sorted(units))} (online and offline runs); "
                         "plot them separately")
    if x not in X_LABELS:
        raise ValueError(f"x must be one of {', '.join(X_LABELS)}, got {x!r}")
    groups = curve_groups(records, x)
    if not any(groups.values()):
        raise ValueError("the runs have no validation curve yet")
    data = {}
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for label, points in sorted(groups.items()):
        xs = sorted(points)
        means, lows, highs = [], [], []
        for xv in xs:
            s = summarise(points[xv])
            means.append(s.mean)
            lo, hi = s.ci95 if s.n > 1 else (s.mean, s.mean)
            lows.append(lo)
            highs.append(hi)
        ax.plot(xs, means, label=f"{label}, {max(len(v) for v in points.values())} seed(s)")
        ax.fill_between(xs, lows, highs, alpha=0.2)
        data[label] = {"x": xs, "mean": means, "low": lows, "high": highs}
    ax.set_xlabel(X_LABELS[x] or records[0].x_label)
    ax.set_ylabel("validation return (200 users)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from gym_slaterec.provenance import atomic_path

    with atomic_path(out, overwrite=True) as tmp:  # the caller decides whether out may be replaced
        fig.savefig(tmp, format="png", metadata={"Description": json.dumps({"runs": [str(r.path) for r in records]}),
                                                 "Software": "slaterec plot curves"})
    plt.close(fig)
    return data


def png_runs(path: Path) -> list[str]:
    """The run directories recorded in a PNG written by :func:`plot_curves`."""
    from PIL import Image

    with Image.open(path) as im:
        return json.loads(im.info["Description"])["runs"]


__all__ = ["curve_groups", "plot_curves", "png_runs", "np"]
