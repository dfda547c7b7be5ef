"""Stable numerics: exact values for logits of +-1e4 and accurate tails of the logistic loss."""

import math

import mpmath
import numpy as np
import pytest

import mlp
from mlp import numerics

BIG = 1e4


@pytest.mark.parametrize(
    ("z", "expected"),
    [
        ([BIG, -BIG, 0.0], [1.0, 0.0, 0.0]),
        ([-BIG, -BIG, BIG], [0.0, 0.0, 1.0]),
        ([BIG, BIG], [0.5, 0.5]),
        ([-BIG, -BIG, -BIG, -BIG], [0.25, 0.25, 0.25, 0.25]),
        ([0.0, math.log(3.0)], [0.25, 0.75]),
    ],
)
def test_softmax_exact_at_large_logits(z: list, expected: list) -> None:
    p = mlp.softmax(np.array(z))
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p, expected, rtol=1e-15, atol=0)


def test_softmax_along_an_axis_sums_to_one() -> None:
    z = np.random.default_rng(0).standard_normal((3, 4, 5)) * BIG
    for axis in (0, 1, 2):
        p = mlp.softmax(z, axis=axis)
        assert np.all(np.isfinite(p)) and p.min() >= 0
        np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=1e-15)


LOG2, LOG3 = math.log(2.0), math.log(3.0)


@pytest.mark.parametrize(
    ("z", "lse", "log_p"),
    [
        ([BIG, BIG], BIG + LOG2, [-LOG2, -LOG2]),
        ([-BIG, -BIG, -BIG], -BIG + LOG3, [-LOG3, -LOG3, -LOG3]),
        ([BIG, -BIG], BIG, [0.0, -2 * BIG]),
        ([0.0, 0.0], LOG2, [-LOG2, -LOG2]),
        ([1e17, 1e17], 1e17, [-LOG2, -LOG2]),  # logsumexp rounds to 1e17; log p must not
    ],
)
def test_logsumexp_and_log_softmax_at_large_logits(z: list, lse: float, log_p: list) -> None:
    z = np.array(z)
    assert mlp.logsumexp(z) == pytest.approx(lse, rel=1e-15)
    np.testing.assert_allclose(mlp.log_softmax(z), log_p, rtol=1e-15, atol=0)


@pytest.mark.parametrize(
    ("logits", "label", "loss", "dZ"),
    [
        # the wrong class by a gap of 2e4: loss exactly the gap, gradient p - onehot
        ([BIG, -BIG, 0.0], 1, 2 * BIG, [1.0, -1.0, 0.0]),
        ([BIG, -BIG, 0.0], 2, BIG, [1.0, 0.0, -1.0]),
        # the right class by a huge margin: loss 0, gradient 0
        ([BIG, -BIG, 0.0], 0, 0.0, [0.0, 0.0, 0.0]),
        # ties at +-1e4: log 2, log 3
        ([BIG, BIG, -BIG], 0, math.log(2.0), [-0.5, 0.5, 0.0]),
        ([-BIG, -BIG, -BIG], 2, math.log(3.0), [1 / 3, 1 / 3, -2 / 3]),
    ],
)
def test_cross_entropy_exact_at_large_logits(logits: list, label: int, loss: float, dZ: list):
    J, G = mlp.cross_entropy(np.array([logits]), np.array([label]))
    assert math.isfinite(J) and np.all(np.isfinite(G))
    assert J == pytest.approx(loss, rel=1e-12, abs=1e-300)
    np.testing.assert_allclose(G, [dZ], rtol=1e-12, atol=1e-300)


def test_cross_entropy_is_a_mean_over_samples() -> None:
    Z = np.array([[BIG, -BIG, 0.0], [BIG, -BIG, 0.0]])
    J, G = mlp.cross_entropy(Z, np.array([1, 0]))
    assert J == pytest.approx(BIG, rel=1e-12)  # (2e4 + 0) / 2
    np.testing.assert_allclose(G, [[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], rtol=1e-12, atol=1e-300)


def test_network_with_huge_logits_stays_finite() -> None:
    theta = mlp.init_params(2, 3, 3, seed=0, scale=100.0)
    X = np.array([[100.0, -100.0], [-50.0, 80.0]])
    _, Z = mlp.forward(X, theta)
    assert np.abs(Z).max() > 1e4  # really huge
    loss, grads = mlp.loss_and_grads(X, np.array([0, 2]), theta)
    assert math.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())


