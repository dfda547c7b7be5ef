#!/usr/bin/env python3
"""Benchmarks: the lecture's vectorization speedup, and the attention step against plain matmul,
PyTorch and the machine's matmul roof; its scaling in C and n; its peak memory.

    python scripts/bench.py                 # quick sizes (well under two minutes on 2 cores)
    python scripts/bench.py --full          # larger sizes (MLP to n = 1e6, longer scans)
    python scripts/bench.py --only step     # one part: mlp, step, scaling or memory

Every number comes from this one run: each measurement is repeated, the implementations that a
ratio compares are timed in turn (round robin, so a slow spell hits all of them), and the table
gives the median with the spread (interquartile range). The BLAS thread count is fixed with
threadpoolctl and reported: ``--threads``, default 1, so that every implementation and the
matmul roof run on one core (numpy's elementwise passes use one core anyway, and on a shared
machine a second BLAS thread mostly measures the other jobs). The run folder (``--out``,
default ``runs/bench-<timestamp>``) gets ``bench.json`` and the PNG plots.

The plain ``np.matmul`` step (:func:`plain_step`) and the PyTorch step (:func:`torch_step`) are
readable references of the same computation as ``ContextWindowModel(d, attention="self",
pool="mean", head="linear").loss_and_grads``; both are checked against it before any timing.
PyTorch is optional (``pip install -e ".[bench]"``): without it its column is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import mlp
from attnlab.attention import attend_forward
from attnlab.model import ContextWindowModel

PARTS = ("mlp", "step", "scaling", "memory")
# Speed and memory targets of issue 7 (float64, d = 64; medians of one run).
TARGETS = {
    "ratio_vs_plain_max": 1.15,
    "ratio_vs_torch_max": 0.8,
    "roof_fraction_min": 0.40,
    "memory_ratio_max": 3.0,
}


@dataclass(frozen=True)
class Sizes:
    """What one mode measures. ``mlp_*``: the lecture's network ``(d, m, k) = (2, 10, 3)``."""

    repeats: int
    mlp_loop_n: tuple[int, ...]  # vectorized against per-sample loops
    mlp_vec_n: tuple[int, ...]  # vectorized step time against n
    step_n: int
    step_d: tuple[int, ...]
    step_c: int
    roof_size: int  # the square np.matmul that measures the machine's roof
    scale_d: int
    scale_c: tuple[int, ...]  # time against C at n = scale_c_n
    scale_c_n: int
    scale_n: tuple[int, ...]  # time against n at C = step_c
    mem_c: tuple[int, ...]  # peak memory against C at n = scale_c_n
    min_time: float = 0.01  # seconds: a sample of a faster function averages several calls


MODES = {
    "quick": Sizes(
        repeats=9,
        mlp_loop_n=(150, 1_000, 10_000),
        mlp_vec_n=(150, 1_000, 10_000, 100_000),
        step_n=1024,
        step_d=(32, 64),
        step_c=64,
        roof_size=2048,
        scale_d=32,
        scale_c=(16, 32, 64, 128, 256, 512),
        scale_c_n=64,
        scale_n=(128, 256, 512, 1024, 2048, 4096, 8192),
        mem_c=(16, 32, 64, 128, 256, 512),
    ),
    "full": Sizes(
        repeats=11,
        mlp_loop_n=(150, 1_000, 10_000),
        mlp_vec_n=(150, 1_000, 10_000, 100_000, 1_000_000),
        step_n=1024,
        step_d=(32, 64),
        step_c=64,
        roof_size=2048,
        scale_d=32,
        scale_c=(16, 32, 64, 128, 256, 512),
        scale_c_n=256,
        scale_n=(128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768),
        mem_c=(16, 32, 64, 128, 256, 512),
    ),
    "quick-test": Sizes(
        repeats=1,
        mlp_loop_n=(20, 50),
        mlp_vec_n=(20, 200, 2000),
        step_n=16,
        step_d=(4, 8),
        step_c=8,
        roof_size=128,
        scale_d=4,
        scale_c=(4, 8, 16),
        scale_c_n=8,
        scale_n=(8, 16, 32),
        mem_c=(4, 8),
        min_time=0.0,
    ),
}


