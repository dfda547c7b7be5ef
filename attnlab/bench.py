"""Benchmarks: the lecture's vectorization speedup; the attention step against plain matmul,
PyTorch and the machine's matmul roof, at the default thread count and pinned to one thread; its
speedup per core count; its scaling in C and n; its peak memory against the memory model.

:func:`run_benchmarks` runs the parts (:data:`PARTS`), writes ``bench.json``, ``report.txt`` and
one PNG per part to a run folder and returns the results with the report's lines.

Every number comes from one run: each measurement is repeated, the implementations and thread
settings that a ratio compares are timed in turn (round robin, so a slow spell hits all of
them), and the report gives medians with the interquartile range. A thread setting is either
``"default"`` (nothing pinned: what a user gets: attnlab on every usable core, BLAS and torch
with their own defaults) or a count ``k`` (attnlab, numpy's BLAS and torch all on ``k`` threads).

The plain ``np.matmul`` step (:func:`plain_step`) and the PyTorch step (:func:`torch_step`) are
readable references of the same computation as ``ContextWindowModel(d, attention="self",
pool="mean", head="linear").loss_and_grads``; both are checked against it before any timing.
PyTorch is optional (the ``bench`` extra) and imported only here, when asked for: without it its
columns are skipped with a note.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_info

import mlp
from attnlab.blocks.attention import attend_forward
from attnlab.blocks.memory import activation_bytes
from attnlab.models.context_window import ContextWindowModel
from mlp.threads import num_threads, threads, usable_cores
from mlp.validation import check_seed, positive

PARTS = ("mlp", "step", "threads", "scaling", "memory")
#: Targets (float64, the largest d; medians of one run). ``*_max``: at most, ``*_min``: at least.
TARGETS = {
    "default_over_1_thread_max": 0.6,  # the step at the default thread count / 1 thread
    "vs_torch_default_max": 0.7,  # attnlab / torch, both at their default thread count
    "vs_plain_1_thread_max": 1.15,  # attnlab / plain matmul, one thread
    "vs_torch_1_thread_max": 0.8,  # attnlab / torch, one thread
    "roof_fraction_1_thread_min": 0.40,  # attnlab's GFLOP/s / a large matmul's, one thread
    "demo_default_over_1_thread_max": 1.1,  # the demo's small step: default / 1 thread
    "memory_ratio_max": 3.0,  # peak memory of the step / cached activations
}


@dataclass(frozen=True)
class Sizes:
    """What one mode measures. ``mlp_*``: the lecture's network ``(d, m, k) = (2, 10, 3)``;
    ``demo_*``: the demo's model (self attention, last pool, MLP head, 3 classes)."""

    repeats: int
    mlp_loop_n: tuple[int, ...]  # vectorized against per-sample loops
    mlp_vec_n: tuple[int, ...]  # vectorized step time against n
    step_n: int
    step_d: tuple[int, ...]
    step_c: int
    roof_size: int  # the square np.matmul that measures the machine's roof
    demo_n: int
    demo_d: int
    demo_c: int
    scale_d: int
    scale_c: tuple[int, ...]  # time against C at n = scale_c_n
    scale_c_n: int
    scale_n: tuple[int, ...]  # time against n at C = step_c
    mem_c: tuple[int, ...]  # peak memory against C at n = scale_c_n
    min_time: float = 0.01  # seconds: a sample of a faster function averages several calls


_SHARED = {"step_n": 1024, "step_d": (32, 64), "step_c": 64, "roof_size": 2048, "scale_d": 32}
_DEMO = {"demo_n": 64, "demo_d": 5, "demo_c": 16}
_C_SCAN = (16, 32, 64, 128, 256, 512)
MODES = {
    "quick": Sizes(
        repeats=9,
        mlp_loop_n=(150, 1_000, 10_000),
        mlp_vec_n=(150, 1_000, 10_000, 100_000),
        scale_c=_C_SCAN,
        scale_c_n=64,
        scale_n=(128, 256, 512, 1024, 2048, 4096, 8192),
        mem_c=_C_SCAN,
        **_SHARED,
        **_DEMO,
    ),
    "full": Sizes(
        repeats=11,
        mlp_loop_n=(150, 1_000, 10_000),
        mlp_vec_n=(150, 1_000, 10_000, 100_000, 1_000_000),
        scale_c=_C_SCAN,
        scale_c_n=256,
        scale_n=(128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768),
        mem_c=_C_SCAN,
        **_SHARED,
        **_DEMO,
    ),
    "quick-test": Sizes(
        repeats=1,
        mlp_loop_n=(20, 50),
        mlp_vec_n=(20, 200, 2000),
        step_n=16,
        step_d=(4, 8),
        step_c=8,
        roof_size=128,
        demo_n=8,
        demo_d=5,
        demo_c=4,
        scale_d=4,
        scale_c=(4, 8, 16),
        scale_c_n=8,
        scale_n=(8, 16, 32),
        mem_c=(4, 8),
        min_time=0.0,
    ),
}


# --- thread settings ---------------------------------------------------------------------------

_torch_default_threads: int | None = None  # torch's own thread count, read when first imported
_blas: ThreadpoolController | None = None


def import_torch() -> Any:
    """``torch`` (raises ImportError when it is not installed); remembers its default threads."""
    global _torch_default_threads
    import torch

    if _torch_default_threads is None:
        _torch_default_threads = torch.get_num_threads()
    return torch


@contextmanager
def thread_setting(k: int | None) -> Iterator[None]:
    """``None``: every library's default thread count; ``k``: attnlab (``mlp.threads``),
    numpy's BLAS (threadpoolctl) and torch (when imported) on ``k`` threads."""
    global _blas
    torch = sys.modules.get("torch")
    if k is None:
        if torch is not None and _torch_default_threads is not None:
            torch.set_num_threads(_torch_default_threads)
        yield
        return
    if _blas is None:
        _blas = ThreadpoolController()
    with _blas.limit(limits=k, user_api="blas"), threads(k):
        if torch is not None:
            torch.set_num_threads(k)
        yield


