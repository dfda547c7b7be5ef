"""The stack's gradients when one head saturates: at a score gap of 60 (its top weight within
``exp(-60) = 1e-26`` of 1 in every query column), every gradient keeps a relative error below
1e-6 against a 50-digit reference, where the textbook softmax backward does not.

The reference is the loss of the same two-layer causal stack written here in mpmath at 50
digits (numpy object arrays of ``mpc``), differentiated by the complex step: the gradient of
entry ``i`` is ``Im J(theta + i h e_i) / h`` with ``h = 1e-30``, which subtracts nothing (no
cancellation) and is exact to ``O(h^2)``. The softmax shift uses the real parts. Run with
``pytest -s`` to see the errors.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from attnlab import AttentionStack

DIGITS = 50
GAP = 60.0
STEP = mpmath.mpf("1e-30")


@pytest.fixture(autouse=True)
def _fifty_digits():
    with mpmath.workdps(DIGITS):
        yield


def _mp(a: np.ndarray) -> np.ndarray:
    """A float array as an object array of exact ``mpc``."""
    return np.frompyfunc(lambda v: mpmath.mpc(float(v)), 1, 1)(a).astype(object)


_exp = np.frompyfunc(mpmath.exp, 1, 1)


def _loss(params: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray, heads: int) -> mpmath.mpc:
    """The stack of this file (self attention, causal, softmax, no layer norm, last-token
    readout, logistic loss) in mpmath: ``J`` for object arrays of parameters."""
    n, _, c = X.shape
    total = mpmath.mpc(0)
    for i in range(n):
        x = X[i]
        for l in range(2):
            out = np.zeros_like(x)
            for h in range(heads):
                scores = x.T @ params[f"W{l}"][h] @ x  # (c, c) [s, t]
                S = np.zeros_like(scores)
                for t in range(c):
                    col = scores[: t + 1, t]  # causal: the keys s <= t
                    top = max(col, key=lambda v: v.real)
                    e = _exp(col - top)
                    S[: t + 1, t] = e / sum(e)
                out = out + params[f"V{l}"][h] @ x @ S
            x = x + out
        z = (x[:, -1] @ params["v"])[0]
        total += mpmath.log(1 + mpmath.exp(-y[i] * z))
    return total / n


def reference_grads(model: AttentionStack, X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Every gradient by the complex step at 50 digits, as float arrays of 50-digit values
    rounded (only the comparison needs them in float)."""
    params = {k: _mp(v) for k, v in model.params.items()}
    Xm = _mp(X)
    grads = {}
    for k, p in params.items():
        g = np.empty(p.shape)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + mpmath.mpc(0, STEP)
            g[idx] = float(_loss(params, Xm, y, model.heads).imag / STEP)
            p[idx] = old
        grads[k] = g
    return grads


def _saturated_problem(seed: int) -> tuple[AttentionStack, np.ndarray, np.ndarray]:
    """Two layers of two heads, causal; prompts whose tokens are orthonormal, and head 0 of
    layer 0 with ``W = 60 I``: its scores are 60 on the diagonal and 0 elsewhere, a gap of 60
    for every query that sees more than one key."""
    model = AttentionStack(4, layers=2, heads=2, mask="causal", seed=seed)
    rng = np.random.default_rng([seed, 60])
    X = np.stack([np.linalg.qr(rng.standard_normal((4, 4)))[0] for _ in range(2)])  # (2, 4, 4)
    model.params["W0"][0] = GAP * np.eye(4)
    y = np.array([1.0, -1.0])
    return model, X, y


def _gap(model: AttentionStack, X: np.ndarray) -> float:
    """The smallest lead of the top score over the next, in head 0 of layer 0, over the queries
    with two or more keys."""
    W = model.params["W0"][0]
    leads = []
    for x in X:
        scores = x.T @ W @ x
        for t in range(1, x.shape[1]):
            top2 = np.sort(scores[: t + 1, t])[-2:]
            leads.append(top2[1] - top2[0])
    return min(leads)


def _errors(grads: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Per parameter, ``max |g - ref| / max |ref|``; the saturated head ``W0[0]`` on its own
    (its gradient is about 1e-26, the other head's of order one)."""
    parts = {k: (grads[k], ref[k]) for k in ref}
    parts["W0[0]"] = (grads["W0"][0], ref["W0"][0])
    parts["W0[1]"] = (grads["W0"][1], ref["W0"][1])
    return {k: float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for k, (a, b) in parts.items()}


@pytest.mark.parametrize("seed", [0, 1])
def test_gradients_at_a_score_gap_of_60_match_a_50_digit_reference(seed: int) -> None:
    model, X, y = _saturated_problem(seed)
    assert _gap(model, X) > GAP - 1e-9
    ref = reference_grads(model, X, y)
    assert 0 < np.max(np.abs(ref["W0"][0])) < 1e-20  # the saturated head's gradient is tiny
    exact = _errors(model.loss_and_grads(X, y)[1], ref)
    textbook = AttentionStack(4, layers=2, heads=2, mask="causal", textbook_backward=True)
    textbook.params = {k: v.copy() for k, v in model.params.items()}
    plain = _errors(textbook.loss_and_grads(X, y)[1], ref)
    print(f"\nseed {seed}, gap {_gap(model, X):.1f}: exact backward {exact}")
    print(f"textbook backward {plain}")
    assert max(exact.values()) < 1e-6
    assert plain["W0[0]"] > 1e-3  # the textbook form loses every digit of the saturated head
