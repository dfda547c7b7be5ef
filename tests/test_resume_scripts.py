"""``scripts/train_attention.py --resume``: a run stopped (SIGKILL, Ctrl-C, or a smaller
``--steps``) and resumed ends bit-identical to an uninterrupted run with the same options."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mlp.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train_attention.py"
# prompt attention trains fast; evaluations and checkpoints every 20 steps
OPTIONS = ("--attention", "prompt", "--eval-every", "20", "--batch-size", "32")
STEPS = 1000


def _train(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(TRAIN), *args], capture_output=True, text=True, timeout=180
    )
    return proc


def _same_run(a: Path, b: Path) -> None:
    """Bit-identical parameters, history and attention snapshots."""
    pa, pb = np.load(a / "params.npz"), np.load(b / "params.npz")
    assert sorted(pa.files) == sorted(pb.files)
    for k in pa.files:
        assert np.array_equal(pa[k], pb[k]), f"parameter {k} differs"
    assert (a / "history.csv").read_text() == (b / "history.csv").read_text()
    sa, sb = np.load(a / "snapshots.npz"), np.load(b / "snapshots.npz")
    for k in sa.files:
        assert np.array_equal(sa[k], sb[k]), f"snapshots {k} differ"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    proc = _train(*OPTIONS, "--steps", str(STEPS), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(TRAIN), *OPTIONS, "--steps", str(STEPS), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_checkpoint(proc: subprocess.Popen, path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


def test_sigkill_mid_training_then_resume_is_bit_identical(
    uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    proc = _start(out)
    _wait_for_checkpoint(proc, out / "checkpoint.npz")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL  # killed, not finished
    _, _, meta, _ = load_checkpoint(out / "checkpoint.npz")
    assert 0 < meta["step"] < STEPS
    assert not (out / "params.npz").exists()  # the run never reached its end

    proc = _train("--resume", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {out} at step {meta['step']} of {STEPS}" in proc.stdout
    _same_run(uninterrupted, out)


def test_ctrl_c_then_resume_is_bit_identical(uninterrupted: Path, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    proc = _start(out)
    _wait_for_checkpoint(proc, out / "checkpoint.npz")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"checkpoint saved to {out / 'checkpoint.npz'}" in stderr
    assert f"--resume {out}" in stderr
    proc = _train("--resume", str(out))
    assert proc.returncode == 0, proc.stderr
    _same_run(uninterrupted, out)


def test_steps_is_the_total_a_short_run_continues_to_it(
    uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "short"
    proc = _train(*OPTIONS, "--steps", "700", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    proc = _train("--resume", str(out), "--steps", str(STEPS))
    assert proc.returncode == 0, proc.stderr
    assert f"at step 700 of {STEPS}" in proc.stdout
    params_a, params_b = np.load(uninterrupted / "params.npz"), np.load(out / "params.npz")
    for k in params_a.files:  # the evaluation rows differ (eval_every came from 700 steps)
        assert np.array_equal(params_a[k], params_b[k]), k


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--lr", "1"], "only --steps may be given, received --lr"),
        (["--attention", "kq", "--seed", "2"], "received --attention --seed"),
        (["--steps", "10"], "steps: expected at least the checkpoint's step"),
    ],
)
def test_resume_refuses_other_options(uninterrupted: Path, args: list[str], named: str) -> None:
    proc = _train("--resume", str(uninterrupted), *args)
    assert proc.returncode == 2
    assert named in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_resume_of_a_missing_or_garbled_run_exits_2(tmp_path: Path) -> None:
    proc = _train("--resume", str(tmp_path / "nothing"))
    assert proc.returncode == 2 and "no run folder" in proc.stderr
    assert "Traceback" not in proc.stderr

    out = tmp_path / "garbled"
    proc = _train(*OPTIONS, "--steps", "40", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = (out / "checkpoint.npz").read_bytes()
    (out / "checkpoint.npz").write_bytes(data[: len(data) // 2])
    proc = _train("--resume", str(out), "--steps", "80")
    assert proc.returncode == 2
    assert "checkpoint.npz" in proc.stderr and "truncated" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
