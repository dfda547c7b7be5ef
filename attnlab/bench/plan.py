"""What a benchmark run measures: the sizes of each mode (:data:`MODES`), the options every part
gets (:class:`Options`) and what a part is (:class:`Part`: a measurement, its figure, its report
lines and its target values)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sizes:
    """What one mode measures. ``mlp_*``: the lecture's network ``(d, m, k) = (2, 10, 3)``;
    ``demo_*``: the demo's model (self attention, last pool, MLP head, 3 classes). The research
    part measures the studies' own sizes in every mode."""

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
    autorange: bool = True  # timeit's autorange picks the calls per sample; False: one call


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
        autorange=False,
    ),
}


@dataclass(frozen=True)
class Options:
    """What every part gets: the ``sizes`` of the mode, the ``seed``, the thread count compared
    with the default (``pinned``), ``quiet`` (see :func:`attnlab.bench.timing.time_round_robin`)
    and ``torch_note`` (None when the PyTorch columns can run, else why not)."""

    sizes: Sizes
    seed: int = 0
    pinned: int = 1
    quiet: float | None = None
    torch_note: str | None = None


#: A target value: ``(name in the report, value, key of attnlab.bench.report.TARGETS)``.
TargetValue = tuple[str, "float | None", str]


@dataclass(frozen=True)
class Part:
    """One part of the benchmark: ``measure(options) -> results`` (JSON-able), ``figure(results,
    path)`` (a PNG), ``report(results) -> lines`` and ``targets(results) -> [(name, value,
    key)]`` (the values checked against :data:`attnlab.bench.report.TARGETS`); ``uses_torch``:
    whether it has PyTorch columns."""

    measure: Callable[[Options], dict[str, Any]]
    figure: Callable[[dict[str, Any], Path], None]
    report: Callable[[dict[str, Any]], list[str]]
    targets: Callable[[dict[str, Any]], list[TargetValue]] = lambda results: []
    uses_torch: bool = False
