"""``scripts/reproduce_icl_depth.py`` end to end (a tiny run: 10 updates of 8 prompts, L = 1, 2,
one seed) and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_icl_depth.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )


def test_tiny_reproduction_writes_the_results_and_says_where(tmp_path: Path) -> None:
    out = tmp_path / "depth"
    tiny = ["--steps", "10", "--batch-size", "8", "--n-test", "200", "--layers", "1,2"]
    done = _run("--out", str(out), "--seeds", "0", "--workers", "0", *tiny)
    assert done.returncode == 0, done.stderr
    assert f"output folder: {out}" in done.stdout and "checks hold;" in done.stdout
    results = json.loads((out / "results.json").read_text())
    runs = [(r["variant"], r["covariance"], r["layers"]) for r in results["runs"]]
    assert runs == [("full", "identity", 2), ("full", "rotated", 2), ("gd", "identity", 1),
                    ("gd", "identity", 2), ("gd", "rotated", 1), ("gd", "rotated", 2)]  # fmt: skip
    for r in results["runs"]:
        folder = out / r["run_dir"]
        config = json.loads((folder / "config.json").read_text())
        assert (config["steps"], config["batch_size"], config["n_test"]) == (10, 8, 200)
        assert config["whiten"] is True and config["trust"] is (r["variant"] == "full")
    assert [o["layers"] for o in results["gd_optimal"]] == [1, 2]
    for name in ("results.md", "loss_vs_depth.png", "params/full_rotated_L2.png"):
        assert (out / name).read_bytes()[:4] in (b"# In", b"\x89PNG")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--layers", "0,2"], "argument --layers: invalid layer_list value: '0,2'"),
        (["--steps", "0"], "error: steps: expected a positive integer, received 0"),
        (["--workers", "-1"], "--workers: expected an integer >= 0 without --scheduler"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, args: list, match: str) -> None:
    done = _run("--out", str(tmp_path / "x"), *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and match in done.stderr, done.stderr
    assert done.stdout == ""
