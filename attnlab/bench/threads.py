"""Part ``threads``: the large step on 1, 2, ... threads and at the default, and the demo's small
step at the default and on one thread."""

from __future__ import annotations

from typing import Any

import numpy as np

from attnlab.bench.plan import Options
from attnlab.bench.step import checked_steps, step_problem
from attnlab.bench.timing import at_settings, label, rounds_info, summary, time_round_robin
from attnlab.models.context_window import ContextWindowModel
from mlp.threads import usable_cores


def measure(opts: Options) -> dict[str, Any]:
    """The float64 step at the largest ``d`` on ``k = 1 .. cores`` threads and at the default
    (attnlab and torch), and the demo's small step (self attention, last pool, MLP head) at the
    default and on one thread."""
    sizes = opts.sizes
    n, d, c = sizes.step_n, max(sizes.step_d), sizes.step_c
    rng = np.random.default_rng(opts.seed)
    model, X, y = step_problem(n, d, c, np.float64, opts.seed, rng)
    steps, _ = checked_steps(model, X, y, opts.torch_note is None)
    steps.pop("plain")
    demo = ContextWindowModel(
        sizes.demo_d, attention="self", pool="last", head="mlp", n_classes=3, seed=opts.seed
    )
    Xd = rng.standard_normal((sizes.demo_n, sizes.demo_d, sizes.demo_c))
    yd = rng.integers(0, 3, size=sizes.demo_n)
    counts: list[int | None] = [*range(1, usable_cores() + 1), None]
    fns, settings = at_settings(steps, counts)
    demo_fns, demo_settings = at_settings({"demo": lambda: demo.loss_and_grads(Xd, yd)}, (1, None))
    timing = time_round_robin(
        fns | demo_fns, sizes.repeats, sizes.autorange, settings | demo_settings, opts.quiet
    )
    times = {key: summary(t) for key, t in timing.times.items()}
    rows = []
    for k in counts:
        lab = label(k)
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
        "rounds": rounds_info(timing),
        "demo": {
            "n": sizes.demo_n,
            "d": sizes.demo_d,
            "c": sizes.demo_c,
            "times": {"1": times["demo@1"], "default": times["demo@default"]},
            "default_over_1_thread": demo_ratio,
        },
        "torch_note": opts.torch_note,
    }
