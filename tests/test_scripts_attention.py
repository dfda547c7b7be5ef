"""End to end: ``scripts/train_attention.py`` and ``scripts/plot_attention.py`` in subprocesses.

One short demo run (self attention, 60 steps) is shared by the tests of its run folder; the
attention weights and metrics it saved are recomputed here from the saved parameters with plain
numpy (an independent softmax of ``X^T W X``), not with the library's code.
"""

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from PIL import Image

from attnlab.blocks.readout import weight_on_target
from attnlab.plots import plot_attention_maps, plot_target_weight
from attnlab.studies.attention import load, prepare, resolve
from attnlab.tasks import make_task
from mlp.train.checkpoint import load_checkpoint
from mlp.train.folders import RunFolderError

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train_attention.py"
PLOT = ROOT / "scripts" / "plot_attention.py"
EVAL = ROOT / "scripts" / "eval_iris_in_context.py"
FILES = (
    "config.json",
    "metrics.json",
    "history.csv",
    "params.npz",
    "snapshots.npz",
    "checkpoint.npz",
    "curves.png",
    "attention_map.png",
    "attention_over_training.png",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(script: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout
    )


def _assert_png(path: Path, min_side: int = 300) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert len(data) > 10_000, f"{path.name} is only {len(data)} bytes"
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4), img.shape
    assert min(img.shape[:2]) >= min_side, img.shape
    assert img[..., :3].std() > 0.05, f"{path.name} is (almost) blank"


def _softmax_tokens(scores: np.ndarray) -> np.ndarray:
    """Softmax over the token axis 1 of ``(n, c, j)`` scores, written out again here."""
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("attention") / "run"
    proc = _run(TRAIN, "--steps", "60", "--eval-every", "20", "--out", str(out))
    return out, proc


# --- the run folder ------------------------------------------------------------------------


def test_exit_status_and_printout(demo: tuple) -> None:
    out, proc = demo
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout
    assert "attention on the marked token" in proc.stdout
    assert f"run folder: {out}" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_all_files_exist_and_figures_are_valid_pngs(demo: tuple) -> None:
    out, _ = demo
    for name in FILES:
        assert (out / name).is_file(), name
    for name in ("curves.png", "attention_map.png", "attention_over_training.png"):
        _assert_png(out / name)


def test_config_holds_every_option_and_the_model(demo: tuple) -> None:
    out, _ = demo
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "iris-in-context" and config["steps"] == 60
    assert config["eval_every"] == 20 and config["checkpoint_every"] == 20
    for key in ("attention", "pool", "head", "features", "context", "optimizer", "lr",
                "batch_size", "seed"):  # fmt: skip
        assert config[key] is not None, key
    assert config["model"]["d"] == 6 and config["model"]["n_classes"] == 3
    assert config["class_names"] == ["setosa", "versicolor", "virginica"]


def test_metrics_match_the_saved_parameters(demo: tuple) -> None:
    """Recompute attention on target and test accuracy from params.npz with plain numpy."""
    out, _ = demo
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "attention_on_target", "train_accuracy", "final_loss"):
        assert isinstance(metrics[key], float), key
    assert config["attention"] == "self" and config["head"] == "mlp"
    with np.load(out / "params.npz") as f:
        P = {k: f[k] for k in f.files}
    test = make_task("iris-in-context", context=16, features=4, seed=config["seed"]).test
    X = test.X
    S = _softmax_tokens(np.einsum("ndc,de,nej->ncj", X, P["W"], X))  # (n, c, j)
    cols = S[np.arange(len(X)), test.target, :]
    expected_att = cols.mean() if config["pool"] == "mean" else cols[:, -1].mean()
    assert metrics["attention_on_target"] == pytest.approx(expected_att, rel=1e-10)
    out_cols = np.einsum("ndc,ncj->ndj", X, S)
    u = out_cols.mean(axis=2) if config["pool"] == "mean" else out_cols[:, :, -1]
    z = np.maximum(u @ P["W1"] + P["b1"], 0.0) @ P["W2"] + P["b2"]
    assert metrics["test_accuracy"] == pytest.approx(np.mean(z.argmax(axis=1) == test.y))


