"""Sweeps: one experiment over a grid of options and seeds, each run a task on a Dask cluster.

    result = sweep("attnlab.studies.attention", {"attention": ["prompt", "kq"], "features": [4, 2]},
                   seeds=range(20), out="runs/iris-seeds")

An experiment is a module with ``DEFAULTS`` (every option and its default, ``seed`` among them),
``resolve(config)`` (the defaults filled in; ``ValueError`` naming an unknown option or a bad
value) and ``run_experiment(config, run_dir, *, progress=None) -> metrics``; optionally
``PRELOAD``, the modules its runs import on first use (the embedded cluster's worker processes
start with them imported). The experiment is given as a module or an importable module name
(the command line adds its own table of short names, :func:`load_experiment`'s ``table``); any
module with these three names works. The sweep calls ``run_experiment`` once per grid point and
seed, each call one task on an embedded ``distributed.LocalCluster`` (one single-threaded worker
process per usable core), on the cluster of a scheduler address, or one after another in this
process (``workers=0``). Every grid point is resolved before anything runs, so a bad value stops
the sweep before its first run.

The sweep folder ``out`` holds:

- ``sweep.json``: the experiment (one per folder) and the grid of each invocation;
- ``runs/RUN_ID/``: the run folder that ``run_experiment`` writes. ``RUN_ID`` is a function of the
  experiment, the resolved config and the seed only: the options that differ from the defaults,
  the seed and a hash of all of it, e.g. ``attention=kq_lr=0.1_seed=3_<10 hex digits>``;
- ``results.csv``: one row per finished run (every option, every metric, ``wall_seconds``,
  ``run_id``), appended as runs finish; each row is written whole by one ``os.write``;
- ``failed.csv``: the runs that raised, with their error line (retried by the next invocation);
- ``summary.csv``, ``summary.md`` and ``figures/`` (see :mod:`mlp.train.sweep_report`);
- ``.sweep.lock``: locked while a sweep runs in the folder, so that a second one is refused.

Invoking the same sweep again skips the runs already in ``results.csv``, so a changed grid adds
only its new runs. A run's folder is emptied before the run starts, so a run that Dask
reschedules after its worker died writes the same folder and the same row as a first attempt.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import itertools
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from threadpoolctl import threadpool_limits
from tqdm import tqdm

from mlp.threads import threads as attention_threads
from mlp.threads import usable_cores
from mlp.train.cluster import client as client_of
from mlp.train.folders import read_json, to_jsonable, write_json
from mlp.train.sweep_report import cell, write_report

#: Columns of results.csv and failed.csv after the options and the metrics.
TAIL = ("wall_seconds", "error", "run_id")
MANIFEST = "sweep.json"
#: The lock file of a sweep folder, held while a sweep runs in it.
LOCK = ".sweep.lock"
_HASH_CHARS = 10
_READABLE_CHARS = 80


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: ``finished`` runs were recorded, ``unfinished`` (those in flight
    and those not started) were not."""

    def __init__(self, out: Path, finished: int, unfinished: int) -> None:
        super().__init__(
            f"interrupted: {finished} runs finished and recorded in {out / 'results.csv'}, "
            f"{unfinished} not finished; run the same command again to continue"
        )
        self.out, self.finished, self.unfinished = out, finished, unfinished


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its id and its resolved config (the seed included)."""

    run_id: str
    config: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """A validated sweep: the experiment, the typed grid and fixed options, and every run."""

    experiment: str
    module: str
    grid: dict[str, list[Any]]
    fixed: dict[str, Any]
    seeds: list[int]
    runs: list[Run]


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did: counts of this invocation, the files it wrote, and ``rows``: the
    results.csv rows (text cells) of this sweep's runs that finished, now or before, in the
    order of the plan (a folder may hold the rows of other grids too)."""

    out: Path
    planned: int
    skipped: int
    finished: int
    failed: int
    files: dict[str, Path]
    rows: list[dict[str, str]]


