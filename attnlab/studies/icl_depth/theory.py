"""The theory of L linear attention layers on in-context regression: the exact population loss of
L steps of gradient descent with one rate per step, its optimal rates, the one-layer closed forms
and the distance to identity.

**L steps of GD, exactly.** From ``w = 0``, ``w <- w - a_l (S w - h)`` with ``S = X^T X / N``,
``h = X^T y / N = S w*``: the error is ``w_L - w* = -p(S) w*`` with ``p(lam) = prod_l (1 -
a_l lam)``. For ``x ~ N(0, I)`` and ``w* ~ N(0, I)`` the loss ``E (x_q^T w_L - y_q)^2`` (no 1/2)
is ``E tr(p(S)^2) = sum_k c_k E tr(S^k)``, with ``c_k`` the coefficients of ``p(lam)^2``: a
polynomial in the rates whose coefficients are the moments ``E tr(S^k)``, ``k <= 2L``, of the
empirical covariance. The moments are exact rationals (:func:`trace_moments`), from Stein's
identity ``E[g F(g)] = E[F'(g)]`` for the Gaussian entries of ``X``: with ``W = X^T X`` and
``T_k = tr(W^k)`` (``T_0 = d``),

    E[T_k F] = (N + k - 1) E[T_{k-1} F] + sum_{j=1}^{k-1} E[T_j T_{k-1-j} F]
               + sum over the factors T_q of F of 2q E[T_{k+q-1} F / T_q]

(``F`` a product of traces): every term has total degree one less, so the recursion ends at the
empty product, 1. The rates are a multiset (``p`` does not depend on their order). Over all
``p`` of degree ``<= L`` with ``p(0) = 1`` the loss ``c^T H c`` (``H_ij = E tr(S^{i+j})``) is a
convex quadratic in the coefficients: one rational linear solve gives the global optimum
(:func:`optimal_polynomial`), whose roots are real and positive, the reciprocals of the optimal
rates (:func:`optimal_rates`, sorted); :func:`search_rates` finds them again by BFGS from many
starts. The derivations, the table at ``d = 5``, ``N = 20`` and the comparison with the
authors' plots are in ``docs/icl_depth.md``.

**Other covariances.** For ``x ~ N(0, Sigma)`` and ``w* ~ N(0, Omega)``, GD preconditioned by
``Sigma^-1`` (``A_l = -a_l Sigma^-1``) is plain GD on the whitened prompt (``x' = Sigma^-1/2 x``,
``w' = Sigma^1/2 w*``), whose error is ``-p(S') w'`` with ``S'`` the standard Wishart: the loss
is ``E tr(p(S')^2 Sigma^1/2 Omega Sigma^1/2) = (tr(Sigma Omega) / d) E tr(p(S')^2)``
(``E p(S')^2`` is a multiple of ``I``, ``S'`` being rotation invariant), the identity loss when
``Omega = Sigma^-1`` (:func:`preconditioned_gd_loss`).

**One layer.** ``yhat = x_q^T G h`` (``G = -A_0^T``): with ``E[S Omega S] = (1 + 1/N) Sigma Omega
Sigma + (tr(Omega Sigma) / N) Sigma`` (Wick), the loss is quadratic in ``G`` with minimizer
``G = Omega Sigma K^-1``, ``K = E[S Omega S]``, and minimum ``tr(Sigma Omega) - tr(Sigma G Sigma
Omega)`` (:func:`one_layer_optimum`). ``Omega = I``: ``A_0 = -Gamma^-1``, ``Gamma = (1 + 1/N)
Sigma + (tr Sigma / N) I``, loss ``tr Sigma - tr(Gamma^-1 Sigma^2)``; ``Omega = Sigma^-1``: ``A_0 =
-(N / (N + d + 1)) Sigma^-1``, loss ``d (d + 1) / (N + d + 1)`` for every ``Sigma``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy.optimize import minimize

from attnlab.studies.icl import gamma
from mlp.train.data import Dataset
from mlp.validation import as_float_array, check_finite, check_seed, positive

# --- moments of the empirical covariance ------------------------------------------------------


@lru_cache(maxsize=4096)
def _joint(d: int, N: int, powers: tuple[int, ...]) -> int:
    """``E prod_i tr(W^{k_i})`` for ``W = X^T X``, ``X (N, d)`` standard Gaussian, ``powers``
    the ``k_i >= 1`` in decreasing order (an integer: a polynomial in ``N, d`` with integer
    coefficients)."""
    if not powers:
        return 1
    k, rest = powers[0], powers[1:]

    def term(*ks: int) -> int:  # E prod tr(W^k) with tr(W^0) = d taken out
        zeros = sum(1 for q in ks if q == 0)
        return d**zeros * _joint(d, N, tuple(sorted((q for q in ks if q), reverse=True)))

    total = (N + k - 1) * term(k - 1, *rest)
    total += sum(term(j, k - 1 - j, *rest) for j in range(1, k))
    total += sum(2 * q * term(k + q - 1, *rest[:i], *rest[i + 1 :]) for i, q in enumerate(rest))
    return total


def joint_trace_moment(powers: Iterable[int], d: int, N: int) -> Fraction:
    """``E prod_i tr(S^{k_i})`` exactly, ``S = X^T X / N`` with ``X (N, d)`` of independent
    standard normal entries (``tr(S^0) = d``). E.g. ``E tr(S^2) = d (N + d + 1) / N``."""
    d = positive("d", d, integer=True)
    N = positive("N", N, integer=True)
    ks = [int(k) for k in powers]
    if any(k < 0 for k in ks):
        raise ValueError(f"powers: expected non-negative integers, received {ks}")
    zeros = sum(1 for k in ks if k == 0)
    value = d**zeros * _joint(d, N, tuple(sorted((k for k in ks if k), reverse=True)))
    return Fraction(value, N ** sum(ks))


def trace_moments(kmax: int, d: int, N: int) -> list[Fraction]:
    """``[E tr(S^k) for k = 0..kmax]`` exactly (see :func:`joint_trace_moment`)."""
    if isinstance(kmax, bool) or not isinstance(kmax, (int, np.integer)) or kmax < 0:
        raise ValueError(f"kmax: expected a non-negative integer, received {kmax!r}")
    return [joint_trace_moment([k], d, N) for k in range(int(kmax) + 1)]


# --- L steps of GD with one rate per step ------------------------------------------------------


def _rates(a: object) -> np.ndarray:
    a = as_float_array("a", a, ndim=1).astype(np.float64)
    if a.size == 0:
        raise ValueError("a: expected at least one rate (one per step), received none")
    check_finite("a", a)
    return a


def _moments(L: int, d: int, N: int) -> np.ndarray:
    return np.array([float(m) for m in trace_moments(2 * L, d, N)])


def _residual_poly(a: np.ndarray) -> np.ndarray:
    """Coefficients (lowest first) of ``p(lam) = prod_l (1 - a_l lam)``."""
    p = np.ones(1)
    for a_l in a:
        p = np.convolve(p, [1.0, -a_l])
    return p


def gd_loss(a: object, d: int = 5, N: int = 20) -> float:
    """The exact population loss ``E (x_q^T w_L - y_q)^2`` of ``L = len(a)`` steps of GD with
    rates ``a (L,)`` from ``w = 0`` (``w <- w - (a_l / N) X^T (X w - y)``), for ``x ~ N(0, I)``,
    ``w ~ N(0, I)`` and ``N`` examples: ``sum_k c_k E tr(S^k)``, ``c_k`` the coefficients of
    ``prod_l (1 - a_l lam)^2``. ``gd_loss([N / (N + d + 1)])`` is ``d (d + 1) / (N + d + 1)``."""
    a = _rates(a)
    d, N = positive("d", d, integer=True), positive("N", N, integer=True)
    return _loss(a, _moments(len(a), d, N))


def gd_loss_grad(a: object, d: int = 5, N: int = 20) -> np.ndarray:
    """``d gd_loss / d a (L,)``: ``d p^2 / d a_l = -2 lam p(lam) prod_{j != l} (1 - a_j lam)``."""
    a = _rates(a)
    d, N = positive("d", d, integer=True), positive("N", N, integer=True)
    return _grad(a, _moments(len(a), d, N))


def _loss(a: np.ndarray, m: np.ndarray) -> float:
    p = _residual_poly(a)
    return float(np.convolve(p, p) @ m)


def _grad(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    p = _residual_poly(a)
    out = np.empty(len(a))
    for l in range(len(a)):
        dp2 = -2.0 * np.convolve(p, _residual_poly(np.delete(a, l)))  # times lam: moments shift
        out[l] = dp2 @ m[1 : len(dp2) + 1]
    return out


def optimal_polynomial(L: int, d: int = 5, N: int = 20) -> tuple[list[Fraction], Fraction]:
    """The residual polynomial of the best ``L`` steps, exactly: the coefficients ``c (L+1,)``
    (lowest first, ``c_0 = 1``) of the ``p`` of degree ``<= L`` with ``p(0) = 1`` that minimizes
    ``E tr(p(S)^2) = c^T H c``, ``H_ij = E tr(S^{i+j})`` (a Hankel matrix of moments: a convex
    quadratic, solved as the rational linear system ``H[1:, 1:] c[1:] = -H[1:, 0]``), and the
    minimum ``c^T H c``. The roots of ``p`` are real and positive (``p`` is the kernel polynomial
    at 0 of the spectral measure of ``S``, which lives on ``(0, inf)``), so every such ``p`` is
    ``prod_l (1 - a_l lam)`` with real rates: this is the optimum over the rates."""
    L = positive("L", L, integer=True)
    m = trace_moments(2 * L, d, N)
    M = [[m[i + j] for j in range(1, L + 1)] + [-m[i]] for i in range(1, L + 1)]
    for col in range(L):  # Gauss-Jordan elimination in rationals (H is positive definite)
        piv = M[col][col]
        M[col] = [v / piv for v in M[col]]
        for r in range(L):
            if r != col and M[r][col] != 0:
                f = M[r][col]
                M[r] = [v - f * w for v, w in zip(M[r], M[col], strict=True)]
    c = [Fraction(1)] + [M[i][L] for i in range(L)]
    loss = sum(c[i] * c[j] * m[i + j] for i in range(L + 1) for j in range(L + 1))
    return c, loss


def optimal_rates(L: int, d: int = 5, N: int = 20) -> tuple[np.ndarray, float]:
    """``(a (L,), loss)``: the rates of the best ``L`` steps of GD (sorted) and their loss, the
    reciprocals of the roots of :func:`optimal_polynomial` (the global optimum;
    :func:`search_rates` finds it by minimizing :func:`gd_loss` numerically)."""
    c, loss = optimal_polynomial(L, d, N)
    roots = np.polynomial.polynomial.polyroots([float(v) for v in c])
    if np.max(np.abs(roots.imag)) > 1e-9 * np.max(np.abs(roots)):
        raise ArithmeticError(f"the optimal polynomial has complex roots {roots}")
    return np.sort(1.0 / roots.real), float(loss)


def search_rates(
    L: int, d: int = 5, N: int = 20, *, starts: int = 16, seed: int = 0
) -> tuple[np.ndarray, float]:
    """The rates ``a (L,)`` (sorted) that minimize :func:`gd_loss` over ``L`` steps, and the
    loss, found numerically: BFGS with the exact gradient from ``starts`` starting points (the
    one-step rate ``N / (N + d + 1)`` repeated, then rates uniform in ``(0, 2.5)`` from
    ``default_rng([seed, L])``); the best end point wins."""
    L = positive("L", L, integer=True)
    d, N = positive("d", d, integer=True), positive("N", N, integer=True)
    starts = positive("starts", starts, integer=True)
    m = _moments(L, d, N)
    rng = np.random.default_rng([check_seed(seed), L])
    x0s = [np.full(L, N / (N + d + 1))] + [rng.uniform(0.0, 2.5, L) for _ in range(starts - 1)]
    best_a, best = np.full(L, np.nan), np.inf
    for x0 in x0s:
        res = minimize(_loss, x0, args=(m,), jac=_grad, method="BFGS", options={"gtol": 1e-10})
        if res.fun < best:
            best_a, best = res.x, float(res.fun)
    return np.sort(best_a), best


def preconditioned_gd_loss(
    a: object, Sigma: object, N: int = 20, Omega: object | None = None
) -> float:
    """The exact loss of L steps ``w <- w - a_l Sigma^-1 (S w - h)`` (``A_l = -a_l Sigma^-1``)
    for ``x ~ N(0, Sigma)``, ``w ~ N(0, Omega)`` (``Omega`` None: ``Sigma^-1``, the rotated
    setting): ``(tr(Sigma Omega) / d) gd_loss(a, d, N)``."""
    S = _spd("Sigma", Sigma)
    d = S.shape[0]
    O = np.linalg.inv(S) if Omega is None else _spd("Omega", Omega, d)
    return float(np.trace(S @ O)) / d * gd_loss(a, d, N)


# --- one layer ---------------------------------------------------------------------------------


def _spd(name: str, M: object, d: int | None = None) -> np.ndarray:
    M = as_float_array(name, M, ndim=2).astype(np.float64)
    if M.shape[0] != M.shape[1] or M.shape[0] == 0 or (d is not None and M.shape[0] != d):
        want = "a square (d, d) matrix" if d is None else f"shape ({d}, {d})"
        raise ValueError(f"{name}: expected {want}, received {M.shape}")
    check_finite(name, M)
    if not np.allclose(M, M.T, rtol=1e-10, atol=1e-12) or np.linalg.eigvalsh(M)[0] <= 0:
        raise ValueError(f"{name}: expected a symmetric positive definite matrix")
    return M


def _one_layer_setup(
    Sigma: object, N: int, Omega: object | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``Sigma``, ``Omega`` (None: ``I``), ``K = E[S Omega S]`` and ``N``, checked."""
    S = _spd("Sigma", Sigma)
    N = positive("N", N, integer=True)
    O = np.eye(S.shape[0]) if Omega is None else _spd("Omega", Omega, S.shape[0])
    K = (1 + 1 / N) * S @ O @ S + np.trace(O @ S) / N * S
    return S, O, K, N


