"""The training scripts against a careful user and an adversarial tester, in subprocesses: a
folder that holds a run, paths that cannot be folders, a divergence, links in a run folder and
Ctrl-C during start-up each end in one line with the documented exit status (2, 1, 130), and
nothing is written through a link."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train_attention.py"
TRAIN_MLP = ROOT / "scripts" / "train_mlp.py"
PLOT = ROOT / "scripts" / "plot_attention.py"
EVAL = ROOT / "scripts" / "eval_iris_in_context.py"
SHORT = ("--attention", "prompt", "--steps", "20", "--eval-every", "10")


def _run(script: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=180, cwd=cwd
    )


def _one_line(proc: subprocess.CompletedProcess, status: int, *words: str) -> None:
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    proc = _run(TRAIN, *SHORT, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_a_folder_that_holds_a_run_is_refused_and_left_alone(finished: Path) -> None:
    before = {p.name: p.read_bytes() for p in finished.iterdir()}
    proc = _run(TRAIN, *SHORT, "--lr", "0.5", "--out", str(finished))
    _one_line(proc, 2, f"{finished} already holds a run", "resume it, or choose another folder")
    assert {p.name: p.read_bytes() for p in finished.iterdir()} == before


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("", "argument --out: expected a folder, received an empty path"),
        ("file", "exists and is not a folder"),
        ("file/run", "a part of this path is a file"),
    ],
)
def test_an_out_that_cannot_be_a_folder_is_one_line(
    tmp_path: Path, where: str, message: str
) -> None:
    (tmp_path / "file").write_text("in the way")
    out = str(tmp_path / where) if where else ""
    _one_line(_run(TRAIN_MLP, "--epochs", "1", "--out", out, cwd=tmp_path), 2, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_default_folders_of_parallel_runs_never_collide(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, str(TRAIN_MLP), "--epochs", "1"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e for _, e in outs]
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 3
    for folder in folders:
        assert json.loads((folder / "metrics.json").read_text())["stop_reason"] == "completed"


def test_a_divergence_is_exit_1_and_recorded(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _run(TRAIN, "--steps", "1", "--lr", "1e200", "--out", str(out))
    _one_line(proc, 1, "training diverged", "Try a smaller --lr")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stop_reason"] == "diverged" and "diverged" in metrics["message"]


def test_resume_replaces_a_linked_metrics_json_instead_of_writing_through_it(
    finished: Path, tmp_path: Path
) -> None:
    import shutil

    run = Path(shutil.copytree(finished, tmp_path / "run"))
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (run / "metrics.json").unlink()
    (run / "metrics.json").symlink_to(outside)
    (run / "attention_map.png").unlink()
    (run / "attention_map.png").symlink_to(outside)
    proc = _run(TRAIN, "--resume", str(run), "--steps", "30")
    assert proc.returncode == 0, proc.stderr
    assert outside.read_text() == "precious"
    assert not (run / "metrics.json").is_symlink() and not (run / "attention_map.png").is_symlink()
    assert json.loads((run / "metrics.json").read_text())["steps"] == 30

    (run / "attention_map.png").unlink()
    (run / "attention_map.png").symlink_to(outside)
    proc = _run(PLOT, str(run))
    assert proc.returncode == 0, proc.stderr
    assert outside.read_text() == "precious" and not (run / "attention_map.png").is_symlink()


@pytest.mark.parametrize("name", ["checkpoint.npz", "config.json"])
def test_a_linked_file_of_another_run_is_refused(finished: Path, tmp_path: Path, name: str) -> None:
    import shutil

    run = Path(shutil.copytree(finished, tmp_path / "run"))
    (run / name).unlink()
    (run / name).symlink_to(finished / name)
    _one_line(_run(TRAIN, "--resume", str(run), "--steps", "30"), 2, f"{name} is a link")


def test_plot_attention_on_a_snapshot_file_missing_an_array_is_one_line(
    finished: Path, tmp_path: Path
) -> None:
    import numpy as np

    with np.load(finished / "snapshots.npz") as f:
        snap = {k: f[k] for k in f.files if k != "target"}
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "params.npz"):
        (run / name).write_bytes((finished / name).read_bytes())
    np.savez(run / "snapshots.npz", **snap)
    _one_line(_run(PLOT, str(run)), 2, "snapshots.npz lacks the arrays ['target']")


@pytest.mark.parametrize(
    ("script", "args"),
    [
        (TRAIN, ("--attention", "prompt", "--steps", "100000")),
        (EVAL, ("--seeds", "3", "--attention", "prompt", "--features", "2")),
    ],
    ids=["train_attention", "eval_iris_in_context"],
)
@pytest.mark.parametrize("delay", [0.25, 0.6, 1.2])
def test_ctrl_c_during_start_up_is_one_line_and_status_130(
    tmp_path: Path, script: Path, args: tuple[str, ...], delay: float
) -> None:
    """A fraction of a second in, the script is importing (numpy, matplotlib) or starting its
    work (the sweep of eval_iris_in_context starts its Dask cluster): one line says so, after
    at most the lines of a progress bar, and no process prints a traceback."""
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and "interrupted" in lines[-1], stderr
    assert all(re.search(r"\| *\d+/\d+ \[", line) for line in lines[:-1]), stderr
