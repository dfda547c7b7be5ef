"""``attnlab.blocks.memory``: the bytes a step of the model allocates, the memory available, and
one clear ``MemoryError`` line before an allocation that cannot fit."""

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import attnlab
from attnlab import ContextWindowModel
from attnlab.blocks import memory as mem


def test_activation_bytes_counts_each_array() -> None:
    n, d, c, j = 3, 2, 5, 4
    got = mem.activation_bytes(n, d, c, j)  # float64, one block of 3 prompts
    assert got == {
        "the attention weights S (n, c, j)": 3 * 5 * 4 * 8,
        "the queries Q (n, d, j)": 3 * 2 * 4 * 8,
        "the outputs X S (n, d, j)": 3 * 2 * 4 * 8,
        "the argmax of S (n, 1, j)": 3 * 4 * 8,
        "the scores of the blocks in flight": 3 * 5 * 4 * (8 + 2),
        "the output gradient dOut (n, d, j)": 3 * 2 * 4 * 8,
        "the query gradient dQ (n, d, j)": 3 * 2 * 4 * 8,
    }
    evaluation = mem.activation_bytes(n, d, c, j, np.float32, training=False)
    assert "the query gradient dQ (n, d, j)" not in evaluation
    assert "the output gradient dOut (n, d, j)" not in evaluation
    assert evaluation["the attention weights S (n, c, j)"] == 3 * 5 * 4 * 4
    kq = mem.activation_bytes(n, d, c, j, rank=7)
    assert kq["WQ^T X (n, r, c)"] == kq["its gradient (n, r, c)"] == 3 * 7 * 5 * 8


def test_blocks_in_flight_follow_the_threads() -> None:
    # c = j = 512 float64: 2 MiB per prompt, one prompt per block, one block per thread
    key = "the scores of the blocks in flight"
    per_prompt = 512 * 512 * 10
    assert mem.activation_bytes(8, 4, 512, 512, threads=1)[key] == per_prompt
    assert mem.activation_bytes(8, 4, 512, 512, threads=3)[key] == 3 * per_prompt
    assert mem.activation_bytes(2, 4, 512, 512, threads=3)[key] == 2 * per_prompt


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n: expected a positive integer, received 0"),
        ({"c": 2.5}, "c: expected a positive integer, received 2.5"),
        ({"threads": True}, "threads: expected a positive integer, received True"),
    ],
)
def test_activation_bytes_refuses_bad_sizes(kwargs: dict, message: str) -> None:
    args = {"n": 2, "d": 3, "c": 4, "j": 4} | kwargs
    with pytest.raises(ValueError, match=message):
        mem.activation_bytes(**args)


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (23.4e9, "23.4 GB"),
        (5.12e12, "5.1 TB"),
        (3e18, "3000.0 PB"),
    ],
)
def test_format_bytes(nbytes: float, text: str) -> None:
    assert mem.format_bytes(nbytes) == text


def test_check_fits_raises_one_line_naming_the_sizes() -> None:
    mem.check_fits(100, "a thing", available=100)  # fits exactly: nothing raised
    with pytest.raises(MemoryError) as err:
        mem.check_fits(5_100_000_000_000, "a batch of 64 prompts", available=23_400_000_000)
    assert str(err.value) == "a batch of 64 prompts needs 5.1 TB; 23.4 GB are available"
    with pytest.raises(MemoryError, match=r"needs 3.0 kB \(2.0 kB of it for big\); 1.0 kB are"):
        mem.check_fits({"small": 1000, "big": 2000}, "x", available=1000)


def test_the_context_window_of_100000_tokens_is_refused_before_any_allocation() -> None:
    with pytest.raises(MemoryError) as err:
        mem.check_step_fits(64, 5, 100_000, 100_000, available=23_400_000_000)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        "a training step on a batch of 64 prompts of c=100000 tokens (d=5, j=100000, float64) "
        "needs 5.2 TB (5.1 TB of it for the attention weights S (n, c, j)); "
        "23.4 GB are available"
    )
    mem.check_step_fits(64, 5, 16, 16, available=23_400_000_000)  # the demo's batch fits
    with pytest.raises(MemoryError, match="an evaluation on a batch of 1000 prompts"):
        mem.check_step_fits(1000, 5, 4096, 4096, training=False, available=10**9)


def test_check_fits_without_a_known_size_checks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mem, "available_bytes", lambda: None)
    mem.check_fits(10**30, "anything")