# --- timing ------------------------------------------------------------------------------------


def _calls_per_sample(f: Callable[[], object], min_time: float = 0.01) -> int:
    """How many calls of ``f`` make one timed sample of at least ``min_time`` seconds."""
    t0 = time.perf_counter()
    f()
    once = time.perf_counter() - t0
    return max(1, min(10_000, int(np.ceil(min_time / max(once, 1e-7)))))


def time_round_robin(
    fns: dict[str, Callable[[], object]], repeats: int, min_time: float = 0.01
) -> dict[str, list[float]]:
    """Seconds per call of each function, ``repeats`` samples each, the functions in turn.

    Each function is called once first (warm-up); a sample of a fast function averages enough
    calls to last ``min_time`` seconds. The order rotates every round, so that no function
    always follows the same one (BLAS threads still spinning after a large product slow down
    whatever runs next).
    """
    number = {k: _calls_per_sample(f, min_time) for k, f in fns.items()}
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for r in range(repeats):
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            f = fns[k]
            t0 = time.perf_counter()
            for _ in range(number[k]):
                f()
            times[k].append((time.perf_counter() - t0) / number[k])
    return times


def summary(ts: list[float]) -> dict[str, float]:
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


def fit_slope(x: list[float], t: list[float]) -> float:
    """Least-squares slope of ``log t`` against ``log x`` (the exponent of ``t ~ x^slope``)."""
    return float(np.polyfit(np.log(x), np.log(t), 1)[0])


# --- the machine -------------------------------------------------------------------------------


def machine_info(threads: int) -> dict[str, Any]:
    """Cores, CPU model, numpy version, BLAS libraries (threadpoolctl) and OpenBLAS variables."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = [
        {k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
        | {"file": Path(lib["filepath"]).name}
        for lib in threadpool_info()
    ]
    # numpy's own BLAS: the library shipped in numpy's wheel (numpy.libs) or linked to it
    numpy_dir = Path(np.__file__).resolve().parent.name
    ours = [b for b in threadpool_info() if numpy_dir in b["filepath"] and b["user_api"] == "blas"]
    numpy_blas = (
        ours[0] if ours else next((b for b in threadpool_info() if b["user_api"] == "blas"), {})
    )
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": {k: numpy_blas.get(k) for k in ("internal_api", "version", "architecture")},
        "blas": blas,
        "threads": threads,
        "env": {k: os.environ[k] for k in sorted(os.environ) if k.startswith("OPENBLAS")},
    }


# --- part 1: the MLP, vectorized against per-sample loops ---------------------------------------


def bench_mlp(sizes: Sizes, seed: int) -> dict[str, Any]:
    """The lecture's network on Gaussian data: loops against vectorized, and time against n."""
    d, m, k = 2, 10, 3
    theta = mlp.init_params(d, m, k, seed=seed)
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes.mlp_loop_n:
        X = rng.standard_normal((n, d))
        y = rng.integers(0, k, size=n)
        times = time_round_robin(
            {
                "forward": lambda X=X: mlp.forward(X, theta),
                "forward_loop": lambda X=X: mlp.forward_nonvectorized(X, theta),
                "step": lambda X=X, y=y: mlp.loss_and_grads(X, y, theta),
                "step_loop": lambda X=X, y=y: mlp.loss_and_grads_nonvectorized(X, y, theta),
            },
            sizes.repeats,
            sizes.min_time,
        )
        s = {key: summary(v) for key, v in times.items()}
        rows.append(
            {
                "n": n,
                "times": s,
                "speedup_forward": s["forward_loop"]["median"] / s["forward"]["median"],
                "speedup_step": s["step_loop"]["median"] / s["step"]["median"],
            }
        )
    scaling = []
    for n in sizes.mlp_vec_n:
        X = rng.standard_normal((n, d))
        y = rng.integers(0, k, size=n)
        times = time_round_robin(
            {
                "forward": lambda X=X: mlp.forward(X, theta),
                "step": lambda X=X, y=y: mlp.loss_and_grads(X, y, theta),
            },
            sizes.repeats,
            sizes.min_time,
        )
        scaling.append({"n": n, "times": {key: summary(v) for key, v in times.items()}})
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
    ratio measures what the library's named axes, checks and generality cost.
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
    import torch

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


