"""Learning curves (validation return against training progress) as PNG figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .results import RunRecord
from .stats import summarise


X_LABELS = {"episodes": None, "turns": "turns (user interactions)", "wall_s": "wall time (s)"}


def curve_groups(records: list[RunRecord], x: str = "episodes",
                 per_seed: bool = False) -> dict[str, dict[float, list[float]]]:
    """{label: {x: [validation return of each seed at x]}} (wall times are per run: one seed per point);
    ``per_seed``: one label per run (``... seed S``)."""
    groups: dict[str, dict[float, list[float]]] = {}
    for r in records:
        seed = f" seed {r.seed}" if per_seed else ""
        g = groups.setdefault(f"{r.method}{seed} ({r.env_id.split('/')[-1]})", {})
        for xv, y in r.curve_over(x):
            g.setdefault(xv, []).append(y)
    return groups


def plot_curves(records: list[RunRecord], out: Path, title: str = "", x: str = "episodes",
                per_seed: bool = False) -> dict:
    """Mean validation return over seeds with its 95 % band, one line per method (``per_seed``:
    one line per run, no band: two or three seeds' t-interval is too wide to read); the
    PNG's metadata lists the runs it was drawn from. Returns the plotted data. Without a
    ``title``, runs of one environment and item matrix are titled with both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = {r.x_label for r in records}
    if len(units) > 1:
        raise ValueError(f"the runs mix curves over {' and '.join(sorted(units))} (online and offline runs); "
                         "plot them separately")
    if x not in X_LABELS:
        raise ValueError(f"x must be one of {', '.join(X_LABELS)}, got {x!r}")
    groups = curve_groups(records, x, per_seed)
    if not any(groups.values()):
        raise ValueError("the runs have no validation curve yet")
    data = {}
    import textwrap

    one_env = len({r.env_id for r in records}) == 1
    suffix = f" ({records[0].env_id.split('/')[-1]})" if records else ""

    def shown(label: str, tail: str) -> str:  # the legend's text: no repeated environment, wrapped
        core = label[: -len(suffix)] if one_env and label.endswith(suffix) else label
        return textwrap.fill(f"{core}, {tail}" if tail else core, 70)

    shown_labels = {label: shown(label, "") for label in groups}
    lines = sum(t.count("\n") + 1 for t in shown_labels.values())
    below = max(len(t) for t in shown_labels.values()) > 45
    fig, ax = plt.subplots(figsize=(6.4, 4.0 + (0.2 * lines if below else 0.0)), dpi=100)
    for i, (label, points) in enumerate(sorted(groups.items())):
        color = f"C{i % 10}"
        xs = sorted(points)
        means, lows, highs = [], [], []
        for xv in xs:
            s = summarise(points[xv])
            means.append(s.mean)
            lo, hi = s.ci95 if s.n > 1 else (s.mean, s.mean)
            lows.append(lo)
            highs.append(hi)
        seeds = max(len(v) for v in points.values())
        data[label] = {"x": xs, "mean": means, "low": lows, "high": highs}
        if len(xs) == 1:  # a policy that does not train (oracle, random): a reference level
            ax.axhline(means[0], linestyle="--", linewidth=1, color=color, label=shown(label, f"{seeds} seed(s), no training"))
            continue
        ax.plot(xs, means, color=color, label=shown(label, "" if per_seed else f"{seeds} seed(s)"))
        ax.fill_between(xs, lows, highs, color=color, alpha=0.2)
    ax.set_xlabel(X_LABELS[x] or records[0].x_label)
    ax.set_ylabel("validation return (200 users)")
    matrices = {r.item_matrix for r in records}
    if not title and one_env and len(matrices) == 1:  # by default, what the runs ran on
        title = f"{records[0].env_id.split('/')[-1]}, item matrix {matrices.pop()}"
    if title:
        ax.set_title(textwrap.fill(title, 70), fontsize=10)
    ax.grid(alpha=0.3)
    if below:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.14))
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out, [str(r.path) for r in records], "slaterec plot curves")
    return data


def png_runs(path: Path) -> list[str]:
    """The run directories recorded in a PNG written by ``slaterec plot``."""
    from PIL import Image

    with Image.open(path) as im:
        return json.loads(im.info["Description"])["runs"]




def _save(fig: Any, out: Path, runs: list[str], software: str) -> None:
    import matplotlib.pyplot as plt

    from gym_slaterec.provenance import atomic_path

    with atomic_path(out, overwrite=True) as tmp:  # the caller decides whether out may be replaced
        fig.savefig(tmp, format="png", metadata={"Description": json.dumps({"runs": runs}), "Software": software})
    plt.close(fig)


