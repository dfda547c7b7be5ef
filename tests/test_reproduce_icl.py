"""``scripts/reproduce_icl.py`` end to end (a reduced run) and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_icl.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )


def test_reduced_run_writes_the_results_and_says_where(tmp_path: Path) -> None:
    out = tmp_path / "icl"
    small = ["--d", "2", "--N", "5", "--steps", "200", "--n-test", "300", "--n-gd", "100"]
    done = _run("--out", str(out), "--seeds", "0-1", "--workers", "1", *small)
    assert done.returncode == 0, done.stderr
    assert f"output folder: {out}" in done.stdout
    assert "identity, seed 1: rel_error" in done.stdout  # progress, a line per run
    results = json.loads((out / "results.json").read_text())
    runs = [(r["covariance"], r["seed"]) for r in results["runs"]]
    assert runs == [("identity", 0), ("identity", 1), ("spread", 0), ("spread", 1)]
    for r in results["runs"]:  # each run in its own folder of the sweep, metrics last
        folder = out / r["run_dir"]
        assert folder.parent == out / "sweep" / "runs"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["rel_error"] == r["rel_error"] and metrics["seed"] == r["seed"]
    for name in ("results.md", "rel_error.png", "length.png", "gd.png", "shift.png"):
        assert (out / name).read_bytes()[:4] in (b"# In", b"\x89PNG")
    again = _run("--out", str(out), "--seeds", "0", "--workers", "0", *small)
    assert again.returncode == 2 and "holds a run" in again.stderr, again.stderr
    assert again.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--seeds", "3-1"], "argument --seeds: invalid seed_range value: '3-1'"),
        (["--steps", "0"], "error: steps: expected a positive integer, received 0"),
        (["--sigma", "-1"], "error: sigma: expected a positive finite number, received -1.0"),
        (["--workers", "-1"], "--workers: expected an integer >= 0 without --scheduler"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, args: list, match: str) -> None:
    done = _run("--out", str(tmp_path / "x"), "--n-test", "10", *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and match in done.stderr, done.stderr
    assert done.stdout == ""
