"""One configuration path: typed agent configs, the method table, old config.json files."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from sb3_slate import agent_configs
from sb3_slate.methods import METHOD_TABLE, METHODS, RunConfig, artifacts_needed, resolve_config

ENV = "SlateRec/FocusedTopDown-v0"
ROOT = Path(__file__).resolve().parents[1]
LEGACY = json.loads((Path(__file__).parent / "data" / "legacy_configs.json").read_text())
#: the key names before typed configs, per regime
RENAMES = {"window": {"batch_size": "batch_transitions", "buffer_size": "buffer_transitions"},
           "episode": {"batch_size": "batch_episodes", "buffer_size": "buffer_episodes",
                       "gradient_steps": "updates_per_episode"}}


def config_classes() -> list[type]:
    from d3rlpy_adapters.offline import OfflineConfig

    return sorted({r.config for m in METHOD_TABLE.values() for r in m.regimes.values()}
                  | {agent_configs.BeliefConfig, OfflineConfig}, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", config_classes(), ids=lambda c: c.__name__)
def test_every_setting_is_documented_checked_and_its_default_passes(cls):
    cfg = cls()
    cfg.check()
    for f in dataclasses.fields(cls):
        assert f.metadata.get("doc") and len(f.metadata["doc"]) > 10, f"{cls.__name__}.{f.name} has no documentation"
        what, ok = f.metadata["check"]
        assert ok(getattr(cfg, f.name)) and isinstance(what, str)
    if dataclasses.fields(cls):
        name = dataclasses.fields(cls)[0].name
        with pytest.raises(ValueError, match=f"agent.{name} must be"):
            cls.from_dict({name: "not a value"})
    with pytest.raises(ValueError, match="unknown setting agent.gama"):
        cls.from_dict({"gama": 0.9})


def test_keys_say_what_they_count_in_every_regime():
    transitions = {f.name for c in (agent_configs.WindowSACConfig, agent_configs.SlateQConfig, agent_configs.TQCConfig,
                                    agent_configs.CrossQConfig) for f in dataclasses.fields(c)}
    episodes = {f.name for f in dataclasses.fields(agent_configs.EpisodeSACConfig)}
    assert {"batch_transitions", "buffer_transitions"} <= transitions and "batch_size" not in transitions
    assert {"batch_episodes", "buffer_episodes", "updates_per_episode"} <= episodes
    assert not episodes & {"batch_size", "buffer_size", "gradient_steps", "batch_transitions"}


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_config_json_of_the_previous_layout_loads_as_written(name):
    """config.json files written by the previous release (tests/data/legacy_configs.json: old
    key names, no config_schema) read as the configuration resolved today from the same settings."""
    case = LEGACY[name]
    old = case["config.json"]
    cfg = RunConfig.from_json(old)
    cfg.validate()
    rename = RENAMES.get(old["replay"], {})
    over = {k: v for k, v in old.items() if k not in ("method", "env_id", "agent", "belief", "replay")}
    over["agent"] = {rename.get(k, k): v for k, v in old["agent"].items()}
    now = resolve_config(case["method"], ENV, over, preset=case["preset"])
    assert cfg.to_dict() == now.to_dict()
    assert cfg.config_schema == 2 and "config_schema" not in old


def test_an_unfinished_run_of_the_previous_layout_resumes(tmp_path, monkeypatch):
    from sb3_slate.runs import Run, train_run

    old = LEGACY["sac-topk-ideal-window"]["config.json"]
    cfg = RunConfig.from_json(old)
    out = tmp_path / "run"
    original = Run.save_checkpoint

    def stop_after_episode_4(self, name):
        original(self, name)
        if name == "last" and self.state["episodes"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(Run, "save_checkpoint", stop_after_episode_4)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, out, progress=False)
    monkeypatch.setattr(Run, "save_checkpoint", original)
    (out / "config.json").write_text(json.dumps(old, indent=2))  # as the previous release wrote it
    res = train_run(cfg, out, progress=False)
    assert [v["episodes"] for v in res["validation"]] == [0, 4, 8, 12] and res["budget"]["episodes"] == 12
    # another configuration is still told apart from the old file
    changed = RunConfig.from_json({**old, "agent": {**old["agent"], "batch_size": 8}})
    assert changed.agent.batch_transitions == 8 and changed.to_dict() != cfg.to_dict()


def test_old_key_names_in_new_settings_are_refused_with_the_new_name():
    with pytest.raises(ValueError, match=r"agent.buffer_size is now agent.buffer_transitions"):
        resolve_config("slateq", ENV, {"agent": {"buffer_size": 10}}, preset="window")
    with pytest.raises(ValueError, match=r"agent.gradient_steps is now agent.updates_per_episode"):
        resolve_config("sac-topk-ideal", ENV, {"agent": {"gradient_steps": 2}}, preset="paper")
    with pytest.raises(ValueError, match="config_schema 7"):
        RunConfig.from_json({**LEGACY["random"]["config.json"], "config_schema": 7})
    with pytest.raises(ValueError, match=r"preset 'window' is the 'window' regime, which recurrentppo-gems does not have "
                                         r"\(its regimes: rollout\)"):
        resolve_config("recurrentppo-gems", ENV, {"gems": "g.pt"}, preset="window")
    with pytest.raises(ValueError, match="slateq trains in regime 'window' or 'episode', not replay='rollout'"):
        resolve_config("slateq", ENV, {"replay": "rollout"})


def test_the_method_table_is_the_only_place_methods_are_told_apart():
    """No ``method == "..."`` string checks outside sb3_slate/methods.py."""
    pattern = re.compile(r"""method\w*\s*(==|!=|in)\s*[(\[{]?\s*["'](sac|reinforce|slateq|random|oracle|tqc|crossq|recurrent)""")
    pattern_dict = re.compile(r"""\{\s*["'](sac-gems|sac-topk-ideal|sac-wknn)["']\s*:""")
    offenders = []
    for pkg in ("gym_slaterec", "sb3_slate", "d3rlpy_adapters", "slaterec_lab"):
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name == "methods.py" and path.parent.name == "sb3_slate":
                continue
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) or pattern_dict.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_artifacts_each_method_needs_come_from_the_table():
    assert artifacts_needed("sac-gems") == ("gems",)
    assert artifacts_needed("sac-wknn") == ("mf",) and artifacts_needed("sac-wknn", {"embeddings": "ideal"}) == ()
    assert artifacts_needed("tqc-gems") == ("gems",) and artifacts_needed("recurrentppo-topk-ideal") == ()
    for name in METHODS:
        for need in artifacts_needed(name):
            with pytest.raises(ValueError, match=f"{name} needs"):
                resolve_config(name, ENV, {})


def test_methods_command_lists_the_table_and_a_methods_settings(capsys):
    from gym_slaterec.cli import main

    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in METHODS)
    assert main(["methods", "sac-gems"]) == 0
    shown = capsys.readouterr().out
    for key in ("agent.batch_episodes = 20", "agent.batch_transitions = 64", "belief.hidden_size = 20", "needs: gems"):
        assert key in shown


def test_a_recurrent_ppo_run_is_collected_into_a_dataset(tmp_path):
    """sb3-contrib's RecurrentPPO carries its LSTM state through collection like the episode SAC its belief."""
    from d3rlpy_adapters.collect import collect
    from sb3_slate.runs import train_run

    cfg = resolve_config("recurrentppo-topk-ideal", ENV, {
        "episodes": 8, "n_envs": 4, "val_every": 4, "val_users": 4, "test_users": 4, "checkpoint_every": 0,
        "env_kwargs": {"episode_length": 10}, "agent": {"rollout_turns": 10, "batch_transitions": 20, "net_arch": [16]}})
    train_run(cfg, tmp_path / "run", progress=False)
    data = collect(ENV, tmp_path / "run", 6, 11, tmp_path / "data", progress=False, env_kwargs={"episode_length": 10})
    assert data.num_episodes == 6 and data.provenance["policy"]["method"] == "recurrentppo-topk-ideal"
    assert np.all(data.returns() >= 0) and data.returns().sum() > 0
