"""The gradient-check helpers themselves: they accept exact gradients and reject wrong ones."""

import numpy as np
import pytest
from gradcheck import check_gradient, check_vjp, numerical_gradient, rel_error, sample_indices


def test_numerical_gradient_of_a_cubic() -> None:
    x = np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -0.25]])
    num = numerical_gradient(lambda a: float(np.sum(a**3)), x)
    assert num.shape == (2, 3)
    np.testing.assert_allclose(num, 3 * x**2, rtol=1e-8, atol=1e-8)
    assert np.array_equal(x, [[0.5, -1.0, 2.0], [3.0, 0.0, -0.25]])  # restored


def test_numerical_gradient_refuses_float32() -> None:
    with pytest.raises(TypeError, match="float64"):
        numerical_gradient(lambda a: float(a.sum()), np.ones(3, dtype=np.float32))


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1.0, 2.0], [1.0, 2.0], 0.0),
        ([1.0, 2.0], [1.0, 3.0], 1 / 3),
        ([0.0, 0.0], [0.0, 1e-13], 1e-13 / 1e-12),  # the floor: absolute near zero
        ([-4.0], [4.0], 2.0),
    ],
)
def test_rel_error(a: list, b: list, expected: float) -> None:
    assert rel_error(np.array(a), np.array(b)) == pytest.approx(expected, rel=1e-12)


def test_sample_indices() -> None:
    assert np.array_equal(sample_indices(5, None), np.arange(5))
    assert np.array_equal(sample_indices(5, 10), np.arange(5))
    idx = sample_indices(1000, 20, seed=3)
    assert idx.shape == (20,) and len(set(idx.tolist())) == 20 and idx.max() < 1000
    assert np.array_equal(idx, sample_indices(1000, 20, seed=3))


def test_check_gradient_accepts_exact_and_rejects_wrong() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3))
    A = rng.standard_normal((4, 3))

    def f(a: np.ndarray) -> float:
        return float(np.sum(A * np.sin(a)))

    assert check_gradient(f, x, A * np.cos(x)) < 1e-8
    with pytest.raises(AssertionError, match="relative error"):
        check_gradient(f, x, A * np.cos(x) * (1 + 1e-4))
    with pytest.raises(AssertionError, match="shape"):
        check_gradient(f, x, np.zeros((3, 4)))
    assert check_gradient(f, x, A * np.cos(x), max_entries=5) < 1e-8


def test_check_vjp_of_a_matrix_product() -> None:
    rng = np.random.default_rng(1)
    X, W = rng.standard_normal((5, 3)), rng.standard_normal((3, 2))
    G = rng.standard_normal((5, 2))
    errs = check_vjp(lambda X, W: X @ W, {"X": X, "W": W}, G, {"X": G @ W.T, "W": X.T @ G})
    assert set(errs) == {"X", "W"} and max(errs.values()) < 1e-8
    errs = check_vjp(lambda X, W: X @ W, (X, W), G, (G @ W.T, X.T @ G))
    assert set(errs) == {"0", "1"}
    with pytest.raises(AssertionError, match="gradient of W"):
        check_vjp(lambda X, W: X @ W, {"X": X, "W": W}, G, {"X": G @ W.T, "W": X.T @ G.T.T * 2})
