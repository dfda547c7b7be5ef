"""The attention primitive ``out = X softmax(X^T Q)``: shapes, gradients, loop reference, extremes.

Axis names of ``docs/concepts.md``: ``n`` prompts, ``d`` features, ``c`` tokens (keys), ``j`` query
columns. Finite differences are central, in float64, relative error < 1e-6 (``tests/gradcheck.py``).
"""

import sys

import numpy as np
import pytest
from gradcheck import check_vjp, rel_error

from attnlab import attend_backward, attend_backward_loop, attend_forward, attend_forward_loop

# X shape, Q shape, then the expected shapes of out, S, dX, dQ (written out, not computed)
SHAPES = [
    ((2, 3, 4), (3, 5), (2, 3, 5), (2, 4, 5), (2, 3, 4), (3, 5)),
    ((2, 3, 4), (2, 3, 5), (2, 3, 5), (2, 4, 5), (2, 3, 4), (2, 3, 5)),
    ((1, 4, 6), (4, 2), (1, 4, 2), (1, 6, 2), (1, 4, 6), (4, 2)),
    ((1, 4, 6), (1, 4, 2), (1, 4, 2), (1, 6, 2), (1, 4, 6), (1, 4, 2)),
    ((3, 2, 1), (3, 2, 4), (3, 2, 4), (3, 1, 4), (3, 2, 1), (3, 2, 4)),
    ((3, 2, 1), (2, 4), (3, 2, 4), (3, 1, 4), (3, 2, 1), (2, 4)),
    ((5, 3, 7), (3, 1), (5, 3, 1), (5, 7, 1), (5, 3, 7), (3, 1)),
    ((5, 3, 7), (5, 3, 1), (5, 3, 1), (5, 7, 1), (5, 3, 7), (5, 3, 1)),
    ((4, 1, 3), (4, 1, 2), (4, 1, 2), (4, 3, 2), (4, 1, 3), (4, 1, 2)),
    ((1, 1, 1), (1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1)),
]
SHAPE_IDS = [f"X{x}-Q{q}".replace(" ", "") for x, q, *_ in SHAPES]


def _problem(x_shape: tuple, q_shape: tuple, seed: int = 0, scale: float = 1.0) -> tuple:
    """Random ``X``, ``Q`` and upstream ``dOut``; ``Q`` scaled so scores are of order ``scale``."""
    rng = np.random.default_rng([seed, *x_shape, *q_shape])
    X = rng.standard_normal(x_shape)
    Q = scale * rng.standard_normal(q_shape) / np.sqrt(x_shape[1])
    n, d = x_shape[:2]
    dOut = rng.standard_normal((n, d, q_shape[-1]))
    return X, Q, dOut


@pytest.mark.parametrize(("xs", "qs", "out_s", "S_s", "dX_s", "dQ_s"), SHAPES, ids=SHAPE_IDS)
def test_shapes(xs: tuple, qs: tuple, out_s: tuple, S_s: tuple, dX_s: tuple, dQ_s: tuple) -> None:
    X, Q, dOut = _problem(xs, qs)
    out, cache = attend_forward(X, Q)
    assert out.shape == out_s
    assert cache.S.shape == S_s
    dX, dQ = attend_backward(dOut, cache)
    assert dX.shape == dX_s
    assert dQ.shape == dQ_s
    assert attend_backward(dOut, cache, need_dX=False)[0] is None
    out_l, S_l = attend_forward_loop(X, Q)
    assert (out_l.shape, S_l.shape) == (out_s, S_s)
    dX_l, dQ_l = attend_backward_loop(dOut, X, Q)
    assert (dX_l.shape, dQ_l.shape) == (dX_s, dQ_s)


@pytest.mark.parametrize(("xs", "qs"), [(r[0], r[1]) for r in SHAPES], ids=SHAPE_IDS)
def test_backward_is_the_vjp_of_forward(xs: tuple, qs: tuple) -> None:
    """``dX`` and ``dQ`` against central differences of ``<dOut, out>``, dOut random."""
    X, Q, dOut = _problem(xs, qs, seed=1)
    dX, dQ = attend_backward(dOut, attend_forward(X, Q)[1])
    assert np.abs(dQ).max() > 1e-6 or xs[2] == 1  # c = 1: S is constant, dQ is truly zero
    errors = check_vjp(
        lambda X, Q: attend_forward(X, Q)[0], {"X": X, "Q": Q}, dOut, {"X": dX, "Q": dQ}
    )
    assert set(errors) == {"X", "Q"}


