"""Statistics that cannot be fooled: a copied or repeated run is one sample, NaN and missing
results are left out and reported (never bolded), rows never merge runs on other item
matrices, datasets or GeMS, ``--json`` is standard JSON for any budget, and ``slaterec runs``
tells complete / running / unfinished / dead / failed / damaged apart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_lab import fake_run

from gym_slaterec.cli import main
from gym_slaterec.locks import writer_lock
from slaterec_lab.results import comparable_records, run_status
from slaterec_lab.tables import build, render


def strict_loads(text: str):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def table_of(root: Path, capsys) -> tuple[str, str]:
    assert main(["table", str(root)]) == 0
    out = capsys.readouterr()
    return out.out, out.err


def test_a_copied_run_and_a_repeated_command_are_one_sample(tmp_path, capsys):
    for seed, value in ((0, 300.0), (1, 320.0)):
        fake_run(tmp_path, f"gems_s{seed}", "sac-gems", seed, value, [(0, 50.0)])
    shutil.copytree(tmp_path / "gems_s0", tmp_path / "copy_of_s0")
    fake_run(tmp_path, "gems_s1_again", "sac-gems", 1, 240.0, [(0, 50.0)])  # the same command and seed, run twice
    records, notes = comparable_records([tmp_path], need_test=True)
    cell = build(records)["FocusedTopDown"]["sac-gems"]
    assert cell["summary"].n == 2 and cell["summary"].half_width > 0
    assert sorted(r.seed for r in cell["runs"]) == [0, 1]
    dup_notes = [n for n in notes if "count as one sample" in n]
    assert len(dup_notes) == 2 and any("copy_of_s0" in n or "gems_s0" in n for n in dup_notes)
    out, err = table_of(tmp_path, capsys)
    assert "(n=2)" in out and "(n=4)" not in out and "(n=3)" not in out
    assert "count as one sample" in err


def test_nan_and_missing_results_are_left_out_and_reported(tmp_path, capsys):
    fake_run(tmp_path, "good_0", "sac-gems", 0, 100.0, [(0, 50.0)])
    fake_run(tmp_path, "good_1", "sac-gems", 1, 110.0, [(0, 50.0)])
    nan = fake_run(tmp_path, "diverged", "sac-topk-mf", 0, 0.0, [(0, 50.0)])
    (nan / "results.json").write_text('{"test": {"mean": NaN}, "validation": []}')
    fake_run(tmp_path, "nan_seed", "sac-gems", 2, 0.0, [(0, 50.0)])
    (tmp_path / "nan_seed" / "results.json").write_text('{"test": {"mean": NaN}, "validation": []}')
    unfinished = fake_run(tmp_path, "half", "sac-gems", 3, 0.0, [(0, 50.0)])
    (unfinished / "results.json").unlink()
    (unfinished / "state.json").write_text(json.dumps({"status": "running", "episodes": 4, "validation": []}))
    out, err = table_of(tmp_path, capsys)
    assert "**105.0" in out and "(n=2)" in out  # seeds 2 (NaN) and 3 (unfinished) left out
    assert "nan" not in out.lower() and "sac-topk-mf" not in out
    assert "diverged: its test return is nan" in err and "nan_seed" in err and "half: no test return yet" in err
    # a table whose every run is NaN says so instead of printing an empty or NaN table
    solo = tmp_path / "solo"
    solo.mkdir()
    shutil.copytree(nan, solo / "diverged")
    assert main(["table", str(solo)]) == 2
    assert "none of the runs has a test return" in capsys.readouterr().err


@pytest.mark.parametrize("what", ["item matrix", "offline dataset", "offline GeMS"])
def test_rows_never_merge_what_the_runs_were_trained_on(tmp_path, capsys, what):
    for seed in (0, 1):
        a = fake_run(tmp_path, f"a{seed}", "sac-gems", seed, 300.0 + seed, [(0, 1.0)])
        b = fake_run(tmp_path, f"b{seed}", "sac-gems", seed, 100.0 + seed, [(0, 1.0)])
        for run, tag in ((a, "aa"), (b, "bb")):
            prov = json.loads((run / "provenance.json").read_text())
            if what == "item matrix":
                prov["item_embeddings_fingerprint"] = tag * 32
            else:
                prov.update(kind="offline_run", method="offline-td3bc",
                            inputs={"dataset": "dd" * 32, "gems": "ee" * 32,
                                    ("dataset" if what == "offline dataset" else "gems"): tag * 32})
            (run / "provenance.json").write_text(json.dumps(prov))
    records, _ = comparable_records([tmp_path], need_test=True)
    cells = build(records)["FocusedTopDown"]
    assert len(cells) == 2 and all(c["summary"].n == 2 for c in cells.values())
    assert sorted(round(c["summary"].mean, 1) for c in cells.values()) == [100.5, 300.5]
    out, _ = table_of(tmp_path, capsys)
    key = {"item matrix": "items", "offline dataset": "dataset", "offline GeMS": "gems"}[what]
    assert f"{key}=aaaaaaaaaaaa" in out and f"{key}=bbbbbbbbbbbb" in out


def test_json_output_is_standard_json_for_any_budget(capsys):
    assert main(["evaluate", "FocusedTopDown-v0", "--policy", "random", "--episodes", "1", "--json"]) == 0
    result = strict_loads(capsys.readouterr().out)
    assert result["ci95"] == [None, None] and np.isfinite(result["mean"])  # no interval from one user
    assert main(["evaluate", "FocusedTopDown-v0", "--policy", "random", "--episodes", "1"]) == 0
    assert "no interval from one episode" in capsys.readouterr().out


def test_runs_tells_every_status_apart(tmp_path, capsys):
    def run(name: str, state: dict | None, results: bool = True) -> Path:
        r = fake_run(tmp_path, name, "sac-gems", 0, 1.0, [(0, 1.0)])
        (r / "checkpoints").mkdir()
        (r / "checkpoints" / "best.zip").write_bytes(b"")
        if not results:
            (r / "results.json").unlink()
        if state is not None:
            (r / "state.json").write_text(json.dumps({"episodes": 8, "validation": [], **state}))
        return r

    complete = run("complete", {"status": "complete"})
    live = run("live", {"status": "running"}, results=False)
    stopped = run("stopped", {"status": "interrupted"}, results=False)
    killed = run("killed", {"status": "running"}, results=False)
    failed = run("failed", {"status": "failed", "error": "training diverged at step 7 (loss inf); lower the learning rate"},
                 results=False)
    no_best = run("no_best", {"status": "complete"})
    (no_best / "checkpoints" / "best.zip").unlink()
    bad_results = run("bad_results", {"status": "complete"})
    (bad_results / "results.json").write_text("{truncated")
    bad_prov = run("bad_prov", {"status": "running"}, results=False)
    (bad_prov / "provenance.json").write_text("\x00\x01")
    want = {complete: "complete", live: "running", stopped: "unfinished", killed: "dead", failed: "failed",
            no_best: "damaged", bad_results: "damaged", bad_prov: "damaged"}
    with writer_lock(live):
        assert {r: run_status(r)[0] for r in want} == want
        assert main(["runs", str(tmp_path), "--json"]) == 0
        rows = {Path(r["run"]).name: r for r in strict_loads(capsys.readouterr().out)}
    assert {name: rows[name]["status"] for name in rows} == {r.name: s for r, s in want.items()}
    assert "diverged at step 7" in rows["failed"]["detail"] and "resumes" in rows["killed"]["detail"]
    assert main(["runs", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "1 complete, 1 unfinished, 2 dead, 1 failed, 3 damaged" in text  # "live" lost its writer


def test_runs_shows_whole_names_filters_and_sorts(tmp_path, capsys):
    long = "log_0/sac-gems/GeMS_FocusedTopDown_latentdim32_beta1.0_lambdaclick0.5_seed58407201_20261203-101010"
    for name, method, seed, test in ((long, "sac-gems", 0, 300.0), ("b", "sac-topk-mf", 1, 250.0),
                                     ("c", "sac-gems", 2, 320.0)):
        run = fake_run(tmp_path, name, method, seed, test, [(0, 1.0)])
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "best.zip").write_bytes(b"")
    assert main(["runs", str(tmp_path)]) == 0
    assert long in capsys.readouterr().out  # never cut: the method and environment stay readable
    assert main(["runs", str(tmp_path), "--method", "sac-gems", "--sort", "test", "--json"]) == 0
    rows = strict_loads(capsys.readouterr().out)
    assert [r["test"] for r in rows] == [320.0, 300.0]
    assert main(["runs", str(tmp_path), "--env", "FocusedTopDown", "--status", "complete", "--sort", "seed",
                 "--json"]) == 0
    assert [r["seed"] for r in strict_loads(capsys.readouterr().out)] == [0, 1, 2]
    assert main(["runs", str(tmp_path), "--status", "failed", "--json"]) == 0
    assert strict_loads(capsys.readouterr().out) == []
