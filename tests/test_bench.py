"""The benchmarks: ``scripts/bench.py``'s tiny mode writes a complete run folder, and the library
module's baselines compute the same loss and gradients as the model (so every ratio it prints
compares one computation)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from threadpoolctl import threadpool_info

import attnlab.bench as bench
from attnlab.models.context_window import ContextWindowModel
from mlp.threads import num_threads, usable_cores

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
PNGS = ("mlp.png", "step.png", "threads.png", "scaling.png", "memory.png")


def _run(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("bench") / "run"
    return out, _run("--quick-test", "--threads", "1", "--out", str(out))


def test_quick_test_mode_writes_json_and_prints_the_report(quick_run: tuple) -> None:
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr
    assert f"run folder: {out}" in proc.stdout
    headings = ("MLP", "attention step", "the step on k threads", "scaling", "peak memory")
    for heading in (*headings, "targets"):
        assert heading in proc.stdout
    assert (out / "report.txt").read_text().strip() in proc.stdout
    res = json.loads((out / "bench.json").read_text())
    for key in ("machine", "mlp", "step", "threads", "scaling", "memory", "targets", "mode"):
        assert key in res
    assert res["mode"] == "quick-test"
    assert res["machine"]["cores"] == usable_cores()
    rows = res["step"]["rows"]
    assert {(r["dtype"], r["d"]) for r in rows} == {
        ("float64", 4),
        ("float64", 8),
        ("float32", 4),
        ("float32", 8),
    }
    for r in rows:
        for setting in ("default", "1"):  # both thread settings, every implementation
            assert r["times"][setting]["attnlab"]["median"] > 0 and r[setting]["gflops"] > 0
            assert (r[setting]["vs_torch"] is None) == ("torch" not in r["times"][setting])
        assert r["max_rel_error"]["plain"] <= (1e-10 if r["dtype"] == "float64" else 1e-4)
        assert r["default_over_pinned"]["attnlab"] > 0
    threads = res["threads"]
    assert [row["threads"] for row in threads["rows"]] == [
        *map(str, range(1, usable_cores() + 1)),
        "default",
    ]
    assert threads["rows"][0]["attnlab_speedup"] == 1.0
    assert threads["demo"]["default_over_1_thread"] > 0
    for key in ("slope_c", "slope_n"):
        assert np.isfinite(res["scaling"][key])
    for m in res["memory"]["rows"]:
        assert m["peak_bytes"] > m["cached"]["X"] and m["ratio"] > 0 and m["estimate_bytes"] > 0
    expected = {"vs plain matmul (1 thread)", "roof fraction (1 thread)", "peak / cached"}
    expected.add("demo step default / 1 thread")
    assert set(res["targets"]) >= expected


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
    proc = _run("--quick-test", "--only", "mlp", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "bench.json").read_text())
    assert "mlp" in res and not {"step", "threads", "scaling", "memory"} & set(res)
    assert sorted(p.name for p in out.glob("*.png")) == ["mlp.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threads", "0"], "--threads: expected a positive integer, received 0"),
        (["--seed", "-1"], "--seed: expected a non-negative integer, received -1"),
        (["--only", "gpu"], "--only: invalid choice: 'gpu'"),
        (["--full", "--quick-test"], "not allowed with argument"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = _run(*args, "--out", str(tmp_path / "run"), timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "huge"}, "mode: expected one of quick, full, quick-test, received 'huge'"),
        ({"parts": ("mlp", "gpu")}, "parts: expected some of"),
        ({"parts": ()}, "parts: expected some of"),
        ({"seed": -3}, "seed: expected a non-negative integer, received -3"),
        ({"pinned": 0}, "pinned: expected a positive integer, received 0"),
        ({"quiet": -0.1}, "quiet: expected"),
    ],
)
def test_run_benchmarks_refuses_bad_options_before_writing(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        bench.run_benchmarks(tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


# --- the thread settings ------------------------------------------------------------------------


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_time_round_robin_runs_each_function_under_its_thread_setting() -> None:
    seen: dict[str, set] = {"pinned": set(), "default": set()}
    default = (num_threads(), tuple(_blas_threads()))
    timing = bench.time_round_robin(
        {
            "pinned": lambda: seen["pinned"].add((num_threads(), tuple(_blas_threads()))),
            "default": lambda: seen["default"].add((num_threads(), tuple(_blas_threads()))),
        },
        repeats=3,
        min_time=0.0,
        settings={"pinned": 1},
    )
    assert seen["pinned"] == {(1, tuple(1 for _ in default[1]))}
    assert seen["default"] == {default}
    assert (num_threads(), tuple(_blas_threads())) == default  # restored
    assert all(len(t) == 3 and min(t) >= 0 for t in timing.times.values())
    assert timing.rounds == 3 and len(timing.other_load) == 3


def test_quiet_rounds_rerun_the_disturbed_ones_and_keep_the_quietest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Other processes' load per round (faked): 0.5, 0.0, 0.9, 0.05, 0.3, 0.2 ... with
    ``quiet=0.1`` the rounds run until two are quiet (the 2nd and 4th), and those are kept."""
    loads = iter([0.0, 0.5, 0.0, 0.9, 0.05, 0.3, 0.2, 0.4])  # the first: the warm-up call
    clock = {"busy": 0.0, "own": 0.0}
    calls = []

    def fake_busy() -> tuple[float, float]:
        return clock["busy"], clock["own"]

    def step() -> None:
        calls.append(len(calls))
        clock["busy"] += next(loads) * (os.cpu_count() or 1) * 0.01  # others, during 10 ms
        time.sleep(0.01)

    monkeypatch.setattr(bench, "_busy_seconds", fake_busy)
    timing = bench.time_round_robin({"step": step}, repeats=2, min_time=0.0, quiet=0.1)
    assert timing.rounds == 4 == len(calls) - 1  # one warm-up call, then 4 rounds
    assert len(timing.times["step"]) == 2
    assert timing.other_load == pytest.approx([0.0, 0.05], abs=0.03)
    none_quiet = bench.time_round_robin(
        {"step": lambda: time.sleep(0.001)}, repeats=2, min_time=0.0, quiet=1e-9
    )
    assert none_quiet.rounds <= 6 and len(none_quiet.times["step"]) == 2


# --- the reference steps ------------------------------------------------------------------------


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
