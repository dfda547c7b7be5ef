"""End to end: ``scripts/train_mlp.py`` in a subprocess writes a complete, valid run folder."""

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_mlp.py"
FILES = (
    "config.json",
    "metrics.json",
    "history.csv",
    "params.npz",
    "curves.png",
    "decision_regions.png",
    "checkpoint.npz",
)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("mlp") / "run"
    proc = _run("--epochs", "20", "--features", "4", "--out", str(out))
    return out, proc


def test_exit_status_and_printout(run_dir: tuple) -> None:
    out, proc = run_dir
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and f"run folder: {out}" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_all_files_exist(run_dir: tuple) -> None:
    out, _ = run_dir
    for name in FILES:
        assert (out / name).is_file(), name


def test_metrics_and_config(run_dir: tuple) -> None:
    out, _ = run_dir
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("train_accuracy", "test_accuracy", "final_loss", "test_loss"):
        assert isinstance(metrics[key], float), key
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["final_loss"] > 0
    assert "per_seed" not in metrics  # many seeds are a sweep
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 20 and config["features"] == 4 and config["hidden"] == 10
    assert config["steps"] == 20 * 8 and config["decay_steps"] == 16.0
    assert config["versions"]["numpy"] == np.__version__


def test_seeds_points_to_the_sweep(tmp_path: Path) -> None:
    proc = _run("--seeds", "20", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and not (tmp_path / "run").exists()
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "scripts/sweep.py mlp --seeds 0-19" in proc.stderr


def test_history_has_one_row_per_epoch(run_dir: tuple) -> None:
    out, _ = run_dir
    lines = (out / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert {"epoch", "train_loss", "train_accuracy", "test_accuracy"} <= set(header)
    assert len(lines) == 1 + 21
    epochs = [float(line.split(",")[header.index("epoch")]) for line in lines[1:]]
    assert epochs == [float(e) for e in range(21)]


def test_params_npz(run_dir: tuple) -> None:
    out, _ = run_dir
    with np.load(out / "params.npz") as f:
        shapes = {k: f[k].shape for k in f.files}
    assert shapes == {"W1": (4, 10), "b1": (10,), "W2": (10, 3), "b2": (3,)}


@pytest.mark.parametrize("name", ["curves.png", "decision_regions.png"])
def test_pngs_are_valid(run_dir: tuple, name: str) -> None:
    out, _ = run_dir
    data = (out / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    img = matplotlib.image.imread(out / name)
    height, width = img.shape[:2]
    assert 300 <= height <= 2000 and 500 <= width <= 2500, img.shape
    assert img[..., :3].std() > 0.05  # not a blank canvas


BAD_OPTIONS = [
    (["--lr", "-1"], "lr: expected a positive finite number"),
    (["--batch-size", "0"], "batch_size: expected a positive integer"),
    (["--batch-size", "1000"], "batch_size: expected at most the 120 training samples"),
    (["--features", "3"], "argument --features: invalid choice"),
    (["--epochs", "0"], "epochs: expected a positive integer"),
    (["--hidden", "0"], "hidden: expected a positive integer"),
    (["--lr", "abc"], "argument --lr: invalid float value"),
]


def _check_one_line_error(code: object, stderr: str, message: str) -> None:
    assert code == 2
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("train_mlp.py: error: ") and message in lines[0]


@pytest.mark.parametrize(("args", "message"), BAD_OPTIONS)
def test_bad_options_exit_2_with_one_line(tmp_path: Path, args: list, message: str) -> None:
    """The script, run as a user runs it: one line on stderr, exit 2, nothing written."""
    proc = _run(*args, "--out", str(tmp_path / "run"))
    _check_one_line_error(proc.returncode, proc.stderr, message)
    assert proc.stdout == "" and not (tmp_path / "run").exists()


def test_resume_continues_to_the_new_total_bit_identical(tmp_path: Path) -> None:
    # constant learning rate: the schedule does not depend on the total number of epochs
    common = ("--schedule", "constant", "--checkpoint-every", "10")
    full, short = tmp_path / "full", tmp_path / "short"
    assert _run(*common, "--epochs", "60", "--out", str(full)).returncode == 0
    assert _run(*common, "--epochs", "20", "--out", str(short)).returncode == 0
    proc = _run("--resume", str(short), "--epochs", "60")
    assert proc.returncode == 0, proc.stderr
    assert "resuming" in proc.stdout and "at step 160 of 480" in proc.stdout
    a, b = np.load(full / "params.npz"), np.load(short / "params.npz")
    for k in ("W1", "b1", "W2", "b2"):
        assert np.array_equal(a[k], b[k]), k
    assert (full / "history.csv").read_text() == (short / "history.csv").read_text()
    assert json.loads((short / "config.json").read_text())["epochs"] == 60


def test_resume_refuses_other_options_and_missing_runs(run_dir: tuple, tmp_path: Path) -> None:
    out, _ = run_dir
    proc = _run("--resume", str(out), "--lr", "0.5", "--hidden", "3")
    _check_one_line_error(proc.returncode, proc.stderr, "only --epochs may be given")
    assert "--hidden --lr" in proc.stderr or "--lr --hidden" in proc.stderr
    proc = _run("--resume", str(tmp_path / "missing"))
    _check_one_line_error(proc.returncode, proc.stderr, "no run folder")
