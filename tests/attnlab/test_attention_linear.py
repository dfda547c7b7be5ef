"""The linear form of the primitive ``out = X (X^T Q) / N``, ``N = c - 1``: shapes, the formula
written out, gradients against finite differences, the loop reference, errors.

Axis names of ``docs/concepts.md``: ``n`` prompts, ``d`` features, ``c`` tokens, ``j`` query
columns. Finite differences are central, in float64, relative error < 1e-6
(``tests/gradcheck.py``).
"""

import numpy as np
import pytest
from gradcheck import check_vjp, rel_error

from attnlab import (
    attend_forward,
    attend_linear_backward,
    attend_linear_backward_loop,
    attend_linear_forward,
    attend_linear_forward_loop,
)

# X shape, Q shape, then the expected shapes of out, A, dX, dQ (written out, not computed)
SHAPES = [
    ((2, 3, 4), (3, 5), (2, 3, 5), (2, 4, 5), (2, 3, 4), (3, 5)),
    ((2, 3, 4), (2, 3, 5), (2, 3, 5), (2, 4, 5), (2, 3, 4), (2, 3, 5)),
    ((1, 6, 21), (1, 6, 1), (1, 6, 1), (1, 21, 1), (1, 6, 21), (1, 6, 1)),
    ((5, 3, 2), (3, 1), (5, 3, 1), (5, 2, 1), (5, 3, 2), (3, 1)),
    ((4, 1, 3), (4, 1, 2), (4, 1, 2), (4, 3, 2), (4, 1, 3), (4, 1, 2)),
]
SHAPE_IDS = [f"X{x}-Q{q}".replace(" ", "") for x, q, *_ in SHAPES]


def _problem(x_shape: tuple, q_shape: tuple, seed: int = 0) -> tuple:
    rng = np.random.default_rng([seed, *x_shape, *q_shape])
    X = rng.standard_normal(x_shape)
    Q = rng.standard_normal(q_shape)
    dOut = rng.standard_normal((*x_shape[:2], q_shape[-1]))
    return X, Q, dOut


@pytest.mark.parametrize(("xs", "qs", "out_s", "A_s", "dX_s", "dQ_s"), SHAPES, ids=SHAPE_IDS)
def test_shapes(xs: tuple, qs: tuple, out_s: tuple, A_s: tuple, dX_s: tuple, dQ_s: tuple) -> None:
    X, Q, dOut = _problem(xs, qs)
    out, cache = attend_linear_forward(X, Q)
    assert out.shape == out_s and cache.A.shape == A_s
    dX, dQ = attend_linear_backward(dOut, cache)
    assert dX.shape == dX_s and dQ.shape == dQ_s
    assert attend_linear_backward(dOut, cache, need_dX=False)[0] is None
    assert attend_linear_forward_loop(X, Q).shape == out_s
    dX_l, dQ_l = attend_linear_backward_loop(dOut, X, Q)
    assert (dX_l.shape, dQ_l.shape) == (dX_s, dQ_s)


def test_forward_is_the_formula_written_out() -> None:
    """One prompt, per token: ``out = (1/N) sum_t x_t (x_t^T q)`` with ``N = c - 1``."""
    X, Q, _ = _problem((3, 4, 6), (3, 4, 2), seed=1)
    out, _ = attend_linear_forward(X, Q)
    for i in range(3):
        for col in range(2):
            expected = sum(X[i, :, t] * (X[i, :, t] @ Q[i, :, col]) for t in range(6)) / 5
            np.testing.assert_allclose(out[i, :, col], expected, rtol=1e-13)
    scaled, _ = attend_linear_forward(X, Q, scale=0.25)
    np.testing.assert_allclose(scaled, out * 5 * 0.25, rtol=1e-13)


