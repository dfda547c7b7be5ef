"""How many threads the attention step uses, and the pool that runs its blocks of prompts.

::

    with mlp.threads(2):           # this block of code: 2 threads
        model.loss_and_grads(X, y)

The default is the number of cores this process may run on (``os.sched_getaffinity``), or the
environment variable ``ATTNLAB_NUM_THREADS``. The attention's forward and backward, and the
query contractions, split the ``n`` prompts into blocks (:func:`prompt_blocks`) and run the
blocks on a pool of threads (BLAS and numpy's loops release the GIL), the calling thread taking
blocks too. Inside that region BLAS is limited to one thread (threadpoolctl), so BLAS's own
threads and the pool do not compete for the cores; the limit is lifted when the region ends, so
the MLP's products and everything else keep BLAS's own threading.

Results are bit-identical for every thread count: the blocks depend only on the shapes, each
block is computed the same way by whichever thread takes it (BLAS on one thread), and partial
sums over blocks are added in block order, never in the order the blocks finish. Small work
(below :data:`PARALLEL_MIN_BYTES`) and work of a single block runs in the calling thread with
BLAS untouched, for every thread count, since starting the pool costs more than it saves there.

``mlp.threads`` is the function :func:`threads`; this module's other names are imported
from it: ``from mlp.threads import num_threads``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import TypeVar

import numpy as np

from mlp.contract import contract

__all__ = [
    "ENV_VAR",
    "PARALLEL_MIN_BYTES",
    "contract_by_prompts",
    "default_threads",
    "map_blocks",
    "num_threads",
    "prompt_blocks",
    "threads",
    "usable_cores",
]

T = TypeVar("T")

#: The environment variable that overrides the default number of threads.
ENV_VAR = "ATTNLAB_NUM_THREADS"

# Blocks of prompts whose per-prompt arrays take about this many bytes, so that the softmax's
# elementwise passes and the products after them find their operands in cache (measured at
# n = 1024, d = c = 64, float64, one thread: forward 63 -> 53 ms, backward 41 -> 31 ms against
# no blocks; 2**19 to 2**20 was best, 2**16 slower).
BLOCK_BYTES = 2**20

#: Work whose largest array (for the attention: the weights ``S (n, c, j)``) takes fewer bytes
#: runs in the calling thread: there the pool's start costs more than a second core saves.
PARALLEL_MIN_BYTES = 2**20

_setting: ContextVar[int | None] = ContextVar("attnlab_threads", default=None)
_local = threading.local()  # .busy: this thread is running blocks (no nested pools)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; all cores where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """``ATTNLAB_NUM_THREADS`` if set, else :func:`usable_cores`."""
    value = os.environ.get(ENV_VAR)
    return usable_cores() if value is None else _parse_threads(value)


@lru_cache(maxsize=8)
def _parse_threads(value: str) -> int:
    """The value of ``ATTNLAB_NUM_THREADS`` as a positive count (empty: the usable cores)."""
    if not value.strip():
        return usable_cores()
    try:
        k = int(value)
    except ValueError:
        k = 0
    if k < 1:
        raise ValueError(
            f"{ENV_VAR}: expected a positive integer (the number of threads), received {value!r}"
        )
    return k


def num_threads() -> int:
    """The number of threads the attention step uses here: the innermost ``threads(k)``, else
    :func:`default_threads`."""
    k = _setting.get()
    return default_threads() if k is None else k


def threads(k: int) -> AbstractContextManager[None]:
    """``with threads(k): ...``: the attention step uses ``k`` threads inside the block.

    ``k = 1`` runs everything in the calling thread. The setting belongs to the calling thread
    (a context variable): other threads keep theirs. Raises ``ValueError`` unless ``k`` is a
    positive integer.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"threads: expected a positive integer, received {k!r}")
    return _use(int(k))


@contextmanager
def _use(k: int) -> Iterator[None]:
    token = _setting.set(k)
    try:
        yield
    finally:
        _setting.reset(token)


