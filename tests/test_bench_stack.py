"""The stack's benchmark runs at tiny sizes: its result's keys, and the step it times agrees with
the PyTorch one (speed itself is measured by running the benchmark, not asserted here)."""

import numpy as np
import pytest

from attnlab.bench.stack import bench_stack, stack_problem, torch_stack_step


def test_bench_stack_at_tiny_sizes() -> None:
    pytest.importorskip("torch")
    result = bench_stack(n=4, d=4, c=5, layers=2, heads=2, repeats=1)
    assert result["max_rel_error"] < 1e-12
    assert set(result["times"]) == {"attnlab", "torch", "torch_last_query"}
    assert all(len(v) == 1 and min(v) > 0 for v in result["times"].values())
    assert result["ratio"] == result["median"]["attnlab"] / result["median"]["torch"]
    last = result["median"]["torch_last_query"]
    assert result["ratio_last_query"] == result["median"]["attnlab"] / last
    assert result["sizes"] == {"n": 4, "d": 4, "c": 5, "layers": 2, "heads": 2, "mask": "causal"}


@pytest.mark.parametrize("last_query", [False, True])
@pytest.mark.parametrize("mask", [None, "exclude-last", "causal"])
def test_the_torch_step_is_the_same_model(mask: str | None, last_query: bool) -> None:
    pytest.importorskip("torch")
    model, X, y = stack_problem(n=3, d=4, c=5, layers=3, heads=2, mask=mask, seed=1)
    loss, grads = torch_stack_step(model, X, y, last_query)()
    ours = model.loss_and_grads(X, y)
    assert loss == pytest.approx(ours[0], rel=1e-13)
    for k, g in grads.items():
        np.testing.assert_allclose(ours[1][k], g, rtol=1e-11, atol=1e-14 * np.abs(g).max())
