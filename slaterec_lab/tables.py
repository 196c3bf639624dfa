"""Table 2 from run directories: mean test return over seeds, 95 % Student-t interval,
number of seeds, the best method per environment in bold, Welch's t-test against it."""

from __future__ import annotations

import csv
import io
import math
import re
from typing import Any, Optional

from .results import RunRecord
from .stats import summarise, welch_p

def _published() -> dict[tuple[str, str], dict[str, float]]:
    """Published test returns per (method, settings) (the method table's, Deffayet et al. 2023,
    Table 2; settings "" for the method as it is, e.g. "gamma=0.0" for an ablation)."""
    from sb3_slate.methods import METHOD_TABLE

    out = {}
    for name, m in METHOD_TABLE.items():
        if m.published:
            out[(name, "")] = dict(m.published)
        for settings, values in m.published_settings.items():
            out[(name, settings)] = dict(values)
    return out


PAPER = _published()
_LABEL = re.compile(r"(?P<method>[^ ]+)(?: \((?P<notes>[^)]*)\))?(?: \[(?P<settings>.*)\])?")


#: settings that say how long a run trained, not what it computes: two rows that differ only in
#: them are two budgets of one method, each compared with the paper's number (the budget table
#: shows them)
BUDGET_SETTINGS = ("max_wall_s", "episodes")
#: what a run was given to work with (its GeMS, MF table, item matrix): rows that differ only in
#: them are one method on other inputs, each compared with the paper's number too
INPUT_SETTINGS = ("gems", "mf", "item_embeddings", "items")


def paper_value(label: str, env: str) -> Optional[float]:
    """The published return of a table row: its method and differing settings decide which
    (its regime, variant, budget and inputs do not: they are all compared with the paper's number)."""
    m = _LABEL.fullmatch(label)
    if m is None:
        return None
    settings = [s for s in re.split(r", (?=[\w.]+=)", m["settings"] or "") if s]
    kept = ", ".join(s for s in settings if s.split("=", 1)[0] not in BUDGET_SETTINGS + INPUT_SETTINGS)
    return PAPER.get((m["method"], kept), {}).get(env)


def short_env(env_id: str) -> str:
    return env_id.split("/")[-1].split("-v")[0]


def build(records: list[RunRecord]) -> dict:
    """{env: {method: {"values": [...], "runs": [RunRecord...], "summary": SeedSummary, "p": p-value vs
    best, "best": bool, "normalised": SeedSummary of the seeds' normalised scores, or None}}}."""
    table: dict = {}
    for r in records:
        if r.test_mean is None:
            continue  # unfinished run: no test return yet
        cell = table.setdefault(short_env(r.env_id), {}).setdefault(r.method, {"values": [], "runs": []})
        cell["values"].append(r.test_mean)
        cell["runs"].append(r)
    if not table:
        raise ValueError("none of the runs has a test return yet (results.json)")
    for env, methods in table.items():
        _summarise_cells(methods, env)
    return table


def _summarise_cells(cells: dict, env: str) -> None:
    """Summaries, normalised scores, the best cell and Welch's p-values of cells compared together."""
    from gym_slaterec.scores import normalised

    for cell in cells.values():
        cell["summary"] = summarise(cell["values"])
        scores = [normalised(v, env, r.config.get("items")) for v, r in zip(cell["values"], cell["runs"])]
        cell["normalised"] = None if None in scores else summarise(scores)
    best = max(cells, key=lambda m: cells[m]["summary"].mean)
    for key, cell in cells.items():
        cell["best"] = key == best
        cell["p"] = None if key == best else welch_p(cell["values"], cells[best]["values"])


#: D4RL's datasets in the order its tables show them; other datasets follow by name
QUALITY_ORDER = ("random", "medium", "medium-replay", "medium-expert", "expert")