def test_history_snapshots_and_checkpoint(demo: tuple) -> None:
    out, _ = demo
    lines = (out / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    for key in ("step", "train_loss", "test_accuracy", "test_attention_on_target"):
        assert key in header, key
    steps = [int(float(row.split(",")[header.index("step")])) for row in lines[1:]]
    assert steps == [0, 20, 40, 60]
    with np.load(out / "snapshots.npz") as f:
        snap = {k: f[k] for k in f.files}
    assert snap["X"].shape == (6, 6, 16) and snap["S"].shape == (4, 6, 16, 16)
    assert snap["steps"].tolist() == [0, 20, 40, 60]
    assert np.bincount(snap["y"], minlength=3).tolist() == [2, 2, 2]  # two prompts per class
    np.testing.assert_allclose(snap["S"].sum(axis=2), 1.0, atol=1e-12)  # columns sum to 1
    assert np.array_equal(np.argmax(snap["X"][:, 4, :], axis=1), snap["target"])
    test = make_task("iris-in-context", seed=0).test
    assert np.array_equal(test.X[snap["index"]], snap["X"])
    params, _, meta, _ = load_checkpoint(out / "checkpoint.npz")
    assert meta["step"] == 60
    with np.load(out / "params.npz") as f:
        for k in f.files:
            assert np.array_equal(params[k], f[k]), k


def test_reloaded_run_predicts_like_the_trained_model(demo: tuple) -> None:
    out, _ = demo
    saved = load(out)
    S_last = saved.snapshots["S"][-1]
    np.testing.assert_allclose(saved.model.attention_weights(saved.snapshots["X"]), S_last)


# --- plot_attention.py ---------------------------------------------------------------------


def test_plot_attention_redraws_a_saved_run(demo: tuple, tmp_path: Path) -> None:
    out, _ = demo
    proc = _run(PLOT, str(out), "--out", str(tmp_path / "figs"))
    assert proc.returncode == 0, proc.stderr
    for name in ("attention_map.png", "attention_over_training.png"):
        path = tmp_path / "figs" / name
        assert f"wrote {path}" in proc.stdout
        _assert_png(path)


def test_plot_attention_on_a_missing_run_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = _run(PLOT, str(tmp_path / "nothing"))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "nothing" in proc.stderr


def test_plot_attention_animate_writes_one_frame_per_step(demo: tuple, tmp_path: Path) -> None:
    out, _ = demo
    proc = _run(PLOT, str(out), "--out", str(tmp_path / "figs"), "--animate")
    assert proc.returncode == 0, proc.stderr
    gif = tmp_path / "figs" / "attention_over_training.gif"
    assert f"wrote {gif}" in proc.stdout
    with Image.open(gif) as img:
        assert img.format == "GIF" and img.n_frames == 4  # steps 0, 20, 40, 60


@pytest.mark.parametrize("damage", ["missing", "garbled"])
def test_plot_attention_animate_on_bad_snapshots_exits_2_with_one_line(
    demo: tuple, tmp_path: Path, damage: str
) -> None:
    run = Path(shutil.copytree(demo[0], tmp_path / "run"))
    if damage == "missing":
        (run / "snapshots.npz").unlink()
    else:
        (run / "snapshots.npz").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    proc = _run(PLOT, str(run), "--animate")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "snapshots.npz" in lines[0]
    assert not (run / "attention_over_training.gif").exists()


def test_prompt_attention_draws_bars_and_max_margin_keeps_its_head(tmp_path: Path) -> None:
    out = tmp_path / "prompt"
    proc = _run(TRAIN, "--attention", "prompt", "--steps", "20", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    _assert_png(out / "attention_map.png")
    out = tmp_path / "mm"
    proc = _run(TRAIN, "--task", "max-margin", "--steps", "30", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["attention"] == "cross" and config["trainable"] == ["W"]
    with np.load(out / "params.npz") as f:
        v = f["v"]
    np.testing.assert_array_equal(v[:, 0], make_task("max-margin").info["v"])
    _assert_png(out / "attention_map.png")


# --- bad options, divergence, Ctrl-C ---------------------------------------------------------

BAD = [
    (["--lr", "-1"], "lr"),
    (["--batch-size", "0"], "batch_size"),
    (["--steps", "0"], "steps"),
    (["--features", "3"], "--features"),
    (["--attention", "sparse"], "--attention"),
    (["--context", "0"], "context"),
    (["--task", "max-margin", "--features", "2"], "features"),
    (["--batch-size", "5000"], "batch_size"),
]


@pytest.mark.parametrize(("args", "named"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_option_exits_2_with_one_line(args: list[str], named: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    short = [] if "--steps" in args else ["--steps", "5"]
    proc = _run(TRAIN, *args, *short, "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and named in lines[0]
    assert not out.exists()  # nothing written for a refused run


def test_divergence_exits_1_with_one_line(tmp_path: Path) -> None:
    proc = _run(TRAIN, "--lr", "1e200", "--steps", "50", "--out", str(tmp_path / "run"))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "diverged" in lines[0] and "Traceback" not in proc.stderr


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        sys.executable,
        str(TRAIN),
        "--steps",
        "1000000",
        "--eval-every",
        "10",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "checkpoint.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert str(out / "checkpoint.npz") in stderr and "Traceback" not in stderr
    _, _, meta, _ = load_checkpoint(out / "checkpoint.npz")
    assert meta["step"] > 0


# --- the evaluation script -----------------------------------------------------------------


def test_eval_script_prints_the_table_of_its_sweep(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ("--seeds", "2", "--attention", "prompt", "--features", "2", "--out", str(out))
    proc = _run(EVAL, *args, "--workers", "2", timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].split()[:3] == ["attention", "features", "test"]
    row = lines[3].split()
    assert row[:2] == ["prompt", "2"]
    with open(out / "results.csv") as f:
        results = list(csv.DictReader(f))
    assert sorted(r["seed"] for r in results) == ["0", "1"]
    accs = [float(r["test_accuracy"]) for r in results]
    assert float(row[2]) == pytest.approx(np.mean(accs), abs=5e-4)
    assert float(row[3]) == pytest.approx(min(accs), abs=5e-4)
    assert f"results: {out / 'results.csv'}" in proc.stdout
    # the same command again reuses the runs: the same table, no new run folder
    again = _run(EVAL, *args, "--workers", "0", timeout=300)
    assert again.returncode == proc.returncode, again.stderr
    assert again.stdout.splitlines()[3].split()[:6] == row[:6]
    assert len(list((out / "runs").iterdir())) == 2


# --- library pieces the scripts use ----------------------------------------------------------


def test_weight_on_target_by_hand() -> None:
    S = np.zeros((2, 3, 2))
    S[0, :, 0], S[0, :, 1] = [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]
    S[1, :, 0], S[1, :, 1] = [1.0, 0.0, 0.0], [0.4, 0.4, 0.2]
    target = np.array([2, 0])
    np.testing.assert_allclose(weight_on_target(S, target, "mean"), [0.55, 0.7])
    np.testing.assert_allclose(weight_on_target(S, target, "last"), [0.8, 0.4])
    stacked = np.stack([S, S[:, ::-1, :]])  # (t, p, c, j)
    np.testing.assert_allclose(weight_on_target(stacked, target, "last"), [[0.8, 0.4], [0.1, 0.2]])
    with pytest.raises(ValueError, match=r"target: expected token indices in 0\.\.2, received 3"):
        weight_on_target(S, np.array([3, 0]))
    with pytest.raises(ValueError, match="pool: expected 'mean' or 'last'"):
        weight_on_target(S, target, "max")


def test_plot_functions_refuse_bad_shapes(tmp_path: Path) -> None:
    S = np.full((2, 4, 4), 0.25)
    one = np.zeros(2, dtype=np.int64)
    with pytest.raises(ValueError, match=r"target: expected shape \(p=2,\), received \(3,\)"):
        plot_attention_maps(S, np.zeros(3, np.int64), one, one, tmp_path / "a.png", "self")
    with pytest.raises(ValueError, match=r"S, steps: expected"):
        plot_target_weight(S, np.arange(2), one, one, tmp_path / "b.png")


def test_options_are_resolved_per_task() -> None:
    opts = resolve({})
    assert opts["task"] == "iris-in-context" and opts["features"] == 4 and opts["context"] == 16
    assert opts["checkpoint_every"] == opts["eval_every"] == max(1, opts["steps"] // 30)
    mm = resolve({"task": "max-margin"})
    assert (mm["attention"], mm["optimizer"], mm["lr"], mm["steps"]) == ("cross", "ngd", 0.1, 2000)
    with pytest.raises(ValueError, match="options: unknown"):
        resolve({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="seed: expected a non-negative integer"):
        resolve({"seed": -1})


def test_load_run_refuses_params_of_another_model(demo: tuple, tmp_path: Path) -> None:
    out, _ = demo
    run = prepare({"attention": "prompt", "steps": 1}, progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((out / "config.json").read_text())
    np.savez(bad / "params.npz", **run.model.params)
    with pytest.raises(RunFolderError, match=r"params\.npz: parameter keys"):
        load(bad)


def test_a_context_too_large_for_memory_is_one_line_and_no_folder(tmp_path: Path) -> None:
    proc = _run(TRAIN, "--context", "100000", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "a training step on a batch of 64 prompts of c=100000 tokens" in lines[0]
    assert lines[0].endswith("; reduce --context or --batch-size")
    assert not (tmp_path / "run").exists()
