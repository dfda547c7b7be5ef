"""Property-based tests (Hypothesis) over random shapes and values.

The attention primitive ``out = X softmax(X^T Q)``, the softmax family and the two losses:
outputs finite for extreme inputs, the simplex structure of the softmax, shift invariance, and
gradients that agree with central differences. Examples are derandomized (the same on every run)
and few, so the module stays fast; the gradient checks draw their values from a seeded
``np.random.default_rng`` (generic values: a central difference cannot resolve a gradient that a
contrived input makes 1e-10 times smaller than the function).
"""

from __future__ import annotations

import numpy as np
from gradcheck import check_gradient, check_vjp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import mlp
from attnlab.blocks.attention import attend_backward, attend_forward, attend_forward_loop

FAST = settings(max_examples=30, deadline=None, derandomize=True, database=None)


def floats(bound: float) -> st.SearchStrategy[float]:
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def prompts(draw: st.DrawFn, bound: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``X (n, d, c)``, ``Q`` shared ``(d, j)`` or per prompt ``(n, d, j)``, ``dOut (n, d, j)``
    with entries drawn by Hypothesis in ``[-bound, bound]``."""
    n, d, c, j = (draw(st.integers(1, hi)) for hi in (3, 4, 5, 3))
    shared = draw(st.booleans())
    X = draw(arrays(np.float64, (n, d, c), elements=floats(bound)))
    Q = draw(arrays(np.float64, (d, j) if shared else (n, d, j), elements=floats(bound)))
    dOut = draw(arrays(np.float64, (n, d, j), elements=floats(bound)))
    return X, Q, dOut


# --- the attention primitive ------------------------------------------------------------------


@FAST
@given(prompts(bound=1e4))
def test_attention_outputs_are_finite_and_S_is_column_stochastic(case: tuple) -> None:
    """Entries up to 1e4 give scores up to 4e8: S stays on the simplex, out is a convex
    combination of the tokens, and the backward pass is finite."""
    X, Q, dOut = case
    out, cache = attend_forward(X, Q)
    S = cache.S
    n, _, c = X.shape
    assert out.shape == dOut.shape and S.shape == (n, c, Q.shape[-1])
    assert np.isfinite(out).all() and np.isfinite(S).all()
    assert S.min() >= 0.0 and S.max() <= 1.0
    np.testing.assert_allclose(S.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # each output column lies between the smallest and largest token entry, feature by feature
    scale = max(float(np.abs(X).max()), 1e-300)
    lo = X.min(axis=2, keepdims=True) - 1e-12 * scale
    hi = X.max(axis=2, keepdims=True) + 1e-12 * scale
    assert np.all(out >= lo) and np.all(out <= hi)
    dX, dQ = attend_backward(dOut, cache)
    assert dX.shape == X.shape and dQ.shape == Q.shape
    assert np.isfinite(dX).all() and np.isfinite(dQ).all()


@FAST
@given(prompts(bound=30.0))
def test_attention_forward_equals_the_per_prompt_loop(case: tuple) -> None:
    X, Q, _ = case
    out, cache = attend_forward(X, Q)
    out_loop, S_loop = attend_forward_loop(X, Q)
    np.testing.assert_allclose(cache.S, S_loop, rtol=1e-9, atol=1e-15)
    scale = max(float(np.abs(X).max()), 1e-300)
    np.testing.assert_allclose(out, out_loop, rtol=0, atol=1e-11 * scale)


@FAST
@given(
    n=st.integers(1, 3),
    d=st.integers(1, 3),
    c=st.integers(1, 4),
    j=st.integers(1, 3),
    shared=st.booleans(),
    scale=st.floats(0.1, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_attention_backward_matches_central_differences(
    n: int, d: int, c: int, j: int, shared: bool, scale: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    X = scale * rng.standard_normal((n, d, c))
    Q = scale * rng.standard_normal((d, j) if shared else (n, d, j))
    dOut = rng.standard_normal((n, d, j))
    _, cache = attend_forward(X, Q)
    dX, dQ = attend_backward(dOut, cache)
    errors = check_vjp(
        lambda X, Q: attend_forward(X, Q)[0], {"X": X, "Q": Q}, dOut, {"X": dX, "Q": dQ}
    )
    assert max(errors.values()) < 1e-6


# --- softmax, log-softmax, log-sum-exp --------------------------------------------------------


@st.composite
def logits_and_axis(draw: st.DrawFn, bound: float) -> tuple[np.ndarray, int]:
    z = draw(
        arrays(np.float64, array_shapes(min_dims=1, max_dims=3, max_side=6), elements=floats(bound))
    )
    return z, draw(st.integers(-z.ndim, z.ndim - 1))


@FAST
@given(logits_and_axis(bound=1e300))
def test_softmax_family_is_finite_up_to_1e300(case: tuple) -> None:
    z, axis = case
    p = mlp.softmax(z, axis=axis)
    assert p.shape == z.shape and np.isfinite(p).all()
    assert p.min() >= 0.0 and p.max() <= 1.0
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=0, atol=1e-12)
    lse = mlp.logsumexp(z, axis=axis)
    zmax = z.max(axis=axis)
    assert np.isfinite(lse).all()
    # max z <= logsumexp z <= max z + log(size along axis)
    assert np.all(lse >= zmax)
    assert np.all(lse <= zmax + np.log(z.shape[axis]) * (1 + 1e-12) + 1e-12 * np.abs(zmax))
    logp = mlp.log_softmax(z, axis=axis)
    assert np.isfinite(logp).all() and logp.max() <= 0.0
    np.testing.assert_allclose(np.exp(logp).sum(axis=axis), 1.0, rtol=0, atol=1e-12)
    # the largest entry's log-probability is in [-log(size), 0]
    assert np.all(logp.max(axis=axis) >= -np.log(z.shape[axis]) - 1e-12)


@FAST
@given(logits_and_axis(bound=100.0), floats(1e3))
def test_softmax_family_is_shift_invariant(case: tuple, shift: float) -> None:
    z, axis = case
    p, q = mlp.softmax(z, axis=axis), mlp.softmax(z + shift, axis=axis)
    # rounding z + shift moves each logit by up to 2e-16 (|shift| + 100): that much, relatively
    tol = 4e-16 * (abs(shift) + 100.0) * 10
    np.testing.assert_allclose(q, p, rtol=tol, atol=1e-300)
    np.testing.assert_allclose(
        mlp.logsumexp(z + shift, axis=axis),
        mlp.logsumexp(z, axis=axis) + shift,
        rtol=0,
        atol=tol * 10,
    )


# --- cross-entropy and logistic loss ----------------------------------------------------------


@st.composite
def class_problem(draw: st.DrawFn, bound: float) -> tuple[np.ndarray, np.ndarray]:
    n, k = draw(st.integers(1, 6)), draw(st.integers(2, 5))
    Z = draw(arrays(np.float64, (n, k), elements=floats(bound)))
    y = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), dtype=np.int64)
    return Z, y


@st.composite
def sign_problem(draw: st.DrawFn, bound: float) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 6))
    z = draw(arrays(np.float64, draw(st.sampled_from([(n,), (n, 1)])), elements=floats(bound)))
    y = np.array(draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=n, max_size=n)))
    return z, y


@FAST
@given(class_problem(bound=1e300))
def test_cross_entropy_is_finite_and_nonnegative_for_extreme_logits(case: tuple) -> None:
    Z, y = case
    loss, dZ = mlp.cross_entropy(Z, y)
    assert np.isfinite(loss) and loss >= 0.0
    assert dZ.shape == Z.shape and np.isfinite(dZ).all()
    n = Z.shape[0]
    # dZ = (softmax - onehot) / n: each row sums to 0, entries in [-1/n, 1/n]
    np.testing.assert_allclose(dZ.sum(axis=1), 0.0, rtol=0, atol=1e-12 / n)
    assert np.all(np.abs(dZ) <= 1.0 / n * (1 + 1e-12))


@FAST
@given(st.integers(1, 4), st.integers(2, 6), floats(1e300), st.integers(0, 10**6))
def test_cross_entropy_of_equal_logits_is_log_k_at_any_magnitude(
    n: int, k: int, value: float, seed: int
) -> None:
    """Equal logits: softmax is 1/k whatever their size, so J = log k, dZ = (1/k - onehot)/n."""
    Z = np.full((n, k), value)
    y = np.random.default_rng(seed).integers(0, k, size=n)
    loss, dZ = mlp.cross_entropy(Z, y)
    assert loss == np.float64(np.log(k)) or abs(loss - np.log(k)) <= 4e-16 * np.log(k)
    expected = (np.full((n, k), 1.0 / k) - np.eye(k)[y]) / n
    np.testing.assert_allclose(dZ, expected, rtol=1e-15, atol=1e-17)


@FAST
@given(sign_problem(bound=1e300))
def test_logistic_loss_is_finite_and_nonnegative_for_extreme_logits(case: tuple) -> None:
    z, y = case
    loss, dz = mlp.logistic_loss(z, y)
    assert np.isfinite(loss) and loss >= 0.0
    assert dz.shape == z.shape and np.isfinite(dz).all()
    n = z.shape[0]
    # dJ/dz_i = -y_i sigmoid(-y_i z_i) / n: opposite sign to y_i, magnitude at most 1/n
    g = dz.reshape(n)
    assert np.all(g * y <= 0.0) and np.all(np.abs(g) <= 1.0 / n)


@FAST
@given(class_problem(bound=3.0))
def test_cross_entropy_gradient_matches_central_differences(case: tuple) -> None:
    Z, y = case
    Z = np.ascontiguousarray(Z)
    _, dZ = mlp.cross_entropy(Z, y)
    check_gradient(lambda Z: mlp.cross_entropy(Z, y)[0], Z, dZ, tol=1e-6, name="Z")


@FAST
@given(sign_problem(bound=3.0))
def test_logistic_loss_gradient_matches_central_differences(case: tuple) -> None:
    z, y = case
    z = np.ascontiguousarray(z)
    _, dz = mlp.logistic_loss(z, y)
    check_gradient(lambda z: mlp.logistic_loss(z, y)[0], z, dz, tol=1e-6, name="z")
