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
             env: str = "SlateRec/FocusedTopDown-v0", items: str = "focused", wall: float | None = None,
             episodes: int = 0) -> Path:
    """A run directory as sb3_slate writes it, reduced to what the lab reads."""
    run = root / name
    run.mkdir(parents=True)
    (run / "provenance.json").write_text(json.dumps({
        "kind": "sb3_run", "package": "slaterec", "method": method, "env_id": env, "seed": seed, "hyperparameters": {},
        "env_params": {"item_embeddings": items}, "item_embeddings_fingerprint": f"{len(items):02d}" + "ab" * 31}))
    (run / "results.json").write_text(json.dumps({
        "test": {"mean": test}, "validation": [{"episodes": e, "mean": v} for e, v in curve],
        **({} if wall is None else {"wall_time_s": wall, "budget": {"episodes": episodes, "turns": 100 * episodes}})}))
    return run


@pytest.fixture
def grid(tmp_path) -> Path:
    a = [300.0, 310.0, 296.0]
    b = [250.0, 262.0, 241.0, 255.0]
    for i, v in enumerate(a):
        fake_run(tmp_path, f"gems_{i}", "sac-gems", i, v, [(0, 50.0 + i), (1000, 200.0 + 2 * i)],
                 items="/data/reference_items.npy", wall=600.0 + 60 * i, episodes=1000 * (i + 1))
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
    # runs shorter than the paper's 100,000 episodes say so beside the comparison; the oracle trains nothing
    assert f"[paper 305.3, {a.mean() - 305.3:+.1f}; 1,000-3,000 of 100,000 episodes]" in md
    assert "[paper 107.7, -0.7]" in md
    csv_text = render(build(records), "csv")
    assert csv_text.startswith("method,environment,") and "sac-topk-mf,FocusedTopDown,252.0" in csv_text
    assert "\\textbf{" in render(build(records), "latex")
    # every row names its item matrix, budget and wall time (ranges over its seeds)
    assert "| sac-gems | FocusedTopDown | corrected | reference_items.npy 25ababababab | 1,000-3,000 episodes / " \
           "100,000-300,000 turns | 10.0-12.0 min |" in md
    assert "| oracle | FocusedTopDown | corrected | focused 07ababababab | ? | ? |" in md  # a run that does not record them
    from slaterec_lab.tables import provenance_of
    short = [read_run(r) for r in find_runs([grid])][:2]
    for r, wall in zip(short, (12.4, 12.2)):
        r.wall_s = wall
    assert provenance_of({"runs": short})["wall_min"] == "12 s"  # short runs in seconds, equal ends once
    # the processor, where recorded, beside the wall time (a run without the record is said to lack it)
    from gym_slaterec.provenance import machine_label, machine_record
    short[0].machine = machine_label({"machine": {"cpu": "AMD EPYC", "family_model": "23/1", "mhz": 1996, "cores": 2}})
    assert provenance_of({"runs": short})["wall_min"] == "12 s (AMD EPYC 23/1 2.0 GHz, 2 cores; unrecorded)"
    here = machine_record()
    assert here["cores"] >= 1 and here["cpu"] and machine_label({"machine": here}).startswith(here["cpu"])
    assert machine_label({}) == machine_label(None) == ""
    from slaterec_lab.results import run_machines  # a run resumed elsewhere names both machines, each once
    sessions = [{"episodes": 0, "machine": "A"}, {"episodes": 4, "machine": "B"}, {"episodes": 8, "machine": "A"}]
    assert run_machines({}, {"sessions": sessions}) == "A + B"
    assert run_machines({"runtime": {"machine": {"cpu": "X", "cores": 2}}}, {}) == "X, 2 cores"
    assert "corrected,reference_items.npy 25ababababab,1000-3000 episodes / 100000-300000 turns,10.0-12.0 min" in csv_text
    from slaterec_lab.tables import paper_value  # the regime keeps the published value; other settings do not
    assert paper_value("sac-gems (episode replay)", "FocusedTopDown") == paper_value("sac-gems", "FocusedTopDown") == 305.3
    assert paper_value("sac-gems [gamma=0.0]", "FocusedTopDown") == 194.3  # the paper's discount-0 ablation
    assert paper_value("sac-gems (episode replay, reference)", "FocusedTopDown") == 305.3  # both variants face it
    assert paper_value("sac-gems [gamma=0.5]", "FocusedTopDown") is None
    assert paper_value("sac-gems [gamma=0.0, tau=0.1]", "FocusedTopDown") is None
    # a budget is not a setting of the method: each budget faces the paper's number
    assert paper_value("sac-topk-ideal (episode replay, reference) [max_wall_s=3600]", "FocusedTopDown") == 429.0
    assert paper_value("sac-gems [gamma=0.0, max_wall_s=2100]", "FocusedTopDown") == 194.3
    assert paper_value("sac-gems [episodes=500, tau=0.1]", "FocusedTopDown") is None


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
    seeds = plot_curves([read_run(r) for r in find_runs([grid])], tmp_path / "s.png", per_seed=True)
    assert [seeds[f"sac-gems seed {i} (FocusedTopDown-v0)"]["mean"] for i in range(3)] == [[50.0, 200.0], [51.0, 202.0],
                                                                                         [52.0, 204.0]]
    assert seeds["sac-gems seed 1 (FocusedTopDown-v0)"]["low"] == [51.0, 202.0]  # one run: no band


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