def _torch_threads(threads: int) -> str | None:
    """Import torch and fix its thread count; the reason as a note if it cannot be imported."""
    try:
        import torch
    except ImportError as err:
        return f"torch not installed ({err}); pip install -e '.[bench]' adds it"
    torch.set_num_threads(threads)
    return None


def bench_step(sizes: Sizes, seed: int, torch_note: str | None) -> dict[str, Any]:
    """The ``self``-attention step at each ``(dtype, d)``: ours, plain matmul, torch, the roof."""
    n, c = sizes.step_n, sizes.step_c
    rng = np.random.default_rng(seed)
    rows = []
    for dtype in (np.float64, np.float32):
        a = rng.standard_normal((sizes.roof_size, sizes.roof_size)).astype(dtype)
        b = rng.standard_normal((sizes.roof_size, sizes.roof_size)).astype(dtype)
        tol = 1e-10 if dtype == np.float64 else 1e-4
        for d in sizes.step_d:
            X = rng.standard_normal((n, d, c)).astype(dtype)
            y = rng.choice([-1.0, 1.0], size=n)
            model = ContextWindowModel(
                d, attention="self", pool="mean", head="linear", seed=seed, dtype=dtype
            )
            W, v = model.params["W"], model.params["v"]
            ours = model.loss_and_grads(X, y)
            errors = {"plain": max_rel_error(plain_step(X, y, W, v), ours)}
            fns: dict[str, Callable[[], object]] = {
                "attnlab": lambda m=model, X=X, y=y: m.loss_and_grads(X, y),
                "plain": lambda X=X, y=y, W=W, v=v: plain_step(X, y, W, v),
            }
            if torch_note is None:
                fns["torch"] = torch_step(X, y, W, v)
                errors["torch"] = max_rel_error(fns["torch"](), ours)
            for name, err in errors.items():
                if not err <= tol:
                    raise AssertionError(f"{name} step differs from attnlab: {err:.2e} > {tol}")
            fns["roof"] = lambda a=a, b=b: a @ b
            times = time_round_robin(fns, sizes.repeats, sizes.min_time)
            s = {key: summary(t) for key, t in times.items()}
            flops = step_flops(n, d, c)
            gflops = flops / s["attnlab"]["median"] / 1e9
            roof = 2 * sizes.roof_size**3 / s["roof"]["median"] / 1e9
            row = {
                "dtype": np.dtype(dtype).name,
                "n": n,
                "d": d,
                "c": c,
                "flops": flops,
                "times": s,
                "gflops": gflops,
                "roof_gflops": roof,
                "roof_fraction": gflops / roof,
                "ratio_vs_plain": s["attnlab"]["median"] / s["plain"]["median"],
                "ratio_vs_torch": (
                    s["attnlab"]["median"] / s["torch"]["median"] if "torch" in s else None
                ),
                "max_rel_error": errors,
            }
            rows.append(row)
    return {"rows": rows, "torch_note": torch_note}


# --- part 3: scaling in C and n ----------------------------------------------------------------


def _step_time(n: int, d: int, c: int, sizes: Sizes, rng: np.random.Generator) -> dict:
    X = rng.standard_normal((n, d, c))
    y = rng.choice([-1.0, 1.0], size=n)
    model = ContextWindowModel(d, attention="self", pool="mean", head="linear")
    step = {"step": lambda: model.loss_and_grads(X, y)}
    return summary(time_round_robin(step, sizes.repeats, sizes.min_time)["step"])


