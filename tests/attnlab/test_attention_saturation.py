"""Saturated attention: the backward keeps full relative accuracy (issue 3, item 6).

When one weight of a softmax column is within 1e-16 of 1 (its score leads the next by more than
about 37), the textbook backward ``S * (dS - sum S dS)`` subtracts two numbers that agree in all
their digits. The reference here is computed in mpmath at 50 digits, with the softmax Jacobian
product written as ``dscore_a = s_a sum_b s_b (g_a - g_b)`` (the same quantity, since
``sum_b s_b = 1``, but with no cancellation), from the float64 inputs taken exactly. Errors are
elementwise relative errors ``max |a - ref| / |ref|``; run with ``pytest -s`` to see them.
"""

import mpmath
import numpy as np
import pytest

from attnlab import ContextWindowModel, attend_backward, attend_forward

DIGITS = 50
SEEDS = [0, 1, 2, 3, 4]
MAX_SCORE = 80.0


@pytest.fixture(autouse=True)
def _fifty_digits():
    """Every mpmath computation of this module runs at 50 significant digits."""
    with mpmath.workdps(DIGITS):
        yield


def _mp(a: np.ndarray) -> mpmath.matrix:
    """A float64 matrix as an mpmath matrix, exactly (every double is an mpf)."""
    return mpmath.matrix([[mpmath.mpf(float(v)) for v in row] for row in a])


def _softmax_columns(scores: mpmath.matrix) -> mpmath.matrix:
    S = mpmath.matrix(scores.rows, scores.cols)
    for j in range(scores.cols):
        col = [scores[c, j] for c in range(scores.rows)]
        top = max(col)
        e = [mpmath.exp(v - top) for v in col]
        total = mpmath.fsum(e)
        for c in range(scores.rows):
            S[c, j] = e[c] / total
    return S


def _softmax_vjp_columns(S: mpmath.matrix, g: mpmath.matrix) -> mpmath.matrix:
    """``(diag(s) - s s^T) g`` per column, as ``s_a sum_b s_b (g_a - g_b)``."""
    out = mpmath.matrix(S.rows, S.cols)
    for j in range(S.cols):
        for a in range(S.rows):
            out[a, j] = S[a, j] * mpmath.fsum(S[b, j] * (g[a, j] - g[b, j]) for b in range(S.rows))
    return out


def _reference_backward(X: np.ndarray, Q: np.ndarray, dOut: np.ndarray) -> tuple[list, list]:
    """``dX`` (a list of ``n`` mp matrices ``d x c``) and ``dQ`` (per prompt, ``d x j``)."""
    assert mpmath.mp.dps == DIGITS
    dX, dQ = [], []
    for i in range(X.shape[0]):
        x, q, g = _mp(X[i]), _mp(Q if Q.ndim == 2 else Q[i]), _mp(dOut[i])
        S = _softmax_columns(x.T * q)
        dscores = _softmax_vjp_columns(S, x.T * g)
        dX.append(g * S.T + q * dscores.T)
        dQ.append(x * dscores)
    return dX, dQ


def _worst_relative_error(a: np.ndarray, ref: mpmath.matrix) -> float:
    return max(
        float(abs(mpmath.mpf(float(a[r, c])) - ref[r, c]) / abs(ref[r, c]))
        for r in range(ref.rows)
        for c in range(ref.cols)
    )


