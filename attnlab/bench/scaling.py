"""Part ``scaling``: the step's time against the tokens C and the prompts n (float64, one
thread: the algorithm's scaling, apart from the threads')."""

from __future__ import annotations

from typing import Any

import numpy as np

from attnlab.bench.plan import Options, Sizes
from attnlab.bench.step import step_flops
from attnlab.bench.timing import fit_slope, summary, time_round_robin
from attnlab.models.context_window import ContextWindowModel


def _step_time(n: int, d: int, c: int, sizes: Sizes, rng: np.random.Generator) -> dict:
    X = rng.standard_normal((n, d, c))
    y = rng.choice([-1.0, 1.0], size=n)
    model = ContextWindowModel(d, attention="self", pool="mean", head="linear")
    step = {"step": lambda: model.loss_and_grads(X, y)}
    timing = time_round_robin(step, sizes.repeats, sizes.autorange, {"step": 1})
    return summary(timing.times["step"])


def measure(opts: Options) -> dict[str, Any]:
    """Step time against C (at n = ``scale_c_n``) and against n (at C = ``step_c``), with the
    log-log slopes overall and over each half of the scan, and the flop count's slope in C."""
    sizes = opts.sizes
    rng = np.random.default_rng(opts.seed)
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