def bench_scaling(sizes: Sizes, seed: int) -> dict[str, Any]:
    """Step time against C (at n = ``scale_c_n``) and against n (at C = ``step_c``), float64."""
    rng = np.random.default_rng(seed)
    d = sizes.scale_d
    by_c = [
        {
            "c": c,
            "n": sizes.scale_c_n,
            "times": _step_time(sizes.scale_c_n, d, c, sizes, rng),
        }
        for c in sizes.scale_c
    ]
    by_n = [
        {"n": n, "c": sizes.step_c, "times": _step_time(n, d, sizes.step_c, sizes, rng)}
        for n in sizes.scale_n
    ]
    med_c = [r["times"]["median"] for r in by_c]
    med_n = [r["times"]["median"] for r in by_n]
    cs = [r["c"] for r in by_c]
    ns = [r["n"] for r in by_n]
    half_c = len(cs) // 2
    half_n = len(ns) // 2
    return {
        "d": d,
        "by_c": by_c,
        "by_n": by_n,
        "slope_c": fit_slope(cs, med_c),
        "slope_c_upper": fit_slope(cs[half_c:], med_c[half_c:]),
        "slope_c_lower": fit_slope(cs[: half_c + 1], med_c[: half_c + 1]),
        "slope_n": fit_slope(ns, med_n),
        "slope_n_upper": fit_slope(ns[half_n:], med_n[half_n:]),
        "slope_n_lower": fit_slope(ns[: half_n + 1], med_n[: half_n + 1]),
        "flop_slope_c": fit_slope(cs, [step_flops(sizes.scale_c_n, d, c) for c in cs]),
    }


