"""``slaterec table`` and ``slaterec plot``: numbers checked against a hand computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from gym_slaterec.cli import main
from slaterec_lab.plots import png_runs
from slaterec_lab.results import find_runs, read_run
from slaterec_lab.tables import build, render


def fake_run(root: Path, name: str, method: str, seed: int, test: float, curve: list[tuple[int, float]],
             env: str = "SlateRec/FocusedTopDown-v0") -> Path:
    """A run directory as sb3_slate writes it, reduced to what the lab reads."""
    run = root / name
    run.mkdir(parents=True)
    (run / "provenance.json").write_text(json.dumps({"kind": "sb3_run", "package": "slaterec", "method": method,
                                                     "env_id": env, "seed": seed, "hyperparameters": {}}))
    (run / "results.json").write_text(json.dumps({
        "test": {"mean": test}, "validation": [{"episodes": e, "mean": v} for e, v in curve]}))
    return run


@pytest.fixture
def grid(tmp_path) -> Path:
    a = [300.0, 310.0, 296.0]
    b = [250.0, 262.0, 241.0, 255.0]
    for i, v in enumerate(a):
        fake_run(tmp_path, f"gems_{i}", "sac-gems", i, v, [(0, 50.0 + i), (1000, 200.0 + 2 * i)])
    for i, v in enumerate(b):
        fake_run(tmp_path, f"mf_{i}", "sac-topk-mf", i, v, [(0, 40.0), (1000, 150.0 + i)])
    fake_run(tmp_path, "oracle", "oracle", 0, 107.0, [(0, 107.0)])
    return tmp_path


def test_table_matches_a_hand_computation(grid):
    records = [read_run(r) for r in find_runs([grid])]
    table = build(records)["FocusedTopDown"]
    a = np.array([300.0, 310.0, 296.0])
    b = np.array([250.0, 262.0, 241.0, 255.0])
    half_a = stats.t.ppf(0.975, 2) * a.std(ddof=1) / np.sqrt(3)
    s = table["sac-gems"]["summary"]
    assert s.n == 3 and s.mean == pytest.approx(a.mean()) and s.half_width == pytest.approx(half_a)
    assert table["sac-gems"]["best"] and not table["sac-topk-mf"]["best"]
    assert table["sac-topk-mf"]["p"] == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    assert np.isnan(table["oracle"]["summary"].half_width) and table["oracle"]["p"] is None
    md = render(build(records), "markdown", paper=True)
    assert f"**{a.mean():.1f} ± {half_a:.1f} (n=3)" in md and "[paper 305.3, " in md
    csv_text = render(build(records), "csv")
    assert csv_text.startswith("method,environment,") and "sac-topk-mf,FocusedTopDown,252.0" in csv_text
    assert "\\textbf{" in render(build(records), "latex")


def test_table_and_plot_commands(grid, tmp_path, capsys):
    assert main(["table", str(grid)]) == 0
    assert "| sac-gems |" in capsys.readouterr().out
    out = tmp_path / "t.md"
    assert main(["table", str(grid), "--out", str(out)]) == 0
    assert main(["table", str(grid), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["table", str(grid), "--out", str(out), "--overwrite", "--format", "csv"]) == 0
    fig = tmp_path / "curves.png"
    assert main(["plot", "curves", str(grid), "--out", str(fig)]) == 0
    assert fig.stat().st_size > 5000 and fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(png_runs(fig)) == sorted(str(r) for r in find_runs([grid]))
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"not ours")
    assert main(["plot", "curves", str(grid), "--out", str(mine), "--overwrite"]) == 2
    assert mine.read_bytes() == b"not ours"


def test_curve_data_are_the_runs_means(grid, tmp_path):
    from slaterec_lab.plots import plot_curves

    data = plot_curves([read_run(r) for r in find_runs([grid])], tmp_path / "c.png")
    gems = data["sac-gems (FocusedTopDown-v0)"]
    assert gems["x"] == [0.0, 1000.0] and gems["mean"] == pytest.approx([51.0, 202.0])


def test_drift_measures_on_known_tables(tmp_path, capsys):
    from slaterec_lab.drift import compare

    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))  # a random rotation
    same = compare(a, a)
    assert same["mean_cosine"] == pytest.approx(1.0) and same["procrustes_disparity"] == pytest.approx(0.0, abs=1e-12)
    rotated = compare(a, a @ q)
    # a rotation hides the tables' identity from the raw cosine, not from the aligned one or the neighbours
    assert rotated["mean_cosine"] < 0.9 and rotated["mean_cosine_aligned"] == pytest.approx(1.0)
    assert rotated["neighbour_overlap_at_10"] == pytest.approx(1.0)
    unrelated = compare(a, rng.normal(size=(200, 6)))
    assert unrelated["mean_cosine_aligned"] < 0.5 and unrelated["neighbour_overlap_at_10"] < 0.2
    with pytest.raises(ValueError, match="different catalogues"):
        compare(a, a[:10])
    np.save(tmp_path / "a.npy", a.astype(np.float32))
    np.save(tmp_path / "b.npy", (a @ q).astype(np.float32))
    assert main(["drift", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mean_cosine_aligned"] == pytest.approx(1.0, abs=1e-5)
    assert main(["drift", "focused", "nowhere"]) == 2
    assert "nowhere" in capsys.readouterr().err