def test_drift_says_whether_a_table_carries_the_topic_structure():
    from gym_slaterec.core.embeddings import load_item_embeddings
    from slaterec_lab.drift import compare, main_topics

    ideal = load_item_embeddings("focused")[0].astype(np.float64)
    topics = main_topics(ideal)
    assert topics is not None and len(np.unique(topics)) == 10
    rng = np.random.default_rng(0)
    noisy = ideal + rng.normal(scale=0.02, size=ideal.shape)  # the same geometry, slightly blurred
    random = rng.normal(size=ideal.shape)  # no structure: each item's neighbours are anyone
    near, far = compare(noisy, ideal), compare(random, ideal)
    assert near["topic_agreement_at_10_b"] > 0.4 and near["topic_agreement_at_10_a"] > 0.4
    assert abs(far["topic_agreement_at_10_a"] - 0.1) < 0.03 and far["topic_agreement_chance"] == 0.1
    assert "topic_agreement_at_10_a" not in compare(ideal, random)  # B not a topic matrix: no topics to test


def test_runs_of_different_settings_are_not_averaged_together(tmp_path, capsys):
    for seed, gamma, value in ((0, 0.8, 300.0), (1, 0.8, 310.0), (0, 0.0, 150.0), (1, 0.0, 160.0)):
        run = fake_run(tmp_path, f"g{gamma}_s{seed}", "sac-gems", seed, value, [(0, 50.0)])
        (run / "config.json").write_text(json.dumps({"seed": seed, "tag": f"t{seed}", "episodes": 100,
                                                     "agent": {"gamma": gamma, "tau": 0.002}}))
    from slaterec_lab.results import label_variants

    records = label_variants([read_run(r) for r in find_runs([tmp_path])])
    # the runs at the paper's gamma keep the method's plain name (and its published value)
    assert sorted({r.method for r in records}) == ["sac-gems", "sac-gems [gamma=0.0]"]
    table = build(records)["FocusedTopDown"]
    assert table["sac-gems"]["summary"].mean == pytest.approx(305.0)
    assert table["sac-gems [gamma=0.0]"]["summary"].n == 2
    # seeds and tags alone do not split a setting
    same = label_variants([read_run(r) for r in find_runs([tmp_path / "g0.8_s0", tmp_path / "g0.8_s1"])])
    assert {r.method for r in same} == {"sac-gems"}
    assert main(["table", str(tmp_path)]) == 0
    assert "| sac-gems [gamma=0.0] |" in capsys.readouterr().out