def plot_slate_statistics(stats: list[dict], out: Path, labels: Optional[list[str]] = None) -> dict:
    """Fig. 2: the relevance scores of the recommended items and the number of items of
    bored topics per slate, one histogram per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or [f"{s['method']} (gamma={s['gamma']})" if s.get("gamma") is not None else s["method"]
                        for s in stats]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.6, 3.8), dpi=100)
    bins = np.linspace(min(float(s["scores"].min()) for s in stats), max(float(s["scores"].max()) for s in stats), 41)
    data = {}
    for s, label in zip(stats, labels):
        h, _ = np.histogram(s["scores"], bins=bins, density=True)
        a.stairs(h, bins, label=f"{label}: return {s['return_mean']:.1f}", fill=False, linewidth=1.5)
        k = int(max(int(t["bored_items"].max()) for t in stats))
        counts = np.bincount(s["bored_items"], minlength=k + 1) / len(s["bored_items"])
        b.plot(np.arange(len(counts)), counts, marker="o", label=label)
        data[label] = {"scores_hist": h.tolist(), "bins": bins.tolist(), "bored_items_share": counts.tolist(),
                       "mean_score": float(s["scores"].mean()), "mean_bored_items": float(s["bored_items"].mean())}
    a.set_xlabel("relevance score of a recommended item")
    a.set_ylabel("density")
    b.set_xlabel("items of a bored topic in the slate")
    b.set_ylabel("share of slates")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"recommended slates, {stats[0]['users']} test users each", fontsize=10)
    fig.tight_layout()
    _save(fig, out, [s["run"] for s in stats], "slaterec plot slates")
    return data


def plot_heatmap(data: dict, out: Path, title: str = "") -> None:
    """Fig. 3: mean test return over seeds on a two-key grid, each cell annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(data["x"]) + 2.5), max(4.0, 0.8 * len(data["y"]) + 2.0)), dpi=100)
    im = ax.imshow(data["mean"], origin="lower", cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(data["x"])), [str(v) for v in data["x"]])
    ax.set_yticks(range(len(data["y"])), [str(v) for v in data["y"]])
    ax.set_xlabel(data["x_key"])
    ax.set_ylabel(data["y_key"])
    for i in range(len(data["y"])):
        for j in range(len(data["x"])):
            if data["n"][i, j]:
                bright = im.norm(data["mean"][i, j]) > 0.6  # dark text on the light end of viridis
                ax.text(j, i, f"{data['mean'][i, j]:.1f}\nn={data['n'][i, j]}", ha="center", va="center",
                        color="black" if bright else "white", fontsize=9)
    fig.colorbar(im, ax=ax, label="test return (mean over seeds)")
    import textwrap

    ax.set_title(textwrap.fill(title or f"{data['method']} on {data['env_id'].split('/')[-1]}", 60), fontsize=10)
    fig.tight_layout()
    _save(fig, out, data["runs"], "slaterec plot heatmap")


def plot_datasets(table: dict, out: Path, title: str = "", raw: bool = False) -> dict:
    """The offline benchmark as grouped bars: per environment (a panel), per dataset (a group),
    one bar per algorithm, its normalised score (raw return where an environment has no
    references, or with ``raw``) with the 95 % interval over seeds; a black tick marks the
    dataset's own mean return. ``table`` is :func:`.tables.build_by_dataset`'s. Returns the
    plotted data {env: {"datasets": [...], "methods": {method: {"mean", "half_width", "n"}}, "data": [...]}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted(table)
    fig, axes = plt.subplots(len(envs), 1, figsize=(7.2, 3.2 * len(envs) + 0.6), dpi=100, squeeze=False)
    data: dict = {}
    runs: list[str] = []
    for ax, env in zip(axes[:, 0], envs):
        columns, cells, order = table[env]["columns"], table[env]["cells"], table[env]["order"]
        methods = sorted({m for c in cells.values() for m in c})
        scored = not raw and all(c.get("normalised") is not None for col in cells.values() for c in col.values())
        width = 0.8 / max(len(methods), 1)
        env_data: dict = {"datasets": [columns[d]["name"] for d in order], "scale": "normalised" if scored else "raw",
                          "methods": {}, "data": []}
        for i, m in enumerate(methods):
            means, halves, ns = [], [], []
            for d in order:
                cell = cells[d].get(m)
                s = None if cell is None else (cell["normalised"] if scored else cell["summary"])
                means.append(np.nan if s is None else s.mean)
                halves.append(0.0 if s is None or np.isnan(s.half_width) else s.half_width)
                ns.append(0 if s is None else s.n)
                runs += [] if cell is None else [str(r.path) for r in cell["runs"]]
            xs = np.arange(len(order)) + (i - (len(methods) - 1) / 2) * width
            ax.bar(xs, means, width, yerr=halves, capsize=2, color=f"C{i % 10}", label=m)
            env_data["methods"][m] = {"mean": means, "half_width": halves, "n": ns}
        for j, d in enumerate(order):
            level = columns[d]["score"] if scored else columns[d]["return"]
            env_data["data"].append(level)
            if level is not None:
                ax.hlines(level, j - 0.45, j + 0.45, colors="black", linewidth=1.5,
                          label="the dataset's mean return" if j == 0 else None)
        tops = [m + h for v in env_data["methods"].values() for m, h in zip(v["mean"], v["half_width"])
                if not np.isnan(m)]
        tops += [v for v in env_data["data"] if v is not None]
        ax.set_ylim(top=max(tops) + 0.3 * (max(tops) - min(0.0, min(tops))))  # room for the legend
        ax.set_xticks(np.arange(len(order)), env_data["datasets"], fontsize=8)
        ax.set_ylabel("normalised score" if scored else "test return")
        n_seeds = sorted({n for v in env_data["methods"].values() for n in v["n"] if n})
        ax.set_title(f"{env} ({'-'.join(map(str, (n_seeds[0], n_seeds[-1]))) if len(n_seeds) > 1 else n_seeds[0]} "
                     "seed(s) per bar, 95 % interval)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=3, loc="upper left")
        data[env] = env_data
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, out, runs, "slaterec plot datasets")
    return data
