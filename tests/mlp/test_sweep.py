"""Sweeps: planning and validation, the results table, the report, and the sweep end to end.

The experiment is ``tests/sweep_fixture.py`` (the experiment contract, a small deterministic
computation). The Dask tests run ``scripts/sweep.py`` in a subprocess, with a timeout, on two
local worker processes (its embedded cluster, or a cluster of this module through
``--scheduler``); they compare ``results.csv`` with the same runs called one after another in
this process.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import sweep_fixture

from mlp.train.sweep import (
    Table,
    parse_assignment,
    parse_seeds,
    parse_value,
    plan_sweep,
    result_row,
    sweep,
)
from mlp.train.sweep_report import cell, summarize, swept_options, write_report

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "sweep.py"
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")) if p
    ),
}
TIMEOUT = 180


def _script(
    *args: str, experiment: str = "sweep_fixture", timeout: float = TIMEOUT
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), experiment, *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def _start(*args: str) -> subprocess.Popen:
    """The script in its own process group (as a terminal's foreground job)."""
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "sweep_fixture", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,
    )


def _wait_for(what: str, found, proc: subprocess.Popen, timeout: float = 120):
    """Poll ``found()`` until it returns something; fail if the sweep ends or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before {what}: {proc.communicate()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no {what} after {timeout} s")


def sequential(grid: dict, fixed: dict, seeds: range, tmp: Path) -> dict[str, dict[str, str]]:
    """The results.csv rows of the same runs called one after another in this process, by
    run id (without the wait of ``sleep``, which changes no metric)."""
    rows = {}
    for run in plan_sweep("sweep_fixture", grid, fixed, seeds).runs:
        metrics = sweep_fixture.run_experiment({**run.config, "sleep": 0.0}, tmp / run.run_id)
        rows[run.run_id] = result_row(run, {"metrics": metrics, "seconds": 0.0})
    return rows


def assert_same_results(out: Path, expected: dict[str, dict[str, str]]) -> None:
    """results.csv has each expected run once, with the same options and metrics."""
    rows = Table(out / "results.csv").rows
    assert sorted(r["run_id"] for r in rows) == sorted(expected)
    for row in rows:
        want = expected[row["run_id"]]
        assert {k: v for k, v in row.items() if k != "wall_seconds"} == {
            k: v for k, v in want.items() if k != "wall_seconds"
        }
        assert float(row["wall_seconds"]) > 0


# --- parsing and planning ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("default", "text", "expected"),
    [
        (3, "7", 7),
        (3, "none", None),
        (0.1, "1", 1.0),
        (0.1, "1e-3", 1e-3),
        ("self", "kq", "kq"),
        ("self", "none", "none"),
        (False, "true", True),
        (True, "0", False),
        (None, "5", 5),
        (None, "0.5", 0.5),
        (None, "mean", "mean"),
        (None, "None", None),
    ],
)
def test_values_take_the_type_of_the_default(default, text, expected) -> None:
    got = parse_value("key", text, default)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("default", "text", "match"),
    [(3, "0.5", "key: expected an integer"), (0.1, "x", "a number"), (True, "maybe", "true or")],
)
def test_bad_values_name_the_option(default, text, match) -> None:
    with pytest.raises(ValueError, match=match):
        parse_value("key", text, default)


def test_assignments_and_seed_ranges() -> None:
    assert parse_assignment("batch-size=16, 32") == ("batch-size", ["16", "32"])
    assert parse_assignment("lr=") == ("lr", [])
    assert parse_seeds("0-19") == range(20)
    assert parse_seeds("7") == range(7, 8)
    for bad in ("lr", "=1", "lr=1,,2"):
        with pytest.raises(ValueError):
            parse_assignment(bad)
    for bad in ("3-1", "-1", "a-b", ""):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)


def test_plan_types_values_and_names_runs_by_config() -> None:
    plan = plan_sweep("sweep_fixture", {"scale": ["1", "2"], "kind": ["walk"]}, {"n": "5"}, [0, 1])
    assert plan.grid == {"scale": [1.0, 2.0], "kind": ["walk"]} and plan.fixed == {"n": 5}
    assert len(plan.runs) == 4
    assert [r.config["seed"] for r in plan.runs] == [0, 1, 0, 1]
    ids = [r.run_id for r in plan.runs]
    assert len(set(ids)) == 4
    assert ids[2].startswith("n=5_scale=2.0_seed=0_")  # options off their defaults, then seed
    # the id depends on the resolved config only: dashes, a fixed option moved into the grid,
    # a default given explicitly, a duplicate value
    same = plan_sweep("sweep_fixture", {"n": [5], "scale": [1, 2.0, 2]}, {"kind": "walk"}, [0, 1])
    assert sorted(r.run_id for r in same.runs) == sorted(ids)


def test_an_int_and_a_float_of_the_same_value_are_the_same_run() -> None:
    """scale has no typed default (None): "10" reads as an int, "10.0" as a float."""
    ids = [
        plan_sweep("mlp.experiment", {"scale": [v], "lr": [w]}).runs[0].run_id
        for v, w in (("10", "1"), ("10.0", "1.0"))
    ]
    assert ids[0] == ids[1]


@pytest.mark.parametrize(
    ("grid", "fixed", "seeds", "match"),
    [
        ({"nope": ["1"]}, {}, [0], "grid: unknown option 'nope'"),
        ({}, {"nope": "1"}, [0], "fixed options: unknown option"),
        ({"seed": ["1"]}, {}, [0], "seed is set by the sweep's seeds"),
        ({"n": []}, {}, [0], "grid: n: expected a list of values"),
        ({"n": ["1"], "scale": ["1"]}, {"n": "2"}, [0], "n given twice"),
        ({"n": ["x"]}, {}, [0], "n: expected an integer"),
        ({"n": ["3", "0"]}, {}, [0], "grid point n=0, seed 0: n, work, seed: expected"),
        ({"kind": ["walk", "jump"]}, {}, [0], "grid point kind='jump'"),
        ({}, {}, [], "seeds: expected integers"),
    ],
)
def test_bad_grids_are_refused_before_anything_runs(grid, fixed, seeds, match) -> None:
    with pytest.raises(ValueError, match=match):
        plan_sweep("sweep_fixture", grid, fixed, seeds)


def test_unknown_experiment_and_module_without_the_contract() -> None:
    with pytest.raises(ValueError, match="experiment: expected one of"):
        plan_sweep("no_such_experiment_module")
    with pytest.raises(ValueError, match="is not an experiment"):
        plan_sweep("json")


# --- the results table -------------------------------------------------------------------------


def test_each_row_is_one_write_of_a_whole_line(tmp_path: Path, monkeypatch) -> None:
    table = Table(tmp_path / "results.csv")
    table.append({"a": "1", "run_id": "x"})  # creates the file with its header
    writes: list[bytes] = []
    real_write = os.write

    def recording_write(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", recording_write)
    table.append({"run_id": "y", "a": "2"})
    table.append({"a": "3,\n4", "run_id": "z"})
    assert writes == [b"2,y\n", b'"3, 4",z\n']
    assert (tmp_path / "results.csv").read_text() == 'a,run_id\n1,x\n2,y\n"3, 4",z\n'
    assert [r["run_id"] for r in Table(tmp_path / "results.csv").rows] == ["x", "y", "z"]


def test_a_new_column_rewrites_the_file_whole_and_a_failed_rewrite_keeps_it(
    tmp_path: Path, monkeypatch
) -> None:
    path = tmp_path / "results.csv"
    table = Table(path)
    table.append({"a": "1", "wall_seconds": "0.5", "run_id": "x"})
    table.append({"a": "2", "b": "7", "wall_seconds": "0.25", "run_id": "y"})
    assert path.read_text() == "a,b,wall_seconds,run_id\n1,,0.5,x\n2,7,0.25,y\n"
    before = path.read_text()

    def crash(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        table.append({"c": "new", "run_id": "z"})
    assert path.read_text() == before


def test_a_torn_last_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("a,run_id\n1,x\n2,y")
    table = Table(path)
    assert [r["run_id"] for r in table.rows] == ["x"]
    table.append({"a": "3", "run_id": "z"})
    assert path.read_text() == "a,run_id\n1,x\n3,z\n"


# --- the report ---------------------------------------------------------------------------------


ROWS = [
    {"lr": "0.1", "kind": "a", "seed": "0", "acc": "0.5", "ok": "True", "run_id": "1"},
    {"lr": "0.1", "kind": "a", "seed": "1", "acc": "0.75", "ok": "False", "run_id": "2"},
    {"lr": "0.1", "kind": "b", "seed": "0", "acc": "0.25", "ok": "True", "run_id": "3"},
    {"lr": "0.2", "kind": "a", "seed": "0", "acc": "nan", "ok": "True", "run_id": "4"},
    {"lr": "0.2", "kind": "a", "seed": "1", "acc": "0.875", "ok": "True", "run_id": "5"},
]


def test_summary_per_grid_point_over_seeds() -> None:
    swept, metrics, summary = summarize(ROWS, ["lr", "kind", "seed"])
    assert swept == ["lr", "kind"] and metrics == ["acc", "ok"]
    by = {(s["lr"], s["kind"], s["metric"]): s for s in summary}
    acc = by["0.1", "a", "acc"]
    assert (acc["count"], acc["min"], acc["max"]) == (2, 0.5, 0.75)
    assert acc["mean"] == statistics.mean([0.5, 0.75])
    assert acc["std"] == pytest.approx(statistics.stdev([0.5, 0.75]), rel=1e-15)
    assert (acc["min_seed"], acc["max_seed"]) == ("0", "1")
    assert by["0.1", "b", "acc"]["std"] is None  # one seed: no spread
    assert by["0.2", "a", "acc"]["count"] == 1  # NaN is not a value
    assert by["0.1", "a", "ok"]["mean"] == 0.5  # yes/no: the fraction of yes


def test_options_that_follow_from_the_swept_ones_are_not_swept(tmp_path: Path) -> None:
    rows = [
        {"attention": a, "features": f, "steps": str(1500 * int(f)), "seed": s, "acc": "0.5"}
        for a in ("self", "kq")
        for f in ("4", "2")
        for s in ("0", "1")
    ]
    options = ["attention", "features", "steps"]
    assert swept_options(rows, options) == ["attention", "features"]
    for r in rows:
        r["attention"] = str(r["attention"] == "kq")  # a yes/no option: bars, not a line
    assert swept_options(rows, options, first=["steps"]) == ["steps", "attention"]
    files = write_report(tmp_path, "toy", [*options, "seed"], rows, 0, grid=["features"])
    text = files["summary"].read_text()
    assert "| features | attention | count |" in text
    assert "Options that follow from the swept ones (see results.csv): steps" in text
    names = sorted(p.name for p in files["figures"].iterdir())
    assert names == ["acc_vs_attention.png", "acc_vs_features.png"]
    assert "| 2 | False | 2 | 0.5 |" in text


def test_report_files_tables_and_figures(tmp_path: Path) -> None:
    files = write_report(tmp_path, "toy", ["lr", "kind", "seed"], ROWS, n_failed=1)
    with open(files["summary_csv"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and table[0]["metric"] == "acc" and table[0]["mean"] == "0.625"
    text = files["summary"].read_text()
    assert "5 finished runs" in text and "1 failed" in text and "## acc" in text
    assert "| 0.1 | a | 2 | 0.625 |" in text
    names = sorted(p.name for p in files["figures"].iterdir())
    assert names == ["acc_vs_kind.png", "acc_vs_lr.png", "ok_vs_kind.png", "ok_vs_lr.png"]
    image = matplotlib.image.imread(files["figures"] / "acc_vs_lr.png")
    assert image.shape[0] > 300 and image.std() > 0


def test_a_sweep_of_seeds_alone_plots_each_seed(tmp_path: Path) -> None:
    rows = [r for r in ROWS if (r["lr"], r["kind"]) == ("0.2", "a")] + [
        {"lr": "0.2", "kind": "a", "seed": "7", "acc": "0.125", "ok": "False", "run_id": "6"}
    ]
    files = write_report(tmp_path, "toy", ["lr", "kind", "seed"], rows, n_failed=0)
    assert [p.name for p in files["figures"].iterdir()] == ["seeds.png"]
    image = matplotlib.image.imread(files["figures"] / "seeds.png")
    assert image.shape[0] > 400 and image.std() > 0  # a panel per metric: acc and ok
    # a later sweep that sweeps an option replaces it
    files = write_report(tmp_path, "toy", ["lr", "kind", "seed"], ROWS, n_failed=0)
    assert "seeds.png" not in {p.name for p in files["figures"].iterdir()}


# --- sweeps in this process (workers=0) ---------------------------------------------------------


def test_failures_are_recorded_and_retried(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    kw = {"grid": {"mode": ["ok", "raise"]}, "seeds": [0, 1], "out": out, "workers": 0}
    first = sweep("sweep_fixture", **kw, progress=False)
    assert (first.finished, first.failed, first.skipped) == (2, 2, 0)
    failed = Table(out / "failed.csv").rows
    assert [r["error"] for r in failed] == [
        f"FloatingPointError: training diverged: loss is inf at step 3 (seed {s})" for s in (0, 1)
    ]
    assert [(r["mode"], r["seed"]) for r in first.rows] == [("ok", "0"), ("ok", "1")]
    again = sweep("sweep_fixture", **kw, progress=False)
    assert (again.finished, again.failed, again.skipped) == (0, 2, 2)
    assert again.rows == first.rows  # the rows of the plan, finished now or before
    assert len(Table(out / "failed.csv").rows) == 2  # tried again, recorded once
    assert len(Table(out / "results.csv").rows) == 2
    # a sweep of other seeds in the same folder returns only its own rows
    kw = {**kw, "grid": {"mode": ["ok"]}, "seeds": [1, 2]}
    other = sweep("sweep_fixture", **kw, progress=False)
    assert [r["seed"] for r in other.rows] == ["1", "2"]
    assert other.rows[0] == first.rows[1]


def test_a_folder_of_another_experiment_or_not_a_sweep_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "sweep.json").write_text(json.dumps({"experiment": "mlp"}))
    with pytest.raises(ValueError, match="holds a sweep of experiment 'mlp'"):
        sweep("sweep_fixture", out=other, workers=0, progress=False)
    (tmp_path / "stuff" / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="not a sweep folder"):
        sweep("sweep_fixture", out=tmp_path / "stuff", workers=0, progress=False)
    assert sorted(p.name for p in other.iterdir()) == ["sweep.json"]


# --- the script on Dask -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "nope=1,2"], "grid: unknown option 'nope'; the options are n, scale"),
        (["--grid", "n="], "--grid n: no values"),
    ],
)
def test_script_refuses_a_bad_grid_in_one_line(tmp_path: Path, args, message) -> None:
    out = tmp_path / "sweep"
    proc = _script(*args, "--seeds", "0-1", "--out", str(out), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr
    assert not out.exists()


@pytest.fixture(scope="module")
def scheduler():
    """The address of a local Dask cluster of 2 single-threaded worker processes."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster.scheduler_address