def test_a_run_away_from_its_method_defaults_says_so_even_alone(tmp_path):
    """A lone gamma-0 run (or two seeds of it) is not shown as the plain method with the paper's
    value beside it; a setting at the method's default stays out of the label, and so do inputs."""
    from slaterec_lab.results import label_variants, method_defaults

    defaults = method_defaults("sac-gems", "SlateRec/FocusedTopDown-v0", "corrected", "episode")
    assert defaults["agent.gamma"] == "gamma=0.8" and not any(k in defaults for k in ("gems", "episodes"))
    for name, seed, gamma in (("g0_s0", 0, 0.0), ("g0_s1", 1, 0.0), ("paper_s0", 0, 0.8)):
        run = fake_run(tmp_path, name, "sac-gems", seed, 150.0, [(0, 50.0)])
        (run / "config.json").write_text(json.dumps({"method": "sac-gems", "seed": seed, "replay": "episode",
                                                     "gems": f"/somewhere/{name}.pt", "episodes": 100,
                                                     "agent": {"gamma": gamma, "tau": 0.002}}))
    alone = label_variants([read_run(tmp_path / "g0_s0")])
    assert [r.method for r in alone] == ["sac-gems [gamma=0.0]"]
    assert alone[0].settings == {"agent.gamma": "gamma=0.0"}
    two = label_variants([read_run(tmp_path / n) for n in ("g0_s0", "g0_s1")])
    assert {r.method for r in two} == {"sac-gems [gamma=0.0]"}
    assert [r.method for r in label_variants([read_run(tmp_path / "paper_s0")])] == ["sac-gems"]


def test_runs_with_their_own_gems_per_seed_are_seeds_of_one_setting(tmp_path):
    """A sweep's ``gems: {seed: run}`` gives run sS the GeMS ``NAME_sS.pt``: one setting;
    GeMS of other names (or another seed's) still split the rows."""
    from slaterec_lab.results import label_variants

    for name, seed, gems in (("a0", 0, "g/F_s0.pt"), ("a1", 1, "g/F_s1.pt"), ("b0", 0, "g/F_s1.pt"),
                             ("c0", 0, "g/other.pt")):
        run = fake_run(tmp_path, name, "sac-gems", seed, 300.0, [(0, 50.0)])
        (run / "config.json").write_text(json.dumps({"seed": seed, "gems": gems, "agent": {"gamma": 0.8}}))
    per_seed = label_variants([read_run(tmp_path / n) for n in ("a0", "a1")])
    assert {r.method for r in per_seed} == {"sac-gems"}
    for other in ("b0", "c0"):
        mixed = label_variants([read_run(tmp_path / n) for n in ("a0", "a1", other)])
        assert len({r.method for r in mixed}) == 2, other


def test_one_gems_file_under_two_paths_is_one_setting(tmp_path):
    """Runs given the same GeMS file by different paths (a shipped copy, another checkout) are seeds
    of one setting, told by the file's fingerprint; another file under one of those paths stays apart."""
    from slaterec_lab.results import label_variants

    for name, seed, gems, fp in (("a0", 0, "/old/sweep/gems/FocusedTopDown.pt", "8bdf"), ("a1", 1, "pkg/inputs/gems.pt", "8bdf"),
                                 ("b0", 0, "pkg/inputs/gems.pt", "77aa")):
        run = fake_run(tmp_path, name, "sac-gems", seed, 300.0, [(0, 50.0)])
        prov = json.loads((run / "provenance.json").read_text())
        (run / "provenance.json").write_text(json.dumps({**prov, "inputs": {"gems": fp * 16}}))
        (run / "config.json").write_text(json.dumps({"seed": seed, "gems": gems, "agent": {"gamma": 0.8}}))
    assert {r.method for r in label_variants([read_run(tmp_path / n) for n in ("a0", "a1")])} == {"sac-gems"}
    mixed = label_variants([read_run(tmp_path / n) for n in ("a0", "a1", "b0")])  # another file by a1's path
    assert len({r.method for r in mixed}) == 2