def _label(k: int | None) -> str:
    return "default" if k is None else str(k)


def _threads_text(label: str) -> str:
    """``"default threads"``, ``"1 thread"``, ``"2 threads"``."""
    return "default threads" if label == "default" else f"{label} thread" + "s" * (label != "1")


# --- timing ------------------------------------------------------------------------------------


def _calls_per_sample(f: Callable[[], object], min_time: float = 0.01) -> int:
    """How many calls of ``f`` make one timed sample of at least ``min_time`` seconds."""
    t0 = time.perf_counter()
    f()
    once = time.perf_counter() - t0
    return max(1, min(10_000, int(np.ceil(min_time / max(once, 1e-7)))))


def _busy_seconds() -> tuple[float, float] | None:
    """CPU seconds used so far by every process on the machine (``/proc/stat``) and by this
    one (``os.times``); None where ``/proc/stat`` cannot be read."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in fields]
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait
    own = os.times()
    return busy, own.user + own.system


@dataclass
class Timing:
    """Seconds per call of each function (``repeats`` samples each), and for each kept round
    the share of the machine's cores that other processes used during it."""

    times: dict[str, list[float]]
    other_load: list[float]
    rounds: int  # rounds run, kept or not


def time_round_robin(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    min_time: float = 0.01,
    settings: dict[str, int | None] | None = None,
    quiet: float | None = None,
) -> Timing:
    """Time each function ``repeats`` times, the functions in turn (one round = one sample of
    each).

    ``settings[key]`` is the thread setting (:func:`thread_setting`) of function ``key``
    (default: ``None``), entered outside the timed calls. Each function is called once first
    (warm-up); a sample of a fast function averages enough calls to last ``min_time`` seconds.
    The order rotates every round, so that no function always follows the same one (threads
    still spinning after a parallel region slow down whatever runs next).

    ``quiet``: on a shared machine, a round during which other processes used more than this
    share of the cores is run again, up to ``3 * repeats`` rounds in all; then the ``repeats``
    quietest rounds are kept. None keeps every round.
    """
    settings = settings or {}
    number = {}
    for key, f in fns.items():
        with thread_setting(settings.get(key)):
            number[key] = _calls_per_sample(f, min_time)
    keys = list(fns)
    cores = os.cpu_count() or 1
    rounds: list[tuple[float, dict[str, float]]] = []
    r = 0
    while r < repeats or (
        quiet is not None and r < 3 * repeats and sum(load <= quiet for load, _ in rounds) < repeats
    ):
        sample = {}
        start, w0 = _busy_seconds(), time.perf_counter()
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            with thread_setting(settings.get(key)):
                t0 = time.perf_counter()
                for _ in range(number[key]):
                    fns[key]()
                sample[key] = (time.perf_counter() - t0) / number[key]
        end, wall = _busy_seconds(), time.perf_counter() - w0
        load = 0.0
        if start is not None and end is not None and wall > 0:
            load = max(0.0, ((end[0] - start[0]) - (end[1] - start[1])) / (cores * wall))
        rounds.append((load, sample))
        r += 1
    if quiet is not None:  # the quietest rounds, in the order they ran
        quietest = sorted(range(len(rounds)), key=lambda i: rounds[i][0])[:repeats]
        rounds = [rounds[i] for i in sorted(quietest)]
    return Timing(
        times={key: [sample[key] for _, sample in rounds] for key in keys},
        other_load=[load for load, _ in rounds],
        rounds=r,
    )


def summary(ts: list[float]) -> dict[str, Any]:
    """Median, interquartile range, min, max and the samples themselves (seconds)."""
    a = np.asarray(ts)
    return {
        "median": float(np.median(a)),
        "q25": float(np.percentile(a, 25)),
        "q75": float(np.percentile(a, 75)),
        "min": float(a.min()),
        "max": float(a.max()),
        "repeats": len(ts),
        "samples": [float(t) for t in ts],
    }


def fit_slope(x: Sequence[float], t: Sequence[float]) -> float:
    """Least-squares slope of ``log t`` against ``log x`` (the exponent of ``t ~ x^slope``)."""
    return float(np.polyfit(np.log(x), np.log(t), 1)[0])


# --- the machine -------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, numpy version, BLAS libraries (threadpoolctl), thread variables."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = threadpool_info()
    blas = [
        {k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
        | {"file": Path(lib["filepath"]).name}
        for lib in info
    ]
    # numpy's own BLAS: the library shipped in numpy's wheel (numpy.libs) or linked to it
    numpy_dir = Path(np.__file__).resolve().parent.name
    ours = [b for b in info if numpy_dir in b["filepath"] and b["user_api"] == "blas"]
    numpy_blas = ours[0] if ours else next((b for b in info if b["user_api"] == "blas"), {})
    prefixes = ("OPENBLAS", "OMP_", "MKL_", "ATTNLAB_")
    return {
        "cores": usable_cores(),
        "cpu": cpu,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": {
            k: numpy_blas.get(k) for k in ("internal_api", "version", "architecture", "num_threads")
        },
        "blas": blas,
        "attnlab_threads": num_threads(),
        "env": {k: os.environ[k] for k in sorted(os.environ) if k.startswith(prefixes)},
    }


# --- part 1: the MLP, vectorized against per-sample loops ---------------------------------------


