"""The closed forms of one-layer in-context linear regression (Zhang, Frei and Bartlett 2023,
arXiv 2306.09927; von Oswald et al. 2023, arXiv 2212.07677).

The predictor ``yhat = x_q^T A (1/M) sum_i y_i x_i`` on prompts ``E (n, d+1, M+1)`` (columns
``(x_i, y_i)``, then the query ``(x_q, 0)``), its risk ``R(M)`` for ``x ~ N(0, Lambda)``,
``w ~ N(0, I)``, the optimum ``A = Gamma^-1`` with ``Gamma = (1 + 1/N) Lambda + (tr(Lambda)/N) I``,
one step of GD, the sensitivities ``d yhat / d x_q``, and what the trained layer's parameters
``W (d+1, d+1)``, ``v (d+1, 1)`` are measured by (``u W11`` against ``Gamma^-1``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from mlp.contract import contract
from mlp.validation import as_float_array, positive


def _covariance(Lambda: object) -> np.ndarray:
    Lam = as_float_array("Lambda", Lambda, ndim=2)
    if Lam.shape[0] != Lam.shape[1] or Lam.shape[0] == 0:
        raise ValueError(f"Lambda: expected a square (d, d) matrix, received {Lam.shape}")
    return Lam


def gamma(Lambda: np.ndarray, N: int) -> np.ndarray:
    """``Gamma = (1 + 1/N) Lambda + (tr(Lambda) / N) I_d``: ``(d, d)`` for ``Lambda (d, d)``.

    For ``N`` Gaussian ``x_i ~ N(0, Lambda)`` and ``Lambda_hat = (1/N) sum_i x_i x_i^T``, Wick's
    theorem gives ``E[Lambda_hat B Lambda_hat] = (1 + 1/N) Lambda B Lambda + (tr(B Lambda) / N)
    Lambda`` for a symmetric ``B``, whose trace is ``tr(B Lambda Gamma)``: the quadratic term of
    the risk (:func:`risk`)."""
    Lam = _covariance(Lambda)
    N = positive("N", N, integer=True)
    return (1.0 + 1.0 / N) * Lam + (np.trace(Lam) / N) * np.eye(Lam.shape[0])


def risk(A: np.ndarray, Lambda: np.ndarray, M: int) -> float:
    """``R(M)``: expected ``(yhat - y_q)^2 / 2`` of ``yhat = x_q^T A (1/M) sum_i y_i x_i`` on
    prompts of ``M`` examples, ``(tr(Lambda A Lambda Gamma_M A^T) - 2 tr(Lambda A Lambda) +
    tr(Lambda)) / 2``. ``A (d, d)``."""
    Lam = _covariance(Lambda)
    A = as_float_array("A", A, ndim=2)
    if A.shape != Lam.shape:
        raise ValueError(f"A: expected shape {Lam.shape} like Lambda, received {A.shape}")
    quad = np.trace(Lam @ A @ Lam @ gamma(Lam, M) @ A.T)
    return float(quad - 2 * np.trace(Lam @ A @ Lam) + np.trace(Lam)) / 2


def shift_risk(A: np.ndarray, Lambda: np.ndarray, M: int, c: float) -> float:
    """The risk of :func:`risk` when every ``x`` (examples and query) is scaled by ``c``: the
    labels and the target scale as ``c``, the prediction as ``c^3``, so the risk is
    ``c^2 (c^4 a - 2 c^2 b + tr(Lambda)) / 2`` with ``a = tr(Lambda A Lambda Gamma_M A^T)``,
    ``b = tr(Lambda A Lambda)``."""
    Lam = _covariance(Lambda)
    c = float(positive("c", c))
    a = np.trace(Lam @ A @ Lam @ gamma(Lam, M) @ A.T)
    b = np.trace(Lam @ A @ Lam)
    return float(c**2 * (c**4 * a - 2 * c**2 * b + np.trace(Lam))) / 2


def _split(E: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x (n, d, M)``, ``y (n, M)`` of the examples and the query ``x_q (n, d)`` of prompts
    ``E (n, d+1, M+1)``."""
    E = as_float_array("E", E, ndim=3)
    if E.shape[1] < 2 or E.shape[2] < 2:
        raise ValueError(
            f"E: expected prompts (n, d+1, M+1) with d >= 1 and M >= 1, received {E.shape}"
        )
    return E[:, :-1, :-1], E[:, -1, :-1], E[:, :-1, -1]


