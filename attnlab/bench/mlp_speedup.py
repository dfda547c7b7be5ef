"""Part ``mlp``: the lecture's network, vectorized against its per-sample loops, and the
vectorized step's time against the number of samples (default threads)."""

from __future__ import annotations

from typing import Any

import numpy as np

import mlp
from attnlab.bench.plan import Options
from attnlab.bench.timing import fit_slope, summary, time_round_robin


def measure(opts: Options) -> dict[str, Any]:
    """The lecture's network ``(d, m, k) = (2, 10, 3)`` on Gaussian data: loops against
    vectorized at ``sizes.mlp_loop_n``, and the vectorized forward and step at
    ``sizes.mlp_vec_n`` with the log-log slope of the step from n = 10,000 on."""
    sizes = opts.sizes
    d, m, k = 2, 10, 3
    theta = mlp.init_params(d, m, k, seed=opts.seed)
    rng = np.random.default_rng(opts.seed)

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
        times = time_round_robin(fns, sizes.repeats, sizes.autorange).times
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
