"""The decimal reference for ``dQ`` and the error curves of the exact and textbook backward.

The reference is checked against a closed form (two tokens, one feature) and against the
lecture's float64 loop where nothing saturates; then the curves show what the saturation tests
prove with mpmath: the exact backward keeps its digits at every scale, the textbook one loses
them once the scores are large.
"""

import numpy as np
import pytest

from attnlab import attend_backward, attend_backward_loop, attend_forward
from attnlab.precision import dq_errors, dq_reference, relative_error


def _two_tokens(a: float, b: float, q: float, g: float) -> float:
    """``dQ`` for ``X = [[a, b]]``, ``Q = [[q]]``, ``dOut = [[g]]``: with ``z = (a - b) q``,
    ``s_1 s_2 = e^{-|z|} / (1 + e^{-|z|})^2`` and ``dQ = s_1 s_2 g (a - b)^2``."""
    e = np.exp(-abs((a - b) * q))
    return e / (1.0 + e) ** 2 * g * (a - b) ** 2


@pytest.mark.parametrize("q", [0.5, 3.0, 50.0, 200.0])
def test_reference_matches_the_closed_form(q: float) -> None:
    a, b, g = 0.75, -0.5, 1.25
    X, Q, dOut = np.array([[[a, b]]]), np.array([[[q]]]), np.array([[[g]]])
    expected = _two_tokens(a, b, q, g)
    ref = float(dq_reference(X, Q, dOut)[0][0][0])
    assert ref == pytest.approx(expected, rel=1e-14)
    _, cache = attend_forward(X, Q)
    assert attend_backward(dOut, cache)[1][0, 0, 0] == pytest.approx(expected, rel=1e-12)
    if abs((a - b) * q) > 60:  # saturated: the textbook form has nothing left of dQ
        textbook = attend_backward(dOut, cache, textbook=True)[1][0, 0, 0]
        assert abs(textbook - expected) > 0.1 * abs(expected)


def test_reference_agrees_with_the_loop_where_nothing_saturates() -> None:
    rng = np.random.default_rng(3)
    X, Q, dOut = (
        rng.standard_normal((2, 3, 5)),
        rng.standard_normal((2, 3, 2)),
        rng.standard_normal((2, 3, 2)),
    )
    _, dQ_loop = attend_backward_loop(dOut, X, Q)
    errors = relative_error(dQ_loop, dq_reference(X, Q, dOut))
    assert errors.shape == (2,) and np.all(errors < 1e-13), errors
    assert np.all(relative_error(dQ_loop * (1 + 1e-6), dq_reference(X, Q, dOut)) > 5e-7)


def test_exact_keeps_its_digits_and_textbook_loses_them() -> None:
    scales = np.array([1.0, 20.0, 40.0, 80.0])
    errors = dq_errors(scales)
    assert set(errors) == {"exact", "textbook"}
    assert errors["exact"].shape == errors["textbook"].shape == (4,)
    assert np.all(errors["exact"] < 1e-12), errors["exact"]
    assert errors["textbook"][0] < 1e-13
    assert errors["textbook"][-1] > 1e-3
    assert np.all(np.diff(errors["textbook"][1:]) > 0)  # worse as the scores grow
    np.testing.assert_array_equal(dq_errors(scales)["exact"], errors["exact"])  # seeded


@pytest.mark.parametrize(
    ("scales", "match"),
    [([], "scales: expected positive numbers"), ([1.0, -2.0], "scales: expected positive"),
     ([1.0, np.inf], "scales: expected finite"), ([[1.0]], "scales")],
)  # fmt: skip
def test_bad_scales_are_refused(scales: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dq_errors(scales)


def test_reference_refuses_mismatched_shapes() -> None:
    X = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"Q, dOut: expected both of shape \(n=2, d=3, j\)"):
        dq_reference(X, np.ones((2, 3, 1)), np.ones((2, 3, 2)))
    with pytest.raises(ValueError, match="digits"):
        dq_reference(X, np.ones((2, 3, 1)), np.ones((2, 3, 1)), digits=0)