def bench_mlp(sizes: Sizes, seed: int) -> dict[str, Any]:
    """The lecture's network on Gaussian data: loops against vectorized, and time against n
    (default threads)."""
    d, m, k = 2, 10, 3
    theta = mlp.init_params(d, m, k, seed=seed)
    rng = np.random.default_rng(seed)

    def timed(n: int, loops: bool) -> dict[str, dict[str, Any]]:
        X = rng.standard_normal((n, d))
        y = rng.integers(0, k, size=n)
        fns = {
            "forward": lambda: mlp.forward(X, theta),
            "step": lambda: mlp.loss_and_grads(X, y, theta),
        }
        if loops:
            fns["forward_loop"] = lambda: mlp.forward_nonvectorized(X, theta)
            fns["step_loop"] = lambda: mlp.loss_and_grads_nonvectorized(X, y, theta)
        times = time_round_robin(fns, sizes.repeats, sizes.min_time).times
        return {key: summary(v) for key, v in times.items()}

    rows = []
    for n in sizes.mlp_loop_n:
        s = timed(n, loops=True)
        rows.append(
            {
                "n": n,
                "times": s,
                "speedup_forward": s["forward_loop"]["median"] / s["forward"]["median"],
                "speedup_step": s["step_loop"]["median"] / s["step"]["median"],
            }
        )
    scaling = [{"n": n, "times": timed(n, loops=False)} for n in sizes.mlp_vec_n]
    big = [r for r in scaling if r["n"] >= 10_000] or scaling[-2:]
    slope = fit_slope([r["n"] for r in big], [r["times"]["step"]["median"] for r in big])
    return {
        "network": {"d": d, "m": m, "k": k},
        "loops": rows,
        "vectorized": scaling,
        "slope_step": slope,
        "slope_fit_n": [r["n"] for r in big],
    }


# --- part 2: the attention step ----------------------------------------------------------------


def step_flops(n: int, d: int, c: int) -> int:
    """Floating-point operations of the library step's matrix products (2 per multiply-add).

    ``self`` attention (``j = c`` query columns), mean pool, linear head with ``k = 1``::

        forward    Q = W X            "e d, n d c -> n e c"    2 n d d c
                   scores = X^T Q     "n d c, n d j -> n c j"  2 n c d j
                   out = X S          "n d c, n c j -> n d j"  2 n d c j
                   z = u v            "n d, d k -> n k"        2 n d
        backward   dv = u^T dz        "n d, n k -> d k"        2 n d
                   du = dz v^T        "n k, d k -> n d"        2 n d
                   dS = X^T dOut      "n d c, n d j -> n c j"  2 n c d   (j = 1, see below)
                   dQ = X dScores     "n d c, n c j -> n d j"  2 n d c j
                   dW = dQ X^T        "n e c, n d c -> e d"    2 n d d c

    The mean pool sends back the same gradient for every query column, ``dOut (n, d, 1)``, so
    ``dS`` is one column per prompt (:func:`plain_step` does the same; a transcription that
    repeats ``dOut`` over ``j`` computes all ``j`` columns, ``2 n c d j``: at ``d = c`` six
    products of ``2 n d^3`` against five). Elementwise work (exp, max-shift, sums over tokens,
    pool) is not counted.
    """
    return 2 * n * (2 * d * d * c + 3 * d * c * c + d * c + 3 * d)


def plain_step(
    X: np.ndarray, y: np.ndarray, W: np.ndarray, v: np.ndarray
) -> tuple[float, dict[str, np.ndarray]]:
    """The attention step written with plain ``np.matmul``: the baseline of the step benchmark.

    ``X (n, d, c)``, labels ``y (n,)`` in {-1, +1}, ``W (d, d)``, ``v (d, 1)``. Same maths as the
    library's ``self``-attention model with mean pool, linear head and logistic loss, including
    the exact softmax backward (``dS`` shifted to 0 at the argmax before the weighted sum) and
    the same matrix products (the mean pool's gradient is one column ``(n, d, 1)``), so the
    ratio measures what the library's named axes, checks, blocks and threads change.
    Returns ``(loss, {"W": dW (d, d), "v": dv (d, 1)})``.
    """
    n, _, c = X.shape
    y = y.astype(X.dtype)
    Xt = X.transpose(0, 2, 1)  # (n, c, d)
    Q = np.matmul(W, X)  # (n, d, c)       Q = W X
    scores = np.matmul(Xt, Q)  # (n, c, j)  X^T Q
    top = np.argmax(scores, axis=1, keepdims=True)  # (n, 1, j)
    S = np.exp(scores - np.take_along_axis(scores, top, axis=1))
    S /= S.sum(axis=1, keepdims=True)  # softmax over the tokens c
    u = np.matmul(X, S).mean(axis=2)  # (n, d)   mean pool of out = X S
    z = u @ v  # (n, 1)
    margin = y * z[:, 0]
    loss = float(np.mean(np.logaddexp(0, -margin)))
    dz = (-y * np.exp(-np.logaddexp(0, margin)) / n)[:, None]  # (n, 1)
    dv = u.T @ dz  # (d, 1)
    dOut = (dz @ v.T)[:, :, None] / c  # (n, d, 1): the mean pool's gradient, same for every j
    ds = np.matmul(Xt, dOut)  # (n, c, 1)
    dS = ds - np.take_along_axis(ds, top, axis=1)  # (n, c, j): exact when S saturates
    dS -= np.sum(S * dS, axis=1, keepdims=True)
    dS *= S  # dScores
    dQ = np.matmul(X, dS)  # (n, d, j)
    dW = np.matmul(dQ, Xt).sum(axis=0)  # (d, d)
    return loss, {"W": dW, "v": dv}


def torch_step(
    X: np.ndarray, y: np.ndarray, W: np.ndarray, v: np.ndarray
) -> Callable[[], tuple[float, dict[str, np.ndarray]]]:
    """The same step in PyTorch CPU autograd (textbook softmax backward); raises ImportError.

    Returns a function computing ``(loss, {"W": dW, "v": dv})`` for the fixed inputs.
    """
    torch = import_torch()
    Xt = torch.from_numpy(X)
    yt = torch.from_numpy(y.astype(X.dtype))
    Wt = torch.from_numpy(W.copy()).requires_grad_()
    vt = torch.from_numpy(v.copy()).requires_grad_()
    zero = torch.zeros(X.shape[0], dtype=Xt.dtype)

    def step() -> tuple[float, dict[str, np.ndarray]]:
        Wt.grad = None
        vt.grad = None
        S = torch.softmax(Xt.transpose(1, 2) @ (Wt @ Xt), dim=1)
        z = (Xt @ S).mean(dim=2) @ vt
        loss = torch.logaddexp(zero, -yt * z[:, 0]).mean()
        loss.backward()
        return float(loss.detach()), {"W": Wt.grad.numpy(), "v": vt.grad.numpy()}

    return step