@pytest.mark.parametrize("scale", [None, 0.37])
@pytest.mark.parametrize(("xs", "qs"), [(r[0], r[1]) for r in SHAPES], ids=SHAPE_IDS)
def test_backward_is_the_vjp_of_forward(xs: tuple, qs: tuple, scale: float | None) -> None:
    """``dX`` and ``dQ`` (shared or per-prompt ``Q``) against central differences of
    ``<dOut, out>``, with a random ``dOut``."""
    X, Q, dOut = _problem(xs, qs, seed=2)
    dX, dQ = attend_linear_backward(dOut, attend_linear_forward(X, Q, scale)[1])
    assert np.abs(dQ).max() > 1e-3 and np.abs(dX).max() > 1e-3
    check_vjp(
        lambda X, Q: attend_linear_forward(X, Q, scale)[0],
        {"X": X, "Q": Q},
        dOut,
        {"X": dX, "Q": dQ},
    )


@pytest.mark.parametrize("shared", [True, False])
def test_broadcast_dOut_is_the_same_gradient_in_every_column(shared: bool) -> None:
    """``dOut (n, d, 1)`` (the mean pool's) equals the explicit ``(n, d, j)`` repetition."""
    X, Q, dOut = _problem((3, 4, 5), (4, 3) if shared else (3, 4, 3), seed=3)
    cache = attend_linear_forward(X, Q)[1]
    one = dOut[:, :, :1]
    dX_b, dQ_b = attend_linear_backward(one, cache)
    dX, dQ = attend_linear_backward(np.repeat(one, 3, axis=2), cache)
    assert rel_error(dX_b, dX) < 1e-14 and rel_error(dQ_b, dQ) < 1e-14


@pytest.mark.parametrize("scale", [None, 2.5])
@pytest.mark.parametrize(("xs", "qs"), [(r[0], r[1]) for r in SHAPES], ids=SHAPE_IDS)
def test_loop_reference_equals_vectorized(xs: tuple, qs: tuple, scale: float | None) -> None:
    X, Q, dOut = _problem(xs, qs, seed=4)
    out, cache = attend_linear_forward(X, Q, scale)
    dX, dQ = attend_linear_backward(dOut, cache)
    assert rel_error(out, attend_linear_forward_loop(X, Q, scale)) < 1e-12
    dX_l, dQ_l = attend_linear_backward_loop(dOut, X, Q, scale)
    assert rel_error(dX, dX_l) < 1e-12 and rel_error(dQ, dQ_l) < 1e-12


def test_float32_stays_float32() -> None:
    X, Q, dOut = (a.astype(np.float32) for a in _problem((2, 3, 4), (2, 3, 2), seed=5))
    out, cache = attend_linear_forward(X, Q)
    dX, dQ = attend_linear_backward(dOut, cache)
    assert out.dtype == dX.dtype == dQ.dtype == np.float32


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda X, Q: attend_linear_forward(X[:, :, :1], Q), ValueError,
         r"X: the linear form divides by N = c - 1 .* needs c >= 2 tokens, received shape "
         r"\(2, 3, 1\)"),
        (lambda X, Q: attend_linear_forward(X, Q, scale=0.0), ValueError,
         r"scale: expected a positive finite number, received 0.0"),
        (lambda X, Q: attend_linear_forward(X, Q[:, :2]), ValueError,
         r"Q: expected shape \(n=2, d=3, j\)"),
        (lambda X, Q: attend_linear_forward(X * np.nan, Q), ValueError,
         r"X: expected finite values"),
        (lambda X, Q: attend_linear_backward(np.zeros((2, 3, 2)), attend_forward(X, Q)[1]),
         TypeError, r"cache: expected the LinearAttentionCache returned by "
         r"attend_linear_forward, received AttentionCache"),
        (lambda X, Q: attend_linear_backward(np.zeros((2, 3, 4)), attend_linear_forward(X, Q)[1]),
         ValueError, r"dOut: expected shape \(n=2, d=3, j=2\), received \(2, 3, 4\)"),
    ],
)  # fmt: skip
def test_errors_name_the_argument(call, error: type, match: str) -> None:
    X, Q, _ = _problem((2, 3, 4), (2, 3, 2), seed=6)
    with pytest.raises(error, match=match):
        call(X, Q)