def _point_at(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, meminfo: str, cgroup: tuple):
    (tmp_path / "meminfo").write_text(meminfo)
    files = []
    for i, (limit, usage) in enumerate(cgroup):
        lim, use = tmp_path / f"limit{i}", tmp_path / f"usage{i}"
        for path, text in ((lim, limit), (use, usage)):
            path.unlink(missing_ok=True)
            if text is not None:
                path.write_text(text + "\n")
        files.append((lim, use))
    monkeypatch.setattr(mem, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(mem, "CGROUP_FILES", tuple(files))


def test_available_bytes_reads_meminfo_and_the_cgroup_limit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    meminfo = "MemTotal:       24684580 kB\nMemFree:  100 kB\nMemAvailable:   2000000 kB\n"
    _point_at(monkeypatch, tmp_path, meminfo, ((None, None),))
    assert mem.available_bytes() == 2_000_000 * 1024
    _point_at(monkeypatch, tmp_path, meminfo, (("max", "5"),))  # cgroup v2 without a limit
    assert mem.available_bytes() == 2_000_000 * 1024
    _point_at(monkeypatch, tmp_path, meminfo, (("1000000000", "400000000"),))
    assert mem.available_bytes() == 600_000_000  # the cgroup leaves less room
    _point_at(monkeypatch, tmp_path, meminfo, ((None, None), (str(2**63 - 4096), "5")))
    assert mem.available_bytes() == 2_000_000 * 1024  # cgroup v1 "no limit"


def test_available_bytes_falls_back_to_free_pages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _point_at(monkeypatch, tmp_path, "MemTotal: 5 kB\n", ((None, None),))
    pages = {"SC_AVPHYS_PAGES": 10, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(mem.os, "sysconf", lambda name: pages[name])
    assert mem.available_bytes() == 40960

    def no_sysconf(name: str) -> int:
        raise ValueError(name)

    monkeypatch.setattr(mem.os, "sysconf", no_sysconf)
    assert mem.available_bytes() is None


def test_available_bytes_on_this_machine_is_positive() -> None:
    got = mem.available_bytes()
    assert got is None or got > 0


CASES = [
    # attention, pool, head, n, d, c, j, rank
    ("self", "mean", "linear", 64, 16, 256, 256, 0),
    ("self", "last", "mlp", 128, 8, 2048, 2, 0),  # the last pool: the last two queries
    ("kq", "mean", "linear", 64, 16, 256, 256, 16),
    ("cross", "last", "linear", 256, 8, 512, 16, 0),
    ("prompt", "mean", "mlp", 256, 8, 512, 16, 0),
    ("self", "mean", "linear", 2, 4, 1024, 1024, 0),  # blocks of one prompt
]


@pytest.mark.parametrize(("attention", "pool", "head", "n", "d", "c", "j", "rank"), CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_the_estimate_bounds_the_measured_peak_of_a_step(
    attention: str, pool: str, head: str, n: int, d: int, c: int, j: int, rank: int, threads: int
) -> None:
    rng = np.random.default_rng(0)
    options = {"n_queries": j} if attention == "prompt" else {}
    model = ContextWindowModel(d, attention, pool, head, rank=rank or None, **options)
    X = rng.standard_normal((n, d, c))
    y = rng.choice([-1.0, 1.0], size=n)
    extra = {"Z": rng.standard_normal((n, d, j))} if attention == "cross" else {}
    with attnlab.threads(threads):
        model.loss_and_grads(X, y, **extra)  # warm-up: the pool's threads exist
        tracemalloc.start()
        model.loss_and_grads(X, y, **extra)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    estimate = sum(mem.activation_bytes(n, d, c, j, threads=threads, rank=rank).values())
    assert peak <= estimate <= 2 * peak


def test_the_model_checks_memory_before_it_allocates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A prompt of 100000 tokens is a few MB; its step's S (n, c, c) would be terabytes."""
    monkeypatch.setattr(mem, "available_bytes", lambda: 23_400_000_000)
    model = ContextWindowModel(6, attention="self", pool="mean", head="mlp", n_classes=3)
    X = np.zeros((4, 6, 100_000))
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match=r"a training step on a batch of 4 prompts"):
            model.loss_and_grads(X, np.zeros(4, dtype=int))
        with pytest.raises(MemoryError, match=r"an evaluation on a batch of 4 prompts"):
            model.attention_weights(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * X.nbytes  # refused before any (n, c, c) array
    model.loss_and_grads(X[:, :, :16], np.zeros(4, dtype=int))  # 16 tokens fit


def test_the_last_pool_trains_where_its_maps_would_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last pool's step computes the last queries alone: (n, c, 2) weights, not (n, c, c)."""
    monkeypatch.setattr(mem, "available_bytes", lambda: 23_400_000_000)
    model = ContextWindowModel(6, attention="self", pool="last", head="mlp", n_classes=3)
    X = np.random.default_rng(0).standard_normal((4, 6, 100_000))
    loss, grads = model.loss_and_grads(X, np.zeros(4, dtype=int))
    assert np.isfinite(loss) and set(grads) == set(model.params)
    with pytest.raises(MemoryError, match=r"an evaluation on a batch of 4 prompts"):
        model.attention_weights(X)


def test_small_steps_skip_reading_the_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable() -> int:
        raise AssertionError("read the available memory for a small step")

    monkeypatch.setattr(mem, "available_bytes", unreadable)
    assert sum(mem.activation_bytes(64, 5, 16, 16, threads=2).values()) < mem.SMALL_BYTES
    mem.check_step_fits(64, 5, 16, 16, threads=2)  # the demo's step: nothing read
    with pytest.raises(MemoryError, match="needs"):  # a given size is always compared
        mem.check_step_fits(64, 5, 16, 16, threads=2, available=1000)
    with pytest.raises(AssertionError, match="small step"):  # a large one reads it
        mem.check_step_fits(64, 5, 1024, 1024)
