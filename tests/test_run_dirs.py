"""One run-directory implementation for online and offline runs: states, resume checks, checkpoints."""

from __future__ import annotations

import json

import pytest

from gym_slaterec import run_dirs


def make_run(path, kind, state, files=()):
    path.mkdir(parents=True)
    (path / "provenance.json").write_text(json.dumps({"kind": kind}))
    (path / "state.json").write_text(json.dumps(state))
    for name in files:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(b"x")
    return path


def test_both_kinds_list_checkpoints_in_one_order(tmp_path):
    online = make_run(tmp_path / "on", "sb3_run", {}, ["checkpoints/ep0000010.zip", "checkpoints/last.zip",
                                                       "checkpoints/best.zip", "checkpoints/ep0000005.zip",
                                                       "checkpoints/last_replay_buffer.npz",
                                                       "checkpoints/.best.zip.123.tmp"])
    offline = make_run(tmp_path / "off", "offline_run", {}, ["model_step0000006.pt", "model_best.pt", "model_last.d3",
                                                             "model_last.pt", "config.json"])
    assert run_dirs.list_checkpoints(online) == ["best", "last", "ep0000005", "ep0000010"]
    assert run_dirs.list_checkpoints(offline) == ["best", "last", "step0000006"]
    # a count names the periodic checkpoint of either kind; the weights-only file wins over an old .d3
    assert run_dirs.checkpoint_file(online, 10) == (online / "checkpoints" / "ep0000010.zip", "ep0000010")
    assert run_dirs.checkpoint_file(offline, "step6")[1] == "step0000006"
    assert run_dirs.checkpoint_file(offline, "last")[0].suffix == ".pt"
    with pytest.raises(FileNotFoundError, match=r"no checkpoint 'ep0000007' \(available: best, last, ep0000005"):
        run_dirs.checkpoint_file(online, 7)


def test_one_set_of_status_words_and_older_words_still_read(tmp_path):
    offline = make_run(tmp_path / "off", "offline_run", {"status": "unfinished", "step": 4, "validation": []})
    state = run_dirs.read_state(offline, run_dirs.LAYOUTS["offline_run"])
    assert state["status"] == "running" and run_dirs.position(state, run_dirs.LAYOUTS["offline_run"]) == "step 4"
    online = make_run(tmp_path / "on", "sb3_run", {"status": "paused", "episodes": 4, "validation": []})
    with pytest.raises(ValueError, match="status = 'paused' is not valid"):
        run_dirs.read_state(online, run_dirs.LAYOUTS["sb3_run"])
    (online / "state.json").write_text(json.dumps({"status": "running", "validation": []}))
    with pytest.raises(ValueError, match="lacks 'episodes'"):
        run_dirs.read_state(online, run_dirs.LAYOUTS["sb3_run"])
    (online / "state.json").write_text(json.dumps({"status": "running", "episodes": 4, "validation": []}))
    with pytest.raises(ValueError, match="lacks 'turns'"):  # an online run resumes from its turn count too
        run_dirs.read_state(online, run_dirs.LAYOUTS["sb3_run"])
    from slaterec_lab.results import run_status

    assert run_status(offline) == ("dead", "its process ended at step 4 without stopping cleanly (killed?); "
                                            "the same command resumes it")


def test_resume_refusal_names_what_differs(tmp_path):
    run_dirs.check_same_run(tmp_path, {"a": 1, "b": [1, 2]}, {"a": 1, "b": (1, 2)})  # JSON-equal: the same run
    with pytest.raises(ValueError, match=r"another configuration \(differs in: b, c\)"):
        run_dirs.check_same_run(tmp_path, {"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 0})


def test_a_directory_that_is_no_run_is_named(tmp_path):
    (tmp_path / "provenance.json").write_text(json.dumps({"kind": "gems_checkpoint"}))
    with pytest.raises(ValueError, match="holds a 'gems_checkpoint', not a run"):
        run_dirs.run_kind(tmp_path)
    with pytest.raises(ValueError, match="no installed package can evaluate"):
        run_dirs.evaluate_run_dir(tmp_path, "SlateRec/FocusedTopDown-v0", 2, 0)