def test_runs_on_other_inputs_name_their_files_and_face_the_paper(tmp_path):
    """Rows told apart by their inputs name the files (no machine's path, the matrix fingerprint only
    where two matrices share a file name), and each still faces the paper's number."""
    from slaterec_lab.results import label_variants
    from slaterec_lab.tables import paper_value

    runs = (("a0", 0, "/machine/one/reference_items.npy", "/x/shipped_mf.pt"),
            ("a1", 1, "/machine/three/reference_items.npy", "/x/shipped_mf.pt"),
            ("b0", 0, None, "/y/recipe_mf.npz"))
    for name, seed, matrix, mf in runs:
        run = fake_run(tmp_path, name, "sac-topk-mf", seed, 200.0, [(0, 50.0)], items=matrix or "focused")
        env_kwargs = {} if matrix is None else {"item_embeddings": matrix}
        (run / "config.json").write_text(json.dumps({"seed": seed, "mf": mf, "env_kwargs": env_kwargs}))
    records = label_variants([read_run(tmp_path / n) for n in ("a0", "b0")])
    assert sorted(r.method for r in records) == ["sac-topk-mf [item_embeddings=default, mf=recipe_mf]",
                                                 "sac-topk-mf [item_embeddings=reference_items, mf=shipped_mf]"]
    assert all(paper_value(r.method, "FocusedTopDown") == 254.4 for r in records)
    # two matrices under one file name: their fingerprints tell them apart
    same_name = {r.seed: r.method for r in label_variants([read_run(tmp_path / n) for n in ("a0", "a1")])}
    assert same_name[0] != same_name[1] and all("items=" in m and "/" not in m for m in same_name.values())
    assert paper_value("sac-topk-mf [mf=recipe_mf, tau=0.1]", "FocusedTopDown") is None  # a setting still counts


def test_a_shipped_bundles_gems_is_named_by_its_bundle(tmp_path):
    """The shipped policies' GeMS files are all called gems.pt: a row on one names the bundle."""
    from slaterec_lab.results import label_variants

    shipped = "/elsewhere/site-packages/gym_slaterec/data/benchmark/FocusedTopDown/expert/inputs/gems.pt"
    for name, seed, gems in (("a0", 0, shipped), ("b0", 0, "/m/runs/ref/gems_reference_focused.pt"),
                             ("c0", 0, "/m/runs/sweep/gems.pt")):
        run = fake_run(tmp_path, name, "sac-gems", seed, 200.0, [(0, 50.0)])
        (run / "config.json").write_text(json.dumps({"seed": seed, "gems": gems}))
    labels = sorted(r.method for r in label_variants([read_run(tmp_path / n) for n in ("a0", "b0", "c0")]))
    assert labels == ["sac-gems [gems=gems]", "sac-gems [gems=gems_reference_focused]",
                      "sac-gems [gems=shipped:FocusedTopDown/expert]"]


def test_a_wall_time_limit_splits_rows_only_where_it_stopped_a_run(tmp_path):
    """Runs that trained their whole budget are seeds of one setting whatever limit they ran under;
    a run the limit stopped short stays apart (its row says which limit)."""
    from slaterec_lab.results import label_variants

    for name, seed, limit, ran in (("a0", 0, None, 1000), ("a1", 1, 12650, 1000), ("b0", 2, 8125, 652)):
        run = fake_run(tmp_path, name, "sac-gems", seed, 300.0, [(0, 50.0)], wall=600.0, episodes=ran)
        (run / "config.json").write_text(json.dumps({"seed": seed, "episodes": 1000, "max_wall_s": limit}))
    assert {r.method for r in label_variants([read_run(tmp_path / n) for n in ("a0", "a1")])} == {"sac-gems"}
    mixed = {r.seed: r.method for r in label_variants([read_run(tmp_path / n) for n in ("a0", "a1", "b0")])}
    assert mixed[0] == mixed[1] == "sac-gems" and mixed[2] == "sac-gems [max_wall_s=8125]"