def _h(E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``h = (1/M) sum_i y_i x_i (n, d)`` and ``x_q (n, d)``."""
    x, y, xq = _split(E)
    return contract("n d c, n c -> n d", x, y) / x.shape[2], xq


def linear_predict(E: np.ndarray, A: np.ndarray) -> np.ndarray:
    """``yhat = x_q^T A (1/M) sum_i y_i x_i``: ``(n,)`` for prompts ``E (n, d+1, M+1)`` and
    ``A (d, d)`` (``Gamma^-1``: the closed-form optimum; ``eta I``: one step of GD)."""
    h, xq = _h(E)
    return contract("n d, n d -> n", xq, contract("n e, d e -> n d", h, A))


def one_step_gd(E: np.ndarray, eta: float) -> np.ndarray:
    """One step of GD from ``w = 0`` on ``(1/2M) sum_i (y_i - w^T x_i)^2``, then ``w^T x_q``:
    ``yhat = eta x_q^T (1/M) sum_i y_i x_i (n,)``."""
    h, xq = _h(E)
    return float(eta) * contract("n d, n d -> n", xq, h)


def gd_sensitivity(E: np.ndarray, eta: float) -> np.ndarray:
    """``d yhat / d x_q`` of :func:`one_step_gd`: ``eta (1/M) sum_i y_i x_i``, ``(n, d)``."""
    return float(eta) * _h(E)[0]


def layer_sensitivity(E: np.ndarray, W: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``d yhat / d x_q (n, d)`` of the layer ``yhat = v^T (S + e e^T) W e / M`` with ``S`` the
    examples' ``sum_i e_i e_i^T`` and ``e = (x_q, 0)``: the first ``d`` entries of
    ``(W^T S v + (e^T W e) v + (v^T e) (W + W^T) e) / M``."""
    E = as_float_array("E", E, ndim=3)
    x, _, _ = _split(E)
    M = x.shape[2]
    ctx = E[:, :, :-1]
    e = E[:, :, -1].copy()
    e[:, -1] = 0.0
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    Sv = contract("n d c, n c -> n d", ctx, contract("n d c, d -> n c", ctx, v))
    WtSv = contract("n d, d e -> n e", Sv, W)
    eWe = contract("n d, n d -> n", e, contract("n e, d e -> n d", e, W))
    ve = e @ v
    sym = contract("n e, d e -> n d", e, W + W.T)
    grad = WtSv + eWe[:, None] * v[None, :] + ve[:, None] * sym
    return grad[:, :-1] / M


def product(params: Mapping[str, np.ndarray]) -> np.ndarray:
    """``u W11 (d, d)``: the last entry of ``v`` times the top-left block of ``W``."""
    W, v = params["W"], params["v"]
    return float(v[-1, 0]) * W[:-1, :-1]


def rel_error(params: Mapping[str, np.ndarray], Lambda: np.ndarray, N: int) -> float:
    """``||u W11 - Gamma^-1||_F / ||Gamma^-1||_F``."""
    target = np.linalg.inv(gamma(Lambda, N))
    return float(np.linalg.norm(product(params) - target) / np.linalg.norm(target))


def off_block_norm(params: Mapping[str, np.ndarray]) -> float:
    """Frobenius norm of everything but ``W11`` and ``u``: the last row and column of ``W`` and
    the first ``d`` entries of ``v`` (all zero at the optimum)."""
    W, v = params["W"], params["v"]
    return float(math.sqrt(np.sum(W**2) - np.sum(W[:-1, :-1] ** 2) + np.sum(v[:-1] ** 2)))