def test_backward_with_c_equal_1_has_zero_dQ() -> None:
    """One token: ``S = 1`` whatever ``Q`` is, so ``dQ = 0`` and ``dX = dOut S^T`` exactly."""
    X, Q, dOut = _problem((3, 2, 1), (3, 2, 4), seed=2)
    dX, dQ = attend_backward(dOut, attend_forward(X, Q)[1])
    assert np.all(dQ == 0)
    np.testing.assert_allclose(dX, dOut.sum(axis=2, keepdims=True), rtol=1e-14)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3])
@pytest.mark.parametrize(("xs", "qs"), [(r[0], r[1]) for r in SHAPES], ids=SHAPE_IDS)
def test_loop_reference_equals_vectorized(xs: tuple, qs: tuple, scale: float) -> None:
    X, Q, dOut = _problem(xs, qs, seed=3, scale=scale)
    out, cache = attend_forward(X, Q)
    dX, dQ = attend_backward(dOut, cache)
    out_l, S_l = attend_forward_loop(X, Q)
    dX_l, dQ_l = attend_backward_loop(dOut, X, Q)
    for name, a, b in (("out", out, out_l), ("S", cache.S, S_l), ("dX", dX, dX_l)):
        assert rel_error(a, b) < 1e-12, name
    assert rel_error(dQ, dQ_l) < 1e-12 or np.abs(dQ_l).max() < 1e-14  # c = 1: both ~0


@pytest.mark.parametrize("scale", [0.1, 1.0, 30.0, 1e4])
@pytest.mark.parametrize("shared", [True, False])
def test_columns_of_S_are_distributions(scale: float, shared: bool) -> None:
    qs = (5, 6) if shared else (4, 5, 6)
    X, Q, _ = _problem((4, 5, 7), qs, seed=4, scale=scale)
    S = attend_forward(X, Q)[1].S
    assert np.all((S >= 0) & (S <= 1))
    np.testing.assert_allclose(S.sum(axis=1), np.ones((4, 6)), rtol=0, atol=1e-12)


