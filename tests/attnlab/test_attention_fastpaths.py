"""The fast paths of the attention step: the mean pool's broadcast ``dOut (n, d, 1)`` through
``attend_backward``, and the in-place softmax; each equals the plain computation."""

import numpy as np
import pytest

from attnlab.blocks.attention import attend_backward, attend_forward
from mlp.numerics import softmax_backward, softmax_with_argmax


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize(
    "scale", [1.0, 30.0]
)  # 30: saturated attention (weights within 1e-16 of 1)
def test_broadcast_dOut_equals_the_repeated_one(shared: bool, scale: float) -> None:
    rng = np.random.default_rng(7)
    n, d, c, j = 3, 4, 6, 5
    X = rng.standard_normal((n, d, c))
    Q = scale * rng.standard_normal((d, j) if shared else (n, d, j))
    dOut1 = rng.standard_normal((n, d, 1))
    _, cache = attend_forward(X, Q)
    dX1, dQ1 = attend_backward(dOut1, cache)
    dX, dQ = attend_backward(np.repeat(dOut1, j, axis=2), cache)
    assert dX1.shape == dX.shape == X.shape and dQ1.shape == dQ.shape == Q.shape
    # elementwise relative agreement: the exact (shifted) backward on both paths
    np.testing.assert_allclose(dQ1, dQ, rtol=1e-12, atol=0)
    np.testing.assert_allclose(dX1, dX, rtol=1e-12, atol=1e-300)


def test_broadcast_dOut_of_a_wrong_shape_is_refused() -> None:
    X = np.ones((2, 3, 4))
    _, cache = attend_forward(X, np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"dOut: expected shape \(n=2, d=3, j=2\), received"):
        attend_backward(np.ones((2, 3, 3)), cache)


def test_softmax_in_place_and_broadcast_backward_equal_the_plain_ones() -> None:
    rng = np.random.default_rng(8)
    z = 20 * rng.standard_normal((3, 6, 4))
    S, top = softmax_with_argmax(z, axis=1)
    z2 = z.copy()
    S2, top2 = softmax_with_argmax(z2, axis=1, overwrite=True)
    assert np.shares_memory(S2, z2) and not np.shares_memory(S, z)
    np.testing.assert_array_equal(S2, S)
    np.testing.assert_array_equal(top2, top)
    ds = rng.standard_normal((3, 6, 1))
    full = softmax_backward(S, np.repeat(ds, 4, axis=2), axis=1, top=top)
    np.testing.assert_allclose(softmax_backward(S, ds, axis=1, top=top), full, rtol=1e-12)