def max_rel_error(a: tuple[float, dict], b: tuple[float, dict]) -> float:
    """Largest relative error between two ``(loss, grads)`` results, over loss and grads."""
    errs = [abs(a[0] - b[0]) / max(abs(b[0]), 1e-30)]
    for k, g in b[1].items():
        errs.append(float(np.max(np.abs(a[1][k] - g)) / max(np.max(np.abs(g)), 1e-30)))
    return max(errs)


def torch_note(use_torch: bool) -> str | None:
    """None when the torch columns can run, else the reason, as a note for the report."""
    if not use_torch:
        return "torch skipped (asked not to use it)"
    try:
        import_torch()
    except ImportError as err:
        return f"torch not installed ({err}); pip install -e '.[bench]' adds it"
    return None


def _step_problem(
    n: int, d: int, c: int, dtype: type, seed: int, rng: np.random.Generator
) -> tuple[ContextWindowModel, np.ndarray, np.ndarray]:
    X = rng.standard_normal((n, d, c)).astype(dtype)
    y = rng.choice([-1.0, 1.0], size=n)
    model = ContextWindowModel(
        d, attention="self", pool="mean", head="linear", seed=seed, dtype=dtype
    )
    return model, X, y


def _checked_steps(
    model: ContextWindowModel, X: np.ndarray, y: np.ndarray, with_torch: bool
) -> tuple[dict[str, Callable[[], object]], dict[str, float]]:
    """The library, plain and (``with_torch``) torch steps, after checking that the references
    give the library's loss and gradients; and their relative errors."""
    W, v = model.params["W"], model.params["v"]
    ours = model.loss_and_grads(X, y)
    fns: dict[str, Callable[[], object]] = {
        "attnlab": lambda: model.loss_and_grads(X, y),
        "plain": lambda: plain_step(X, y, W, v),
    }
    errors = {"plain": max_rel_error(plain_step(X, y, W, v), ours)}
    if with_torch:
        fns["torch"] = torch_step(X, y, W, v)
        errors["torch"] = max_rel_error(fns["torch"](), ours)  # type: ignore[arg-type]
    tol = 1e-10 if X.dtype == np.float64 else 1e-4
    for name, err in errors.items():
        if not err <= tol:
            raise AssertionError(f"{name} step differs from attnlab: {err:.2e} > {tol}")
    return fns, errors


def _at_settings(
    steps: dict[str, Callable[[], object]], counts: Sequence[int | None]
) -> tuple[dict[str, Callable[[], object]], dict[str, int | None]]:
    """Each step at each thread setting, keyed ``"<step>@<setting>"``, and those settings."""
    fns = {f"{name}@{_label(k)}": f for k in counts for name, f in steps.items()}
    return fns, {f"{name}@{_label(k)}": k for k in counts for name in steps}


def _rounds(timing: Timing) -> dict[str, Any]:
    """How many rounds ran and how busy the other processes kept the cores in the kept ones."""
    load = timing.other_load
    return {"rounds": timing.rounds, "kept": len(load), "other_load_median": float(np.median(load))}


def bench_step(
    sizes: Sizes, seed: int, note: str | None, pinned: int = 1, quiet: float | None = None
) -> dict[str, Any]:
    """The ``self``-attention step at each ``(dtype, d)``: ours, plain matmul, torch and the
    roof, each at the default thread count and at ``pinned`` threads (``quiet``: see
    :func:`time_round_robin`)."""
    n, c = sizes.step_n, sizes.step_c
    rng = np.random.default_rng(seed)
    rows = []
    labels = ("default", str(pinned))
    for dtype in (np.float64, np.float32):
        a = rng.standard_normal((sizes.roof_size, sizes.roof_size)).astype(dtype)
        b = rng.standard_normal((sizes.roof_size, sizes.roof_size)).astype(dtype)
        for d in sizes.step_d:
            model, X, y = _step_problem(n, d, c, dtype, seed, rng)
            steps, errors = _checked_steps(model, X, y, note is None)
            steps["roof"] = lambda a=a, b=b: a @ b
            fns, settings = _at_settings(steps, (None, pinned))
            timing = time_round_robin(fns, sizes.repeats, sizes.min_time, settings, quiet)
            raw = timing.times
            flops = step_flops(n, d, c)
            row: dict[str, Any] = {
                "dtype": np.dtype(dtype).name,
                "n": n,
                "d": d,
                "c": c,
                "flops": flops,
                "max_rel_error": errors,
                "times": {},
                "rounds": _rounds(timing),
            }
            for lab in labels:
                s = {name: summary(raw[f"{name}@{lab}"]) for name in steps}
                med = {name: t["median"] for name, t in s.items()}
                gflops = flops / med["attnlab"] / 1e9
                roof = 2 * sizes.roof_size**3 / med["roof"] / 1e9
                row["times"][lab] = s
                row[lab] = {
                    "gflops": gflops,
                    "roof_gflops": roof,
                    "roof_fraction": gflops / roof,
                    "vs_plain": med["attnlab"] / med["plain"],
                    "vs_torch": med["attnlab"] / med["torch"] if "torch" in med else None,
                }
            row["default_over_pinned"] = {
                name: row["times"]["default"][name]["median"]
                / row["times"][labels[1]][name]["median"]
                for name in steps
            }
            rows.append(row)
    return {"rows": rows, "pinned": pinned, "torch_note": note}


# --- part 3: the step on 1, 2, ... threads -----------------------------------------------------