def build_by_dataset(records: list[RunRecord]) -> dict:
    """Offline runs as D4RL tables: {env: {"columns": {dataset: {"quality", "fingerprint", "return",
    "score" (its normalised score, or None), "items", "name" (its header)}}, "order": [dataset...]
    (D4RL's order), "cells": {dataset: {row: cell}}}}, a dataset being its quality and fingerprint (``expert
    e55dfdc5f855``) so two datasets of one quality stay two columns; a row is the method with its
    other differing settings. Cells of a column are compared together (best, Welch's p)."""
    online = [str(r.path) for r in records if not r.config.get("dataset")]
    if online:
        raise ValueError("a table by dataset needs offline runs (their dataset makes the column); these runs have "
                         f"no dataset: {', '.join(online[:5])}{' ...' if len(online) > 5 else ''}")
    table: dict = {}
    for r in records:
        if r.test_mean is None:
            continue
        env = table.setdefault(short_env(r.env_id), {"columns": {}, "cells": {}})
        dataset = str(r.config["dataset"])
        quality, _, fingerprint = dataset.rpartition(" ")
        column = env["columns"].setdefault(dataset, {"quality": quality or None, "fingerprint": fingerprint,
                                                    "return": r.dataset_return, "items": r.config.get("items")})
        if column["return"] is None:
            column["return"] = r.dataset_return
        others = [v for k, v in r.settings.items() if k != "dataset"]
        row = r.base_method + (f" [{', '.join(others)}]" if others else "")
        cell = env["cells"].setdefault(dataset, {}).setdefault(row, {"values": [], "runs": []})
        cell["values"].append(r.test_mean)
        cell["runs"].append(r)
    if not table:
        raise ValueError("none of the runs has a test return yet (results.json)")
    from gym_slaterec.scores import normalised

    for name, env in table.items():
        for cells in env["cells"].values():
            _summarise_cells(cells, name)
        for col in env["columns"].values():
            col["score"] = None if col["return"] is None else normalised(col["return"], name, col["items"])
        env["order"] = _dataset_order(env["columns"])
        for dataset, header in _column_names(env["columns"]).items():
            env["columns"][dataset]["name"] = header
    return table


def _dataset_order(columns: dict) -> list[str]:
    def key(dataset: str) -> tuple:
        q = columns[dataset]["quality"]
        return (QUALITY_ORDER.index(q) if q in QUALITY_ORDER else len(QUALITY_ORDER), q or "", dataset)

    return sorted(columns, key=key)


def _column_names(columns: dict) -> dict[str, str]:
    """A column's header: its quality, with the fingerprint where two columns share one or there is none."""
    qualities = [c["quality"] for c in columns.values()]
    return {d: c["quality"] if c["quality"] and qualities.count(c["quality"]) == 1 else d.strip()
            for d, c in columns.items()}


