"""The benchmarks: ``scripts/bench.py``'s tiny mode writes a complete run folder; the timing
harness runs each function under its thread setting and keeps the quiet rounds; the references
(plain matmul, PyTorch) compute the same loss, gradients and updates as the library (so every
ratio the report prints compares one computation); a part is one entry of ``PARTS``."""

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from attnlab.bench import (
    PARTS,
    TARGETS,
    Part,
    memory,
    references,
    report,
    research,
    run_benchmarks,
    timing,
)
from attnlab.bench import step as step_part
from attnlab.models.context_window import ContextWindowModel
from mlp.threads import num_threads, usable_cores
from mlp.train.data import Dataset, Stream
from mlp.train.optim import SGD, Averaged, NormalizedGD
from mlp.train.trainer import Trainer

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
PNGS = tuple(f"{name}.png" for name in PARTS)
HEADINGS = {
    "mlp": "MLP",
    "step": "attention step",
    "threads": "the step on k threads",
    "scaling": "scaling",
    "memory": "peak memory",
    "research": "research sizes",
    "stack": "stack",
}


def _run(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
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
    assert set(HEADINGS) == set(PARTS)
    for heading in (*HEADINGS.values(), "targets"):
        assert heading in proc.stdout
    assert (out / "report.txt").read_text().strip() in proc.stdout
    res = json.loads((out / "bench.json").read_text())
    for key in (*PARTS, "machine", "targets", "mode"):
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


def test_quick_test_mode_measures_the_research_sizes(quick_run: tuple) -> None:
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "bench.json").read_text())["research"]["rows"]
    assert [r["name"] for r in rows] == list(research.STUDIES)
    sizes = {r["name"]: (r["n"], r["d"], r["c"], r["trained"], r["optimizer"]) for r in rows}
    assert sizes == {
        "demo": (64, 6, 16, ["W", "W1", "b1", "W2", "b2"], "sgd"),
        "max-margin": (6, 10, 8, ["W"], "ngd"),
        "in-context regression": (250, 6, 21, ["W", "v"], "averaged-sgd"),
    }
    for r in rows:
        assert set(r["times"]) == set(r["vs_torch"]) == {"default", "1"}
        for lab, t in r["times"].items():
            assert t["attnlab"]["median"] > 0
            if "torch" in t:
                assert r["vs_torch"][lab] == t["attnlab"]["median"] / t["torch"]["median"]
        if "torch" in r["times"]["default"]:
            assert max(r["max_rel_error"].values()) <= 1e-10
    table = [line for line in proc.stdout.splitlines() if line.startswith("| 1 | demo |")]
    assert len(table) == 1 and table[0].count("|") == 6
    assert "  demo: self attention, d = 6, C = 16, last pool, MLP head (16 hidden)" in proc.stdout
    res = json.loads((out / "bench.json").read_text())
    if "torch" in rows[0]["times"]["default"]:
        assert {"demo update vs torch", "max-margin update vs torch"} <= set(res["targets"])
        assert res["targets"]["demo update vs torch"]["limit"] == 0.8


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
    assert "mlp" in res and not (set(PARTS) - {"mlp"}) & set(res)
    assert sorted(p.name for p in out.glob("*.png")) == ["mlp.png"]


