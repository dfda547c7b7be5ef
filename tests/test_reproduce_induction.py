"""``scripts/reproduce_induction.py`` end to end (a tiny run) and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_induction.py"
TINY = ["--set", "steps=20", "--set", "context=10", "--set", "n_test=20", "--set", "n_curve=10",
        "--set", "n_probe=4", "--baseline-sequences", "100"]  # fmt: skip


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_a_tiny_run_writes_the_results_and_says_where(tmp_path: Path) -> None:
    out = tmp_path / "induction"
    done = _run("--out", str(out), "--seeds", "4", "--workers", "0", *TINY)
    assert done.returncode == 0, done.stderr
    assert f"output folder: {out}" in done.stdout
    assert "stack relative-key, seed 4: plateau_kl" in done.stdout  # a line per run
    assert "targets met:" in done.stdout
    results = json.loads((out / "results.json").read_text())
    assert [r["seed"] for r in results["runs"]] == [4, 4, 4]
    assert all(r["steps"][-1] == 20 for r in results["runs"])
    again = _run("--out", str(out), "--seeds", "4", "--workers", "0", *TINY)
    assert again.returncode == 2 and "holds a run" in again.stderr, again.stderr
    assert again.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--seeds", "3-1"], "argument --seeds: seeds: expected A-B with 0 <= A <= B"),
        (["--workers", "-1"], "--workers: expected an integer >= 0 without --scheduler"),
        (["--set", "bogus=1"], "argument --set: expected KEY=VALUE with KEY one of states"),
        (["--set", "model=minimal"], "argument --set: expected KEY=VALUE with KEY one of"),
        (["--set", "context=7"], "error: context: expected an even number of tokens >= 4"),
        (["--set", "steps=x"], "error: steps: expected a positive integer, received 'x'"),
        (["--set", "snapshot_every=7"], "error: snapshot_every: expected a multiple of"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, args: list, match: str) -> None:
    done = _run("--out", str(tmp_path / "x"), *args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and match in done.stderr, done.stderr
    assert done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing was made