def load_experiment(
    experiment: str | ModuleType, table: Mapping[str, str] | None = None
) -> tuple[str, str, ModuleType]:
    """``(name, module name, module)`` of an experiment: a module, an importable module name,
    or a short name of ``table`` (short name -> module name; the command line's table).

    ``name`` is the module's ``NAME`` (what results, run ids and ``sweep.json`` call the
    experiment), else its module name.
    """
    table = dict(table or {})
    if isinstance(experiment, ModuleType):
        module_name, module = experiment.__name__, experiment
    else:
        if not isinstance(experiment, str) or not re.fullmatch(r"[A-Za-z_][\w.-]*", experiment):
            raise ValueError(
                f"experiment: expected one of {sorted(table)} or a module name, received "
                f"{experiment!r}"
            )
        module_name = table.get(experiment, experiment)
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(
                f"experiment: expected one of {sorted(table)} or an importable experiment "
                f"module, received {experiment!r} ({err})"
            ) from err
    missing = [a for a in ("DEFAULTS", "resolve", "run_experiment") if not hasattr(module, a)]
    if missing or "seed" not in module.DEFAULTS:
        raise ValueError(
            f"experiment {experiment!r}: module {module_name} is not an experiment (it needs "
            f"DEFAULTS with a 'seed' option, resolve and run_experiment; missing "
            f"{missing or ['seed']})"
        )
    return str(getattr(module, "NAME", module_name)), module_name, module


def parse_assignment(text: str) -> tuple[str, list[str]]:
    """``"KEY=V1,V2"`` -> ``("KEY", ["V1", "V2"])`` (the values as text, spaces stripped)."""
    key, sep, values = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected KEY=VALUE or KEY=V1,V2,..., received {text!r}")
    items = [v.strip() for v in values.split(",")] if values.strip() else []
    if any(not v for v in items):
        raise ValueError(f"{key.strip()}: an empty value in {text!r}")
    return key.strip(), items


