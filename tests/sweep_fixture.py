"""A tiny experiment module with the experiment contract, for the sweep tests.

``DEFAULTS``, ``resolve(config)`` and ``run_experiment(config, run_dir, *, progress=None)``, as
the real experiment modules have them. One run draws a random walk of ``n`` steps from
``default_rng(seed)``, scales it, and reports a few statistics (deterministic per seed and
config). ``mode="raise"`` fails like a diverged training; ``sleep`` keeps a run in flight (for
killing its worker or interrupting the sweep); ``work`` repeats a single-threaded numpy loop to
make a run take CPU time (for the speed measurement). ``started.json`` in the run folder holds
the process id of the worker that runs it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

DEFAULTS: dict[str, Any] = {
    "n": 100,
    "scale": 1.0,
    "shift": 0,
    "kind": "walk",
    "mode": "ok",
    "sleep": 0.0,
    "work": 0,
    "label": None,
    "centered": False,
    "seed": 0,
}
KINDS = ("walk", "noise")
MODES = ("ok", "raise")


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every option, defaults filled; ValueError naming an unknown option or a bad value."""
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown options {unknown}; expected some of {sorted(DEFAULTS)}")
    c = {**DEFAULTS, **config}
    for key in ("n", "shift", "work", "seed"):
        if isinstance(c[key], bool) or not isinstance(c[key], int):
            raise ValueError(f"{key}: expected an integer, received {c[key]!r}")
    if c["n"] < 1 or c["work"] < 0 or c["seed"] < 0:
        raise ValueError(f"n, work, seed: expected n >= 1, work >= 0, seed >= 0, received {c}")
    for key in ("scale", "sleep"):
        if not isinstance(c[key], (int, float)) or not math.isfinite(c[key]) or c[key] < 0:
            raise ValueError(f"{key}: expected a finite number >= 0, received {c[key]!r}")
    if c["kind"] not in KINDS or c["mode"] not in MODES:
        raise ValueError(f"kind, mode: expected one of {KINDS}, {MODES}, received {c}")
    if not isinstance(c["centered"], bool):
        raise ValueError(f"centered: expected True or False, received {c['centered']!r}")
    return {**c, "scale": float(c["scale"]), "sleep": float(c["sleep"])}


def run_experiment(
    config: Mapping[str, Any], run_dir: str | Path, *, progress: bool | None = None
) -> dict[str, Any]:
    """One run: write ``started.json``, compute, write ``metrics.json``; return the metrics."""
    c = resolve(config)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "started.json").write_text(json.dumps({"pid": os.getpid()}))
    end = time.monotonic() + c["sleep"]
    while time.monotonic() < end:
        time.sleep(0.02)
    if c["mode"] == "raise":
        raise FloatingPointError(f"training diverged: loss is inf at step 3 (seed {c['seed']})")
    rng = np.random.default_rng(c["seed"])
    steps = rng.standard_normal(c["n"]) if c["kind"] == "walk" else rng.random(c["n"])
    x = np.cumsum(steps) * c["scale"] + c["shift"]
    if c["centered"]:
        x = x - x.mean()
    v = rng.standard_normal(20_000)
    for _ in range(c["work"]):  # single-threaded elementwise work, about 1 ms per pass
        v = np.tanh(v * 1.0001 + 0.001)
    metrics = {
        "final": float(x[-1]),
        "peak": float(np.max(np.abs(x))),
        "checksum": float(v.sum()),
        "label": c["label"] if c["label"] is not None else "none",
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return metrics