def bench_threads(
    sizes: Sizes, seed: int, note: str | None, quiet: float | None = None
) -> dict[str, Any]:
    """The float64 step at the largest ``d`` on ``k = 1 .. cores`` threads and at the default
    (attnlab and torch), and the demo's small step (self attention, last pool, MLP head) at the
    default and on one thread (``quiet``: see :func:`time_round_robin`)."""
    n, d, c = sizes.step_n, max(sizes.step_d), sizes.step_c
    rng = np.random.default_rng(seed)
    model, X, y = _step_problem(n, d, c, np.float64, seed, rng)
    steps, _ = _checked_steps(model, X, y, note is None)
    steps.pop("plain")
    demo = ContextWindowModel(
        sizes.demo_d, attention="self", pool="last", head="mlp", n_classes=3, seed=seed
    )
    Xd = rng.standard_normal((sizes.demo_n, sizes.demo_d, sizes.demo_c))
    yd = rng.integers(0, 3, size=sizes.demo_n)
    counts: list[int | None] = [*range(1, usable_cores() + 1), None]
    fns, settings = _at_settings(steps, counts)
    demo_fns, demo_settings = _at_settings({"demo": lambda: demo.loss_and_grads(Xd, yd)}, (1, None))
    timing = time_round_robin(
        fns | demo_fns, sizes.repeats, sizes.min_time, settings | demo_settings, quiet
    )
    times = {key: summary(t) for key, t in timing.times.items()}
    rows = []
    for k in counts:
        lab = _label(k)
        row: dict[str, Any] = {"threads": lab}
        for name in steps:
            row[name] = times[f"{name}@{lab}"]
            row[f"{name}_speedup"] = times[f"{name}@1"]["median"] / row[name]["median"]
        rows.append(row)
    demo_ratio = times["demo@default"]["median"] / times["demo@1"]["median"]
    return {
        "n": n,
        "d": d,
        "c": c,
        "cores": usable_cores(),
        "rows": rows,
        "rounds": _rounds(timing),
        "demo": {
            "n": sizes.demo_n,
            "d": sizes.demo_d,
            "c": sizes.demo_c,
            "times": {"1": times["demo@1"], "default": times["demo@default"]},
            "default_over_1_thread": demo_ratio,
        },
        "torch_note": note,
    }


# --- part 4: scaling in C and n ----------------------------------------------------------------


def _step_time(n: int, d: int, c: int, sizes: Sizes, rng: np.random.Generator) -> dict:
    X = rng.standard_normal((n, d, c))
    y = rng.choice([-1.0, 1.0], size=n)
    model = ContextWindowModel(d, attention="self", pool="mean", head="linear")
    step = {"step": lambda: model.loss_and_grads(X, y)}
    return summary(time_round_robin(step, sizes.repeats, sizes.min_time, {"step": 1}).times["step"])


def bench_scaling(sizes: Sizes, seed: int) -> dict[str, Any]:
    """Step time against C (at n = ``scale_c_n``) and against n (at C = ``step_c``), float64,
    one thread (the algorithm's scaling, apart from the threads')."""
    rng = np.random.default_rng(seed)
    d = sizes.scale_d
    by_c = [
        {"c": c, "n": sizes.scale_c_n, "times": _step_time(sizes.scale_c_n, d, c, sizes, rng)}
        for c in sizes.scale_c
    ]
    by_n = [
        {"n": n, "c": sizes.step_c, "times": _step_time(n, d, sizes.step_c, sizes, rng)}
        for n in sizes.scale_n
    ]
    out: dict[str, Any] = {"d": d, "by_c": by_c, "by_n": by_n}
    for var, rows in (("c", by_c), ("n", by_n)):
        xs = [r[var] for r in rows]
        med = [r["times"]["median"] for r in rows]
        half = len(xs) // 2
        out[f"slope_{var}"] = fit_slope(xs, med)
        out[f"slope_{var}_upper"] = fit_slope(xs[half:], med[half:])
        out[f"slope_{var}_lower"] = fit_slope(xs[: half + 1], med[: half + 1])
    cs = [r["c"] for r in by_c]
    out["flop_slope_c"] = fit_slope(cs, [step_flops(sizes.scale_c_n, d, c) for c in cs])
    return out


# --- part 5: peak memory -----------------------------------------------------------------------


def cached_bytes(n: int, d: int, c: int, itemsize: int) -> dict[str, int]:
    """Bytes the backward needs, held from the forward (self attention, mean pool, linear head).

    ``X (n, d, c)`` the input, ``Q = W X (n, d, c)``, ``S (n, c, j)`` with ``j = c``, ``top``
    (the argmax of ``S`` over tokens, int64, ``(n, 1, j)``), ``u (n, d)`` the pooled output and
    ``z (n, 1)`` the logits.
    """
    return {
        "X": n * d * c * itemsize,
        "Q": n * d * c * itemsize,
        "S": n * c * c * itemsize,
        "top": n * c * 8,
        "u": n * d * itemsize,
        "z": n * itemsize,
    }


def step_memory(n: int, d: int, c: int, dtype: type, rng: np.random.Generator) -> dict[str, Any]:
    """Peak memory of one step (tracemalloc: numpy's allocations) against the cached bytes and
    against the estimate of :func:`attnlab.blocks.memory.activation_bytes`.

    ``peak`` is the input ``X`` plus the largest amount allocated at once during the step.
    The cached-activation count is checked against a real :func:`attend_forward` cache.
    """
    X = rng.standard_normal((n, d, c)).astype(dtype)
    y = rng.choice([-1.0, 1.0], size=n)
    model = ContextWindowModel(d, attention="self", pool="mean", head="linear", dtype=dtype)
    cached = cached_bytes(n, d, c, X.itemsize)
    cache = attend_forward(X, np.matmul(model.params["W"], X))[1]
    real = cache.X.nbytes + cache.Q.nbytes + cache.S.nbytes + cache.top.nbytes
    if real != cached["X"] + cached["Q"] + cached["S"] + cached["top"]:
        raise AssertionError(f"cached-activation count {cached} disagrees with the cache: {real}")
    del cache  # freed now (reference counting): not part of the step's peak
    tracemalloc.start()
    model.loss_and_grads(X, y)
    peak_step = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    total = sum(cached.values())
    peak = X.nbytes + peak_step
    estimate = sum(activation_bytes(n, d, c, c, dtype, threads=num_threads()).values())
    return {
        "n": n,
        "d": d,
        "c": c,
        "dtype": np.dtype(dtype).name,
        "cached": cached,
        "cached_bytes": total,
        "peak_bytes": peak,
        "step_alloc_peak_bytes": peak_step,
        "ratio": peak / total,
        "estimate_bytes": estimate,
        "estimate_over_step_peak": estimate / peak_step,
    }


