"""``mlp.threads``: the thread count (context manager, environment variable, default), the
pool over blocks of prompts, and results that are bit-identical for every thread count."""

import os
import re
import sys
import threading
import time

import numpy as np
import pytest
from gradcheck import rel_error
from threadpoolctl import threadpool_info

import attnlab
from attnlab import ContextWindowModel, attend_backward, attend_forward
from mlp.contract import contract
from mlp.threads import (
    ENV_VAR,
    PARALLEL_MIN_BYTES,
    contract_by_prompts,
    default_threads,
    map_blocks,
    num_threads,
    prompt_blocks,
    usable_cores,
)

# ``mlp.threads`` is the context manager; the module is reached through sys.modules
threads_module = sys.modules["mlp.threads"]


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture
def pool_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of pool threads each parallel region asked for (empty: no region ran)."""
    calls: list[int] = []
    real = threads_module._executor

    def spy(workers: int):
        calls.append(workers)
        return real(workers)

    monkeypatch.setattr(threads_module, "_executor", spy)
    return calls


# --- the thread count ---------------------------------------------------------------------------


def test_default_is_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert usable_cores() == len(os.sched_getaffinity(0))
    assert default_threads() == usable_cores()
    assert num_threads() == usable_cores()


@pytest.mark.parametrize(("value", "expected"), [("3", 3), (" 1 ", 1), ("", None)])
def test_environment_variable_sets_the_default(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: int | None
) -> None:
    monkeypatch.setenv(ENV_VAR, value)
    assert num_threads() == (usable_cores() if expected is None else expected)


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", "2 threads"])
def test_bad_environment_variable_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(ENV_VAR, value)
    with pytest.raises(
        ValueError, match=f"{ENV_VAR}: expected a positive integer.*{re.escape(repr(value))}"
    ):
        num_threads()
    # a step large enough for the pool reads the setting: the error, not a silent default
    model = ContextWindowModel(3)
    X = np.ones((256, 3, 48))  # S (n, c, c): 4.7 MB
    with pytest.raises(ValueError, match=ENV_VAR):
        model.loss_and_grads(X, np.where(np.arange(256) % 2 == 0, 1.0, -1.0))


def test_context_manager_sets_restores_and_nests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "5")
    assert num_threads() == 5
    with attnlab.threads(2):
        assert num_threads() == 2
        with attnlab.threads(1):
            assert num_threads() == 1
        assert num_threads() == 2
    assert num_threads() == 5
    with pytest.raises(RuntimeError, match="inside"), attnlab.threads(3):
        assert num_threads() == 3
        raise RuntimeError("inside")
    assert num_threads() == 5


def test_context_manager_belongs_to_its_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    seen = []
    with attnlab.threads(7):
        t = threading.Thread(target=lambda: seen.append(num_threads()))
        t.start()
        t.join()
        assert num_threads() == 7
    assert seen == [usable_cores()]


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "2", None])
def test_context_manager_refuses_a_bad_count(k: object) -> None:
    with pytest.raises(ValueError, match=r"threads: expected a positive integer, received"):
        attnlab.threads(k)  # refused at the call, before any with


# --- the pool -----------------------------------------------------------------------------------


def test_blocks_depend_on_the_sizes_only() -> None:
    blocks = prompt_blocks(10, threads_module.BLOCK_BYTES // 4)
    assert [(b.start, b.stop) for b in blocks] == [(0, 4), (4, 8), (8, 10)]
    one_each = prompt_blocks(3, 10 * threads_module.BLOCK_BYTES)
    assert one_each == [slice(0, 1), slice(1, 2), slice(2, 3)]


def test_map_blocks_returns_results_in_block_order_from_several_threads(
    pool_calls: list[int],
) -> None:
    blocks = prompt_blocks(40, threads_module.BLOCK_BYTES // 2)  # 20 blocks of 2 prompts
    ran_in = set()
    before = _blas_threads()

    def fn(b: slice) -> tuple[int, list[int]]:
        ran_in.add(threading.get_ident())
        np.linalg.norm(np.ones((200, 200)) @ np.ones((200, 200)))  # long enough to overlap
        return b.start, _blas_threads()

    with attnlab.threads(3):
        out = map_blocks(fn, blocks, PARALLEL_MIN_BYTES)
    assert [start for start, _ in out] == [b.start for b in blocks]
    assert all(blas == [1] * len(before) for _, blas in out)  # BLAS on one thread inside
    assert _blas_threads() == before  # and restored after
    assert pool_calls == [2]
    assert len(ran_in) >= 2


def test_small_work_runs_in_the_calling_thread_with_blas_untouched(
    pool_calls: list[int],
) -> None:
    before = _blas_threads()
    blocks = prompt_blocks(40, threads_module.BLOCK_BYTES // 2)
    with attnlab.threads(3):
        out = map_blocks(lambda b: (threading.get_ident(), _blas_threads()), blocks, 1000)
        one = map_blocks(lambda b: threading.get_ident(), blocks[:1], 10 * PARALLEL_MIN_BYTES)
    assert {ident for ident, _ in out} == {threading.get_ident()} == set(one)
    assert all(blas == before for _, blas in out)
    assert pool_calls == []


def test_an_error_in_a_block_is_raised_after_every_thread_stopped() -> None:
    blocks = prompt_blocks(40, threads_module.BLOCK_BYTES // 2)
    done = []
    before = _blas_threads()

    def fn(b: slice) -> None:
        if b.start == 10:
            raise ArithmeticError("block 5")
        time.sleep(0.002)
        done.append(b.start)

    with attnlab.threads(2), pytest.raises(ArithmeticError, match="block 5"):
        map_blocks(fn, blocks, PARALLEL_MIN_BYTES)
    n_done = len(done)
    assert n_done < len(blocks) - 1  # the other thread stopped taking blocks
    time.sleep(0.05)
    assert len(done) == n_done  # and none was still running
    assert _blas_threads() == before


@pytest.mark.parametrize(
    ("pattern", "a_shape", "b_shape"),
    [
        ("e d, n d c -> n e c", (6, 5), (2000, 5, 40)),
        ("d r, n d c -> n r c", (5, 3), (2000, 5, 40)),
        ("e r, n e c -> n r c", (6, 3), (2000, 6, 40)),
        ("n e c, n d c -> e d", (2000, 6, 40), (2000, 5, 40)),
        ("n e j, n d j -> e d", (2000, 6, 40), (2000, 5, 40)),
    ],
)
def test_contract_by_prompts_equals_contract_for_every_thread_count(
    pool_calls: list[int], pattern: str, a_shape: tuple, b_shape: tuple
) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    assert max(a.nbytes, b.nbytes) >= PARALLEL_MIN_BYTES  # the pool runs
    results = []
    for k in (1, 2, 3):
        with attnlab.threads(k):
            results.append(contract_by_prompts(pattern, a, b))
    assert pool_calls == [1, 2]
    assert all(np.array_equal(results[0], r) for r in results[1:])
    assert rel_error(results[0], contract(pattern, a, b)) < 1e-13


def test_contract_by_prompts_refuses_a_pattern_without_prompts() -> None:
    with pytest.raises(ValueError, match="contract_by_prompts"):
        contract_by_prompts("d e, e c -> d c", np.ones((2, 3)), np.ones((3, 4)))


# --- bit-identical results ------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [True, False])
def test_attention_primitive_is_bit_identical_for_every_thread_count(
    pool_calls: list[int], shared: bool
) -> None:
    rng = np.random.default_rng(1)
    n, d, c, j = 300, 6, 40, 30  # S (n, c, j): 2.9 MB, blocks of 109 prompts
    X = rng.standard_normal((n, d, c))
    Q = rng.standard_normal((d, j) if shared else (n, d, j))
    dOut = rng.standard_normal((n, d, j))
    results = []
    for k in (1, 2, 3):
        with attnlab.threads(k):
            out, cache = attend_forward(X, Q)
            dX, dQ = attend_backward(dOut, cache)
        results.append((out, cache.S, cache.top, dX, dQ))
    assert len(pool_calls) == 4  # forward and backward, at 2 and 3 threads
    for other in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(results[0], other, strict=True))


CASES = {
    # attention, model options, n, d, c, query columns j (None: j = c)
    "self": ("self", {}, 256, 8, 48, None),
    "self, last pool, mlp head": (  # the step computes the last two queries: j = 2
        "self",
        {"pool": "last", "head": "mlp", "n_classes": 3},
        1024,
        8,
        256,
        2,
    ),
    "kq": ("kq", {"rank": 4}, 256, 8, 48, None),
    "prompt (shared Q)": ("prompt", {"n_queries": 4}, 2048, 4, 64, 4),
    "cross": ("cross", {"pool": "last"}, 1024, 6, 64, 5),
    "cross-kq": ("cross-kq", {"rank": 3}, 1024, 6, 64, 5),
}


@pytest.mark.parametrize("name", list(CASES))
def test_loss_and_grads_are_bit_identical_at_1_2_and_3_threads(
    pool_calls: list[int], name: str
) -> None:
    attention, options, n, d, c, j = CASES[name]
    rng = np.random.default_rng(2)
    model = ContextWindowModel(d, attention=attention, seed=3, **options)
    X = 3 * rng.standard_normal((n, d, c))
    k = model.n_classes
    y = rng.choice([-1.0, 1.0], size=n) if k == 1 else rng.integers(0, k, size=n)
    extra = {"Z": rng.standard_normal((n, d, j))} if attention.startswith("cross") else {}
    assert n * c * (j or c) * 8 >= 2 * PARALLEL_MIN_BYTES  # S is above the threshold
    results = []
    for threads in (1, 2, 3):
        with attnlab.threads(threads):
            results.append(model.loss_and_grads(X, y, **extra))
    assert pool_calls and set(pool_calls) == {1, 2}  # the pool ran, at 2 and 3 threads
    loss1, grads1 = results[0]
    for loss, grads in results[1:]:
        assert loss == loss1
        assert grads.keys() == grads1.keys()
        for key in grads:
            assert np.array_equal(grads[key], grads1[key]), key
    # and the blocked, threaded step computes what the one-block step computes
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(threads_module, "PARALLEL_MIN_BYTES", 2**62)
        mp.setattr(threads_module, "BLOCK_BYTES", 2**62)
        loss0, grads0 = model.loss_and_grads(X, y, **extra)
    assert abs(loss0 - loss1) <= 1e-13 * abs(loss0)
    for key in grads0:
        assert rel_error(grads0[key], grads1[key]) < 1e-12, key


def test_the_step_leaves_blas_threading_as_it_found_it() -> None:
    before = _blas_threads()
    model = ContextWindowModel(8, head="mlp")
    X = np.random.default_rng(4).standard_normal((256, 8, 48))
    y = np.where(np.arange(256) % 2 == 0, 1.0, -1.0)
    with attnlab.threads(2):
        model.loss_and_grads(X, y)
    model.loss_and_grads(X, y)
    assert _blas_threads() == before


def _pooled_sum() -> float:
    blocks = prompt_blocks(40, threads_module.BLOCK_BYTES // 2)
    with attnlab.threads(2):
        return sum(map_blocks(lambda b: float(b.start), blocks, PARALLEL_MIN_BYTES))


def _child(queue) -> None:
    queue.put(_pooled_sum())


def test_a_forked_child_starts_its_own_pool() -> None:
    """The parent's pool threads do not exist in a forked child: the child makes a new pool
    instead of waiting forever on the old one."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    expected = _pooled_sum()  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on the parent's pool")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == expected
