"""Part ``step``: the large attention step (self attention, mean pool, linear head, logistic
loss) against plain matmul, PyTorch and the machine's matmul roof, at the default thread count
and at a pinned one; and :func:`step_flops`, the step's flop count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from attnlab.bench.plan import Options
from attnlab.bench.references import max_rel_error, plain_step, torch_step
from attnlab.bench.timing import at_settings, rounds_info, summary, time_round_robin
from attnlab.models.context_window import ContextWindowModel


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
    ``dS`` is one column per prompt (:func:`attnlab.bench.references.plain_step` does the same;
    a transcription that repeats ``dOut`` over ``j`` computes all ``j`` columns, ``2 n c d j``:
    at ``d = c`` six products of ``2 n d^3`` against five). Elementwise work (exp, max-shift,
    sums over tokens, pool) is not counted.
    """
    return 2 * n * (2 * d * d * c + 3 * d * c * c + d * c + 3 * d)


def step_problem(
    n: int, d: int, c: int, dtype: type, seed: int, rng: np.random.Generator
) -> tuple[ContextWindowModel, np.ndarray, np.ndarray]:
    """The model of the step, prompts ``X (n, d, c)`` and labels ``y (n,)`` in {-1, +1}."""
    X = rng.standard_normal((n, d, c)).astype(dtype)
    y = rng.choice([-1.0, 1.0], size=n)
    model = ContextWindowModel(
        d, attention="self", pool="mean", head="linear", seed=seed, dtype=dtype
    )
    return model, X, y


def checked_steps(
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


def measure(opts: Options) -> dict[str, Any]:
    """The ``self``-attention step at each ``(dtype, d)``: ours, plain matmul, torch and the
    roof, each at the default thread count and at ``opts.pinned`` threads."""
    sizes = opts.sizes
    n, c = sizes.step_n, sizes.step_c
    rng = np.random.default_rng(opts.seed)
    rows = []
    labels = ("default", str(opts.pinned))
    for dtype in (np.float64, np.float32):
        a = rng.standard_normal((sizes.roof_size, sizes.roof_size)).astype(dtype)
        b = rng.standard_normal((sizes.roof_size, sizes.roof_size)).astype(dtype)
        for d in sizes.step_d:
            model, X, y = step_problem(n, d, c, dtype, opts.seed, rng)
            steps, errors = checked_steps(model, X, y, opts.torch_note is None)
            steps["roof"] = lambda a=a, b=b: a @ b
            fns, settings = at_settings(steps, (None, opts.pinned))
            timing = time_round_robin(fns, sizes.repeats, sizes.autorange, settings, opts.quiet)
            flops = step_flops(n, d, c)
            row: dict[str, Any] = {
                "dtype": np.dtype(dtype).name,
                "n": n,
                "d": d,
                "c": c,
                "flops": flops,
                "max_rel_error": errors,
                "times": {},
                "rounds": rounds_info(timing),
            }
            for lab in labels:
                s = {name: summary(timing.times[f"{name}@{lab}"]) for name in steps}
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
    return {"rows": rows, "pinned": opts.pinned, "torch_note": opts.torch_note}