def parse_seeds(text: str) -> range:
    """``"A-B"`` -> ``range(A, B + 1)``; ``"A"`` -> ``range(A, A + 1)`` (A <= B, both >= 0)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if m is None or int(m[2] if m[2] is not None else m[1]) < int(m[1]):
        raise ValueError(f"seeds: expected A-B with 0 <= A <= B (or one seed A), received {text!r}")
    return range(int(m[1]), int(m[2] if m[2] is not None else m[1]) + 1)


def parse_value(key: str, text: str, default: Any) -> Any:
    """The option ``key`` read from ``text`` as the type of its ``default``.

    str: the text as given; bool: true/false/yes/no/1/0; int; float; ``none`` or ``null``: None
    (for any type but str, the experiment's ``resolve`` judges it); a None default: an int, else
    a float, else the text.
    """
    if isinstance(default, str):
        return text
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if isinstance(default, bool):
        words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
        if low not in words:
            raise ValueError(f"{key}: expected true or false, received {text!r}")
        return words[low]
    if default is None:
        for kind in (int, float):
            with suppress(ValueError):
                return kind(text)
        return text
    if not isinstance(default, (int, float)):
        raise ValueError(f"{key}: cannot be set from text (its default is {default!r})")
    kind = type(default)
    try:
        return kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ValueError(f"{key}: expected {expected}, received {text!r}") from None


def _option(raw: str, defaults: Mapping[str, Any], where: str) -> str:
    key = raw.strip().replace("-", "_")
    if key == "seed":
        raise ValueError(f"{where}: seed is set by the sweep's seeds, not as an option")
    if key not in defaults:
        options = ", ".join(k for k in defaults if k != "seed")
        raise ValueError(f"{where}: unknown option {raw!r}; the options are {options}")
    return key


def _typed(key: str, value: Any, defaults: Mapping[str, Any]) -> Any:
    return parse_value(key, value, defaults[key]) if isinstance(value, str) else value


def run_id(experiment: str, config: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    """The run's folder name: the options that differ from ``baseline``, the seed and a hash of
    the experiment and the whole config (``features=2_lr=0.1_seed=3_<10 hex digits>``)."""
    blob = json.dumps({"experiment": experiment, "config": to_jsonable(config)}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:_HASH_CHARS]
    base = to_jsonable(baseline)
    parts = [
        f"{k}={re.sub(r'[^A-Za-z0-9.+-]', '-', str(v))}"
        for k, v in to_jsonable(config).items()
        if k != "seed" and base.get(k, object()) != v
    ]
    readable = "_".join(parts)[:_READABLE_CHARS]
    return f"{readable}{'_' if readable else ''}seed={config['seed']}_{digest}"


def plan_sweep(
    experiment: str,
    grid: Mapping[str, Sequence[Any]] | None = None,
    fixed: Mapping[str, Any] | None = None,
    seeds: Iterable[int] = (0,),
) -> Plan:
    """Every run of the sweep, each config resolved by the experiment (nothing runs).

    ``grid``: option -> values (the product of all is swept); ``fixed``: option -> value for
    every run. Option names take ``_`` or ``-``; values given as text are read as the type of
    the option's default, or of its resolved default where the default is None
    (:func:`parse_value`). ``ValueError`` names an unknown option, an
    option given twice, an empty list of values or seeds, or the grid point that ``resolve``
    refuses.
    """
    name, module_name, module = load_experiment(experiment)
    baseline = module.resolve({})
    # the type of an option whose default is None (decided by resolve): its resolved default's
    defaults = {k: baseline.get(k) if v is None else v for k, v in module.DEFAULTS.items()}
    fixed_t: dict[str, Any] = {}
    for raw, value in (fixed or {}).items():
        key = _option(raw, defaults, "fixed options")
        if key in fixed_t:
            raise ValueError(f"fixed options: {key} given twice")
        fixed_t[key] = _typed(key, value, defaults)
    grid_t: dict[str, list[Any]] = {}
    for raw, values in (grid or {}).items():
        key = _option(raw, defaults, "grid")
        if key in grid_t or key in fixed_t:
            raise ValueError(f"grid: {key} given twice (in the grid or as a fixed option)")
        if isinstance(values, str) or not list(values):
            raise ValueError(f"grid: {key}: expected a list of values, received {values!r}")
        typed = [_typed(key, v, defaults) for v in values]
        grid_t[key] = [v for i, v in enumerate(typed) if v not in typed[:i]]
    seed_list = list(dict.fromkeys(seeds))
    if not seed_list or any(isinstance(s, bool) or not isinstance(s, int) for s in seed_list):
        raise ValueError(f"seeds: expected integers >= 0, received {seed_list!r}")
    runs: dict[str, Run] = {}
    for values in itertools.product(*grid_t.values()):
        point = dict(zip(grid_t, values, strict=True))
        for seed in seed_list:
            try:
                config = dict(module.resolve({**fixed_t, **point, "seed": seed}))
            except (ValueError, TypeError) as err:
                where = ", ".join(f"{k}={v!r}" for k, v in point.items()) or "the fixed options"
                raise ValueError(f"grid point {where}, seed {seed}: {err}") from err
            rid = run_id(name, config, baseline)
            runs.setdefault(rid, Run(rid, config))
    return Plan(name, module_name, grid_t, fixed_t, seed_list, list(runs.values()))


def run_task(
    module_name: str, config: Mapping[str, Any], run_dir: str, threads: int | None = None
) -> dict[str, Any]:
    """One run (a Dask task): empty ``run_dir``, call the experiment, time it.

    ``threads``: the BLAS threads and the attention step's threads of the run (None: as the
    process has them; a worker runs one task per thread, each on one thread of each).

    Returns ``{"metrics": dict, "seconds": float, "error": None}``, or ``{"error": "Type:
    message"}`` if the experiment raised (an exception does not end the sweep).
    """
    path = Path(run_dir)
    if path.exists():  # the files of an attempt whose worker died
        shutil.rmtree(path)
    path.mkdir(parents=True)
    module = importlib.import_module(module_name)
    start = time.perf_counter()
    try:
        with (
            threadpool_limits(threads, user_api="blas"),
            attention_threads(threads) if threads else nullcontext(),
        ):
            metrics = module.run_experiment(config, path, progress=False)
    except Exception as err:
        return {"error": error_line(err), "seconds": time.perf_counter() - start}
    return {"metrics": dict(metrics), "seconds": time.perf_counter() - start, "error": None}


def error_line(err: BaseException) -> str:
    """``"Type: first line of the message"``."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".strip().rstrip(":")


class Table:
    """A CSV file that grows one row at a time; a crash never leaves a partial row.

    A row whose columns the file has is appended with one ``os.write`` on an ``O_APPEND``
    descriptor; a row with new columns rewrites the file (a temporary file, then
    ``os.replace``). A last line without its newline (a torn write) is dropped on reading.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] = []
        self.rows: list[dict[str, str]] = []
        if path.is_file():
            text = path.read_text()
            torn = not text.endswith("\n")
            reader = csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1]))
            self.columns = list(reader.fieldnames or [])
            self.rows = [{k: v or "" for k, v in row.items()} for row in reader]
            if torn and self.columns:
                self.rewrite()

    def _line(self, row: Mapping[str, str]) -> str:
        """One CSV line (a cell's own line breaks become spaces)."""
        buf = io.StringIO()
        cells = [" ".join(str(row.get(c, "")).splitlines()) for c in self.columns]
        csv.writer(buf, lineterminator="\n").writerow(cells)
        return buf.getvalue()

    def rewrite(self, rows: list[dict[str, str]] | None = None) -> None:
        """Replace the file by the header and ``rows`` (default: the rows read and appended)."""
        self.rows = list(self.rows if rows is None else rows)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        header = self._line({c: c for c in self.columns})
        tmp.write_text(header + "".join(self._line(r) for r in self.rows))
        os.replace(tmp, self.path)

    def append(self, row: Mapping[str, str]) -> None:
        """Add one row (text cells) to the file and to :attr:`rows`."""
        new = [k for k in row if k not in self.columns]
        if new or not self.path.is_file():
            rank = {k: i for i, k in enumerate(TAIL)}
            cols = self.columns + new
            self.columns = sorted(cols, key=lambda k: (rank.get(k, -1), cols.index(k)))
            self.rewrite([*self.rows, dict(row)])
            return
        data = self._line(row).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(f"{self.path}: short write of a row")
        finally:
            os.close(fd)
        self.rows.append(dict(row))


def _outcomes(
    plan: Plan, runs: list[Run], out: Path, scheduler: str | None, workers: int
) -> Iterator[tuple[Run, dict[str, Any]]]:
    """``(run, outcome of run_task)`` as the runs finish."""
    folder = out / "runs"
    if not runs:
        return
    if workers == 0 and scheduler is None:
        for run in runs:
            yield run, run_task(plan.module, run.config, str(folder / run.run_id))
        return
    from distributed import as_completed

    module = importlib.import_module(plan.module)
    preload = [plan.module, *getattr(module, "PRELOAD", ())]
    with client_of(scheduler, workers, [__name__, *preload]) as client:
        token = uuid.uuid4().hex[:8]  # keys of this invocation only, on a shared scheduler
        futures = {
            client.submit(
                run_task,
                plan.module,
                run.config,
                str(folder / run.run_id),
                1,
                key=f"run-{run.run_id}-{token}",
                pure=False,
            ): run
            for run in runs
        }
        try:
            for future in as_completed(futures):
                try:
                    outcome = future.result()
                except Exception as err:  # e.g. KilledWorker: its workers died too often
                    outcome = {"error": error_line(err)}
                yield futures[future], outcome
        finally:
            client.cancel(list(futures))


def _check_folder(out: Path, plan: Plan) -> dict[str, Any]:
    """Check that ``out`` is new, empty or a sweep of the same experiment; its manifest."""
    manifest: dict[str, Any] = {}
    if (out / MANIFEST).is_file():
        manifest = read_json(out / MANIFEST)
        if manifest.get("experiment") != plan.experiment:
            raise ValueError(
                f"out: {out} holds a sweep of experiment {manifest.get('experiment')!r}, not "
                f"{plan.experiment!r}; give another folder"
            )
    elif out.exists() and (not out.is_dir() or any(p.name != LOCK for p in out.iterdir())):
        raise ValueError(f"out: {out} exists and is not a sweep folder (it has no {MANIFEST})")
    return manifest


@contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the sweep folder ``out`` (created if new): a second sweep
    into it while this one runs is refused, since both would run and append the same runs.
    Where the platform has no ``fcntl`` (Windows), no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"out: {out} is in use by another sweep running now; wait for it to end, or "
                "give another folder"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _open_folder(out: Path, plan: Plan) -> list[str]:
    """Check ``out`` (:func:`_check_folder`) and record the plan's grid in its manifest.
    Returns the options of the grids of every invocation."""
    manifest = _check_folder(out, plan)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    invocation = {
        "grid": plan.grid,
        "fixed": plan.fixed,
        "seeds": plan.seeds,
        "runs": len(plan.runs),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    invocations = [*manifest.get("invocations", []), invocation]
    write_json(
        out / MANIFEST,
        {"experiment": plan.experiment, "module": plan.module, "invocations": invocations},
    )
    return list(dict.fromkeys(k for i in invocations for k in i.get("grid", {})))


def result_row(run: Run, outcome: Mapping[str, Any]) -> dict[str, str]:
    """The results.csv row of a finished run: its options, its metrics (a metric named like an
    option gets the prefix ``metric_``, unless it repeats the option's value), ``wall_seconds``
    and ``run_id`` (which names the run folder: the metrics' ``run_dir`` is left out)."""
    row = {k: cell(v) for k, v in run.config.items()}
    for k, v in outcome["metrics"].items():
        if k == "run_dir" or (k in row and row[k] == cell(v)):
            continue
        row[f"metric_{k}" if k in row or k in TAIL else k] = cell(v)
    return {**row, "wall_seconds": cell(outcome["seconds"]), "run_id": run.run_id}


def sweep(
    experiment: str,
    grid: Mapping[str, Sequence[Any]] | None = None,
    fixed: Mapping[str, Any] | None = None,
    seeds: Iterable[int] = (0,),
    out: str | Path = "runs/sweep",
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> SweepResult:
    """Run every run of :func:`plan_sweep` not yet in ``out/results.csv``; write the report.

    ``scheduler``: the address of a Dask scheduler (``tcp://host:port``) whose workers see
    ``out`` at the same path. Without it: an embedded ``LocalCluster`` of ``workers`` processes
    (default one per usable core; never more than there are runs to do), or for ``workers=0``
    one run after another in this process. ``progress``: a bar over the runs (finished, failed,
    total) on stderr. Raises ``ValueError`` before any run for a bad grid, folder or worker
    count, and :class:`SweepInterrupted` on Ctrl-C (the finished runs are recorded).
    """
    plan = plan_sweep(experiment, grid, fixed, seeds)
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 0 or scheduler
    ):
        raise ValueError(
            f"workers: expected an integer >= 0 without a scheduler, received {workers!r} "
            f"(scheduler {scheduler!r})"
        )
    out = Path(out).absolute()
    _check_folder(out, plan)  # before the lock creates the folder
    with _folder_lock(out):
        return _sweep_in(out, plan, scheduler, workers, progress)


def _sweep_in(
    out: Path, plan: Plan, scheduler: str | None, workers: int | None, progress: bool
) -> SweepResult:
    """:func:`sweep` in its locked folder ``out``."""
    grid_options = _open_folder(out, plan)
    results, failed = Table(out / "results.csv"), Table(out / "failed.csv")
    done = {row["run_id"] for row in results.rows}
    pending = [run for run in plan.runs if run.run_id not in done]
    if failed.rows:  # the runs tried again now, or done since, leave failed.csv
        retry = done | {run.run_id for run in pending}
        failed.rewrite([r for r in failed.rows if r.get("run_id") not in retry])
    n_workers = 0 if workers == 0 else min(workers or usable_cores(), len(pending))
    bar = tqdm(
        total=len(plan.runs),
        initial=len(plan.runs) - len(pending),
        desc=f"{plan.experiment} runs",
        unit="run",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    finished = n_failed = 0
    try:
        with closing(_outcomes(plan, pending, out, scheduler, n_workers)) as outcomes:
            for run, outcome in outcomes:
                if outcome["error"] is None:
                    results.append(result_row(run, outcome))
                    finished += 1
                else:
                    row = {k: cell(v) for k, v in run.config.items()}
                    failed.append({**row, "error": outcome["error"], "run_id": run.run_id})
                    n_failed += 1
                bar.set_postfix(failed=n_failed, refresh=False)
                bar.update(1)
    except KeyboardInterrupt:
        raise SweepInterrupted(out, finished, len(pending) - finished - n_failed) from None
    finally:
        bar.close()
    config_keys = list(plan.runs[0].config)
    files = write_report(
        out, plan.experiment, config_keys, results.rows, len(failed.rows), grid_options
    )
    skipped = len(plan.runs) - len(pending)
    by_id = {row["run_id"]: row for row in results.rows}
    rows = [by_id[run.run_id] for run in plan.runs if run.run_id in by_id]
    return SweepResult(out, len(plan.runs), skipped, finished, n_failed, files, rows)