def render_by_dataset(table: dict, fmt: str = "markdown", normalise: bool = False) -> str:
    """One table per environment: methods as rows, datasets as columns, the dataset's own mean
    episode return as the first row; CSV: one line per (environment, dataset, method)."""
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["environment", "dataset", "quality", "dataset_fingerprint", "dataset_return",
                    "dataset_normalised", "method", "mean", "ci95_low", "ci95_high", "seeds", "best",
                    "welch_p_vs_best", "normalised_mean", "normalised_ci95_low", "normalised_ci95_high", "budget",
                    "wall_time"])
        for env in sorted(table):
            columns = table[env]["columns"]
            for dataset in table[env]["order"]:
                col = columns[dataset]
                for row, cell in sorted(table[env]["cells"][dataset].items()):
                    s, score = cell["summary"], cell["normalised"]
                    where = provenance_of(cell, thousands=False)
                    w.writerow([env, dataset, col["quality"] or "", col["fingerprint"], _blank(col["return"]),
                                _blank(col["score"]), row, s.mean, *s.ci95, s.n, cell["best"], _blank(cell["p"]),
                                *(("", "", "") if score is None else (score.mean, *score.ci95)),
                                where["budget"], where["wall_min"]])
        return buf.getvalue()
    out = []
    for env in sorted(table):
        columns, cells, order = table[env]["columns"], table[env]["cells"], table[env]["order"]
        names = {d: columns[d]["name"] for d in order}
        rows = sorted({row for c in cells.values() for row in c})
        data = []
        for d in order:
            ret, score = columns[d]["return"], columns[d]["score"]
            data.append("?" if ret is None else f"{ret:.1f}" if not (normalise and score is not None)
                        else f"{score:.1f} (raw {ret:.1f})")
        body = [("the dataset (mean episode return)", data)]
        body += [(row, ["" if row not in cells[d] else _cell(cells[d][row], None, fmt, normalise) for d in order])
                 for row in rows]
        if fmt == "latex":
            lines = [f"% {env}", "\\begin{tabular}{l" + "r" * len(order) + "}",
                     " & ".join(["method", *(names[d] for d in order)]) + " \\\\", "\\hline"]
            lines += [" & ".join([m, *c]) + " \\\\" for m, c in body]
            out.append("\n".join(lines + ["\\end{tabular}"]))
            continue
        lines = [f"### {env}", "", "| method | " + " | ".join(names[d] for d in order) + " |",
                 "|---|" + "---:|" * len(order)]
        lines += [f"| {m} | " + " | ".join(c) + " |" for m, c in body]
        lines += ["", "Datasets: " + "; ".join(f"{names[d]} = {d.strip()}" for d in order) + ".", ""]
        budgets = sorted({provenance_of(c)["budget"] for col in cells.values() for c in col.values()})
        lines.append("Budget per seed: " + "; ".join(budgets) + ".")
        out.append("\n".join(lines))
    note = ("Mean test return over seeds ± half-width of the 95 % Student-t interval; best per dataset in bold; "
            "p: Welch's t-test against the best of its dataset."
            + (" Normalised: 100 x (return - random) / (expert - random) per seed, then its mean ± interval, the raw "
               "mean beside it (gym_slaterec/data/reference_returns.json)." if normalise else ""))
    if fmt == "latex":
        return BY_DATASET_HEADERS[1] + "\n" + "\n\n".join(out) + "\n"
    return BY_DATASET_HEADERS[0] + "\n\n" + "\n\n".join(out) + "\n\n" + note + "\n"


#: the first line of a table by dataset (markdown, LaTeX): how ``--out`` recognises one it wrote
BY_DATASET_HEADERS = ("<!-- slaterec table --columns dataset -->", "% slaterec table --columns dataset")


def _blank(value: Optional[float]) -> Any:
    return "" if value is None else value


def _pm(half_width: float, fmt: str) -> str:
    if math.isnan(half_width):
        return ""
    return f" ± {half_width:.1f}" if fmt != "latex" else f" $\\pm$ {half_width:.1f}"


def _cell(cell: dict, paper: Optional[float], fmt: str, normalise: bool = False) -> str:
    s, score = cell["summary"], cell.get("normalised")
    if normalise and score is not None:  # the normalised score first, the raw return beside it
        text = f"{score.mean:.1f}{_pm(score.half_width, fmt)} (raw {s.mean:.1f}, n={s.n})"
    else:
        text = f"{s.mean:.1f}{_pm(s.half_width, fmt)} (n={s.n})"
    if cell["best"]:
        text = f"**{text}**" if fmt == "markdown" else f"\\textbf{{{text}}}"
    elif cell["p"] is not None:
        text += f", p={cell['p']:.3g}"
    if paper is not None:
        text += f" [paper {paper:.1f}, {s.mean - paper:+.1f}{_short_of_paper(cell)}]"
    return text


def _paper_episodes() -> int:
    """The paper's training budget per seed, as the ``paper`` preset sets it: a row trained on
    less is not the published experiment, and its comparison with the paper says so."""
    from sb3_slate.methods import CONFIG_DIR, _read_yaml

    return int(_read_yaml(CONFIG_DIR / "presets" / "paper.yaml")["episodes"])


def _short_of_paper(cell: dict) -> str:
    episodes = [r.budget.get("episodes") for r in cell["runs"]]
    paper = _paper_episodes()
    if any(e is None for e in episodes) or max(episodes) == 0 or min(episodes) >= paper:
        return ""  # a reference policy (no training), an unknown budget, or the paper's
    return f"; {_span(episodes)} of {paper:,} episodes"