def one_layer_loss(A0: object, Sigma: object, N: int = 20, Omega: object | None = None) -> float:
    """The exact loss ``E (yhat - y_q)^2`` of one layer with ``A0 (d, d)`` (``B`` does not reach
    the prediction), ``yhat = x_q^T G h`` with ``G = -A0^T``, for ``x ~ N(0, Sigma)``, ``w ~
    N(0, Omega)`` (``Omega`` None: ``I``): ``tr(Sigma G K G^T) - 2 tr(Sigma G Sigma Omega) +
    tr(Sigma Omega)``."""
    S, O, K, _ = _one_layer_setup(Sigma, N, Omega)
    A0 = as_float_array("A0", A0, ndim=2)
    if A0.shape != S.shape:
        raise ValueError(f"A0: expected shape {S.shape} like Sigma, received {A0.shape}")
    check_finite("A0", A0)
    G = -A0.T
    return float(np.trace(S @ G @ K @ G.T) - 2 * np.trace(S @ G @ S @ O) + np.trace(S @ O))


def one_layer_optimum(
    Sigma: object, N: int = 20, Omega: object | None = None
) -> tuple[np.ndarray, float]:
    """``(A_0 (d, d), loss)``: the one-layer optimum ``A_0 = -(Omega Sigma K^-1)^T``, ``K =
    (1 + 1/N) Sigma Omega Sigma + (tr(Omega Sigma) / N) Sigma``, and its loss ``tr(Sigma Omega)
    - tr(Sigma G Sigma Omega)`` (``G = -A_0^T``), for ``x ~ N(0, Sigma)``, ``w ~ N(0, Omega)``
    (``Omega`` None: ``I``). ``Omega = I`` gives ``-Gamma^-1`` (:func:`one_layer_closed_form`),
    ``Omega = Sigma^-1`` gives ``-(N / (N + d + 1)) Sigma^-1``."""
    S, O, K, _ = _one_layer_setup(Sigma, N, Omega)
    G = O @ S @ np.linalg.inv(K)
    return -G.T, float(np.trace(S @ O) - np.trace(S @ G @ S @ O))


