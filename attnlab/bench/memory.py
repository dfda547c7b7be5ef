"""Part ``memory``: the step's peak memory (tracemalloc) against the activations its backward
keeps and against the memory model's estimate."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np

from attnlab.bench.plan import Options
from attnlab.blocks.attention import attend_forward
from attnlab.blocks.memory import activation_bytes
from attnlab.models.context_window import ContextWindowModel
from mlp.threads import num_threads


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


def measure(opts: Options) -> dict[str, Any]:
    """Peak memory of the step configurations, and against C at n = ``scale_c_n``."""
    sizes = opts.sizes
    rng = np.random.default_rng(opts.seed)
    rows = [
        step_memory(sizes.step_n, d, sizes.step_c, dtype, rng)
        for dtype in (np.float64, np.float32)
        for d in sizes.step_d
    ]
    by_c = [step_memory(sizes.scale_c_n, sizes.scale_d, c, np.float64, rng) for c in sizes.mem_c]
    return {"rows": rows, "by_c": by_c}
