"""The documentation's examples work as written: every ``slaterec`` command in the README's and
docs' code blocks parses with the current command line (no stale flag or sub-command), the
cheap ones run, and every YAML grid shown in the docs expands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from gym_slaterec.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def code_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, text) of every fenced code block of a Markdown file."""
    return re.findall(r"```(\w*)\n(.*?)```", path.read_text(), re.S)


def commands(path: Path) -> list[str]:
    """The ``slaterec ...`` commands of the shell blocks, continuation lines joined, comments cut."""
    found = []
    for lang, text in code_blocks(path):
        if lang not in ("bash", "sh", "shell", ""):
            continue
        for line in re.sub(r"\\\n\s*", " ", text).splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("slaterec "):
                found.append(line)
    return found


EXAMPLES = [(p.name, c) for p in DOCS for c in commands(p)]


def test_the_docs_show_commands():
    assert len(EXAMPLES) >= 20, EXAMPLES


@pytest.mark.parametrize("doc, command", EXAMPLES, ids=[f"{d}:{c[:60]}" for d, c in EXAMPLES])
def test_every_documented_command_parses(doc, command):
    argv = shlex.split(command)[1:]
    if any(part.startswith(("$", "<")) or "..." in part for part in argv):
        pytest.skip("a placeholder, not a command")
    parser = build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{doc}: `{command}` does not parse (exit {exc.code})")


def test_the_cheap_documented_commands_run(capsys):
    assert main(["envs"]) == 0
    assert "FocusedTopDown" in capsys.readouterr().out
    assert main(["evaluate", "FocusedTopDown-v0", "--policy", "oracle", "--episodes", "20", "--seed", "0",
                 "--json"]) == 0


def test_every_documented_grid_expands(tmp_path, monkeypatch):
    from gym_slaterec import trackers
    from slaterec_lab.grid import expand

    monkeypatch.setattr(trackers, "EXTRAS", {})  # a documented grid may name a tracker not installed here

    grids = [yaml.safe_load(text) for p in DOCS for lang, text in code_blocks(p) if lang in ("yaml", "yml")]
    grids = [g for g in grids if isinstance(g, dict) and "methods" in g]
    assert grids, "docs/experiments.md shows a grid"
    for g in grids:
        assert expand(g, tmp_path), g
