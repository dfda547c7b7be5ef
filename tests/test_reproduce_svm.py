"""``scripts/reproduce_svm.py``: a reduced run end to end, the options reaching each study, and
the one-line errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("cvxpy")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_svm.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )


def _script():
    spec = importlib.util.spec_from_file_location("reproduce_svm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reduced_rank_run_writes_the_results(tmp_path: Path) -> None:
    out = tmp_path / "svm"
    done = _run("--out", str(out), "--studies", "rank", "--instances", "1", "--workers", "0")
    assert done.returncode == 0, done.stderr
    assert f"results: {out / 'rank' / 'results.md'}" in done.stdout
    points = json.loads((out / "rank" / "results.json").read_text())["points"]
    assert len(points) == 24 and {p["n"] for p in points} == {5, 10, 15}
    assert (out / "rank" / "svm_rank.png").read_bytes()[:4] == b"\x89PNG"


def test_options_reach_each_study(tmp_path: Path, monkeypatch, capsys) -> None:
    from attnlab.studies import svm_kq_report, svm_multi_token_report, svm_rank

    calls = {}

    def fake(name: str):
        def reproduce(out, **kwargs):
            calls[name] = (Path(out), kwargs)
            Path(out).mkdir(parents=True)
            (Path(out) / "results.md").write_text("#")
            return {}, [Path(out) / "results.md"]

        return reproduce

    monkeypatch.setattr(svm_kq_report, "reproduce", fake("kq"))
    monkeypatch.setattr(svm_multi_token_report, "reproduce", fake("multi"))
    monkeypatch.setattr(svm_rank, "reproduce", fake("rank"))
    args = ["--out", str(tmp_path), "--seeds", "7", "--steps", "300", "--long-steps", "900"]
    args += ["--worst", "2", "--kept", "11", "--instances", "5", "--workers", "1"]
    assert _script().main(args) == 0
    kq_out, kq = calls["kq"]
    assert kq_out == tmp_path / "kq"
    assert (kq["seeds"], kq["steps"], kq["long_steps"], kq["worst"]) == (7, 300, 900, 2)
    assert calls["multi"][0] == tmp_path / "multi_token" and calls["multi"][1]["kept"] == 11
    assert calls["rank"][1]["instances"] == 5
    assert all(kwargs["workers"] == 1 for _, kwargs in calls.values())
    assert "results:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--studies", "kq,svm"], "argument --studies: invalid studies value: 'kq,svm'"),
        (["--seeds", "0"], "--seeds: expected a positive integer, received 0"),
        (["--long-steps", "-3"], "--long-steps: expected a positive integer, received -3"),
        (["--workers", "-1"], "--workers: expected an integer >= 0 without --scheduler"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, args: list, match: str) -> None:
    done = _run("--out", str(tmp_path / "x"), *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and match in done.stderr, done.stderr
    assert done.stdout == ""


def test_out_is_required(tmp_path: Path) -> None:
    done = _run("--studies", "rank")
    assert done.returncode == 2 and "--out" in done.stderr
