"""``scripts/bench.py``: its tiny mode writes a complete run folder, and its baselines compute the
same loss and gradients as the library (so every ratio it prints compares one computation)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from attnlab.model import ContextWindowModel

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
PNGS = ("mlp.png", "step.png", "scaling.png", "memory.png")


def _load_bench():
    spec = importlib.util.spec_from_file_location("scripts_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("bench") / "run"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick-test", "--threads", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out, proc


def test_quick_test_mode_writes_json_and_prints_the_table(quick_run: tuple) -> None:
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr
    assert f"run folder: {out}" in proc.stdout
    for heading in ("MLP", "attention step", "scaling", "peak memory", "targets"):
        assert heading in proc.stdout
    res = json.loads((out / "bench.json").read_text())
    for key in ("machine", "mlp", "step", "scaling", "memory", "targets", "runtime_s", "mode"):
        assert key in res
    assert res["mode"] == "quick-test"
    assert res["machine"]["threads"] == 1
    assert all(lib["num_threads"] == 1 for lib in res["machine"]["blas"])
    for row in res["mlp"]["loops"]:
        assert row["speedup_step"] > 0 and row["speedup_forward"] > 0
    rows = res["step"]["rows"]
    assert {(r["dtype"], r["d"]) for r in rows} == {
        ("float64", 4),
        ("float64", 8),
        ("float32", 4),
        ("float32", 8),
    }
    for r in rows:
        assert r["times"]["attnlab"]["median"] > 0 and r["gflops"] > 0
        assert r["max_rel_error"]["plain"] <= (1e-10 if r["dtype"] == "float64" else 1e-4)
        assert (r["ratio_vs_torch"] is None) == ("torch" not in r["times"])
    for key in ("slope_c", "slope_n"):
        assert np.isfinite(res["scaling"][key])
    for m in res["memory"]["rows"]:
        assert m["peak_bytes"] > m["cached"]["X"] and m["ratio"] > 0
    assert set(res["targets"]) >= {"vs plain matmul", "roof fraction", "peak / cached"}


@pytest.mark.parametrize("name", PNGS)
def test_quick_test_mode_writes_valid_pngs(quick_run: tuple, name: str) -> None:
    out, _ = quick_run
    data = (out / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(out / name)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0.01  # not a blank canvas


def test_only_runs_one_part(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick-test", "--only", "mlp", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "bench.json").read_text())
    assert "mlp" in res and not {"step", "scaling", "memory"} & set(res)
    assert sorted(p.name for p in out.glob("*.png")) == ["mlp.png"]


def _problem(n: int, d: int, c: int, seed: int, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    X = scale * rng.standard_normal((n, d, c))
    y = rng.choice([-1.0, 1.0], size=n)
    model = ContextWindowModel(d, attention="self", pool="mean", head="linear", seed=seed)
    return model, X, y


@pytest.mark.parametrize(("n", "d", "c", "scale"), [(5, 4, 6, 1.0), (3, 2, 7, 1.0), (4, 3, 5, 6.0)])
def test_plain_step_equals_the_model(n: int, d: int, c: int, scale: float) -> None:
    model, X, y = _problem(n, d, c, seed=n + d + c, scale=scale)
    loss, grads = model.loss_and_grads(X, y)
    loss_p, grads_p = bench.plain_step(X, y, model.params["W"], model.params["v"])
    assert set(grads_p) == set(grads)
    assert abs(loss_p - loss) <= 1e-12 * abs(loss)
    for k, g in grads.items():
        assert grads_p[k].shape == g.shape
        assert np.max(np.abs(grads_p[k] - g)) <= 1e-10 * np.max(np.abs(g))


def test_plain_step_differs_when_the_parameters_differ() -> None:
    model, X, y = _problem(5, 4, 6, seed=1)
    loss, grads = model.loss_and_grads(X, y)
    W = model.params["W"].copy()
    W[0, 1] += 1e-3
    loss_p, grads_p = bench.plain_step(X, y, W, model.params["v"])
    assert abs(loss_p - loss) > 1e-9
    assert np.max(np.abs(grads_p["W"] - grads["W"])) > 1e-9


def test_plain_step_float32_stays_float32() -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((4, 3, 5)).astype(np.float32)
    y = rng.choice([-1.0, 1.0], size=4)
    model = ContextWindowModel(3, attention="self", dtype=np.float32)
    _, grads = model.loss_and_grads(X, y)
    _, grads_p = bench.plain_step(X, y, model.params["W"], model.params["v"])
    for k, g in grads.items():
        assert grads_p[k].dtype == np.float32
        assert np.max(np.abs(grads_p[k] - g)) <= 1e-4 * np.max(np.abs(g))


def test_torch_step_equals_the_model() -> None:
    pytest.importorskip("torch")
    model, X, y = _problem(5, 4, 6, seed=2)
    expected = model.loss_and_grads(X, y)
    got = bench.torch_step(X, y, model.params["W"], model.params["v"])()
    assert bench.max_rel_error(got, expected) <= 1e-10


def test_step_flops_counts_each_contraction() -> None:
    # n = 1, d = 2, c = 3, mean pool: Q = W X 2*2*2*3 = 24; scores 2*3*2*3 = 36; out 36;
    # z, dv, du 2*2 each = 12; dS = X^T dOut, one column: 2*3*2 = 12; dQ 36; dW 24
    assert bench.step_flops(1, 2, 3) == 24 + 36 + 36 + 12 + 12 + 36 + 24
    assert bench.step_flops(4, 2, 3) == 4 * bench.step_flops(1, 2, 3)


def test_fit_slope_recovers_a_power_law() -> None:
    x = [10.0, 100.0, 1000.0]
    assert bench.fit_slope(x, [3e-6 * v**1.5 for v in x]) == pytest.approx(1.5, abs=1e-9)


def test_cached_bytes_lists_what_the_backward_needs() -> None:
    got = bench.cached_bytes(2, 3, 4, 8)
    assert got == {"X": 192, "Q": 192, "S": 256, "top": 64, "u": 48, "z": 16}


def test_bad_threads_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--threads", "0"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "--threads: expected a positive integer, received 0" in proc.stderr
