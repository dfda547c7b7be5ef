"""Backprop is exact: finite differences, the per-sample loops, and float32 end to end.

Finite differences are central, in float64, with relative error (max-norm, small floor) < 1e-6;
see ``tests/gradcheck.py``.
"""

import numpy as np
import pytest
from gradcheck import check_gradient, check_vjp

import mlp

# (n, d, m, k): several shapes, including a single sample and a single hidden unit
SHAPES = [(1, 2, 10, 3), (1, 4, 3, 2), (5, 3, 7, 4), (12, 2, 10, 3), (30, 4, 6, 3), (6, 1, 1, 2)]


def _problem(n: int, d: int, m: int, k: int, seed: int = 0) -> tuple:
    rng = np.random.default_rng([seed, n, d, m, k])
    X = rng.standard_normal((n, d))
    y = rng.integers(0, k, size=n)
    theta = mlp.init_params(d, m, k, seed=seed + 1)
    return X, y, theta


@pytest.mark.parametrize("dims", SHAPES, ids=lambda s: "n{}-d{}-m{}-k{}".format(*s))
@pytest.mark.parametrize("key", ["W1", "b1", "W2", "b2"])
def test_loss_gradient_matches_finite_differences(dims: tuple, key: str) -> None:
    X, y, theta = _problem(*dims)
    _, grads = mlp.loss_and_grads(X, y, theta)
    # the gradient must be informative for the check to mean something
    assert np.abs(grads[key]).max() > 1e-6

    def loss(_: np.ndarray) -> float:
        return mlp.loss_and_grads(X, y, theta)[0]

    check_gradient(loss, theta[key], grads[key], name=key)


@pytest.mark.parametrize("dims", [(1, 3, 5, 3), (7, 4, 10, 3), (4, 2, 3, 1)])
def test_backward_dX_matches_finite_differences(dims: tuple) -> None:
    X, y, theta = _problem(*dims, seed=2)
    H, Z = mlp.forward(X, theta)
    _, G = mlp.cross_entropy(Z, y)
    _, dX = mlp.backward(X, H, G, theta)

    def loss(_: np.ndarray) -> float:
        return mlp.cross_entropy(mlp.forward(X, theta)[1], y)[0]

    check_gradient(loss, X, dX, name="X")


def test_backward_is_a_vjp_for_any_upstream() -> None:
    """``backward`` is linear in ``G``: a random upstream gradient, not only the loss's."""
    X, _, theta = _problem(6, 3, 5, 4, seed=4)
    G = np.random.default_rng(9).standard_normal((6, 4))
    grads, dX = mlp.backward(X, mlp.forward(X, theta)[0], G, theta)

    def logits(X: np.ndarray, W1: np.ndarray, b1: np.ndarray, W2: np.ndarray, b2: np.ndarray):
        return mlp.forward(X, {"W1": W1, "b1": b1, "W2": W2, "b2": b2})[1]

    check_vjp(logits, {"X": X, **theta}, G, {"X": dX, **grads})


@pytest.mark.parametrize("shape", [(1, 3), (5, 3), (8, 2), (4, 6)])
def test_cross_entropy_dZ_matches_finite_differences(shape: tuple) -> None:
    rng = np.random.default_rng(shape)
    Z = 3 * rng.standard_normal(shape)
    y = rng.integers(0, shape[1], size=shape[0])
    _, dZ = mlp.cross_entropy(Z, y)
    check_gradient(lambda Z: mlp.cross_entropy(Z, y)[0], Z, dZ, name="Z")


@pytest.mark.parametrize("zshape", [(1,), (6,), (6, 1)])
def test_logistic_loss_dz_matches_finite_differences(zshape: tuple) -> None:
    rng = np.random.default_rng(len(zshape) * 10 + zshape[0])
    z = 4 * rng.standard_normal(zshape)
    y = rng.choice([-1.0, 1.0], size=zshape[0])
    _, dz = mlp.logistic_loss(z, y)
    check_gradient(lambda z: mlp.logistic_loss(z, y)[0], z, dz, name="z")


@pytest.mark.parametrize("dims", [(1, 2, 10, 3), (5, 3, 7, 4), (40, 4, 10, 3), (150, 2, 10, 3)])
def test_vectorized_equals_nonvectorized(dims: tuple) -> None:
    X, y, theta = _problem(*dims, seed=5)
    H, Z = mlp.forward(X, theta)
    Hn, Zn = mlp.forward_nonvectorized(X, theta)
    np.testing.assert_allclose(H, Hn, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Z, Zn, rtol=1e-12, atol=1e-12)
    loss, grads = mlp.loss_and_grads(X, y, theta)
    loss_n, grads_n = mlp.loss_and_grads_nonvectorized(X, y, theta)
    assert loss == pytest.approx(loss_n, rel=1e-12, abs=1e-12)
    for key in ("W1", "b1", "W2", "b2"):
        np.testing.assert_allclose(grads[key], grads_n[key], rtol=1e-12, atol=1e-12, err_msg=key)


def test_loss_is_the_mean_cross_entropy() -> None:
    """An independent check of the value: ``-mean log softmax(Z)[i, y_i]`` written out."""
    X, y, theta = _problem(9, 3, 4, 3, seed=6)
    Z = np.maximum(X @ theta["W1"] + theta["b1"], 0) @ theta["W2"] + theta["b2"]
    P = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(P[np.arange(9), y]))
    assert mlp.loss_and_grads(X, y, theta)[0] == pytest.approx(expected, rel=1e-12)


def test_gradients_are_fresh_not_accumulated() -> None:
    X, y, theta = _problem(5, 3, 4, 3)
    _, g1 = mlp.loss_and_grads(X, y, theta)
    g1_copy = {key: v.copy() for key, v in g1.items()}
    _, g2 = mlp.loss_and_grads(X, y, theta)
    for key in g1:
        assert g2[key] is not g1[key]
        assert np.array_equal(g1[key], g1_copy[key]) and np.array_equal(g2[key], g1_copy[key])


@pytest.mark.parametrize("fn", [mlp.loss_and_grads, mlp.loss_and_grads_nonvectorized])
def test_float32_stays_float32(fn) -> None:
    X, y, _ = _problem(10, 4, 6, 3)
    X32 = X.astype(np.float32)
    theta32 = mlp.init_params(4, 6, 3, seed=1, dtype=np.float32)
    H, Z = mlp.forward(X32, theta32)
    assert H.dtype == np.float32 and Z.dtype == np.float32
    assert mlp.forward_nonvectorized(X32, theta32)[1].dtype == np.float32
    assert mlp.predict_proba(X32, theta32).dtype == np.float32
    loss, grads = fn(X32, y, theta32)
    assert {k: g.dtype for k, g in grads.items()} == dict.fromkeys(grads, np.dtype(np.float32))
    # and the float32 gradients are the float64 ones, to float32 accuracy
    theta64 = {key: v.astype(np.float64) for key, v in theta32.items()}
    loss64, grads64 = fn(X32.astype(np.float64), y, theta64)
    assert loss == pytest.approx(loss64, rel=1e-5)
    for key in grads:
        np.testing.assert_allclose(grads[key], grads64[key], rtol=1e-4, atol=1e-5)


def test_float32_numerics() -> None:
    Z = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    assert mlp.softmax(Z).dtype == np.float32
    assert mlp.cross_entropy(Z, np.array([0]))[1].dtype == np.float32
    _, dz = mlp.logistic_loss(np.array([0.5, -2.0], dtype=np.float32), np.array([1, -1]))
    assert dz.dtype == np.float32