def one_layer_closed_form(Sigma: object, N: int = 20) -> tuple[np.ndarray, float]:
    """For ``w ~ N(0, I)``: ``A_0 = -Gamma^-1`` with ``Gamma = (1 + 1/N) Sigma + (tr Sigma / N)
    I`` and the loss ``tr Sigma - tr(Gamma^-1 Sigma^2)`` (``30 / 26`` at ``d = 5``, ``N = 20``,
    ``Sigma = I``)."""
    S = _spd("Sigma", Sigma)
    G_inv = np.linalg.inv(gamma(S, N))
    return -G_inv, float(np.trace(S) - np.trace(G_inv @ S @ S))


# --- measures ----------------------------------------------------------------------------------


def distance_to_identity(M: object) -> float | np.ndarray:
    """``||M - (tr M / d) I||_F / ||M||_F`` of ``M (d, d)`` (a float), or of each matrix of
    ``M (..., d, d)`` (an array of shape ``(...)``): 0 for a multiple of ``I``."""
    M = as_float_array("M", M)
    if M.ndim < 2 or M.shape[-1] != M.shape[-2] or M.shape[-1] == 0:
        raise ValueError(f"M: expected square matrices (..., d, d), received {M.shape}")
    check_finite("M", M)
    norm = np.linalg.norm(M, axis=(-2, -1))
    if np.any(norm == 0):
        raise ValueError("M: the distance to identity is undefined for a zero matrix")
    d = M.shape[-1]
    scale = np.trace(M, axis1=-2, axis2=-1) / d
    diff = M - scale[..., None, None] * np.eye(d)
    out = np.linalg.norm(diff, axis=(-2, -1)) / norm
    return float(out) if M.ndim == 2 else out