def _span(values: list[float], fmt: str = "{:,.0f}") -> str:
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def provenance_of(cell: dict, thousands: bool = True) -> dict[str, str]:
    """What a row ran on: item matrices, budget (episodes / turns or gradient steps) and wall
    time, each as a range over its seeds."""
    runs: list[RunRecord] = cell["runs"]
    keys = [k for k in ("episodes", "turns", "gradient steps") if any(k in r.budget for r in runs)]
    count = "{:,.0f}" if thousands else "{:.0f}"
    budget = " / ".join(f"{_span([r.budget[k] for r in runs if k in r.budget], count)} {k}" for k in keys) or "?"
    walls = [r.wall_s for r in runs if r.wall_s is not None]
    if not walls:
        wall = "?"
    elif max(walls) < 60:
        wall = _span(walls, "{:.0f}") + " s"
    else:
        wall = _span([w / 60 for w in walls], "{:.1f}") + " min"
    machines = sorted({r.machine for r in runs if r.machine})
    if machines:  # wall times are only comparable on one processor
        wall += f" ({'; '.join(machines)}{'' if all(r.machine for r in runs) else '; unrecorded'})"
    variant = ", ".join(sorted({str(r.config.get("variant") or "corrected") for r in runs}))
    return {"variant": variant, "item_matrix": ", ".join(sorted({r.item_matrix for r in runs})), "budget": budget,
            "wall_min": wall}


def render(table: dict, fmt: str = "markdown", paper: bool = False, normalise: bool = False) -> str:
    envs = sorted(table)
    methods = sorted({m for row in table.values() for m in row})
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["method", "environment", "mean", "ci95_low", "ci95_high", "seeds", "best", "welch_p_vs_best", "paper",
                    "variant", "item_matrix", "budget", "wall_time", "normalised_mean", "normalised_ci95_low",
                    "normalised_ci95_high"])
        for m in methods:
            for e in envs:
                cell = table[e].get(m)
                if cell is None:
                    continue
                lo, hi = cell["summary"].ci95
                where = provenance_of(cell, thousands=False)
                score = cell["normalised"]
                w.writerow([m, e, cell["summary"].mean, lo, hi, cell["summary"].n, cell["best"], cell["p"],
                            paper_value(m, e) if paper else "", where["variant"], where["item_matrix"],
                            where["budget"], where["wall_min"], *(("", "", "") if score is None else
                                                                  (score.mean, *score.ci95))])
        return buf.getvalue()
    rows = []
    for m in methods:
        cells = []
        for e in envs:
            cell = table[e].get(m)
            cells.append("" if cell is None else _cell(cell, paper_value(m, e) if paper else None, fmt, normalise))
        rows.append((m, cells))
    if fmt == "latex":
        lines = ["\\begin{tabular}{l" + "r" * len(envs) + "}", " & ".join(["method", *envs]) + " \\\\", "\\hline"]
        lines += [" & ".join([m, *cells]) + " \\\\" for m, cells in rows]
        return "\n".join(lines + ["\\end{tabular}"]) + "\n"
    lines = ["| method | " + " | ".join(envs) + " |", "|---|" + "---:|" * len(envs)]
    lines += [f"| {m} | " + " | ".join(cells) + " |" for m, cells in rows]
    lines += ["", "Mean test return over seeds ± half-width of the 95 % Student-t interval; "
              "best per environment in bold; p: Welch's t-test against the best."
              + (" Normalised: 100 x (return - random) / (expert - random) per seed, then its mean ± interval, the raw "
                 "mean beside it (gym_slaterec/data/reference_returns.json; a cell without an expert reference or on "
                 "another item matrix shows the raw return)." if normalise else ""), "",
              "| method | environment | variant | item matrix | budget per seed | wall time per seed |",
              "|---|---|---|---|---|---|"]
    for m in methods:
        for e in envs:
            if m in table[e]:
                where = provenance_of(table[e][m])
                lines.append(f"| {m} | {e} | {where['variant']} | {where['item_matrix']} | {where['budget']} | "
                             f"{where['wall_min']} |")
    return "\n".join(lines) + "\n"