def prompt_blocks(n: int, per_prompt: int) -> list[slice]:
    """Slices ``[i, i + step)`` covering the ``n`` prompts, ``step`` prompts of ``per_prompt``
    bytes each taking about :data:`BLOCK_BYTES`; at least one prompt per block.

    The blocks depend only on these two numbers, never on the number of threads.
    """
    step = max(1, BLOCK_BYTES // max(per_prompt, 1))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


# --- BLAS on one thread while blocks run ------------------------------------------------------

_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None
_controller = None


@contextmanager
def _blas_single_thread() -> Iterator[None]:
    """BLAS limited to one thread while any caller is inside; restored when the last leaves."""
    global _blas_users, _blas_limiter, _controller
    with _blas_lock:
        if _blas_users == 0:
            from threadpoolctl import ThreadpoolController

            if _controller is None:
                _controller = ThreadpoolController()
            _blas_limiter = _controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


# --- the pool ---------------------------------------------------------------------------------

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _executor(workers: int) -> ThreadPoolExecutor:
    """The shared pool, grown to at least ``workers`` threads (threads start on first use)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="attnlab")
            _pool_size = workers
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _forget_after_fork() -> None:
    """In a forked child the parent's pool threads do not exist and its locks may be held: start
    from nothing (a new pool is made on first use)."""
    global _pool, _pool_size, _pool_lock, _blas_lock, _blas_users, _blas_limiter
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()
    _blas_lock, _blas_users, _blas_limiter = threading.Lock(), 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def map_blocks(fn: Callable[[slice], T], blocks: list[slice], nbytes: int) -> list[T]:
    """``[fn(b) for b in blocks]``, on :func:`num_threads` threads when the work is large.

    ``nbytes`` is the size of the work's largest array; below :data:`PARALLEL_MIN_BYTES`, or
    with a single block, every block runs in the calling thread with BLAS untouched. Otherwise
    BLAS runs on one thread and the calling thread and ``k - 1`` pool threads take the blocks
    one at a time; the results come back in block order. ``fn`` must write only its own
    block's slice of shared arrays. The first exception of any block is raised after every
    thread has stopped.
    """
    if nbytes < PARALLEL_MIN_BYTES or len(blocks) < 2 or getattr(_local, "busy", False):
        return [fn(b) for b in blocks]
    k = min(num_threads(), len(blocks))
    results: list[T | None] = [None] * len(blocks)
    lock = threading.Lock()
    state = {"next": 0, "failed": False}

    def drain() -> None:
        _local.busy = True
        try:
            while True:
                with lock:
                    i = state["next"]
                    if i >= len(blocks) or state["failed"]:
                        return
                    state["next"] = i + 1
                try:
                    results[i] = fn(blocks[i])
                except BaseException:
                    state["failed"] = True
                    raise
        finally:
            _local.busy = False

    with _blas_single_thread():
        if k == 1:
            return [fn(b) for b in blocks]
        pool = _executor(k - 1)
        futures = [pool.submit(drain) for _ in range(k - 1)]
        error: BaseException | None = None
        try:
            drain()
        except BaseException as err:
            error = err
        for f in futures:  # every thread stops before the shared arrays are used
            err = f.exception()  # waits for the thread
            error = error if error is not None else err
    if error is not None:
        raise error
    return results  # type: ignore[return-value]


@lru_cache(maxsize=64)
def _prompt_axes(pattern: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The axes of the two operands and of the output; ``n`` must be in an operand, and first
    in the output if the output has it."""
    lhs, rhs = pattern.split("->")
    a_axes, b_axes = (tuple(s.split()) for s in lhs.split(","))
    out_axes = tuple(rhs.split())
    if ("n" in out_axes and out_axes[0] != "n") or ("n" not in a_axes and "n" not in b_axes):
        raise ValueError(
            f"contract_by_prompts: expected n in an operand and first in the output "
            f"if there, received {pattern!r}"
        )
    return a_axes, b_axes, out_axes


def contract_by_prompts(pattern: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`mlp.contract.contract` of ``pattern``, run over blocks of the prompt axis ``n``.

    ``n`` is in one operand or both, and first in the output if the output has it. Then each
    block writes its rows (``"e d, n d c -> n e c"``: ``W X`` per prompt); when ``n`` is summed
    (``"n e c, n d c -> e d"``) the blocks' partial sums are added in block order. Small work
    (see :func:`map_blocks`) is one plain :func:`~mlp.contract.contract` call.
    """
    a_axes, b_axes, out_axes = _prompt_axes(pattern)
    if max(a.nbytes, b.nbytes) < PARALLEL_MIN_BYTES:
        return contract(pattern, a, b)
    with_n = [x for x, axes in ((a, a_axes), (b, b_axes)) if "n" in axes]
    n = with_n[0].shape[(a_axes if "n" in a_axes else b_axes).index("n")]
    big = max(x.nbytes for x in with_n)
    blocks = prompt_blocks(n, big // max(n, 1))
    if big < PARALLEL_MIN_BYTES or len(blocks) < 2:
        return contract(pattern, a, b)

    def rows(x: np.ndarray, axes: tuple[str, ...], s: slice) -> np.ndarray:
        return x[(slice(None),) * axes.index("n") + (s,)] if "n" in axes else x

    def part(s: slice) -> np.ndarray:
        return contract(pattern, rows(a, a_axes, s), rows(b, b_axes, s))

    if "n" not in out_axes:
        partials = map_blocks(part, blocks, big)
        total = partials[0].copy()
        for p in partials[1:]:
            total += p
        return total
    sizes = dict(zip(a_axes, a.shape, strict=True)) | dict(zip(b_axes, b.shape, strict=True))
    out = np.empty([sizes[ax] for ax in out_axes], dtype=np.result_type(a, b))

    def write(s: slice) -> None:
        out[s] = part(s)

    map_blocks(write, blocks, big)
    return out