def bench_memory(sizes: Sizes, seed: int) -> dict[str, Any]:
    """Peak memory of the step configurations, and against C at n = ``scale_c_n``."""
    rng = np.random.default_rng(seed)
    rows = [
        step_memory(sizes.step_n, d, sizes.step_c, dtype, rng)
        for dtype in (np.float64, np.float32)
        for d in sizes.step_d
    ]
    by_c = [step_memory(sizes.scale_c_n, sizes.scale_d, c, np.float64, rng) for c in sizes.mem_c]
    return {"rows": rows, "by_c": by_c}


# --- plots -------------------------------------------------------------------------------------


def _pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend (imported when first drawing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def plot_mlp(res: dict[str, Any], path: Path) -> None:
    """Log-log time against n: vectorized forward and step, and the per-sample loops."""
    fig, ax = _pyplot().subplots(figsize=(6.4, 4.4))
    vec = res["vectorized"]
    ns = [r["n"] for r in vec]
    for key, style in (("step", "o-"), ("forward", "s-")):
        t = [r["times"][key]["median"] for r in vec]
        label = f"vectorized {key}"
        if key == "step":
            label += f" (slope {res['slope_step']:.2f} for n >= {res['slope_fit_n'][0]:,})"
        ax.loglog(ns, t, style, label=label)
    loops = res["loops"]
    for key, style in (("step_loop", "o--"), ("forward_loop", "s--")):
        ax.loglog(
            [r["n"] for r in loops],
            [r["times"][key]["median"] for r in loops],
            style,
            label=f"per-sample loop {key.split('_')[0]}",
        )
    ax.set_xlabel("n (samples)")
    ax.set_ylabel("seconds per call (median)")
    net = res["network"]
    ax.set_title(f"MLP d={net['d']}, m={net['m']}, k={net['k']}: vectorized vs loops")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_step(res: dict[str, Any], path: Path) -> None:
    """Median step time (with the interquartile range) of each implementation, shape and
    thread setting."""
    rows = res["rows"]
    labels = ("default", str(res["pinned"]))
    impls = [k for k in ("attnlab", "plain", "torch") if k in rows[0]["times"]["default"]]
    bars = [(lab, k) for lab in labels for k in impls]
    fig, ax = _pyplot().subplots(figsize=(7.6, 4.4))
    x = np.arange(len(rows))
    w = 0.8 / len(bars)
    for i, (lab, k) in enumerate(bars):
        t = [r["times"][lab][k] for r in rows]
        med = np.array([s["median"] for s in t]) * 1e3
        lo = med - np.array([s["q25"] for s in t]) * 1e3
        hi = np.array([s["q75"] for s in t]) * 1e3 - med
        name = f"{k}, {_threads_text(lab)}"
        hatch = None if lab == "default" else "//"
        pos = x + (i - (len(bars) - 1) / 2) * w
        style = {"color": f"C{impls.index(k)}", "hatch": hatch, "edgecolor": "white"}
        ax.bar(pos, med, w, yerr=[lo, hi], capsize=2, label=name, **style)
    ax.set_xticks(x, [f"{r['dtype']}\nd={r['d']}" for r in rows])
    r0 = rows[0]
    ax.set_ylabel("ms per step (median, IQR)")
    ax.set_title(f"self-attention step, n={r0['n']}, C={r0['c']}")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_threads(res: dict[str, Any], path: Path) -> None:
    """Speedup of the step from one thread to ``k`` threads, against the ideal ``k``."""
    rows = [r for r in res["rows"] if r["threads"] != "default"]
    ks = np.array([int(r["threads"]) for r in rows])
    fig, ax = _pyplot().subplots(figsize=(6.4, 4.4))
    for name, style in (("attnlab", "o-"), ("torch", "s--")):
        if name in rows[0]:
            ax.plot(ks, [r[f"{name}_speedup"] for r in rows], style, label=name)
    ax.plot(ks, ks, "k:", label="ideal")
    ax.set_xticks(ks)
    ax.set_xlabel("threads")
    ax.set_ylabel("speedup over one thread (medians)")
    ax.set_title(f"self-attention step, float64, n={res['n']}, d={res['d']}, C={res['c']}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_scaling(res: dict[str, Any], path: Path) -> None:
    """Log-log step time against C and against n, with the fitted slopes."""
    fig, axes = _pyplot().subplots(1, 2, figsize=(10, 4.2))
    for ax, key, var, fixed in ((axes[0], "by_c", "c", "n"), (axes[1], "by_n", "n", "c")):
        rows = res[key]
        xs = np.array([r[var] for r in rows], dtype=float)
        t = np.array([r["times"]["median"] for r in rows])
        ax.loglog(xs, t, "o-", label=f"measured (slope {res[f'slope_{var}']:.2f})")
        expect = 2 if var == "c" else 1
        ax.loglog(xs, t[-1] * (xs / xs[-1]) ** expect, "k:", label=f"slope {expect}")
        ax.set_xticks(xs, [str(int(x)) for x in xs])
        ax.minorticks_off()
        ax.set_xlabel("C (tokens)" if var == "c" else "n (prompts)")
        ax.set_ylabel("seconds per step (median, one thread)")
        ax.set_title(f"d={res['d']}, {fixed if fixed == 'n' else 'C'}={rows[0][fixed]}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_memory(res: dict[str, Any], path: Path) -> None:
    """Peak memory against the cached activations, with the 1x and 3x lines."""
    fig, ax = _pyplot().subplots(figsize=(6.4, 4.4))
    for rows, label in ((res["by_c"], "C scan"), (res["rows"], "step configurations")):
        cached = np.array([r["cached_bytes"] for r in rows]) / 2**20
        peak = np.array([r["peak_bytes"] for r in rows]) / 2**20
        ax.loglog(cached, peak, "o", label=label)
    allc = np.array([r["cached_bytes"] for r in res["by_c"] + res["rows"]]) / 2**20
    xs = np.array([allc.min(), allc.max()])
    ax.loglog(xs, xs, "k:", label="peak = cached")
    ax.loglog(xs, 3 * xs, "r--", label="peak = 3 x cached (target)")
    ax.set_xlabel("cached activations (MiB)")
    ax.set_ylabel("peak memory of the step (MiB)")
    ax.set_title("self-attention step: peak memory (tracemalloc)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


# --- the report --------------------------------------------------------------------------------


def _ms(s: dict[str, float]) -> str:
    return f"{s['median'] * 1e3:8.2f} ms [{s['q25'] * 1e3:.2f}, {s['q75'] * 1e3:.2f}]"


def _ratio(x: float | None) -> str:
    return f"{x:6.2f}x" if x is not None else "    n/a"


def _report_mlp(r: dict[str, Any]) -> list[str]:
    lines = ["", "MLP (d=2, m=10, k=3): per-sample loop time / vectorized time"]
    lines.append(f"{'n':>9} {'forward':>10} {'loss+grads':>11}   vectorized loss+grads")
    for row in r["loops"]:
        lines.append(
            f"{row['n']:>9,} {row['speedup_forward']:>9.1f}x {row['speedup_step']:>10.1f}x"
            f"   {_ms(row['times']['step'])}"
        )
    lines.append("vectorized loss+grads against n:")
    lines += [f"{row['n']:>9,}   {_ms(row['times']['step'])}" for row in r["vectorized"]]
    lines.append(f"log-log slope (n >= {r['slope_fit_n'][0]:,}): {r['slope_step']:.2f}")
    return lines


def _rounds_text(rounds: dict[str, Any]) -> str:
    return (
        f"{rounds['kept']} of {rounds['rounds']} rounds kept; other processes used "
        f"{rounds['other_load_median']:.0%} of the cores (median)"
    )


def _report_step(r: dict[str, Any]) -> list[str]:
    r0 = r["rows"][0]
    pinned = str(r["pinned"])
    title = (
        f"attention step (self, mean pool, linear head, logistic), n={r0['n']}, C={r0['c']}: "
        f"default threads, then {_threads_text(pinned)}"
    )
    lines = ["", title]
    lines.append(
        f"{'threads':>8} {'dtype':>8} {'d':>3} {'attnlab':>30} {'GFLOP/s':>8} {'roof':>7}"
        f" {'of roof':>8} {'/plain':>7} {'/torch':>7}"
    )
    for lab in ("default", pinned):
        for row in r["rows"]:
            m = row[lab]
            lines.append(
                f"{lab:>8} {row['dtype']:>8} {row['d']:>3} {_ms(row['times'][lab]['attnlab']):>30}"
                f" {m['gflops']:>8.1f} {m['roof_gflops']:>7.1f} {m['roof_fraction']:>7.0%}"
                f" {_ratio(m['vs_plain'])} {_ratio(m['vs_torch'])}"
            )
    lines.append("plain matmul and torch steps (median [q25, q75]):")
    for lab in ("default", pinned):
        for row in r["rows"]:
            t = row["times"][lab]
            extra = f"  torch {_ms(t['torch'])}" if "torch" in t else ""
            lines.append(
                f"{lab:>8} {row['dtype']:>8} {row['d']:>3}  plain {_ms(t['plain'])}{extra}"
            )
    lines.append(f"default threads / {_threads_text(pinned)}, each implementation:")
    for row in r["rows"]:
        ratios = "  ".join(f"{k} {v:.2f}x" for k, v in row["default_over_pinned"].items())
        lines.append(f"{row['dtype']:>17} {row['d']:>3}  {ratios}  ({_rounds_text(row['rounds'])})")
    if r["torch_note"]:
        lines.append(f"note: {r['torch_note']}")
    return lines


def _report_threads(r: dict[str, Any]) -> list[str]:
    title = (
        f"the step on k threads (float64, n={r['n']}, d={r['d']}, C={r['c']}, {r['cores']} "
        f"usable cores): median and speedup over 1 thread"
    )
    lines = ["", title]
    for row in r["rows"]:
        line = f"{row['threads']:>8}  attnlab {_ms(row['attnlab'])} {row['attnlab_speedup']:5.2f}x"
        if "torch" in row:
            line += f"   torch {_ms(row['torch'])} {row['torch_speedup']:5.2f}x"
        lines.append(line)
    dm = r["demo"]
    lines.append(
        f"demo step (n={dm['n']}, d={dm['d']}, C={dm['c']}, self, last pool, MLP head): "
        f"default {_ms(dm['times']['default'])}, 1 thread {_ms(dm['times']['1'])}, "
        f"ratio {dm['default_over_1_thread']:.2f}"
    )
    lines.append(_rounds_text(r["rounds"]))
    return lines


def _report_scaling(r: dict[str, Any]) -> list[str]:
    cs = [x["c"] for x in r["by_c"]]
    ns = [x["n"] for x in r["by_n"]]
    lines = ["", f"scaling of the step (float64, d={r['d']}, one thread): log-log slopes"]
    lines.append(
        f"  C {cs[0]}..{cs[-1]} (n={r['by_c'][0]['n']}): {r['slope_c']:.2f} overall, "
        f"{r['slope_c_lower']:.2f} for C <= {cs[len(cs) // 2]}, "
        f"{r['slope_c_upper']:.2f} for C >= {cs[len(cs) // 2]} "
        f"(flop count: {r['flop_slope_c']:.2f})"
    )
    lines.append(
        f"  n {ns[0]}..{ns[-1]} (C={r['by_n'][0]['c']}): {r['slope_n']:.2f} overall, "
        f"{r['slope_n_lower']:.2f} for n <= {ns[len(ns) // 2]}, "
        f"{r['slope_n_upper']:.2f} for n >= {ns[len(ns) // 2]}"
    )
    lines += [f"  C={x['c']:>4}  {_ms(x['times'])}" for x in r["by_c"]]
    lines += [f"  n={x['n']:>6}  {_ms(x['times'])}" for x in r["by_n"]]
    return lines


def _report_memory(r: dict[str, Any]) -> list[str]:
    lines = ["", "peak memory of the step / cached activations (X, Q, S, top, u, z); the memory"]
    lines.append("model's estimate of the step's allocations / their measured peak")
    for row in r["rows"] + r["by_c"]:
        lines.append(
            f"  {row['dtype']:>8} n={row['n']:>5} d={row['d']:>3} C={row['c']:>4}: "
            f"peak {row['peak_bytes'] / 2**20:8.1f} MiB, cached "
            f"{row['cached_bytes'] / 2**20:8.1f} MiB, ratio {row['ratio']:.2f}; "
            f"estimate {row['estimate_over_step_peak']:.2f}x the step's peak"
        )
    return lines


def report(results: dict[str, Any]) -> list[str]:
    """The report's lines (medians, [q25, q75]) and the target checks."""
    m = results["machine"]
    nb = m["numpy_blas"]
    lines = [
        f"machine: {m['cores']} usable cores, {m['cpu']}, numpy {m['numpy']} with "
        f"{nb.get('internal_api')} {nb.get('version')} ({nb.get('architecture')}, "
        f"{nb.get('num_threads')} threads by default), attnlab on {m['attnlab_threads']} "
        f"threads by default"
    ]
    for part, fn in (
        ("mlp", _report_mlp),
        ("step", _report_step),
        ("threads", _report_threads),
        ("scaling", _report_scaling),
        ("memory", _report_memory),
    ):
        if part in results:
            lines += fn(results[part])
    if results.get("targets"):
        lines += ["", "targets (float64, the largest d):"]
        for name, t in results["targets"].items():
            lines.append(
                f"  {name:<34} {t['value']:.2f} (target {t['op']} {t['limit']}): "
                + ("met" if t["met"] else "MISSED")
            )
    return lines


def check_targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """:data:`TARGETS` on the float64 row of the largest ``d`` (64 unless ``quick-test``)."""
    out: dict[str, dict[str, Any]] = {}

    def add(name: str, value: float | None, key: str) -> None:
        if value is not None:
            limit = TARGETS[key]
            op = "<=" if key.endswith("_max") else ">="
            met = value <= limit if op == "<=" else value >= limit
            out[name] = {"value": value, "op": op, "limit": limit, "met": bool(met)}

    step = results.get("step", {})
    rows = [r for r in step.get("rows", []) if r["dtype"] == "float64"]
    if rows:
        row = max(rows, key=lambda r: r["d"])
        one = row.get("1")
        if one is not None and usable_cores() > 1:
            add(
                "default / 1 thread",
                row["default_over_pinned"]["attnlab"],
                "default_over_1_thread_max",
            )
        add("vs torch (default threads)", row["default"]["vs_torch"], "vs_torch_default_max")
        if one is not None:
            add("vs plain matmul (1 thread)", one["vs_plain"], "vs_plain_1_thread_max")
            add("vs torch (1 thread)", one["vs_torch"], "vs_torch_1_thread_max")
            add("roof fraction (1 thread)", one["roof_fraction"], "roof_fraction_1_thread_min")
    if "threads" in results:
        demo = results["threads"]["demo"]["default_over_1_thread"]
        add("demo step default / 1 thread", demo, "demo_default_over_1_thread_max")
    mem = [r for r in results.get("memory", {}).get("rows", []) if r["dtype"] == "float64"]
    if mem:
        add("peak / cached", max(mem, key=lambda r: r["d"])["ratio"], "memory_ratio_max")
    return out


# --- the whole run -----------------------------------------------------------------------------


def run_benchmarks(
    out: str | Path,
    *,
    mode: str = "quick",
    parts: Sequence[str] = PARTS,
    seed: int = 0,
    pinned: int = 1,
    use_torch: bool = True,
    quiet: float | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Run the ``parts`` at the sizes of ``mode`` (one of :data:`MODES`), write ``bench.json``,
    ``report.txt`` and ``<part>.png`` to the folder ``out`` (created), and return the results;
    ``results["report"]`` holds the report's lines. ``pinned`` is the thread count compared
    with the default (1: one core for everything); ``quiet`` (a share of the cores, or None)
    repeats the step and thread measurements' rounds disturbed by other processes (see
    :func:`time_round_robin`); ``command`` is recorded as given."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, received {mode!r}")
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ValueError(f"parts: expected some of {', '.join(PARTS)}, received {list(parts)}")
    seed = check_seed(seed)
    positive("pinned", pinned, integer=True)
    if quiet is not None:
        positive("quiet", quiet)
    sizes = MODES[mode]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    note = torch_note(use_torch) if {"step", "threads"} & set(parts) else None
    results: dict[str, Any] = {
        "command": command,
        "mode": mode,
        "sizes": asdict(sizes),
        "machine": machine_info(),
        "part_seconds": {},
    }
    for part, bench, plot in (
        ("mlp", lambda: bench_mlp(sizes, seed), plot_mlp),
        ("step", lambda: bench_step(sizes, seed, note, pinned, quiet), plot_step),
        ("threads", lambda: bench_threads(sizes, seed, note, quiet), plot_threads),
        ("scaling", lambda: bench_scaling(sizes, seed), plot_scaling),
        ("memory", lambda: bench_memory(sizes, seed), plot_memory),
    ):
        if part in parts:
            t0 = time.perf_counter()
            results[part] = bench()
            plot(results[part], out / f"{part}.png")
            results["part_seconds"][part] = time.perf_counter() - t0
    results["targets"] = check_targets(results)
    results["runtime_s"] = time.perf_counter() - start
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    results["report"] = report(results)
    (out / "report.txt").write_text("\n".join(results["report"]) + "\n")
    return results