def test_whole_budget_leaves_out_the_runs_a_limit_stopped_short(tmp_path, capsys):
    """``--whole-budget`` keeps the runs that trained their whole budget and the reference policies
    (nothing to train), names the rows among those alone, and says how many runs it left out."""
    from slaterec_lab.results import comparable_records

    for name, seed, limit, ran, test in (("a0", 0, None, 1000, 300.0), ("a1", 1, 12650, 1000, 310.0),
                                         ("b0", 2, 8125, 652, 100.0)):
        run = fake_run(tmp_path, name, "sac-gems", seed, test, [(0, 50.0)], wall=600.0, episodes=ran)
        (run / "config.json").write_text(json.dumps({"method": "sac-gems", "seed": seed, "episodes": 1000,
                                                     "max_wall_s": limit}))
    oracle = fake_run(tmp_path, "oracle", "oracle", 0, 107.0, [(0, 107.0)], wall=2.0, episodes=0)
    (oracle / "config.json").write_text(json.dumps({"method": "oracle", "seed": 0, "episodes": 1}))
    records, notes = comparable_records([tmp_path], need_test=True, whole_budget=True)
    assert sorted((r.method, r.seed) for r in records) == [("oracle", 0), ("sac-gems", 0), ("sac-gems", 1)]
    assert notes == ["left out 1 run that did not train the whole budget (--whole-budget)"]
    everything = sorted(r.method for r in comparable_records([tmp_path], need_test=True)[0])
    assert everything == ["oracle", "sac-gems", "sac-gems", "sac-gems [max_wall_s=8125]"]
    assert main(["table", str(tmp_path), "--whole-budget"]) == 0
    out = capsys.readouterr()
    assert "| sac-gems | **305.0 ± 63.5 (n=2)** |" in out.out and "max_wall_s" not in out.out and "left out 1 run" in out.err
    assert main(["table", str(tmp_path)]) == 0
    assert "| sac-gems [max_wall_s=8125] | 100.0 (n=1)" in capsys.readouterr().out


def _fake_sweep(root: Path) -> Path:
    trials = []
    for kl in (0.1, 1.0):
        for click in (0.2, 0.5):
            for seed in (0, 1):
                rid = f"runs/sac-gems_kl{kl}_c{click}_s{seed}"
                (root / rid).mkdir(parents=True)
                (root / rid / "results.json").write_text(json.dumps({"test": {"mean": 100 * kl + 10 * click + seed}}))
                trials.append({"id": rid, "kind": "run", "method": "sac-gems", "env_id": "SlateRec/FocusedTopDown-v0",
                               "point": {"gems.lambda_kl": kl, "gems.lambda_click": click, "seed": seed}})
    trials.append({"id": "runs/random_s0", "kind": "run", "method": "random", "env_id": "SlateRec/FocusedTopDown-v0",
                   "point": {"seed": 0}})
    (root / "sweep.json").write_text(json.dumps({"format": "slaterec.sweep/1", "trials": trials}))
    return root


def test_heatmap_cells_are_seed_means_of_the_sweep(tmp_path, capsys):
    from slaterec_lab.analysis import heatmap_data

    sweep = _fake_sweep(tmp_path / "sw")
    data = heatmap_data(sweep, "gems.lambda_kl", "gems.lambda_click")
    assert data["x"] == [0.1, 1.0] and data["y"] == [0.2, 0.5]
    # cell (y=click 0.5, x=kl 1.0): seeds 0 and 1 -> 100 + 5 + 0.5
    assert data["mean"][1, 1] == pytest.approx(105.5) and data["mean"][0, 0] == pytest.approx(12.5)
    assert (data["n"] == 2).all() and len(data["runs"]) == 8
    fig = tmp_path / "fig3.png"
    assert main(["plot", "heatmap", str(sweep), "--x", "gems.lambda_kl", "--y", "gems.lambda_click",
                 "--out", str(fig)]) == 0
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and sorted(png_runs(fig)) == sorted(data["runs"])
    assert main(["plot", "heatmap", str(sweep), "--x", "gems.lambda_kl", "--y", "agent.gamma",
                 "--out", str(tmp_path / "none.png")]) == 2
    assert "has both 'gems.lambda_kl' and 'agent.gamma'" in capsys.readouterr().err


