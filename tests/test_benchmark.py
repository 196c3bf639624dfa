"""``slaterec benchmark``: policies folders and the five datasets rebuilt from them."""

from __future__ import annotations

import json
import shutil

import pytest

from gym_slaterec.cli import main
from gym_slaterec.core import portable
from gym_slaterec.logged_data import LoggedDataset

ENV = "FocusedTopDown-v0"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished (tiny) paper-regime SAC+GeMS run with periodic checkpoints and a replay snapshot."""
    import torch

    from gym_slaterec.gems import GeMSConfig, train_gems
    from gym_slaterec.rollouts import generate_logged_data

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("bench")
    ds = generate_logged_data(f"SlateRec/{ENV}", d / "logged", episodes=20, seed=0, progress=False)
    gems = train_gems(ds, GeMSConfig(epochs=1, latent_dim=8), out=d / "gems.pt", progress=False, max_steps=3)
    out = d / "run"
    # on the CPU, as the shipped policies: a retraining (medium-replay) reproduces a run exactly only there
    assert main(["train", "sac-gems", ENV, "--gems", str(gems.path), "--seed", "0", "--out", str(out), "--no-progress",
                 "--device", "cpu",
                 "--episodes", "6", "--set", "n_envs=2", "--set", "val_every=2", "--set", "val_users=4",
                 "--set", "test_users=4", "--set", "checkpoint_every=2", "--set", "replay_snapshots=[2, 4]",
                 "--set", "agent.warmup_episodes=2", "--set", "agent.batch_episodes=2",
                 "--set", "agent.net_arch=[16]"]) == 0
    return out


@pytest.mark.slow(25)
def test_policies_then_datasets_then_the_same_again_elsewhere(run, tmp_path, capsys, monkeypatch):
    policies = tmp_path / "policies"
    assert main(["benchmark", "policies", str(run), "--out", str(policies)]) == 0
    capsys.readouterr()
    manifest = json.loads((policies / "benchmark.json").read_text())
    state = json.loads((run / "state.json").read_text())
    curve = {v["episodes"]: v["mean"] for v in state["validation"]}
    ref = manifest["reference"]
    assert ref["expert_validation"] == max(curve.values())
    assert ref["medium_target"] == pytest.approx((ref["random"] + max(curve.values())) / 2)
    medium = manifest["policies"]["medium"]
    # the medium: among the checkpoints that kept their replay memory, the nearest to halfway
    assert medium["episodes"] in (2, 4) and medium["source_checkpoint"] == f"ep{medium['episodes']:07d}"
    assert medium["checkpoint"] == medium["replay"] == "best"  # a bundle is one policy
    other = 6 - medium["episodes"]
    assert abs(curve[medium["episodes"]] - ref["medium_target"]) <= abs(curve[other] - ref["medium_target"])
    assert json.loads((policies / "medium" / "config.json").read_text())["gems"] == "inputs/gems.pt"

    moved = tmp_path / "elsewhere" / "FocusedTopDown"  # a bundle is relocatable: it names its GeMS copy
    moved.parent.mkdir()
    shutil.move(str(policies), str(moved))
    # in this process (the portable child has its own test below)
    args = ["benchmark", "datasets", str(moved), "--out", str(tmp_path / "data"), "--episodes", "5", "--no-progress",
            "--json", "--native-arithmetic"]
    assert main([*args, "--record"]) == 0
    rows = {r["quality"]: r for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1])}
    assert set(rows) == {"random", "medium", "expert", "medium-replay", "medium-expert"}
    assert all(r["matches"] is None for r in rows.values())  # nothing recorded before
    data = tmp_path / "data" / "FocusedTopDown"
    assert rows["medium-expert"]["episodes"] == 10 and rows["expert"]["episodes"] == 5
    replayed = LoggedDataset.load(data / "medium-replay")
    assert len(replayed) == medium["episodes"]  # the replay memory held every episode so far
    expert = LoggedDataset.load(data / "expert")
    assert expert.provenance["policy"]["run_dir"] == str(moved / "expert")
    assert expert.provenance["users"]["first_seed"] == 2_000_000
    recorded = json.loads((moved / "benchmark.json").read_text())["datasets"]
    assert recorded["fingerprints"]["5"] == {q: r["fingerprint"] for q, r in rows.items()}
    assert recorded["mean_returns"]["5"] == {q: r["mean_return"] for q, r in rows.items()}
    assert recorded["recorded_with"] == expert.provenance["benchmark"]["arithmetic"]  # how, and on which CPU vendor

    assert main(["evaluate", ENV, "--policy", str(moved / "medium"), "--episodes", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 3

    # rebuilt in another folder: the same datasets, checked against the record
    args[args.index("--out") + 1] = str(tmp_path / "again")
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert all(r["matches"] is True for r in again)
    bench = LoggedDataset.load(tmp_path / "again" / "FocusedTopDown" / "medium").provenance["benchmark"]
    assert bench["quality"] == "medium" and bench["matches"] is True and not bench["mismatch_allowed"]
    assert bench["collecting_policy"]["source_checkpoint"] == medium["source_checkpoint"]
    assert bench["reference"] == ref
    # a record that disagrees: refused (the dataset removed) unless --allow-mismatch, which records it
    manifest = json.loads((moved / "benchmark.json").read_text())
    manifest["datasets"]["fingerprints"]["5"]["random"] = "0" * 64
    (moved / "benchmark.json").write_text(json.dumps(manifest))
    third = ["benchmark", "datasets", str(moved), "--out", str(tmp_path / "third"), "--episodes", "5",
             "--qualities", "random", "--no-progress", "--native-arithmetic"]
    assert main(third) == 2
    err = capsys.readouterr().err
    assert "differs from the recorded 000000000000" in err and "offline.allow_mismatch: true" in err
    assert "the record was made on" not in err  # recorded on this machine
    # a record made on another vendor's CPU: the message names the two vendors and MKL's Intel-only branch
    with monkeypatch.context() as m:
        m.setattr(portable, "cpu_vendor", lambda: "GenuineIntel")
        manifest["datasets"]["recorded_with"] = {"cpu_vendor": "AuthenticAMD"}
        (moved / "benchmark.json").write_text(json.dumps(manifest))
        assert main(third) == 2
        err = capsys.readouterr().err
        assert "the record was made on a CPU from AuthenticAMD and this one is from GenuineIntel" in err
        assert "MKL's reproducible branch (MKL_CBWR) holds on Intel CPUs only" in err
        # --record there writes that vendor's own record beside the main one, which stays as it was;
        # a rebuild on that vendor's CPUs is then checked against its own record
        intel = ["benchmark", "datasets", str(moved), "--out", str(tmp_path / "intel"), "--episodes", "5",
                 "--qualities", "random", "--no-progress", "--native-arithmetic"]
        assert main([*intel, "--record"]) == 0
        written = json.loads((moved / "benchmark.json").read_text())["datasets"]
        assert written["fingerprints"]["5"]["random"] == "0" * 64 and written["recorded_with"]["cpu_vendor"] == "AuthenticAMD"
        own = written["by_vendor"]["GenuineIntel"]
        assert own["fingerprints"]["5"] == {"random": rows["random"]["fingerprint"]}
        assert own["recorded_with"]["cpu_vendor"] == "GenuineIntel"
        intel[intel.index("--out") + 1] = str(tmp_path / "intel_again")
        assert main(intel) == 0
        bench = LoggedDataset.load(tmp_path / "intel_again" / "FocusedTopDown" / "random").provenance["benchmark"]
        assert bench["matches"] is True and bench["recorded_on"] == "GenuineIntel"
        capsys.readouterr()
    # the same clicks as recorded: the message says only the stored actions can differ
    assert f"its mean return equals the recorded one ({rows['random']['mean_return']:.4f})" in err
    assert not (tmp_path / "third" / "FocusedTopDown" / "random").exists()
    # a recorded mean return one click above the rebuilt one: the trajectories differ, by how much
    manifest["datasets"]["mean_returns"]["5"]["random"] = rows["random"]["mean_return"] + 1 / 5
    (moved / "benchmark.json").write_text(json.dumps(manifest))
    assert main(third) == 2
    assert "against the recorded" in (err := capsys.readouterr().err) and "-1 clicks in 5 episodes" in err
    assert main([*third, "--allow-mismatch"]) == 0
    printed = capsys.readouterr().out
    assert (f"DIFFERS (recorded 000000000000, mean return {rows['random']['mean_return'] + 1 / 5:.4f})" in printed
            and "medium" not in printed.split("\n", 1)[1])
    kept = LoggedDataset.load(tmp_path / "third" / "FocusedTopDown" / "random")
    assert kept.provenance["benchmark"]["mismatch_allowed"] is True
    assert kept.provenance["benchmark"]["recorded_mean_return"] == rows["random"]["mean_return"] + 1 / 5
    assert kept.fingerprint == rows["random"]["fingerprint"]  # the record does not change the data's fingerprint
    # nothing is overwritten without --overwrite
    assert main([*third, "--allow-mismatch"]) == 2
    assert "exists" in capsys.readouterr().err


def test_refusals(run, tmp_path, capsys, monkeypatch):
    import d3rlpy_adapters.benchmark as benchmark

    # in this process (--native-arithmetic): the patched folder below must be seen, and the medium agent
    # retrained for medium-replay is compared bit for bit with the fixture's, trained here with these kernels
    native = "--native-arithmetic"

    with monkeypatch.context() as m:  # an installation whose data ships no policies for the environment
        m.setattr(benchmark, "shipped_root", lambda: tmp_path / "nothing")
        assert main(["benchmark", "datasets", "DiffuseMixed", "--out", str(tmp_path / "d"), native]) == 2
        assert "no benchmark policies ship for DiffuseMixed yet (shipped: none)" in capsys.readouterr().err
    assert main(["benchmark", "datasets", str(tmp_path), "--out", str(tmp_path / "d"), native]) == 2
    assert "not a benchmark policies folder" in capsys.readouterr().err
    assert main(["benchmark", "policies", str(run), "--out", str(tmp_path / "p"), "--medium", "episodes:4"]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "p" / "benchmark.json").read_text())["policies"]["medium"]["source_checkpoint"] == "ep0000004"
    assert main(["benchmark", "policies", str(run), "--out", str(tmp_path / "p")]) == 2  # exists
    assert main(["benchmark", "datasets", str(tmp_path / "p"), "--out", str(tmp_path / "d"),
                 "--qualities", "expert", "bogus", native]) == 2
    assert "unknown dataset quality bogus" in capsys.readouterr().err
    # a folder without the replay memory (as shipped) retrains the medium agent for medium-replay: the
    # same episodes as the memory the run kept, and the retrained policy is the shipped one
    for name, extra in (("small", ["--no-replay"]), ("full", [])):
        assert main(["benchmark", "policies", str(run), "--out", str(tmp_path / name), *extra]) == 0
    assert not list((tmp_path / "small" / "medium" / "checkpoints").glob("replay_*"))
    capsys.readouterr()
    for name in ("small", "full"):
        assert main(["benchmark", "datasets", str(tmp_path / name), "--out", str(tmp_path / f"d_{name}"),
                     "--episodes", "2", "--no-progress", native]) == 0
    assert "medium-replay" in capsys.readouterr().out
    small, full = (tmp_path / f"d_{n}" / "FocusedTopDown" for n in ("small", "full"))
    assert sorted(p.name for p in small.iterdir()) == ["expert", "medium", "medium-expert", "medium-replay", "random"]
    retrained, copied = (LoggedDataset.load(d / "medium-replay") for d in (small, full))
    assert retrained.fingerprint == copied.fingerprint and len(retrained) >= 2
    record = retrained.provenance["benchmark"]["retrained"]
    assert record["policy_max_abs_diff"] == 0.0 and record["validation_matches"] is True
    assert record["episodes"] == json.loads((tmp_path / "small" / "benchmark.json").read_text())["policies"]["medium"]["episodes"]
    assert "retrained" not in copied.provenance["benchmark"]
    # a retrained memory that disagrees with the record: refused, the retrained agent kept and reused
    manifest = json.loads((tmp_path / "small" / "benchmark.json").read_text())
    manifest["datasets"]["fingerprints"]["2"] = {"medium-replay": "f" * 64}
    (tmp_path / "small" / "benchmark.json").write_text(json.dumps(manifest))
    again = ["benchmark", "datasets", str(tmp_path / "small"), "--out", str(tmp_path / "d_again"), "--episodes", "2",
             "--qualities", "medium-replay", "--no-progress", native]
    assert main(again) == 2
    err = capsys.readouterr().err
    assert "retrained medium agent stays in" in err and "did not repeat the original training" in err
    kept = tmp_path / "d_again" / "FocusedTopDown" / ".medium-replay-run"
    assert (kept / "results.json").is_file() and not (kept.parent / "medium-replay").exists()
    assert main([*again, "--allow-mismatch"]) == 0
    assert not kept.exists()
    reused = LoggedDataset.load(kept.parent / "medium-replay")
    assert reused.fingerprint == copied.fingerprint and reused.provenance["benchmark"]["mismatch_allowed"] is True
    other = tmp_path / "d_other" / "FocusedTopDown" / ".medium-replay-run"  # a finished run of another config there
    shutil.copytree(run, other)
    assert main([*again[:4], str(tmp_path / "d_other"), *again[5:]]) == 2
    assert "holds another finished run than the medium agent's retraining" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "small" / "benchmark.json").read_text())
    manifest["policies"]["medium"]["episodes"] = None  # a medium that is no periodic checkpoint
    (tmp_path / "small" / "benchmark.json").write_text(json.dumps(manifest))
    assert main(["benchmark", "datasets", str(tmp_path / "small"), "--out", str(tmp_path / "d4"), "--episodes", "2",
                 "--no-progress", native]) == 0
    assert "medium-replay is skipped" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "d4" / "FocusedTopDown").iterdir()) == [
        "expert", "medium", "medium-expert", "random"]
    assert main(["benchmark", "datasets", str(tmp_path / "small"), "--out", str(tmp_path / "d5"),
                 "--qualities", "medium-replay", native]) == 2
    assert "can be neither copied nor retrained" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "results.json").unlink()
    assert main(["benchmark", "policies", str(unfinished), "--out", str(tmp_path / "q")]) == 2
    assert "not finished" in capsys.readouterr().err


def test_train_policies_runs_the_chain_then_bundles_each_environment(tmp_path, capsys):
    import yaml

    grid = {"name": "tiny_policies", "seeds": [0], "environments": ["DiffuseMixed-v0"],
            "logged": {"episodes": 20, "seed": 0}, "gems": {"max_steps": 3, "latent_dim": 8, "seed": 0},
            "set": {"val_every": 2, "val_users": 4, "test_users": 4, "n_envs": 2},
            "methods": {"sac-gems": {"episodes": 4, "set": {
                "checkpoint_every": 2, "replay_snapshots": [2, 4], "agent.warmup_episodes": 2,
                "agent.batch_episodes": 2, "agent.net_arch": [16]}}}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(grid))
    args = ["benchmark", "train-policies", "FocusedTopDown", "--out", str(tmp_path / "p"), "--grid",
            str(tmp_path / "g.yaml"), "--executor", "inline", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    manifest = json.loads((tmp_path / "p" / "FocusedTopDown" / "benchmark.json").read_text())
    assert manifest["env_id"] == "SlateRec/FocusedTopDown-v0"  # the grid's environments replaced
    assert manifest["source_run"] == str(tmp_path / "p" / "sweep" / "runs" / "sac-gems_FocusedTopDown_s0")
    assert "benchmark datasets" in out
    assert main(args) == 0  # resumed: nothing to train, the policies kept
    assert "policies already in" in capsys.readouterr().out


@pytest.mark.slow(19)
def test_an_offline_grid_on_the_benchmark_datasets(run, tmp_path, monkeypatch):
    """offline.datasets {benchmark: QUALITY}: the standard datasets rebuilt from a policies folder,
    exported through the GeMS those policies acted through, then trained on."""
    from gym_slaterec.provenance import sha256_file
    from slaterec_lab.grid import GridError, expand
    from slaterec_lab.sweep import run_sweep

    policies = tmp_path / "policies"
    assert main(["benchmark", "policies", str(run), "--out", str(policies), "--no-replay"]) == 0
    grid = {"name": "bench_offline", "environments": [ENV],
            "offline": {"datasets": {"random": {"benchmark": "random", "policies": str(policies), "episodes": 3},
                                     "expert": {"benchmark": "expert", "policies": str(policies), "episodes": 3},
                                     "both": {"merge": ["random", "expert"]}},
                        "algorithms": ["bc"], "steps": 4, "set": {"eval_every": 4, "val_users": 2, "test_users": 2}}}
    file = tmp_path / "g.yaml"
    file.write_text(json.dumps(grid))
    sweep = run_sweep(grid, file, tmp_path / "sw", executor="inline", progress=False)
    assert {t["status"] for t in sweep.trials.values()} == {"done"}, {
        k: t.get("error") for k, t in sweep.trials.items() if t["status"] != "done"}
    assert not any(t["kind"] == "gems" for t in sweep.trials.values())  # no online chain: the policies' GeMS
    expert = LoggedDataset.load(tmp_path / "sw" / "offline" / "data" / "FocusedTopDown_expert" / "FocusedTopDown" / "expert")
    assert expert.provenance["benchmark"]["quality"] == "expert" and expert.num_episodes == 3
    for name, quality in (("random", "random"), ("expert", "expert"), ("both", "random-expert")):
        results = json.loads((tmp_path / "sw" / "offline" / "runs" / f"bc_FocusedTopDown_{name}_s0" / "results.json").read_text())
        assert "test" in results and results["provenance"]["dataset"]["quality"] == results["dataset"]["quality"] == quality
    # table rows are algorithm x dataset quality (pinned by the dataset's fingerprint)
    from slaterec_lab.results import find_runs, label_variants, read_run

    labels = {r.method for r in label_variants([read_run(r) for r in find_runs([tmp_path / "sw" / "offline" / "runs"])])}
    assert len(labels) == 3 and {label.split("=")[1].split()[0] for label in labels} == {"random", "expert", "random-expert"}
    from d3rlpy_adapters.export import benchmark_quality

    assert benchmark_quality({"policy": {"kind": "reference", "name": "random"}}) is None  # not a benchmark dataset
    assert benchmark_quality({"policy": {"kind": "merged", "parts": [{"quality": "medium"}, {"quality": None}]}}) is None
    prov = json.loads((tmp_path / "sw" / "offline" / "runs" / "bc_FocusedTopDown_both_s0" / "provenance.json").read_text())
    assert sha256_file(policies / "expert" / "inputs" / "gems.pt") in json.dumps(prov)
    # medium-replay of policies without the replay memory (as shipped): the dataset stage retrains the medium
    g = {**grid, "offline": {**grid["offline"], "datasets": {"mr": {"benchmark": "medium-replay", "policies": str(policies)}}}}
    (t,) = [t for t in expand(g, tmp_path / "x") if t.kind == "collect"]
    assert t.argv[:2] == ["benchmark", "datasets"] and t.argv[t.argv.index("--qualities") + 1] == "medium-replay"
    unperiodic = tmp_path / "unperiodic"
    shutil.copytree(policies, unperiodic)
    manifest = json.loads((unperiodic / "benchmark.json").read_text())
    manifest["policies"]["medium"]["episodes"] = None
    (unperiodic / "benchmark.json").write_text(json.dumps(manifest))
    for bad, message in [({"benchmark": "bogus", "policies": str(policies)}, "unknown quality 'bogus'"),
                         ({"benchmark": "medium-replay", "policies": str(unperiodic)}, "neither copied nor retrained"),
                         ({"benchmark": "expert", "policies": str(tmp_path)}, "not a benchmark policies folder"),
                         ({"benchmark": "expert", "policies": str(policies), "seed": 3}, "unknown key"),
                         ({"benchmark": "expert"}, "no benchmark policies ship for DiffuseMixed")]:
        g = {**grid, "offline": {**grid["offline"], "datasets": {"d": bad}}}
        with monkeypatch.context() as m:
            if "ship" in message:
                import d3rlpy_adapters.benchmark as benchmark

                g["environments"] = ["DiffuseMixed-v0"]
                m.setattr(benchmark, "shipped_root", lambda: tmp_path / "nothing")
            with pytest.raises(GridError, match=message):
                expand(g, tmp_path / "x")
    mixed = {"random": grid["offline"]["datasets"]["random"], "eg": {"policy": "epsilon-greedy", "episodes": 3},
             "m": {"merge": ["random", "eg"]}}
    with pytest.raises(GridError, match="merges datasets acted through different GeMS"):
        expand({**grid, "methods": {"random": {}}, "offline": {**grid["offline"], "datasets": mixed}}, tmp_path / "x")
    # offline.policies: the folder of every benchmark dataset, {env} its environment
    (tmp_path / "all").mkdir()
    shutil.copytree(policies, tmp_path / "all" / "FocusedTopDown")
    g = {**grid, "offline": {**grid["offline"], "policies": str(tmp_path / "all" / "{env}"),
                             "datasets": {"expert": {"benchmark": "expert"}}}}
    (t,) = [t for t in expand(g, tmp_path / "y") if t.kind == "collect"]
    assert t.argv[2] == str(tmp_path / "all" / "FocusedTopDown")
    # allow_mismatch (sweep-wide, or per dataset): the datasets another CPU rounds differently are kept
    for offline, expected in [({"allow_mismatch": True}, True), ({}, False),
                              ({"allow_mismatch": True, "datasets": {"expert": {"benchmark": "expert",
                                                                               "allow_mismatch": False}}}, False)]:
        g = {**grid, "offline": {**grid["offline"], "policies": str(policies),
                                 "datasets": {"expert": {"benchmark": "expert"}}, **offline}}
        (t,) = [t for t in expand(g, tmp_path / "y") if t.kind == "collect"]
        assert ("--allow-mismatch" in t.argv) is expected
    with pytest.raises(GridError, match=r"^offline\.allow_mismatch: expected true or false, got 'yes'"):
        expand({**grid, "offline": {**grid["offline"], "allow_mismatch": "yes"}}, tmp_path / "x")
    bad = {**grid, "offline": {**grid["offline"], "datasets": {"expert": {"benchmark": "expert", "policies": str(policies),
                                                                          "allow_mismatch": 1}}}}
    with pytest.raises(GridError, match=r"^offline\.datasets\.expert\.allow_mismatch: expected true or false, got 1"):
        expand(bad, tmp_path / "x")
    g = {**grid, "environments": ["DiffuseTopDown-v0"]}
    with pytest.raises(GridError, match="is of SlateRec/FocusedTopDown-v0"):
        expand(g, tmp_path / "x")


@pytest.mark.parametrize("env", ["FocusedTopDown", "FocusedMixed", "FocusedDivPen", "DiffuseTopDown", "DiffuseMixed",
                                 "DiffuseDivPen"])
def test_the_shipped_policies_agree_with_the_reference_returns_and_rebuild_an_expert(env, tmp_path, capsys):
    from d3rlpy_adapters.benchmark import QUALITIES, shipped_policies
    from gym_slaterec.scores import reference_returns

    manifest = json.loads((shipped_policies(env) / "benchmark.json").read_text())
    ref = reference_returns()[env]
    assert manifest["env_id"] == f"SlateRec/{env}-v0"
    assert manifest["item_embeddings_fingerprint"].startswith(ref["item_matrix"])
    assert manifest["reference"]["expert_test"] == pytest.approx(ref["expert"], abs=0.01)
    assert manifest["reference"]["random"] == pytest.approx(ref["random"], abs=0.01)
    assert set(manifest["datasets"]["fingerprints"]["10000"]) == set(QUALITIES)  # medium-replay: the kept memory's
    # the collected datasets also have a record made on the other vendor's CPUs, medium-replay (a retraining) too
    vendors = {manifest["datasets"]["recorded_with"]["cpu_vendor"], *manifest["datasets"]["by_vendor"]}
    assert vendors == {"AuthenticAMD", "GenuineIntel"}
    intel = manifest["datasets"]["by_vendor"]["GenuineIntel"]
    assert set(intel["fingerprints"]["10000"]) == set(QUALITIES)
    assert set(intel["mean_returns"]["10000"]) == set(intel["fingerprints"]["10000"])
    assert intel["recorded_with"]["portable"] is True
    assert intel["fingerprints"]["10000"]["random"] == manifest["datasets"]["fingerprints"]["10000"]["random"]
    assert manifest["policies"]["medium"]["replay"] is None and manifest["policies"]["medium"]["episodes"] >= 5000
    assert main(["benchmark", "datasets", env, "--out", str(tmp_path), "--qualities", "expert", "--episodes", "6",
                 "--no-progress", "--json", "--native-arithmetic"]) == 0  # no child process: the returns are the point
    (row,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # six users of the expert: far above halfway between random and its test return (per-user spread ~50)
    assert row["episodes"] == 6 and row["mean_return"] > (ref["random"] + ref["expert"]) / 2


def test_a_run_trained_with_a_relative_gems_path_still_reads_it(run, tmp_path, monkeypatch):
    """Only a bundle's own copies (inside the run directory) are read relative to the run; a path a
    user gave relative to the working directory stays so (the demo trains with demo_output/gems.pt)."""
    from sb3_slate.runs import read_run

    config = json.loads((run / "config.json").read_text())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    shutil.copy2(config["gems"], tmp_path / "work" / "g.pt")
    shutil.copytree(run, tmp_path / "work" / "run")
    (tmp_path / "work" / "run" / "config.json").write_text(json.dumps({**config, "gems": "work/g.pt"}))
    _, cfg, _ = read_run("work/run")
    assert cfg.gems == "work/g.pt"
    assert main(["evaluate", ENV, "--policy", "work/run", "--episodes", "2", "--json"]) == 0


def test_benchmark_datasets_compute_with_the_portable_kernels(tmp_path, capsys):
    """`benchmark datasets` runs itself again in a child process started with the kernels that round
    alike on x86-64 CPUs with AVX2 (ATen's generic ones, MKL's AVX2 path, one thread), its output
    passed through; the datasets record it. --native-arithmetic computes in this process."""
    import torch

    from gym_slaterec.core.portable import cpu_vendor, is_portable

    args = ["benchmark", "datasets", "FocusedTopDown", "--qualities", "random", "--episodes", "3", "--no-progress",
            "--json"]
    assert main([*args, "--out", str(tmp_path / "p")]) == 0
    (row,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # printed by the child
    portable = LoggedDataset.load(tmp_path / "p" / "FocusedTopDown" / "random")
    assert row["fingerprint"] == portable.fingerprint
    assert portable.provenance["benchmark"]["arithmetic"] == {"portable": True, "cpu_capability": "DEFAULT",
                                                              "mkl_cbwr": "AVX2", "threads": 1,
                                                              "cpu_vendor": cpu_vendor()}
    assert main([*args, "--out", str(tmp_path / "n"), "--native-arithmetic"]) == 0
    native = LoggedDataset.load(tmp_path / "n" / "FocusedTopDown" / "random")
    assert native.provenance["benchmark"]["arithmetic"]["portable"] is is_portable()
    assert native.provenance["benchmark"]["arithmetic"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert native.fingerprint == portable.fingerprint  # the random policy: no torch arithmetic in its datasets
    # the child's refusal and exit status come back as the command's own
    assert main([*args, "--out", str(tmp_path / "p")]) == 2
    assert "exists" in capsys.readouterr().err