def _gaps(X: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Largest minus second-largest score over the tokens, per prompt and query ``(n, j)``."""
    Qn = np.broadcast_to(Q, (X.shape[0], *Q.shape[-2:]))
    scores = np.stack([X[i].T @ Qn[i] for i in range(X.shape[0])])  # (n, c, j), plain numpy
    top2 = np.sort(scores, axis=1)[:, -2:, :]
    return top2[:, 1, :] - top2[:, 0, :]


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize(("shared", "scale_X"), [(True, False), (False, False), (False, True)])
def test_scores_around_1e4_stay_finite_and_one_hot(sign: float, shared: bool, scale_X: bool):
    """Scores of order 1e4 (Q or X scaled up): no overflow, no NaN, exact 0/1 weights where the
    top score leads the next one by more than 745 (``exp(-745)`` underflows to 0)."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((6, 4, 8))
    Q = rng.standard_normal((4, 3) if shared else (6, 4, 3))
    if scale_X:
        X *= sign * 1e4
    else:
        Q *= sign * 1e4
    dOut = rng.standard_normal((6, 4, 3))
    out, cache = attend_forward(X, Q)
    S = cache.S
    dX, dQ = attend_backward(dOut, cache)
    for name, a in (("out", out), ("S", S), ("dX", dX), ("dQ", dQ)):
        assert np.isfinite(a).all(), name
    np.testing.assert_allclose(S.sum(axis=1), 1.0, rtol=0, atol=1e-12)

    gaps = _gaps(X, Q)
    expected_one_hot = gaps > 800
    assert expected_one_hot.mean() > 0.5  # the input is as saturated as designed
    n_idx, j_idx = np.nonzero(expected_one_hot)
    cols = S[n_idx, :, j_idx]  # (columns, c)
    winners = np.argmax(S, axis=1)[n_idx, j_idx]
    one_hot = np.zeros_like(cols)
    one_hot[np.arange(len(winners)), winners] = 1.0
    assert np.array_equal(cols, one_hot)
    # the winner is the token of the largest score, computed independently
    Qn = np.broadcast_to(Q, (6, 4, 3))
    top = np.array([np.argmax(X[i].T @ Qn[i], axis=0) for i in range(6)])  # (n, j)
    assert np.array_equal(winners, top[n_idx, j_idx])


@pytest.mark.parametrize("shared", [True, False])
def test_float32_stays_float32(shared: bool) -> None:
    X, Q, dOut = _problem((3, 4, 5), (4, 2) if shared else (3, 4, 2), seed=6)
    X, Q, dOut = X.astype(np.float32), Q.astype(np.float32), dOut.astype(np.float32)
    out, cache = attend_forward(X, Q)
    dX, dQ = attend_backward(dOut, cache)
    for name, a in (("out", out), ("S", cache.S), ("dX", dX), ("dQ", dQ)):
        assert a.dtype == np.float32, name
    # and float32 agrees with float64 to float32 accuracy
    out64, cache64 = attend_forward(X.astype(np.float64), Q.astype(np.float64))
    assert rel_error(out, out64) < 1e-5
    assert rel_error(dQ, attend_backward(dOut.astype(np.float64), cache64)[1]) < 1e-4


def test_dQ_of_shared_Q_is_the_sum_of_per_prompt_dQ() -> None:
    X, Q, dOut = _problem((4, 3, 5), (3, 2), seed=7)
    _, dQ_shared = attend_backward(dOut, attend_forward(X, Q)[1])
    _, dQ_each = attend_backward(dOut, attend_forward(X, np.stack([Q] * 4))[1])
    assert dQ_each.shape == (4, 3, 2)
    assert rel_error(dQ_shared, dQ_each.sum(axis=0)) < 1e-13


def test_forward_matches_the_formula_written_out() -> None:
    """``out = X softmax(X^T Q)`` for one prompt, with the softmax spelled out in numpy."""
    X, Q, _ = _problem((1, 3, 4), (3, 2), seed=8)
    scores = X[0].T @ Q
    S = np.exp(scores) / np.exp(scores).sum(axis=0)
    out, cache = attend_forward(X, Q)
    assert rel_error(cache.S[0], S) < 1e-14
    assert rel_error(out[0], X[0] @ S) < 1e-14


# --- errors: each names the argument, the expected and the received value or shape ----------

X0 = np.ones((2, 3, 4))


@pytest.mark.parametrize(
    ("X", "Q", "match"),
    [
        (np.ones((3, 4)), np.ones((3, 2)), r"X: expected a 3-d array, received shape \(3, 4\)"),
        (np.ones((1, 2, 3, 4)), np.ones((3, 2)), r"X: expected a 3-d array, received shape"),
        (X0, np.ones(3), r"Q: expected a 2 or 3-d array, received shape \(3,\)"),
        (
            X0,
            np.ones((4, 2)),
            r"Q: expected shape \(d=3, j\) to match X \(2, 3, 4\), received \(4, 2\)",
        ),
        (
            X0,
            np.ones((3, 3, 2)),
            r"Q: expected shape \(n=2, d=3, j\) to match X \(2, 3, 4\), received \(3, 3, 2\)",
        ),
        (
            X0,
            np.ones((2, 4, 2)),
            r"Q: expected shape \(n=2, d=3, j\) to match X \(2, 3, 4\), received \(2, 4, 2\)",
        ),
        (np.ones((0, 3, 4)), np.ones((3, 2)), r"X: expected at least one sample"),
        (np.ones((2, 3, 0)), np.ones((3, 2)), r"X: expected d >= 1 features and c >= 1 tokens"),
        (X0, np.ones((3, 0)), r"Q: expected at least one query column, received \(3, 0\)"),
    ],
)
def test_forward_shape_errors(X: np.ndarray, Q: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        attend_forward(X, Q)
    with pytest.raises(ValueError, match=match):
        attend_forward_loop(X, Q)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused(bad: float) -> None:
    X = np.ones((2, 3, 4))
    X[1, 2, 0] = bad
    with pytest.raises(ValueError, match=r"X: expected finite values, received 1 NaN or inf"):
        attend_forward(X, np.ones((3, 2)))
    Q = np.ones((2, 3, 2))
    Q[0, 0, 1] = bad
    with pytest.raises(ValueError, match=r"Q: expected finite values, received 1 NaN or inf"):
        attend_forward(np.ones((2, 3, 4)), Q)


def test_complex_input_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"X: expected a real numeric array .* complex128"):
        attend_forward(np.ones((2, 3, 4), dtype=complex), np.ones((3, 2)))
    with pytest.raises(TypeError, match=r"Q: expected a real numeric array .* complex128"):
        attend_forward(np.ones((2, 3, 4)), np.ones((3, 2), dtype=complex))
    _, cache = attend_forward(np.ones((2, 3, 4)), np.ones((3, 2)))
    with pytest.raises(TypeError, match=r"dOut: expected a real numeric array .* complex128"):
        attend_backward(np.ones((2, 3, 2), dtype=complex), cache)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((2, 3, 4), r"dOut: expected shape \(n=2, d=3, j=2\), received \(2, 3, 4\)"),
        ((1, 3, 2), r"dOut: expected shape \(n=2, d=3, j=2\), received \(1, 3, 2\)"),
        ((2, 2, 2), r"dOut: expected shape \(n=2, d=3, j=2\), received \(2, 2, 2\)"),
        ((3, 2), r"dOut: expected a 3-d array, received shape \(3, 2\)"),
    ],
)
def test_backward_dOut_shape_errors(shape: tuple, match: str) -> None:
    _, cache = attend_forward(np.ones((2, 3, 4)), np.ones((3, 2)))
    with pytest.raises(ValueError, match=match):
        attend_backward(np.ones(shape), cache)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("broadcast", [True, False])