def test_logistic_loss_at_margin_plus_1e4() -> None:
    loss, dz = mlp.logistic_loss(np.array([BIG]), np.array([1.0]))
    assert math.isfinite(loss) and 0.0 <= loss < 1e-300
    assert np.isfinite(dz).all() and abs(dz[0]) < 1e-300


def test_logistic_loss_at_margin_minus_1e4() -> None:
    loss, dz = mlp.logistic_loss(np.array([BIG]), np.array([-1.0]))
    assert loss == pytest.approx(BIG, rel=1e-15)
    np.testing.assert_allclose(dz, [1.0], rtol=1e-15)  # -y * sigmoid(1e4) = 1


@pytest.mark.parametrize("margin", [700.0, 300.0, 40.0, -40.0])
def test_logistic_loss_tail_keeps_relative_accuracy(margin: float) -> None:
    """At margin 700 the loss and gradient are about exp(-700): correct to 1e-12 relative."""
    with mpmath.workdps(50):
        m = mpmath.mpf(margin)
        loss_ref = float(mpmath.log1p(mpmath.exp(-m)))
        grad_ref = -float(1 / (1 + mpmath.exp(m)))  # d/dz log(1 + exp(-y z)) at y = +1
    loss, dz = mlp.logistic_loss(np.array([margin]), np.array([1.0]))
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    assert dz[0] == pytest.approx(grad_ref, rel=1e-12)
    # the same margin with y = -1 and z = -margin
    loss2, dz2 = mlp.logistic_loss(np.array([-margin]), np.array([-1.0]))
    assert loss2 == pytest.approx(loss_ref, rel=1e-12)
    assert dz2[0] == pytest.approx(-grad_ref, rel=1e-12)


def test_logistic_loss_at_margin_700_is_exp_minus_700() -> None:
    _, dz = mlp.logistic_loss(np.array([700.0]), np.array([1.0]))
    assert dz[0] < 0 and -dz[0] == pytest.approx(math.exp(-700.0), rel=1e-12)


def test_relu_and_its_derivative() -> None:
    x = np.array([-2.0, -0.0, 0.0, 1e-300, 3.0])
    np.testing.assert_array_equal(mlp.relu(x), [0.0, 0.0, 0.0, 1e-300, 3.0])
    np.testing.assert_array_equal(mlp.relu_grad(x), [0.0, 0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(mlp.relu_grad(mlp.relu(x)), mlp.relu_grad(x))


def test_predict_proba_rows_sum_to_one_and_predict_is_argmax() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3))
    theta = mlp.init_params(3, 5, 4, seed=2)
    P = mlp.predict_proba(X, theta)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-14)
    pred = mlp.predict(X, theta)
    assert np.array_equal(pred, np.argmax(P, axis=1)) and len(set(pred.tolist())) > 1
    y = pred.copy()
    y[:5] = (y[:5] + 1) % 4
    assert mlp.accuracy(X, y, theta) == 0.75


def test_softmax_with_argmax_takes_integer_logits_and_leaves_them_untouched() -> None:
    """Integer logits used to reach ``np.exp(e, out=e)`` on an int array (UFuncTypeError)."""
    z = np.array([[1, 3, 2], [0, 0, 5]])
    before = z.copy()
    S, top = mlp.softmax_with_argmax(z, axis=1, overwrite=True)
    e = np.exp(before - before.max(axis=1, keepdims=True))
    np.testing.assert_allclose(S, e / e.sum(axis=1, keepdims=True), rtol=1e-15)
    np.testing.assert_array_equal(top[:, 0], [1, 2])
    np.testing.assert_array_equal(z, before)