def sqrt_spd(Sigma: object) -> np.ndarray:
    """``Sigma^1/2 (d, d)``, the symmetric square root of a symmetric positive definite
    matrix."""
    S = _spd("Sigma", Sigma)
    lam, V = np.linalg.eigh(S)
    return (V * np.sqrt(lam)) @ V.T


def whitened(A: object, B: object, Sigma: object) -> tuple[np.ndarray, np.ndarray]:
    """``(Sigma^1/2 A_l Sigma^1/2, Sigma^-1/2 B_l Sigma^1/2)`` for each layer of ``A, B (L, d,
    d)``: the parameters that act on the whitened prompts (``x' = Sigma^-1/2 x``) as ``A, B`` act
    on the prompts; a multiple of ``I`` there is a step of plain GD on the whitened problem.
    """
    R = sqrt_spd(Sigma)
    R_inv = np.linalg.inv(R)
    A = as_float_array("A", A, ndim=3)
    B = as_float_array("B", B, ndim=3)
    d = R.shape[0]
    for name, M in (("A", A), ("B", B)):
        if M.shape[1:] != (d, d):
            raise ValueError(f"{name}: expected shape (L, {d}, {d}) like Sigma, received {M.shape}")
    return R @ A @ R, R_inv @ B @ R


# --- Monte Carlo ------------------------------------------------------------------------------


def monte_carlo_loss(
    predict: Callable[[np.ndarray], np.ndarray], pieces: Iterable[Dataset]
) -> tuple[float, float]:
    """``(mean, standard error)`` of ``(predict(Z) - y_q)^2`` over the prompts of ``pieces``
    (e.g. :func:`attnlab.studies.icl_depth.prompts.eval_prompts`), one piece in memory at a
    time."""
    n, total, total_sq = 0, 0.0, 0.0
    for part in pieces:
        r2 = (np.asarray(predict(part.X)) - part.y) ** 2
        n += r2.size
        total += float(r2.sum())
        total_sq += float(r2 @ r2)
    if n < 2:
        raise ValueError(f"pieces: expected at least 2 prompts, received {n}")
    mean = total / n
    var = max(total_sq / n - mean * mean, 0.0) * n / (n - 1)
    return mean, float(np.sqrt(var / n))