def test_blocks_of_prompts_equal_the_loop_reference(
    monkeypatch: pytest.MonkeyPatch, shared: bool, broadcast: bool
) -> None:
    """The prompts are processed in blocks; blocks of 3 prompts (the last one of 1) change
    nothing: forward and backward equal the per-prompt loops."""
    from mlp.threads import prompt_blocks

    n, d, c, j = 7, 3, 5, 4
    monkeypatch.setattr(sys.modules["mlp.threads"], "BLOCK_BYTES", 3 * c * j * 8)
    assert [b.stop - b.start for b in prompt_blocks(n, c * j * 8)] == [3, 3, 1]
    X, Q, dOut = _problem((n, d, c), (d, j) if shared else (n, d, j), seed=11, scale=5.0)
    if broadcast:  # the same gradient in every query column, as (n, d, 1)
        dOut = dOut[:, :, :1]
    out, cache = attend_forward(X, Q)
    dX, dQ = attend_backward(dOut, cache)
    out_l, S_l = attend_forward_loop(X, Q)
    dX_l, dQ_l = attend_backward_loop(np.broadcast_to(dOut, (n, d, j)), X, Q)
    for name, a, b in (
        ("out", out, out_l),
        ("S", cache.S, S_l),
        ("dX", dX, dX_l),
        ("dQ", dQ, dQ_l),
    ):
        assert a.shape == b.shape, name
        assert rel_error(a, b) < 1e-12, name
    np.testing.assert_array_equal(cache.top[:, 0, :], np.argmax(S_l, axis=1))


def test_argmax_token_is_a_largest_score_with_ties() -> None:
    """``top`` points at a largest score of its column; with ties, at the first of them."""
    from mlp.numerics import softmax_with_argmax

    rng = np.random.default_rng(12)
    z = rng.integers(-3, 3, size=(4, 6, 5)).astype(float)  # many ties
    z[0, :, 0] = 2.0  # a column of equal scores
    S, top = softmax_with_argmax(z.copy(), axis=1)
    assert top.shape == (4, 1, 5)
    best = np.take_along_axis(z, top, axis=1)
    np.testing.assert_array_equal(best, z.max(axis=1, keepdims=True))
    for i, k in np.ndindex(4, 5):  # the first maximal token, found by a plain scan
        first = next(t for t in range(6) if z[i, t, k] == z[i, :, k].max())
        assert top[i, 0, k] == first
    np.testing.assert_allclose(S.sum(axis=1), 1.0, rtol=1e-15)


def test_loop_backward_names_a_wrong_upstream_shape() -> None:
    """The loop reference passed ``dOut`` unchecked to ``@`` (a numpy matmul error)."""
    rng = np.random.default_rng(0)
    X, Q = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 2))
    with pytest.raises(ValueError, match=r"dOut: expected shape \(n=2, d=3, j=2\), received"):
        attend_backward_loop(rng.standard_normal((2, 3, 5)), X, Q)
