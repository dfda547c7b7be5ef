"""The L-layer linear model of in-context regression and gradient descent on the prompt's least
squares, in numpy: vectorized, with the loop references right below.

Prompts ``Z (n, d+1, N+1)``: the examples ``(x_i, y_i)`` as columns, then the query ``(x_q, 0)``.
Layer ``l`` (``A_l, B_l (d, d)``, the stacked parameters ``A, B (L, d, d)``):

    Z <- Z + (1/N) P_l Z M (Z^T Q_l Z),   P_l = [[B_l, 0], [0, 1]],   Q_l = [[A_l, 0], [0, 0]]

``M`` drops the query column from the keys, so column ``t`` (a query) gains
``(1/N) sum_{s < N} (x_s^T A_l x_t) (B_l x_s, y_s)``; the prediction is ``yhat = -Z_L[d, N]``.

Gradient descent from ``w = 0`` on ``(1/2N) ||X w - y||^2`` with one matrix ``P_l (d, d)`` per
step, ``X (N, d)`` the examples as rows:

    w <- w + (P_l / N) X^T (X w - y),     yhat = x_q^T w_L

(``P_l = -a_l I``: plain GD with rate ``a_l``). With ``B_l = 0`` the x-rows never change and the
label row of the examples holds the residuals ``y - X w_l``, so the L layers are L steps of this
GD with ``P_l = A_l^T`` (the scores ``x_s^T A_l x_t`` put ``A_l`` between a key on the left and
the query on the right, hence the transpose; a symmetric ``A_l``, as at every optimum of the
theory, is its own transpose) and ``yhat`` is ``x_q^T w_L``.
"""

from __future__ import annotations

import numpy as np

from mlp.contract import contract
from mlp.validation import as_float_array, check_finite


def _prompts(Z: object) -> np.ndarray:
    Z = as_float_array("Z", Z, ndim=3)
    if Z.shape[1] < 2 or Z.shape[2] < 2:
        raise ValueError(
            f"Z: expected prompts (n, d+1, N+1) with d >= 1 and N >= 1, received {Z.shape}"
        )
    check_finite("Z", Z)
    return Z


def _layers(name: str, M: object, d: int, L: int | None = None) -> np.ndarray:
    M = as_float_array(name, M, ndim=3)
    want = (M.shape[0] if L is None else L, d, d)
    if M.shape != want or M.shape[0] == 0:
        raise ValueError(f"{name}: expected shape (L, d={d}, d={d}) = {want}, received {M.shape}")
    check_finite(name, M)
    return M


def _layer(Z: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """One layer on ``Z (n, d+1, N+1)``: ``Z + (1/N) P Z M (Z^T Q Z)``."""
    d, N = A.shape[0], Z.shape[2] - 1
    keys = Z[:, :, :N]  # (n, d+1, N)
    Ax = contract("e d, n d j -> n e j", A, Z[:, :d])  # A x_t      (n, d, N+1)
    scores = contract("n d c, n d j -> n c j", keys[:, :d], Ax)  # x_s^T A x_t (n, N, N+1)
    values = np.concatenate([contract("e d, n d c -> n e c", B, keys[:, :d]), keys[:, d:]], 1)
    return Z + contract("n d c, n c j -> n d j", values, scores) / N


def stack_forward(Z: object, A: object, B: object) -> np.ndarray:
    """``Z_L (n, d+1, N+1)``: the L layers on prompts ``Z (n, d+1, N+1)`` with ``A, B (L, d,
    d)`` (see the module docstring)."""
    Z = _prompts(Z)
    A = _layers("A", A, Z.shape[1] - 1)
    B = _layers("B", B, Z.shape[1] - 1, A.shape[0])
    for A_l, B_l in zip(A, B, strict=True):
        Z = _layer(Z, A_l, B_l)
    return Z


def stack_predict(Z: object, A: object, B: object) -> np.ndarray:
    """``yhat = -Z_L[:, d, N] (n,)`` of :func:`stack_forward`."""
    Z_L = stack_forward(Z, A, B)
    return -Z_L[:, -1, -1]


def gd_predict(Z: object, P: object) -> np.ndarray:
    """``x_q^T w_L (n,)``: L steps ``w <- w + (P_l / N) X^T (X w - y)`` from ``w = 0`` on each
    prompt of ``Z (n, d+1, N+1)``, ``P (L, d, d)``."""
    Z = _prompts(Z)
    d = Z.shape[1] - 1
    P = _layers("P", P, d)
    x, y, x_q = Z[:, :d, :-1], Z[:, d, :-1], Z[:, :d, -1]
    N = x.shape[2]
    w = np.zeros((Z.shape[0], d))
    for P_l in P:
        residual = contract("n d c, n d -> n c", x, w) - y  # X w - y       (n, N)
        grad = contract("n d c, n c -> n d", x, residual) / N  # X^T (X w - y) / N
        w = w + contract("n e, d e -> n d", grad, P_l)
    return contract("n d, n d -> n", x_q, w)


def rates_to_preconditioners(a: object, d: int) -> np.ndarray:
    """``P (L, d, d)`` with ``P_l = -a_l I``: plain GD with the rates ``a (L,)``."""
    a = as_float_array("a", a, ndim=1)
    check_finite("a", a)
    return -a[:, None, None] * np.eye(d)


# --- loop references (one prompt, one column at a time) ---------------------------------------


def stack_forward_loop(Z: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """:func:`stack_forward`, one prompt and one (key, query) pair at a time."""
    Z = np.array(Z, dtype=np.float64)
    n, D, C = Z.shape
    d, N = D - 1, C - 1
    for A_l, B_l in zip(A, B, strict=True):
        for i in range(n):
            old = Z[i].copy()
            for t in range(C):  # every column is a query
                for s in range(N):  # the examples are the keys
                    score = old[:d, s] @ A_l @ old[:d, t]
                    Z[i, :d, t] += score * (B_l @ old[:d, s]) / N
                    Z[i, d, t] += score * old[d, s] / N
    return Z


def gd_predict_loop(Z: np.ndarray, P: np.ndarray) -> np.ndarray:
    """:func:`gd_predict`, one prompt at a time with ``X (N, d)`` as rows."""
    Z = np.asarray(Z, dtype=np.float64)
    d = Z.shape[1] - 1
    out = np.empty(Z.shape[0])
    for i, prompt in enumerate(Z):
        X, y, x_q = prompt[:d, :-1].T, prompt[d, :-1], prompt[:d, -1]
        N = X.shape[0]
        w = np.zeros(d)
        for P_l in P:
            w = w + P_l @ X.T @ (X @ w - y) / N
        out[i] = x_q @ w
    return out
