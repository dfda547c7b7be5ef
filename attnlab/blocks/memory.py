"""How many bytes a step of the context-window model allocates, and a clear stop when they do not
fit in the memory available.

For ``n`` prompts of ``c`` tokens with ``d`` features and ``j`` query columns (``j = c`` for self
and kq attention), a step keeps (axis names of the attention layer)::

    Q    (n, d, j)   the queries                 S    (n, c, j)   the attention weights
    top  (n, 1, j)   the argmax of S (intp)      out  (n, d, j)   the outputs X S
    dOut (n, d, j)   the output gradient         dQ   (n, d, j)   the query gradient (training)

plus the scores of the blocks of prompts being computed (one block per thread, a block being
about :data:`mlp.threads.BLOCK_BYTES`, at least one prompt's ``(c, j)`` array), with the
0/1 masks that find their maxima. The input
``X (n, d, c)`` is not counted (it exists before the step). ``S`` dominates when ``c`` is large:
``64 * c^2 * 8`` bytes for a batch of 64 prompts in float64, 5.1 TB at ``c = 100000``.

A step of the attention stack (:func:`stack_activation_bytes`) keeps these per layer, with
``j = h c`` (every head's queries are columns of one array), so the weights of the ``L`` layers
count ``n x L x h x c x c`` entries; the gradients of one layer at a time; and the residual
stream ``X (n, d, c)`` of every layer.

:func:`check_fits` compares a size with :func:`available_bytes` (``MemAvailable`` of
``/proc/meminfo``, lowered to a cgroup's memory limit when there is one) and raises
``MemoryError`` with one line naming the sizes, before anything is allocated.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlp.threads import BLOCK_BYTES

__all__ = [
    "SMALL_BYTES",
    "activation_bytes",
    "available_bytes",
    "check_fits",
    "check_stack_fits",
    "check_step_fits",
    "format_bytes",
    "stack_activation_bytes",
]

#: Where :func:`available_bytes` reads the memory available (module constants, so that tests can
#: point them at their own files).
MEMINFO = Path("/proc/meminfo")
CGROUP_FILES = (
    (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),  # cgroup v2
    (
        Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
        Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ),
)


def _count(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name}: expected a positive integer, received {v!r}")
    return int(v)


def activation_bytes(
    n: int,
    d: int,
    c: int,
    j: int,
    dtype: npt.DTypeLike = np.float64,
    *,
    training: bool = True,
    threads: int = 1,
    rank: int = 0,
) -> dict[str, int]:
    """Bytes of each array a step allocates for ``n`` prompts ``(d, c)`` and ``j`` queries.

    Keys name the arrays with their shapes (see the module docstring); ``training=False`` is an
    evaluation (forward only: no ``dOut``, ``dQ``); ``threads`` blocks of scores are in flight
    at once; ``rank`` is kq attention's ``r`` (it adds ``WQ^T X`` and its gradient, each
    ``(n, r, c)``).
    An upper bound for every attention kind (prompt attention shares one ``Q (d, j)``).
    """
    n, d, c, j = (_count(k, v) for k, v in (("n", n), ("d", d), ("c", c), ("j", j)))
    threads = _count("threads", threads)
    item = np.dtype(dtype).itemsize
    per_prompt = c * j * item
    block = min(n, max(1, BLOCK_BYTES // per_prompt))  # prompts per block
    blocks = -(-n // block)
    sizes = {
        "the attention weights S (n, c, j)": n * c * j * item,
        "the queries Q (n, d, j)": n * d * j * item,
        "the outputs X S (n, d, j)": n * d * j * item,
        "the argmax of S (n, 1, j)": n * j * np.dtype(np.intp).itemsize,
        # each block's scores, and the 0/1 mask of their maxima with its copy (one byte each)
        "the scores of the blocks in flight": min(threads, blocks) * block * c * j * (item + 2),
    }
    if training:
        sizes["the output gradient dOut (n, d, j)"] = n * d * j * item
        sizes["the query gradient dQ (n, d, j)"] = n * d * j * item
    if rank:
        r = _count("rank", rank)
        sizes["WQ^T X (n, r, c)"] = n * r * c * item
        if training:
            sizes["its gradient (n, r, c)"] = n * r * c * item
    return sizes


def format_bytes(nbytes: float) -> str:
    """``5.1 TB``, ``23.4 GB``, ``512 B``: decimal units, three significant digits at most."""
    value = float(nbytes)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(value) < 999.95 or unit == "PB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def available_bytes() -> int | None:
    """Bytes this process can still allocate, or None when the system does not say.

    ``MemAvailable`` of :data:`MEMINFO` (else the free pages of ``os.sysconf``), lowered to the
    room left under a cgroup memory limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``).
    """
    known = []
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                known.append(int(line.split()[1]) * 1024)  # kB
                break
    except (OSError, ValueError, IndexError):
        pass
    if not known:
        try:
            known.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            pass
    for limit_path, usage_path in CGROUP_FILES:
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and usage is not None and limit < 2**60:  # v1 "no limit" is huge
            known.append(max(limit - usage, 0))
    return min(known) if known else None


def check_fits(nbytes: int | Mapping[str, int], what: str, *, available: int | None = None) -> None:
    """Raise ``MemoryError`` when ``nbytes`` exceed the memory available.

    ``nbytes`` is a size, or named sizes (then their sum, and the largest is named). ``what``
    says what needs them, e.g. ``"a batch of 64 prompts of c=100000 tokens"``; the message
    reads ``<what> needs 5.1 TB (5.1 TB of it for the attention weights S (n, c, j)); 23.4 GB
    are available``. ``available`` defaults to :func:`available_bytes`; when that is unknown,
    nothing is checked.
    """
    if isinstance(nbytes, Mapping):
        total = sum(nbytes.values())
        name, largest = max(nbytes.items(), key=lambda kv: kv[1])
        detail = f" ({format_bytes(largest)} of it for {name})"
    else:
        total, detail = int(nbytes), ""
    room = available_bytes() if available is None else available
    if room is not None and total > room:
        raise MemoryError(
            f"{what} needs {format_bytes(total)}{detail}; {format_bytes(room)} are available"
        )


# Below this many bytes a step is not compared with the memory available: reading
# /proc/meminfo and the cgroup files takes about 70 us, a tenth of the demo's whole step, and an
# allocation this small that does not fit fails in numpy at once anyway.
SMALL_BYTES = 2**24


@lru_cache(maxsize=64)
def _total_bytes(*args: Any) -> int:
    """The sum of :func:`activation_bytes` of ``(n, d, c, j, dtype, options)``, once per
    shape: ``options`` are the keyword arguments as ``(name, value)`` pairs."""
    *sizes, options = args
    return sum(activation_bytes(*sizes, **dict(options)).values())


def check_step_fits(
    n: int,
    d: int,
    c: int,
    j: int,
    dtype: npt.DTypeLike = np.float64,
    *,
    available: int | None = None,
    **options: Any,
) -> None:
    """:func:`check_fits` of :func:`activation_bytes` (``options``: its ``training``,
    ``threads``, ``rank``): ``MemoryError`` naming ``n``, ``c``, ``d``, ``j``, the dtype and the
    largest array when a step would not fit. Steps below :data:`SMALL_BYTES` are not compared
    with the memory available unless ``available`` is given."""
    if available is None and _total_bytes(n, d, c, j, dtype, tuple(options.items())) < SMALL_BYTES:
        return
    sizes = activation_bytes(n, d, c, j, dtype, **options)
    kind = "a training step" if options.get("training", True) else "an evaluation"
    what = (
        f"{kind} on a batch of {n} prompts of c={c} tokens (d={d}, j={j}, {np.dtype(dtype).name})"
    )
    check_fits(sizes, what, available=available)


def stack_activation_bytes(
    n: int,
    d: int,
    c: int,
    layers: int,
    heads: int,
    dtype: npt.DTypeLike = np.float64,
    *,
    training: bool = True,
    threads: int = 1,
    rank: int = 0,
    layernorm: bool = False,
    last_query: bool = False,
    linear: bool = False,
    vocab: int = 0,
) -> dict[str, int]:
    """Bytes of each array a step of the attention stack allocates: ``layers`` layers of
    ``heads`` heads on ``n`` prompts ``(d, c)``. ``rank`` is ``r`` of relative-key positions
    (their per-prompt score bias and ``WQ^T Y``), 0 without; ``layernorm`` adds each layer's
    normalized copy; ``last_query``: the top layer computes the last token's query alone (a
    readout of the last token), so its arrays have ``h`` columns instead of ``h c``;
    ``linear``: the linear form (its score gradient is one array, and its weights are a copy);
    ``vocab``: the logits ``(n, c, V)`` of a readout at every token."""
    L, h = _count("layers", layers), _count("heads", heads)
    n, d, c = (_count(k, v) for k, v in (("n", n), ("d", d), ("c", c)))
    item = np.dtype(dtype).itemsize
    full = L - 1 if last_query else L  # layers whose every token queries
    columns = full * h * c + (h if last_query else 0)  # query columns of all layers
    j = h * c if full else h  # the widest layer's query columns
    one = activation_bytes(n, d, c, j, dtype, training=training, threads=threads)
    sizes = {
        f"the attention weights S of the {L} layers (n, l, h, c, c)": n * c * columns * item,
        "the queries and outputs of the layers (n, l, d, h c)": 2 * n * d * columns * item,
        "the argmax of S (n, l, h, c)": n * columns * np.dtype(np.intp).itemsize,
        "the residual stream (n, l, d, c)": (L + 1) * n * d * c * item,
        "the scores of the blocks in flight": one["the scores of the blocks in flight"],
    }
    if layernorm:  # each layer's output and normalized input; the backward's temporaries
        sizes["the layer norms' arrays (n, l, d, c)"] = (2 * L + 3 * training) * n * d * c * item
    if training:
        block = min(n, max(1, BLOCK_BYTES // (c * j * item)))
        sizes["one layer's gradients (n, d, h c), (n, d, c) and score sums"] = (
            2 * n * d * j + 4 * n * d * c + -(-n // block) * c * j
        ) * item
    if linear:
        what = "the linear form's score gradient" if training else "the weights returned"
        sizes[f"{what} (n, l, h, c, c)"] = n * c * (j if training else columns) * item
    if rank:
        r = _count("rank", rank)
        sizes["the relative-key bias and WQ^T Y (n, h, c, c + r)"] = (
            3 * n * h * c * c + L * n * h * r * c
        ) * item
    if vocab:
        sizes["the logits and their gradient (n, c, V)"] = 3 * n * c * _count("vocab", vocab) * item
    return sizes


def check_stack_fits(
    n: int,
    d: int,
    c: int,
    layers: int,
    heads: int,
    dtype: npt.DTypeLike = np.float64,
    *,
    available: int | None = None,
    **options: Any,
) -> None:
    """:func:`check_fits` of :func:`stack_activation_bytes` (``options``: its ``training``,
    ``threads``, ``rank``, ``layernorm``, ``last_query``, ``linear``, ``vocab``): one
    ``MemoryError`` line naming ``n``, ``c``, ``d``, the layers, heads, dtype and the largest
    array when a step of the stack would not fit. Steps below :data:`SMALL_BYTES` are not
    compared with the memory available unless ``available`` is given."""
    sizes = stack_activation_bytes(n, d, c, layers, heads, dtype, **options)
    if available is None and sum(sizes.values()) < SMALL_BYTES:
        return
    kind = "a training step" if options.get("training", True) else "an evaluation"
    what = (
        f"{kind} of the attention stack on a batch of {n} prompts of c={c} tokens "
        f"(L={layers} layers of h={heads} heads, d={d}, {np.dtype(dtype).name})"
    )
    check_fits(sizes, what, available=available)
