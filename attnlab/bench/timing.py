"""Timing: thread settings, rounds of ``timeit`` samples taken in turn, and their summaries.

A ratio compares implementations (or thread settings) timed in one run: :func:`time_round_robin`
takes one sample of each in turn per round (so a slow spell of a shared machine hits all of
them), with the number of calls per sample chosen by ``timeit.Timer.autorange`` (a sample lasts
at least 0.2 s). The garbage collector stays on while timing, as in a real run (``timeit``
switches it off unless told otherwise).

A thread setting is ``None`` (``"default"``: nothing pinned, what a user gets: attnlab on every
usable core, BLAS and torch with their own defaults) or a count ``k`` (attnlab, numpy's BLAS and
torch all on ``k`` threads).
"""

from __future__ import annotations

import os
import sys
import time
import timeit
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from mlp.threads import threads

_torch_default_threads: int | None = None  # torch's own thread count, read when first imported
_blas: ThreadpoolController | None = None


def import_torch() -> Any:
    """``torch`` (raises ImportError when it is not installed); remembers its default threads."""
    global _torch_default_threads
    import torch

    if _torch_default_threads is None:
        _torch_default_threads = torch.get_num_threads()
    return torch


def torch_default_threads() -> int | None:
    """torch's own thread count, read when :func:`import_torch` first ran (else None)."""
    return _torch_default_threads


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


def label(k: int | None) -> str:
    """A thread setting's name: ``"default"`` or the count."""
    return "default" if k is None else str(k)


def at_settings(
    steps: dict[str, Callable[[], object]], counts: Sequence[int | None]
) -> tuple[dict[str, Callable[[], object]], dict[str, int | None]]:
    """Each step at each thread setting, keyed ``"<step>@<setting>"``, and those settings."""
    fns = {f"{name}@{label(k)}": f for k in counts for name, f in steps.items()}
    return fns, {f"{name}@{label(k)}": k for k in counts for name in steps}


def threads_text(name: str) -> str:
    """``"default threads"``, ``"1 thread"``, ``"2 threads"`` for a setting's :func:`label`."""
    return "default threads" if name == "default" else f"{name} thread" + "s" * (name != "1")


def busy_seconds() -> tuple[float, float] | None:
    """CPU seconds used so far by every process on the machine (``/proc/stat``) and by this
    one (``os.times``); None where ``/proc/stat`` cannot be read. What ``--quiet`` reads."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in fields]
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait
    own = os.times()
    return busy, own.user + own.system


def _other_load(
    start: tuple[float, float] | None, end: tuple[float, float] | None, wall: float
) -> float:
    """The share of the machine's cores that other processes used between two readings."""
    if start is None or end is None or wall <= 0:
        return 0.0
    others = (end[0] - start[0]) - (end[1] - start[1])
    return max(0.0, others / ((os.cpu_count() or 1) * wall))


@dataclass
class Timing:
    """Seconds per call of each function (``repeats`` samples each), the calls per sample, and
    for each kept round the share of the machine's cores that other processes used during it."""

    times: dict[str, list[float]]
    number: dict[str, int]
    other_load: list[float]
    rounds: int  # rounds run, kept or not


def time_round_robin(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    autorange: bool = True,
    settings: dict[str, int | None] | None = None,
    quiet: float | None = None,
) -> Timing:
    """Time each function ``repeats`` times, the functions in turn (one round = one sample of
    each).

    ``settings[key]`` is the thread setting (:func:`thread_setting`) of function ``key``
    (default: ``None``), entered outside the timed calls. Each function is called once
    (warm-up), then ``timeit.Timer.autorange`` picks its calls per sample (``autorange=False``:
    one call, for the tests). The order rotates every round, so that no function always follows
    the same one (threads still spinning after a parallel region slow down whatever runs next).

    ``quiet``: on a shared machine, a round during which other processes used more than this
    share of the cores is run again, up to ``3 * repeats`` rounds in all; then the ``repeats``
    quietest rounds are kept. None keeps every round.
    """
    settings = settings or {}
    timers = {key: timeit.Timer(f, setup="gc.enable()") for key, f in fns.items()}
    number = {}
    for key, f in fns.items():
        with thread_setting(settings.get(key)):
            f()
            number[key] = timers[key].autorange()[0] if autorange else 1
    keys = list(fns)
    rounds: list[tuple[float, dict[str, float]]] = []
    r = 0
    while r < repeats or (
        quiet is not None and r < 3 * repeats and sum(load <= quiet for load, _ in rounds) < repeats
    ):
        sample = {}
        start, w0 = busy_seconds(), time.perf_counter()
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            with thread_setting(settings.get(key)):
                sample[key] = timers[key].timeit(number[key]) / number[key]
        rounds.append((_other_load(start, busy_seconds(), time.perf_counter() - w0), sample))
        r += 1
    if quiet is not None:  # the quietest rounds, in the order they ran
        quietest = sorted(range(len(rounds)), key=lambda i: rounds[i][0])[:repeats]
        rounds = [rounds[i] for i in sorted(quietest)]
    return Timing(
        times={key: [sample[key] for _, sample in rounds] for key in keys},
        number=number,
        other_load=[load for load, _ in rounds],
        rounds=r,
    )


def rounds_info(timing: Timing) -> dict[str, Any]:
    """How many rounds ran, how many were kept and how busy other processes kept the cores in
    the kept ones (median share)."""
    load = timing.other_load
    return {"rounds": timing.rounds, "kept": len(load), "other_load_median": float(np.median(load))}


def summary(ts: Sequence[float]) -> dict[str, Any]:
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