def test_softmax_backward_overwrite_with_float32_upstream_keeps_float64() -> None:
    """A float32 ``dS`` against float64 ``S`` must not make ``overwrite`` compute in float32."""
    rng = np.random.default_rng(3)
    S = mlp.softmax(rng.standard_normal((4, 6)), axis=1)
    dS = rng.standard_normal((4, 6)).astype(np.float32)
    expected = S * (dS - np.sum(S * dS, axis=1, keepdims=True))  # float64 throughout
    got = mlp.softmax_backward(S, dS.copy(), axis=1, overwrite=True)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


# --- squared loss ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5,), (5, 1)])
def test_squared_loss_value_and_gradient(shape: tuple) -> None:
    """``J = mean (z - t)^2 / 2`` written out, and ``dz`` against central differences."""
    from gradcheck import check_gradient

    rng = np.random.default_rng(7)
    z = rng.standard_normal(shape)
    t = rng.standard_normal(5)
    loss, dz = mlp.squared_loss(z, t)
    assert loss == pytest.approx(sum((z.ravel()[i] - t[i]) ** 2 for i in range(5)) / 10, rel=1e-15)
    assert dz.shape == shape
    check_gradient(lambda _: mlp.squared_loss(z, t)[0], z, dz, name="z")


def test_squared_loss_keeps_float32_and_takes_integer_targets() -> None:
    loss, dz = mlp.squared_loss(np.array([1.5, -2.0], dtype=np.float32), np.array([1, -2]))
    assert dz.dtype == np.float32 and loss == pytest.approx(0.0625)
    np.testing.assert_array_equal(dz, np.array([0.25, 0.0], dtype=np.float32))


@pytest.mark.parametrize(
    ("z", "t", "error", "match"),
    [
        ([1.0, 2.0], [0.0, np.nan], ValueError, r"t: expected finite values, received 1 NaN"),
        ([1.0, 2.0], [0.0, np.inf], ValueError, r"t: expected finite values, received 1 NaN"),
        ([1.0, 2.0], [0.0, 1.0, 2.0], ValueError,
         r"t: expected real targets of shape \(n=2,\), received \(3,\)"),
        ([1.0, 2.0], [[0.0, 1.0]], ValueError, r"t: expected real targets of shape \(n=2,\)"),
        ([1.0, 2.0], ["a", "b"], TypeError, r"t: expected real targets, received dtype <U1"),
        ([[1.0, 2.0]], [0.0], ValueError, r"z: expected shape \(n,\) or \(n, 1\), received"),
        ([], [], ValueError, r"z: expected at least one sample"),
    ],
)  # fmt: skip
def test_squared_loss_refuses_bad_targets_in_one_line(z, t, error: type, match: str) -> None:
    with pytest.raises(error, match=match) as info:
        mlp.squared_loss(np.array(z), t)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((64, 16, 2), 1), ((64, 16, 16), 1), ((250, 21, 1), 1), ((5, 7, 3, 2), 1), ((5, 7, 3, 2), 0),
     ((5, 7, 3, 2), 2), ((5, 7, 3, 2), -1), ((9, 4), 0), ((9, 4), 1)],
)  # fmt: skip
def test_the_small_softmaxs_sum_has_numpys_bits(shape: tuple[int, ...], axis: int) -> None:
    """The sum in a contiguous copy with the axis first adds the same slices in the same order
    as ``np.add.reduce`` (and a loop over the axis, the order numpy uses off the last axis)."""
    e = np.random.default_rng(len(shape) + axis).random(shape)
    got = numerics._sum_keepdims(e, axis, small=True)
    assert np.array_equal(got, np.add.reduce(e, axis=axis, keepdims=True))
    if math.prod(shape[axis % len(shape) + 1 :]) > 1:
        moved = np.moveaxis(e, axis, 0)
        total = moved[0].copy()
        for part in moved[1:]:
            total += part
        assert np.array_equal(got, np.expand_dims(total, axis))