def test_slate_figure_from_real_runs(tmp_path, capsys):
    from sb3_slate.methods import resolve_config
    from sb3_slate.runs import evaluate_run_dir, train_run
    from slaterec_lab.analysis import slate_statistics

    runs = []
    for method in ("random", "oracle"):
        cfg = resolve_config(method, "SlateRec/FocusedTopDown-v0", {"val_users": 5, "test_users": 5})
        train_run(cfg, tmp_path / method, progress=False)
        runs.append(tmp_path / method)
    s = slate_statistics(runs[1], users=6)
    assert s["scores"].shape == (6 * 100 * 10,) and s["bored_items"].shape == (6 * 100,)
    assert 0 <= s["bored_items"].min() and s["bored_items"].max() <= 10
    from sb3_slate.protocol import TEST_SEED

    independent = evaluate_run_dir(runs[1], "SlateRec/FocusedTopDown-v0", 6, TEST_SEED)
    assert s["return_mean"] == pytest.approx(independent["mean"])
    fig = tmp_path / "fig2.png"
    assert main(["plot", "slates", *map(str, runs), "--users", "6", "--out", str(fig)]) == 0
    out = capsys.readouterr().out
    assert "random: mean relevance" in out and "oracle: mean relevance" in out
    assert png_runs(fig) == [str(r) for r in runs]
    assert main(["plot", "slates", str(runs[0]), "--labels", "a", "b", "--out", str(tmp_path / "x.png")]) == 2


