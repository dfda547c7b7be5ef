"""The README's Quickstart has exactly two one-line commands, and CI runs the test one verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```\n(.*?)```", section, flags=re.S)]


def test_quickstart_has_two_single_line_commands() -> None:
    commands = _quickstart_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands), commands
    demo, tests = commands
    assert demo.startswith("python3 -m venv .venv && ") and "scripts/" in demo
    assert tests.startswith("python3 -m venv .venv && ") and "-m pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    ci = ROOT / ".ci" / "run"
    lines = ci.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in lines
    assert _quickstart_commands()[1] in lines
    assert ci.stat().st_mode & 0o111, ".ci/run is not executable"