def test_quiet_reruns_disturbed_rounds_from_the_script(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _run(
        "--quick-test", "--only", "threads", "--no-torch", "--quiet", "1e-9", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    rounds = json.loads((out / "bench.json").read_text())["threads"]["rounds"]
    assert rounds["kept"] == 1 and 1 <= rounds["rounds"] <= 3


def test_research_without_torch_times_the_library_alone(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _run("--quick-test", "--only", "research", "--no-torch", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "bench.json").read_text())
    for row in res["research"]["rows"]:
        assert all(set(t) == {"attnlab"} for t in row["times"].values())
        assert row["vs_torch"] == {"default": None, "1": None}
    assert res["targets"] == {}
    assert "note: torch skipped (asked not to use it)" in proc.stdout


def test_stack_without_torch_times_the_library_alone(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _run("--quick-test", "--only", "stack", "--no-torch", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "bench.json").read_text())["stack"]
    assert set(res["times"]) == {"attnlab"} and res["ratio"] is None
    assert (out / "stack.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "PyTorch not timed (torch skipped (asked not to use it))" in proc.stdout


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
        run_benchmarks(tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_a_new_part_is_one_entry_of_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def figure(res: dict, path: Path) -> None:
        path.write_bytes(b"png")

    toy = Part(
        measure=lambda opts: {"seed": opts.seed, "value": 0.5},
        figure=figure,
        report=lambda res: ["", f"toy part: {res['value']}"],
        targets=lambda res: [("toy value", res["value"], "toy_max")],
    )
    monkeypatch.setitem(PARTS, "toy", toy)
    monkeypatch.setitem(TARGETS, "toy_max", 1.0)
    res = run_benchmarks(tmp_path / "run", mode="quick-test", parts=("toy",), seed=4)
    assert res["toy"] == {"seed": 4, "value": 0.5}
    assert res["targets"] == {"toy value": {"value": 0.5, "op": "<=", "limit": 1.0, "met": True}}
    assert "toy part: 0.5" in res["report"]
    assert (tmp_path / "run" / "toy.png").read_bytes() == b"png"
    assert json.loads((tmp_path / "run" / "bench.json").read_text())["toy"]["value"] == 0.5


# --- timing -------------------------------------------------------------------------------------


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_time_round_robin_runs_each_function_under_its_thread_setting() -> None:
    seen: dict[str, set] = {"pinned": set(), "default": set()}
    default = (num_threads(), tuple(_blas_threads()))
    result = timing.time_round_robin(
        {
            "pinned": lambda: seen["pinned"].add((num_threads(), tuple(_blas_threads()))),
            "default": lambda: seen["default"].add((num_threads(), tuple(_blas_threads()))),
        },
        repeats=3,
        autorange=False,
        settings={"pinned": 1},
    )
    assert seen["pinned"] == {(1, tuple(1 for _ in default[1]))}
    assert seen["default"] == {default}
    assert (num_threads(), tuple(_blas_threads())) == default  # restored
    assert all(len(t) == 3 and min(t) >= 0 for t in result.times.values())
    assert result.number == {"pinned": 1, "default": 1}
    assert result.rounds == 3 and len(result.other_load) == 3


def test_autorange_picks_samples_of_at_least_0_2_s_with_the_collector_on() -> None:
    collector = []

    def nap() -> None:
        collector.append(gc.isenabled())
        time.sleep(0.005)

    result = timing.time_round_robin({"nap": nap}, repeats=2)
    number = result.number["nap"]
    assert number in (10, 20, 50)  # timeit's sequence 1, 2, 5, 10, ...: 0.2 s at >= 5 ms each
    assert number * min(result.times["nap"]) >= 0.2
    assert all(t >= 0.005 for t in result.times["nap"])
    assert collector and all(collector)  # every call, the timed ones too


def test_quiet_rounds_rerun_the_disturbed_ones_and_keep_the_quietest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Other processes' load per round (faked, with a fake wall clock, so that a busy machine
    running the test does not change it): 0.5, 0.0, 0.9, 0.05, 0.3, 0.2 ... with ``quiet=0.1``
    the rounds run until two are quiet (the 2nd and 4th), and those are kept."""
    loads = iter([0.0, 0.5, 0.0, 0.9, 0.05, 0.3, 0.2, 0.4])  # the first: the warm-up call
    clock = {"busy": 0.0, "own": 0.0, "wall": 0.0}
    calls = []

    def fake_busy() -> tuple[float, float]:
        return clock["busy"], clock["own"]

    def step() -> None:
        calls.append(len(calls))
        clock["busy"] += next(loads) * (os.cpu_count() or 1) * 0.01  # others, during 10 ms
        clock["wall"] += 0.01

    monkeypatch.setattr(timing, "busy_seconds", fake_busy)
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: clock["wall"]))
    result = timing.time_round_robin({"step": step}, repeats=2, autorange=False, quiet=0.1)
    assert result.rounds == 4 == len(calls) - 1  # one warm-up call, then 4 rounds
    assert len(result.times["step"]) == 2
    assert result.other_load == pytest.approx([0.0, 0.05], abs=1e-12)
    monkeypatch.undo()
    none_quiet = timing.time_round_robin(
        {"step": lambda: time.sleep(0.001)}, repeats=2, autorange=False, quiet=1e-9
    )
    assert none_quiet.rounds <= 6 and len(none_quiet.times["step"]) == 2


def test_fit_slope_recovers_a_power_law() -> None:
    x = [10.0, 100.0, 1000.0]
    assert timing.fit_slope(x, [3e-6 * v**1.5 for v in x]) == pytest.approx(1.5, abs=1e-9)


def test_summary_gives_the_median_and_quartiles() -> None:
    s = timing.summary([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (s["median"], s["q25"], s["q75"], s["min"], s["max"]) == (3.0, 2.0, 4.0, 1.0, 5.0)
    assert s["repeats"] == 5 and s["samples"] == [4.0, 1.0, 3.0, 2.0, 5.0]


# --- the large step's references ----------------------------------------------------------------


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
    loss_p, grads_p = references.plain_step(X, y, model.params["W"], model.params["v"])
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
    loss_p, grads_p = references.plain_step(X, y, W, model.params["v"])
    assert abs(loss_p - loss) > 1e-9
    assert np.max(np.abs(grads_p["W"] - grads["W"])) > 1e-9


def test_plain_step_float32_stays_float32() -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((4, 3, 5)).astype(np.float32)
    y = rng.choice([-1.0, 1.0], size=4)
    model = ContextWindowModel(3, attention="self", dtype=np.float32)
    _, grads = model.loss_and_grads(X, y)
    _, grads_p = references.plain_step(X, y, model.params["W"], model.params["v"])
    for k, g in grads.items():
        assert grads_p[k].dtype == np.float32
        assert np.max(np.abs(grads_p[k] - g)) <= 1e-4 * np.max(np.abs(g))


def test_torch_step_equals_the_model() -> None:
    pytest.importorskip("torch")
    model, X, y = _problem(5, 4, 6, seed=2)
    expected = model.loss_and_grads(X, y)
    got = references.torch_step(X, y, model.params["W"], model.params["v"])()
    assert references.max_rel_error(got, expected) <= 1e-10


def test_checked_steps_refuse_a_reference_that_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    model, X, y = _problem(5, 4, 6, seed=2)

    def off(X, y, W, v):
        loss, grads = references.plain_step(X, y, W, v)
        return loss * (1 + 1e-6), grads

    monkeypatch.setattr(step_part, "plain_step", off)
    with pytest.raises(AssertionError, match="plain step differs from attnlab"):
        step_part.checked_steps(model, X, y, with_torch=False)


def test_step_flops_counts_each_contraction() -> None:
    # n = 1, d = 2, c = 3, mean pool: Q = W X 2*2*2*3 = 24; scores 2*3*2*3 = 36; out 36;
    # z, dv, du 2*2 each = 12; dS = X^T dOut, one column: 2*3*2 = 12; dQ 36; dW 24
    assert step_part.step_flops(1, 2, 3) == 24 + 36 + 36 + 12 + 12 + 36 + 24
    assert step_part.step_flops(4, 2, 3) == 4 * step_part.step_flops(1, 2, 3)


def test_cached_bytes_lists_what_the_backward_needs() -> None:
    got = memory.cached_bytes(2, 3, 4, 8)
    assert got == {"X": 192, "Q": 192, "S": 256, "top": 64, "u": 48, "z": 16}


# --- the research sizes' PyTorch references ------------------------------------------------------


def _train_both(trainer: Trainer, loss, steps: int):
    """``steps`` updates of the trainer and of its PyTorch reference, from the same start."""
    ref = references.torch_training(trainer, loss)
    batch = trainer.batch(0)
    expected = trainer.model.loss_and_grads(batch.X, batch.y, **batch.inputs)
    expected = (expected[0], {k: expected[1][k] for k in trainer.trainable})
    assert references.max_rel_error(ref.loss_and_grads(batch), expected) <= 1e-12
    for s in range(steps):
        ours = trainer._update(trainer.batch(s), trainer.schedule(s))
        assert ref.step(s) == pytest.approx(ours, rel=1e-12)
    for k, p in trainer.model.params.items():
        assert np.allclose(ref.params[k].detach().numpy(), p, rtol=1e-12, atol=1e-14), k
    return ref


def test_torch_training_follows_a_mini_batch_cross_attention_run_with_averaged_ngd() -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    n, d, c = 10, 3, 5
    data = Dataset(
        rng.standard_normal((n, d, c)),
        rng.choice([-1.0, 1.0], size=n),
        Z=rng.standard_normal((n, d, 1)),
    )
    model = ContextWindowModel(d, attention="cross", pool="mean", head="linear", seed=1)
    opt = Averaged(NormalizedGD(), start=2)
    trainer = Trainer(model, opt, data, steps=8, lr=0.1, batch_size=4, seed=3, trainable=["W"])
    v = model.params["v"].copy()
    ref = _train_both(trainer, references.max_margin_loss, steps=7)  # 3 batches per epoch
    assert np.array_equal(model.params["v"], v)  # the fixed head stays fixed in both
    assert np.allclose(ref.params["v"].numpy(), v)
    assert np.allclose(ref.mean["W"].numpy(), opt.mean["W"], rtol=1e-12, atol=1e-14)


def test_torch_training_follows_a_stream_with_a_schedule() -> None:
    pytest.importorskip("torch")
    d, c, n = 3, 6, 8

    def batch(step: int) -> Dataset:
        rng = np.random.default_rng([7, step])
        return Dataset(rng.standard_normal((n, d, c)), rng.standard_normal(n))

    model = ContextWindowModel(
        d, attention="self", pool="last", head="linear", scores="linear", loss="squared", seed=2
    )
    trainer = Trainer(model, SGD(), Stream(batch), steps=5, lr=lambda t: 0.05 / (1 + t))
    _train_both(trainer, references.icl_loss, steps=5)


def test_torch_training_follows_the_demo_model_and_resets() -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    n, d, c = 12, 4, 5
    data = Dataset(rng.standard_normal((n, d, c)), rng.integers(0, 3, size=n))
    model = ContextWindowModel(d, attention="self", pool="last", head="mlp", n_classes=3, seed=4)
    start = {k: v.copy() for k, v in model.params.items()}
    trainer = Trainer(model, SGD(), data, steps=10, lr=0.3, batch_size=5, seed=2)
    ref = _train_both(trainer, references.demo_loss, steps=4)
    assert not np.array_equal(ref.params["W"].detach().numpy(), start["W"])
    ref.reset()
    for k, v in start.items():
        assert np.array_equal(ref.params[k].detach().numpy(), v)


def test_torch_training_refuses_an_optimizer_it_does_not_write() -> None:
    model = ContextWindowModel(2, attention="self")
    data = Dataset(np.ones((3, 2, 4)), np.ones(3))
    trainer = Trainer(model, NormalizedGD(per_param=True), data, steps=2, lr=0.1)
    with pytest.raises(ValueError, match="optimizer: expected SGD, NormalizedGD"):
        references.torch_training(trainer, references.max_margin_loss)


def _small_demo() -> Trainer:
    rng = np.random.default_rng(8)
    data = Dataset(rng.standard_normal((9, 3, 4)), rng.integers(0, 3, size=9))
    model = ContextWindowModel(3, attention="self", pool="last", head="mlp", n_classes=3)
    return Trainer(model, SGD(), data, steps=10, lr=0.3, batch_size=3)


def test_check_agree_refuses_a_reference_with_another_loss() -> None:
    pytest.importorskip("torch")

    def off(P, X, y, Z=None):
        return references.demo_loss(P, X, y, Z) * (1 + 1e-6)

    with pytest.raises(AssertionError, match="the PyTorch loss_and_grads differ"):
        research.check_agree(_small_demo(), off)


def test_check_agree_refuses_a_reference_with_another_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("torch")
    monkeypatch.setattr(references, "_update_rule", lambda opt: ("ngd", None))
    with pytest.raises(AssertionError, match="the PyTorch updates differ"):
        research.check_agree(_small_demo(), references.demo_loss)


def test_check_agree_leaves_both_at_the_start() -> None:
    pytest.importorskip("torch")
    trainer = _small_demo()
    start = {k: v.copy() for k, v in trainer.model.params.items()}
    ref, errors = research.check_agree(trainer, references.demo_loss)
    assert max(errors.values()) <= 1e-12
    for k, v in start.items():
        assert np.array_equal(trainer.model.params[k], v)
        assert np.array_equal(ref.params[k].detach().numpy(), v)


def test_cycling_resets_after_the_period() -> None:
    seen, resets = [], []
    call = research.cycling(lambda s: seen.append(s) or 1.0, lambda: resets.append(len(seen)), 3)
    for _ in range(7):
        call()
    assert seen == [0, 1, 2, 0, 1, 2, 0] and resets == [3, 6]
    stopped = research.cycling(lambda s: None, lambda: None, 3)
    with pytest.raises(RuntimeError, match="the update at step 0 stopped training"):
        stopped()


# --- the report ----------------------------------------------------------------------------------


def test_tables_are_markdown_with_one_cell_per_column() -> None:
    lines = report.table(("a", "b"), [(1, "x"), (2, "y")])
    assert lines == ["| a | b |", "| --- | --- |", "| 1 | x |", "| 2 | y |"]


def test_times_are_written_with_three_significant_digits() -> None:
    assert [report.ms(t) for t in (0.062, 0.0008, 0.000052)] == ["62.0 ms", "0.80 ms", "0.052 ms"]


def test_the_report_warns_when_other_processes_kept_the_cores_busy() -> None:
    machine = {
        "cores": 2,
        "cpu": "cpu",
        "python": "3",
        "numpy": "2",
        "numpy_blas": {},
        "attnlab_threads": 2,
    }
    toy = Part(lambda opts: {}, lambda res, path: None, lambda res: ["toy"])
    for load, warned in ((0.1, False), (0.6, True)):
        results = {"machine": machine, "toy": {"rows": [{"rounds": {"other_load_median": load}}]}}
        lines = report.report(results, {"toy": toy})
        assert (
            any(line.startswith("warning: other processes used up to 60%") for line in lines)
            == warned
        )


def test_research_rows_describe_the_model_and_update() -> None:
    row = {
        "attention": "cross",
        "scores": "softmax",
        "pool": "mean",
        "head": "linear",
        "loss": "logistic",
        "hidden": None,
        "d": 10,
        "c": 8,
        "j": 1,
        "optimizer": "ngd",
        "lr": 0.1,
        "trained": ["W"],
    }
    assert report.describe_model(row) == (
        "cross attention (1 query), d = 10, C = 8, mean pool, fixed linear head, logistic; "
        "normalized GD lr 0.1"
    )
    row |= {"optimizer": "averaged-sgd", "trained": ["W", "v"], "j": None, "scores": "linear"}
    assert report.describe_model(row).startswith("cross attention, linear scores, d = 10")
    assert report.describe_model(row).endswith("linear head, logistic; averaged SGD lr 0.1")