def test_normalised_scores_use_the_shipped_references_and_only_on_their_matrix(tmp_path, capsys):
    import csv
    import io

    from gym_slaterec.scores import normalised, reference_returns

    refs = reference_returns()
    assert set(refs) == {"FocusedTopDown", "FocusedMixed", "FocusedDivPen", "DiffuseTopDown", "DiffuseMixed",
                         "DiffuseDivPen"}
    focused = refs["FocusedTopDown"]
    fp = focused["item_matrix"]
    assert normalised(focused["random"], "FocusedTopDown", fp) == pytest.approx(0.0)
    assert normalised(focused["expert"], "FocusedTopDown", fp) == pytest.approx(100.0)
    assert normalised(200.0, "FocusedTopDown", "0123456789ab") is None  # another item matrix
    assert all(r["expert"] > r["random"] > 0 for r in refs.values())  # every environment's policies ship
    assert normalised(200.0, "NoSuchEnv", fp) is None  # no references for it
    # the shipped summaries of results/table2: their CSV carries the score of each seed's return
    assert main(["table", str(Path(__file__).resolve().parents[1] / "results" / "table2"), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    shipped = [row for row in rows if row["environment"] in refs
               and row["item_matrix"].split()[-1] == refs[row["environment"]]["item_matrix"][:12]]
    assert {row["environment"] for row in shipped} >= {"FocusedTopDown", "DiffuseTopDown"}
    for row in shipped:  # each row against its own environment's references
        ref = refs[row["environment"]]
        expect = 100 * (float(row["mean"]) - ref["random"]) / (ref["expert"] - ref["random"])
        assert float(row["normalised_mean"]) == pytest.approx(expect)
    for row in rows:  # runs on another matrix (the reference's) get no score, only their raw return
        if row not in shipped:
            assert row["normalised_mean"] == "" and float(row["mean"]) > 0
    assert main(["table", str(Path(__file__).resolve().parents[1] / "results" / "table2"), "--normalised"]) == 0
    text = capsys.readouterr().out
    assert "(raw " in text and "Normalised: 100 x (return - random)" in text


SHIPPED_OFFLINE = Path(__file__).resolve().parents[1] / "results" / "offline_benchmark"


def _offline_summaries() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(SHIPPED_OFFLINE.glob("*_FocusedTopDown_*.json"))]


def test_table_by_dataset_matches_the_shipped_offline_summaries():
    """``--columns dataset``: a cell is the seeds of one algorithm on one dataset (by fingerprint),
    recomputed here from the summaries themselves."""
    from slaterec_lab.results import comparable_records
    from slaterec_lab.tables import build_by_dataset

    summaries = [json.loads(p.read_text()) for p in sorted(SHIPPED_OFFLINE.glob("*.json"))]
    assert len(summaries) >= 25
    expected: dict[tuple[str, str, str], list[float]] = {}
    data_return = {}
    for s in summaries:
        res = s["results"]
        key = (res["env_id"].split("/")[-1].split("-v")[0], res["provenance"]["inputs"]["dataset"][:12], res["method"])
        expected.setdefault(key, []).append(res["test"]["mean"])
        data_return[key[1]] = res["dataset"]["mean_return"]
    records, _ = comparable_records([SHIPPED_OFFLINE], need_test=True)
    table = build_by_dataset(records)
    assert set(table) == {e for e, _, _ in expected}
    for name, env in table.items():
        assert {d.split()[-1] for d in env["columns"]} == {f for e, f, _ in expected if e == name}
        for dataset, cells in env["cells"].items():
            fp = dataset.split()[-1]
            assert env["columns"][dataset]["return"] == pytest.approx(data_return[fp])
            assert set(cells) == {m for e, f, m in expected if (e, f) == (name, fp)}  # rows: the algorithms only
            for row, cell in cells.items():
                assert sorted(cell["values"]) == pytest.approx(sorted(expected[(name, fp, row)]))
            best = max(cells, key=lambda r: np.mean(cells[r]["values"]))
            assert cells[best]["best"] and sum(c["best"] for c in cells.values()) == 1


def test_table_by_dataset_never_merges_two_datasets_of_one_quality(tmp_path, capsys):
    """Two expert datasets (other fingerprints) are two columns named by fingerprint; online runs
    and --paper are refused with what is wrong; --out keeps its own file and nothing else."""
    import csv
    import io
    import shutil

    picked = [s for s in _offline_summaries() if s["results"]["method"] in ("offline-bc", "offline-iql")
              and s["results"]["dataset"]["quality"] in ("expert", "random")]
    for s in picked:
        (tmp_path / f"{s['run']}.json").write_text(json.dumps(s))
    other = json.loads(json.dumps(next(s for s in picked if s["results"]["dataset"]["quality"] == "expert")))
    other["run"] = "copy_on_other_data"
    other["results"]["provenance"]["inputs"]["dataset"] = "0123456789ab" + "0" * 52
    other["results"]["test"]["mean"] = 1.0
    (tmp_path / "copy_on_other_data.json").write_text(json.dumps(other))
    assert main(["table", str(tmp_path), "--columns", "dataset"]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.startswith("| method |"))
    assert "| random |" in header and "expert 0123456789ab" in header and header.count("expert") == 2
    assert "1.0 (n=1)" in text  # its own cell, not averaged into the other expert dataset's
    assert main(["table", str(tmp_path), "--columns", "dataset", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 5 and len({(r["dataset"], r["method"]) for r in rows}) == 5
    assert [r["seeds"] for r in rows if r["dataset_fingerprint"] == "0123456789ab"] == ["1"]

    fake_run(tmp_path, "online", "sac-gems", 0, 300.0, [(0, 50.0)])
    assert main(["table", str(tmp_path), "--columns", "dataset"]) != 0
    err = capsys.readouterr().err
    assert "needs offline runs" in err and "online" in err
    shutil.rmtree(tmp_path / "online")
    assert main(["table", str(tmp_path), "--columns", "dataset", "--paper"]) != 0
    assert "--paper" in capsys.readouterr().err
    out = tmp_path / "tables" / "by_dataset.md"
    out.parent.mkdir()
    assert main(["table", str(tmp_path), "--columns", "dataset", "--out", str(out)]) == 0
    first = out.read_text()
    assert main(["table", str(tmp_path), "--columns", "dataset", "--out", str(out)]) != 0  # no --overwrite
    assert main(["table", str(tmp_path), "--columns", "dataset", "--out", str(out), "--overwrite"]) == 0
    assert out.read_text() == first
    mine = tmp_path / "tables" / "notes.md"
    mine.write_text("my notes\n")
    assert main(["table", str(tmp_path), "--columns", "dataset", "--out", str(mine), "--overwrite"]) != 0
    assert mine.read_text() == "my notes\n"


def test_plot_datasets_draws_the_table_by_dataset(tmp_path, capsys):
    """``slaterec plot datasets``: the bars are the table's cells (normalised, or raw with --raw),
    the PNG records its runs, and online runs are refused."""
    from slaterec_lab.results import comparable_records
    from slaterec_lab.plots import plot_datasets
    from slaterec_lab.tables import build_by_dataset

    out = tmp_path / "bars.png"
    assert main(["plot", "datasets", str(SHIPPED_OFFLINE), "--out", str(out)]) == 0
    runs = png_runs(out)
    assert len(runs) == len(list(SHIPPED_OFFLINE.glob("*.json"))) and all(r.endswith(".json") for r in runs)
    assert main(["plot", "datasets", str(SHIPPED_OFFLINE), "--out", str(out)]) != 0  # no --overwrite
    records, _ = comparable_records([SHIPPED_OFFLINE], need_test=True)
    table = build_by_dataset(records)
    for raw in (False, True):
        data = plot_datasets(table, tmp_path / f"raw{raw}.png", raw=raw)["FocusedTopDown"]
        assert data["scale"] == ("raw" if raw else "normalised")
        order = data["datasets"]
        assert order[0] == "random" and order[-1] == "expert"
        cells = {table["FocusedTopDown"]["columns"][d]["quality"]: c for d, c in table["FocusedTopDown"]["cells"].items()}
        for method, bars in data["methods"].items():
            for q, mean, n in zip(order, bars["mean"], bars["n"]):
                s = cells[q][method]["summary" if raw else "normalised"]
                assert mean == pytest.approx(s.mean) and n == s.n == 3
        from gym_slaterec.scores import normalised

        expert = next(c for c in table["FocusedTopDown"]["columns"].values() if c["quality"] == "expert")
        level = expert["return"] if raw else normalised(expert["return"], "FocusedTopDown", expert["items"])
        assert level is not None and data["data"][order.index("expert")] == pytest.approx(level)
    fake_run(tmp_path / "mixed", "online", "sac-gems", 0, 300.0, [(0, 50.0)])
    assert main(["plot", "datasets", str(tmp_path / "mixed"), "--out", str(tmp_path / "x.png")]) != 0
    assert "needs offline runs" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_a_running_run_says_how_far_it_is_and_when_its_training_ends(tmp_path):
    from slaterec_lab.results import live_progress

    online = tmp_path / "online"
    (online / "tb").mkdir(parents=True)
    (online / "config.json").write_text(json.dumps({"episodes": 10_000, "max_wall_s": None}))
    rows = ["train_episode/episodes,time/wall_s,train/actor_loss"] + [f"{100 * i},{10.0 * i},0.5" for i in range(1, 31)]
    (online / "tb" / "progress.csv").write_text("\n".join(rows) + "\n")
    assert live_progress(online) == "3,000 of 10,000 episodes, 10 episodes/s, training ends in ~12 min"
    (online / "config.json").write_text(json.dumps({"episodes": 10_000, "max_wall_s": 900}))
    assert live_progress(online).endswith("training ends in ~10 min (its wall-time limit, 900 s)")
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "config.json").write_text(json.dumps({"steps": 100_000}))
    (offline / "state.json").write_text(json.dumps({"step": 30_000, "wall_s": 600.0}))
    assert live_progress(offline) == "30,000 of 100,000 steps, 50 steps/s, training ends in ~23 min"
    (offline / "state.json").write_text("{broken")
    assert live_progress(offline) == "" and live_progress(tmp_path / "nothing") == ""