def _random_prompts(seed: int, shared: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random ``X (3, 4, 6)``, ``Q`` (shared ``(4, 2)`` or ``(3, 4, 2)``), ``dOut (3, 4, 2)``;
    ``Q`` scaled so the largest score (of each prompt, for a per-prompt Q) is 80 in absolute
    value. Some columns saturate, others do not."""
    rng = np.random.default_rng([seed, shared])
    X = rng.standard_normal((3, 4, 6))
    Q = rng.standard_normal((4, 2) if shared else (3, 4, 2))
    dOut = rng.standard_normal((3, 4, 2))
    Qn = np.broadcast_to(Q, (3, 4, 2))
    peak = np.array([np.abs(X[i].T @ Qn[i]).max() for i in range(3)])
    Q = Q * (MAX_SCORE / peak.max()) if shared else Q * (MAX_SCORE / peak)[:, None, None]
    return X, Q, dOut


def _saturating_prompts(Q: np.ndarray, c: int, rng: np.random.Generator) -> np.ndarray:
    """Prompts ``X (n, d, c)`` whose scores ``X_i^T Q_i`` saturate *every* column.

    ``Q (n, d, j)`` with ``j <= d``. Each column's scores are chosen first: a winner token at a
    random position with score in [60, 80], the other tokens in [-80, winner - 40] (so the top
    weight is within ``exp(-40) = 4e-18`` of 1); then ``X_i = Q_i (Q_i^T Q_i)^-1 T_i^T`` plus a
    random part orthogonal to the columns of ``Q_i``, so that ``X_i^T Q_i = T_i``.
    """
    n, d, j = Q.shape
    X = np.empty((n, d, c))
    for i in range(n):
        win = rng.uniform(60, MAX_SCORE, size=j)
        T = rng.uniform(0, 1, size=(c, j)) * (win - 40 + MAX_SCORE) - MAX_SCORE
        T[rng.integers(0, c, size=j), np.arange(j)] = win
        pinv = np.linalg.solve(Q[i].T @ Q[i], Q[i].T)  # (Q^T Q)^-1 Q^T, (j, d)
        X[i] = pinv.T @ T.T + (np.eye(d) - Q[i] @ pinv) @ rng.standard_normal((d, c))
    return X


def _lead(X: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """The lead of the top score over the next one, per prompt and query column ``(n, j)``."""
    Qn = np.broadcast_to(Q, (X.shape[0], *Q.shape[-2:]))
    top2 = np.sort(np.stack([X[i].T @ Qn[i] for i in range(X.shape[0])]), axis=1)[:, -2:, :]
    return top2[:, 1] - top2[:, 0]


def _errors(X: np.ndarray, Q: np.ndarray, dOut: np.ndarray) -> tuple[float, float, float]:
    """Worst elementwise relative errors of ``dQ``, ``dX`` and of the textbook ``dQ``."""
    shared = Q.ndim == 2
    ref_dX, ref_dQ = _reference_backward(X, Q, dOut)
    if shared:
        ref_dQ = [sum(ref_dQ[1:], ref_dQ[0])]
    dX, dQ = attend_backward(dOut, attend_forward(X, Q)[1])
    _, dQ_textbook = attend_backward(dOut, attend_forward(X, Q)[1], textbook=True)
    if shared:
        dQ, dQ_textbook = dQ[None], dQ_textbook[None]
    err_dX = max(_worst_relative_error(dX[i], r) for i, r in enumerate(ref_dX))
    err_dQ = max(_worst_relative_error(dQ[i], r) for i, r in enumerate(ref_dQ))
    err_textbook = max(_worst_relative_error(dQ_textbook[i], r) for i, r in enumerate(ref_dQ))
    return err_dQ, err_dX, err_textbook


@pytest.mark.parametrize("shared", [False, True], ids=["per-prompt-Q", "shared-Q"])
@pytest.mark.parametrize("seed", SEEDS)
def test_backward_at_scores_up_to_80_matches_a_50_digit_reference(seed: int, shared: bool):
    """Random prompts, scores scaled to reach 80: some columns saturate, some do not."""
    X, Q, dOut = _random_prompts(seed, shared)
    err_dQ, err_dX, err_textbook = _errors(X, Q, dOut)
    print(
        f"\nrandom, scores up to 80, seed={seed} shared={shared} largest lead "
        f"{_lead(X, Q).max():.1f}: worst relative error dQ {err_dQ:.2e}, dX {err_dX:.2e} "
        f"(textbook dQ {err_textbook:.2e})"
    )
    assert err_dQ < 1e-6
    assert err_dX < 1e-6


@pytest.mark.parametrize("shared", [False, True], ids=["per-prompt-Q", "shared-Q"])
@pytest.mark.parametrize("seed", SEEDS)
def test_saturated_backward_is_exact_where_the_textbook_form_fails(seed: int, shared: bool):
    """Every column saturated (top weight within 1e-16 of 1): ours keeps its relative accuracy,
    the textbook ``S * (dS - sum S dS)`` does not, on the same input."""
    rng = np.random.default_rng([seed, shared, 7])
    Q = rng.standard_normal((4, 2) if shared else (3, 4, 2))
    X = _saturating_prompts(np.broadcast_to(Q, (3, 4, 2)), 6, rng)
    dOut = rng.standard_normal((3, 4, 2))
    lead = _lead(X, Q)
    assert lead.min() > 39.9  # saturated as designed
    err_dQ, err_dX, err_textbook = _errors(X, Q, dOut)
    print(
        f"\nall saturated, seed={seed} shared={shared} smallest lead {lead.min():.1f}: worst "
        f"relative error dQ {err_dQ:.2e}, dX {err_dX:.2e}; textbook dQ {err_textbook:.2e}"
    )
    assert err_dQ < 1e-6
    assert err_dX < 1e-6
    assert err_textbook > 1e-3  # the exact form is what makes the difference


def _reference_model_grad_W(
    model: ContextWindowModel, X: np.ndarray, y: np.ndarray, Z: np.ndarray
) -> mpmath.matrix:
    """``dJ/dW`` of cross attention, mean pool, linear head, logistic loss, in mpmath.

    ``Q_i = W Z_i``, ``S_i = softmax(X_i^T Q_i)``, ``u_i = mean_j X_i S_i``, ``z_i = u_i . v``,
    ``J = mean_i log(1 + exp(-y_i z_i))``; written out here, independent of the library.
    """
    assert mpmath.mp.dps == DIGITS
    n, _, j = Z.shape
    W, v = _mp(model.params["W"]), _mp(model.params["v"])
    dW = mpmath.matrix(W.rows, W.cols)
    for i in range(n):
        x, zq = _mp(X[i]), _mp(Z[i])
        S = _softmax_columns(x.T * (W * zq))
        out = x * S
        u = mpmath.matrix([[mpmath.fsum(out[a, b] for b in range(j)) / j] for a in range(out.rows)])
        logit = (u.T * v)[0, 0]
        yi = mpmath.mpf(int(y[i]))
        dz = -yi / (1 + mpmath.exp(yi * logit)) / n  # -y sigmoid(-y z) / n
        dOut = mpmath.matrix(out.rows, j)
        for a in range(out.rows):
            for b in range(j):
                dOut[a, b] = dz * v[a, 0] / j
        dscores = _softmax_vjp_columns(S, x.T * dOut)
        dW += (x * dscores) * zq.T
    return dW


def _model_errors(model: ContextWindowModel, X, y, Z) -> tuple[float, float]:
    """Worst relative error of ``dW``, ours and with ``textbook_backward=True``."""
    ref = _reference_model_grad_W(model, X, y, Z)
    err = _worst_relative_error(model.loss_and_grads(X, y, Z)[1]["W"], ref)
    textbook = ContextWindowModel(
        4, attention="cross", pool="mean", head="linear", textbook_backward=True
    )
    textbook.params = {key: v.copy() for key, v in model.params.items()}
    err_textbook = _worst_relative_error(textbook.loss_and_grads(X, y, Z)[1]["W"], ref)
    return err, err_textbook


@pytest.mark.parametrize("seed", SEEDS)
def test_model_gradient_with_W_scaled_to_scores_of_80(seed: int) -> None:
    """ContextWindowModel, cross attention, logistic loss, random data, ``W`` scaled up."""
    model = ContextWindowModel(4, attention="cross", pool="mean", head="linear", seed=seed)
    rng = np.random.default_rng([seed, 99])
    X = rng.standard_normal((3, 4, 6))
    Z = rng.standard_normal((3, 4, 2))
    y = rng.choice([-1, 1], size=3)
    scores = np.stack([X[i].T @ model.params["W"] @ Z[i] for i in range(3)])
    model.params["W"] = model.params["W"] * (MAX_SCORE / np.abs(scores).max())
    err, err_textbook = _model_errors(model, X, y, Z)
    lead = _lead(X, np.stack([model.params["W"] @ Z[i] for i in range(3)]))
    print(
        f"\nmodel, W scaled to scores of 80, seed={seed} largest lead {lead.max():.1f}: worst "
        f"relative error dW {err:.2e} (textbook {err_textbook:.2e})"
    )
    assert err < 1e-6


@pytest.mark.parametrize("seed", SEEDS)
def test_model_gradient_when_every_column_saturates(seed: int) -> None:
    """The same model with ``W`` scaled by 10 and prompts whose scores ``X_i^T W Z_i`` saturate
    every column: ours keeps its accuracy, the textbook backward does not."""
    model = ContextWindowModel(4, attention="cross", pool="mean", head="linear", seed=seed)
    model.params["W"] = 10 * model.params["W"]
    rng = np.random.default_rng([seed, 98])
    Z = rng.standard_normal((3, 4, 2))
    Q = np.stack([model.params["W"] @ Z[i] for i in range(3)])
    X = _saturating_prompts(Q, 6, rng)
    y = rng.choice([-1, 1], size=3)
    lead = _lead(X, Q)
    assert lead.min() > 39.9  # saturated as designed
    err, err_textbook = _model_errors(model, X, y, Z)
    print(
        f"\nmodel, all saturated, seed={seed} smallest lead {lead.min():.1f}: worst relative "
        f"error dW {err:.2e}; textbook dW {err_textbook:.2e}"
    )
    assert err < 1e-6
    assert err_textbook > 1e-3