# --- part 4: peak memory -----------------------------------------------------------------------


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
    """Peak memory of one step (tracemalloc: numpy's allocations) against the cached bytes.

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


def plot_mlp(res: dict[str, Any], path: Path) -> None:
    """Log-log time against n: vectorized forward and step, and the per-sample loops."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_step(res: dict[str, Any], path: Path) -> None:
    """Median step time (with the interquartile range) of each implementation and shape."""
    rows = res["rows"]
    impls = [k for k in ("attnlab", "plain", "torch") if k in rows[0]["times"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    x = np.arange(len(rows))
    w = 0.8 / len(impls)
    for i, k in enumerate(impls):
        med = np.array([r["times"][k]["median"] for r in rows]) * 1e3
        lo = med - np.array([r["times"][k]["q25"] for r in rows]) * 1e3
        hi = np.array([r["times"][k]["q75"] for r in rows]) * 1e3 - med
        ax.bar(x + (i - (len(impls) - 1) / 2) * w, med, w, yerr=[lo, hi], capsize=3, label=k)
    ax.set_xticks(x, [f"{r['dtype']}\nd={r['d']}" for r in rows])
    r0 = rows[0]
    ax.set_ylabel("ms per step (median, IQR)")
    ax.set_title(f"self-attention step, n={r0['n']}, C={r0['c']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scaling(res: dict[str, Any], path: Path) -> None:
    """Log-log step time against C and against n, with the fitted slopes."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key, var, fixed in (
        (axes[0], "by_c", "c", "n"),
        (axes[1], "by_n", "n", "c"),
    ):
        rows = res[key]
        xs = np.array([r[var] for r in rows], dtype=float)
        t = np.array([r["times"]["median"] for r in rows])
        slope = res[f"slope_{var}"]
        ax.loglog(xs, t, "o-", label=f"measured (slope {slope:.2f})")
        expect = 2 if var == "c" else 1
        ax.loglog(xs, t[-1] * (xs / xs[-1]) ** expect, "k:", label=f"slope {expect}")
        ax.set_xticks(xs, [str(int(x)) for x in xs])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("C (tokens)" if var == "c" else "n (prompts)")
        ax.set_ylabel("seconds per step (median)")
        ax.set_title(f"d={res['d']}, {fixed if fixed == 'n' else 'C'}={rows[0][fixed]}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_memory(res: dict[str, Any], path: Path) -> None:
    """Peak memory against the cached activations, with the 1x and 3x lines."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the table ---------------------------------------------------------------------------------


def _ms(s: dict[str, float]) -> str:
    return f"{s['median'] * 1e3:8.2f} ms [{s['q25'] * 1e3:.2f}, {s['q75'] * 1e3:.2f}]"


def report(results: dict[str, Any]) -> list[str]:
    """The table printed on stdout (medians, [q25, q75]) and the target checks."""
    lines = []
    m = results["machine"]
    nb = m["numpy_blas"]
    lines.append(
        f"machine: {m['cores']} cores, {m['cpu']}, numpy {m['numpy']} with "
        f"{nb.get('internal_api')} {nb.get('version')} ({nb.get('architecture')}), "
        f"{m['threads']} BLAS thread(s)"
    )
    if "mlp" in results:
        r = results["mlp"]
        lines.append("")
        lines.append("MLP (d=2, m=10, k=3): per-sample loop time / vectorized time")
        lines.append(f"{'n':>9} {'forward':>10} {'loss+grads':>11}   vectorized loss+grads")
        for row in r["loops"]:
            lines.append(
                f"{row['n']:>9,} {row['speedup_forward']:>9.1f}x {row['speedup_step']:>10.1f}x"
                f"   {_ms(row['times']['step'])}"
            )
        lines.append("vectorized loss+grads against n:")
        for row in r["vectorized"]:
            lines.append(f"{row['n']:>9,}   {_ms(row['times']['step'])}")
        lines.append(f"log-log slope (n >= {r['slope_fit_n'][0]:,}): {r['slope_step']:.2f}")
    if "step" in results:
        r = results["step"]
        lines.append("")
        r0 = r["rows"][0]
        lines.append(
            f"attention step (self, mean pool, linear head, logistic), n={r0['n']}, C={r0['c']}"
        )
        lines.append(
            f"{'dtype':>8} {'d':>3} {'attnlab':>30} {'GFLOP/s':>8} {'roof':>7} {'of roof':>8}"
            f" {'/plain':>7} {'/torch':>7}"
        )
        for row in r["rows"]:
            torch_ratio = row["ratio_vs_torch"]
            lines.append(
                f"{row['dtype']:>8} {row['d']:>3} {_ms(row['times']['attnlab']):>30}"
                f" {row['gflops']:>8.1f} {row['roof_gflops']:>7.1f} {row['roof_fraction']:>7.0%}"
                f" {row['ratio_vs_plain']:>6.2f}x"
                + (f" {torch_ratio:>6.2f}x" if torch_ratio is not None else "     n/a")
            )
        lines.append("plain matmul and torch steps (median [q25, q75]):")
        for row in r["rows"]:
            t = row["times"]
            extra = f"  torch {_ms(t['torch'])}" if "torch" in t else ""
            lines.append(f"{row['dtype']:>8} {row['d']:>3}  plain {_ms(t['plain'])}{extra}")
        if r["torch_note"]:
            lines.append(f"note: {r['torch_note']}")
    if "scaling" in results:
        r = results["scaling"]
        lines.append("")
        lines.append(f"scaling of the step (float64, d={r['d']}): log-log slopes")
        cs = [x["c"] for x in r["by_c"]]
        ns = [x["n"] for x in r["by_n"]]
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
        for x in r["by_c"]:
            lines.append(f"  C={x['c']:>4}  {_ms(x['times'])}")
        for x in r["by_n"]:
            lines.append(f"  n={x['n']:>6}  {_ms(x['times'])}")
    if "memory" in results:
        lines.append("")
        lines.append("peak memory of the step / cached activations (X, Q, S, top, u, z)")
        for row in results["memory"]["rows"] + results["memory"]["by_c"]:
            lines.append(
                f"  {row['dtype']:>8} n={row['n']:>5} d={row['d']:>3} C={row['c']:>4}: "
                f"peak {row['peak_bytes'] / 2**20:8.1f} MiB, cached "
                f"{row['cached_bytes'] / 2**20:8.1f} MiB, ratio {row['ratio']:.2f}"
            )
    if results.get("targets"):
        lines.append("")
        lines.append("targets (float64, the largest d):")
        for name, t in results["targets"].items():
            lines.append(
                f"  {name:<16} d={t['d']}: {t['value']:.2f} (target {t['op']} {t['limit']}): "
                + ("met" if t["met"] else "MISSED")
            )
    return lines


def check_targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 7's targets on the float64 row of the largest ``d`` (64 unless ``--quick-test``)."""
    out: dict[str, dict[str, Any]] = {}

    def add(name: str, value: float | None, op: str, limit: float, d: int) -> None:
        if value is not None:
            met = value <= limit if op == "<=" else value >= limit
            out[name] = {"value": value, "op": op, "limit": limit, "met": bool(met), "d": d}

    rows = [r for r in results.get("step", {}).get("rows", []) if r["dtype"] == "float64"]
    if rows:
        row = max(rows, key=lambda r: r["d"])
        add("vs plain matmul", row["ratio_vs_plain"], "<=", TARGETS["ratio_vs_plain_max"], row["d"])
        add("vs torch", row["ratio_vs_torch"], "<=", TARGETS["ratio_vs_torch_max"], row["d"])
        add("roof fraction", row["roof_fraction"], ">=", TARGETS["roof_fraction_min"], row["d"])
    mem = [r for r in results.get("memory", {}).get("rows", []) if r["dtype"] == "float64"]
    if mem:
        mrow = max(mem, key=lambda r: r["d"])
        add("peak / cached", mrow["ratio"], "<=", TARGETS["memory_ratio_max"], mrow["d"])
    return out


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="larger sizes (a few minutes)")
    mode.add_argument(
        "--quick-test", action="store_true", help="tiny sizes, one repeat (for the tests)"
    )
    p.add_argument("--only", choices=PARTS, default=None, help="run one part")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS (and torch) threads, default 1: every implementation and the roof on one core",
    )
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/bench-<time>)")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads: expected a positive integer, received {args.threads}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "full" if args.full else "quick-test" if args.quick_test else "quick"
    sizes = MODES[mode]
    out = args.out or Path("runs") / f"bench-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    parts = (args.only,) if args.only else PARTS
    start = time.perf_counter()
    with threadpool_limits(limits=args.threads):
        torch_note = None
        if args.no_torch:
            torch_note = "torch skipped (--no-torch)"
        elif "step" in parts:
            torch_note = _torch_threads(args.threads)
        results: dict[str, Any] = {
            "command": " ".join(
                [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
            ),
            "mode": mode,
            "sizes": asdict(sizes),
            "machine": machine_info(args.threads),
        }
        results["part_seconds"] = {}
        for part, run, plot in (
            ("mlp", lambda: bench_mlp(sizes, args.seed), plot_mlp),
            ("step", lambda: bench_step(sizes, args.seed, torch_note), plot_step),
            ("scaling", lambda: bench_scaling(sizes, args.seed), plot_scaling),
            ("memory", lambda: bench_memory(sizes, args.seed), plot_memory),
        ):
            if part in parts:
                t0 = time.perf_counter()
                results[part] = run()
                plot(results[part], out / f"{part}.png")
                results["part_seconds"][part] = time.perf_counter() - t0
    results["targets"] = check_targets(results)
    results["runtime_s"] = time.perf_counter() - start
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    print("\n".join(report(results)))
    print(f"\nruntime: {results['runtime_s']:.1f} s")
    print(f"run folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