def test_grid_change_adds_only_new_runs(tmp_path: Path, scheduler: str) -> None:
    out = tmp_path / "sweep"
    first = _script(
        "--grid", "shift=0,1", "--seeds", "0-1", "--out", str(out), "--scheduler", scheduler
    )
    assert first.returncode == 0, first.stderr
    assert "4 runs finished, 0 already done, 0 failed (of 4)" in first.stdout
    before = (out / "results.csv").read_text()
    grid = ["--grid", "shift=0,1,2", "--grid", "scale=1"]
    second = _script(*grid, "--seeds", "0-2", "--out", str(out), "--scheduler", scheduler)
    assert second.returncode == 0, second.stderr
    assert "5 runs finished, 4 already done, 0 failed (of 9)" in second.stdout
    assert (out / "results.csv").read_text().startswith(before)
    expected = sequential({"shift": [0, 1, 2]}, {}, range(3), tmp_path / "sequential")
    assert_same_results(out, expected)
    assert len(list((out / "runs").iterdir())) == 9
    assert (out / "figures" / "final_vs_shift.png").is_file()


def test_a_worker_killed_mid_run_is_rescheduled(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    grid, fixed, seeds = {"shift": [0, 1]}, {"sleep": 1.5}, range(2)
    proc = _start(
        "--grid",
        "shift=0,1",
        "--set",
        "sleep=1.5",
        "--seeds",
        "0-1",
        "--out",
        str(out),
        "--workers",
        "2",
    )

    def started() -> tuple[int, Path] | None:
        for path in (out / "runs").glob("*/started.json"):
            try:
                return json.loads(path.read_text())["pid"], path
            except (OSError, ValueError, KeyError):
                pass  # being written
        return None

    pid, path = _wait_for("a run started", started, proc)
    assert pid != proc.pid  # a worker process
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, stderr
    assert "4 runs finished" in stdout
    assert json.loads(path.read_text())["pid"] != pid  # run again, by another worker process
    assert_same_results(out, sequential(grid, fixed, seeds, tmp_path / "sequential"))


def test_ctrl_c_loses_only_runs_in_flight_and_a_rerun_completes(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = ["--grid", "shift=0,1,2", "--set", "sleep=1", "--seeds", "0-1", "--out", str(out)]
    proc = _start(*args, "--workers", "2")

    def rows() -> int:
        path = out / "results.csv"
        return path.is_file() and len(Table(path).rows)

    _wait_for("a finished run", rows, proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the script and its workers
    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert "interrupted" in last and "run the same command again to continue" in last
    assert "Traceback" not in stderr
    done = len(Table(out / "results.csv").rows)
    assert 1 <= done < 6
    again = _script(*args, "--workers", "2")
    assert again.returncode == 0, again.stderr
    assert f"{6 - done} runs finished, {done} already done, 0 failed (of 6)" in again.stdout
    expected = sequential({"shift": [0, 1, 2]}, {"sleep": 1.0}, range(2), tmp_path / "seq")
    assert_same_results(out, expected)


def test_a_second_sweep_into_a_folder_in_use_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = ["--grid", "shift=0,1", "--set", "sleep=1", "--seeds", "0", "--out", str(out)]
    proc = _start(*args, "--workers", "0")
    _wait_for("the sweep's manifest", (out / "sweep.json").is_file, proc)
    second = _script(*args, "--workers", "0")
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip() == (
        f"sweep.py: error: out: {out} is in use by another sweep running now; wait for it to "
        "end, or give another folder"
    )
    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, stderr
    assert len(Table(out / "results.csv").rows) == 2  # each run once
    again = _script(*args, "--workers", "0")  # the lock ended with the first sweep
    assert again.returncode == 0 and "0 runs finished, 2 already done" in again.stdout


def test_cells_keep_every_bit_of_a_float_through_the_file(tmp_path: Path) -> None:
    values = [0.1 + 0.2, math.pi * 1e-300, -2.5e300, 1 / 3, float("nan"), float("inf")]
    table = Table(tmp_path / "results.csv")
    for i, v in enumerate(values):
        table.append({"x": cell(np.float64(v)), "run_id": str(i)})
    back = [float(r["x"]) for r in Table(tmp_path / "results.csv").rows]
    assert [np.float64(v).tobytes() for v in back] == [np.float64(v).tobytes() for v in values]
    assert (cell(None), cell(True), cell([1, 2.5]), cell("a b")) == ("", "True", "[1, 2.5]", "a b")


# --- the library's experiments --------------------------------------------------------------------


def _same_arrays(a: Path, b: Path) -> bool:
    with np.load(a) as x, np.load(b) as y:
        return sorted(x.files) == sorted(y.files) and all(
            np.array_equal(x[k], y[k]) and x[k].dtype == y[k].dtype for k in x.files
        )


def test_an_attention_sweep_run_is_bit_identical_to_the_single_run_script(
    tmp_path: Path, scheduler: str
) -> None:
    single, out = tmp_path / "single", tmp_path / "sweep"
    script = ROOT / "scripts" / "train_attention.py"
    options = ["--attention", "kq", "--steps", "40", "--seed", "2", "--out", str(single)]
    proc = subprocess.run(
        [sys.executable, str(script), *options],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    args = ["--set", "attention=kq", "--set", "steps=40", "--seeds", "2", "--out", str(out)]
    swept = _script(*args, "--scheduler", scheduler, experiment="attention")
    assert swept.returncode == 0, swept.stderr
    (run,) = plan_sweep("attnlab.studies.attention", {}, {"attention": "kq", "steps": 40}, [2]).runs
    metrics = {**json.loads((single / "metrics.json").read_text()), "task": "iris-in-context"}
    assert_same_results(out, {run.run_id: result_row(run, {"metrics": metrics, "seconds": 0})})
    assert _same_arrays(single / "params.npz", out / "runs" / run.run_id / "params.npz")
    assert _same_arrays(single / "snapshots.npz", out / "runs" / run.run_id / "snapshots.npz")


def test_mlp_sweep_runs_are_bit_identical_to_runs_in_this_process_and_a_divergence_fails(
    tmp_path: Path, scheduler: str
) -> None:
    from mlp.experiment import run_experiment

    out = tmp_path / "sweep"
    fixed = ["--set", "epochs=4", "--set", "hidden=5", "--set", "scale=10"]
    args = ["--grid", "lr=0.1,1e30", *fixed, "--seeds", "1", "--out", str(out)]
    swept = _script(*args, "--scheduler", scheduler, experiment="mlp")
    assert swept.returncode == 1, swept.stderr
    assert "1 runs finished, 0 already done, 1 failed (of 2)" in swept.stdout
    ok, diverged = plan_sweep(
        "mlp.experiment", {"lr": [0.1, 1e30]}, {"epochs": 4, "hidden": 5, "scale": 10}, [1]
    ).runs
    (error,) = Table(out / "failed.csv").rows
    assert error["run_id"] == diverged.run_id
    assert error["error"].startswith("TrainingDiverged: training diverged at step")
    here = tmp_path / "here"
    metrics = run_experiment(ok.config, here)
    assert_same_results(out, {ok.run_id: result_row(ok, {"metrics": metrics, "seconds": 0.0})})
    assert _same_arrays(here / "params.npz", out / "runs" / ok.run_id / "params.npz")


def test_max_margin_sweep_runs_are_bit_identical_to_runs_in_this_process(
    tmp_path: Path, scheduler: str
) -> None:
    from attnlab.studies.max_margin import run_experiment

    out = tmp_path / "sweep"
    args = ["--grid", "textbook_backward=false,true", "--set", "steps=300", "--seeds", "0-1"]
    swept = _script(*args, "--out", str(out), "--scheduler", scheduler, experiment="max-margin")
    assert swept.returncode == 0, swept.stderr
    plan = plan_sweep(
        "attnlab.studies.max_margin", {"textbook_backward": [False, True]}, {"steps": 300}, [0, 1]
    )
    here = tmp_path / "here"
    assert_same_results(
        out,
        {
            run.run_id: result_row(
                run, {"metrics": run_experiment(run.config, here / run.run_id), "seconds": 0}
            )
            for run in plan.runs
        },
    )
    for run in plan.runs:
        assert _same_arrays(
            here / run.run_id / "params.npz", out / "runs" / run.run_id / "params.npz"
        )
    assert (out / "figures" / "correlation_vs_textbook_backward.png").is_file()
