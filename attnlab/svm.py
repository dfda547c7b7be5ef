"""The attention SVM: the max-margin direction that gradient descent drives attention towards.

Tarzanagh et al. ("Max-Margin Token Selection in Attention Mechanism", arXiv 2306.13596;
"Transformers as Support Vector Machines", arXiv 2308.16898). Given prompts ``X (n, d, c)`` and
the token ``a_ij`` that query column ``j`` of prompt ``i`` selects, the attention SVM is the
smallest parameter that scores the selected token at least 1 above every other token:

    cross:   W_mm = argmin ||W||_F  s.t.  (x_{i,a_ij} - x_{i,t})^T W z_ij >= 1   (W (d, d))
    prompt:  p_mm = argmin ||p||_F  s.t.  (x_{i,a_ij} - x_{i,t})^T p_j  >= 1   (p (d, j))

for every prompt ``i``, query column ``j`` and token ``t != a_ij``. Each constraint is linear in
the parameter, ``<G_k, P> >= 1``, so this is the least-distance problem ``min ||w|| s.t. G w >=
1`` (``w = vec(P)``). It is solved exactly by the Lawson-Hanson reduction to a nonnegative least
squares problem (scipy's active-set ``nnls``): with ``E = [G^T; 1^T]`` and ``f = e_last``,
``u = argmin_{u >= 0} ||E u - f||`` and ``r = E u - f``, the solution is ``w = -r[:-1] / r[-1]``
and the dual variables (KKT multipliers) are ``lambda = -u / r[-1]``, so ``w = G^T lambda``.
``r = 0`` means the constraints are infeasible; ``u`` is then a Farkas certificate (a
nonnegative combination of constraints whose left sides cancel), and it names the tokens.

``attention_svm_nuclear`` solves the same constraints with the nuclear norm ``||W||_*`` (the
sum of singular values) as the objective: the direction that normalized GD on the factors of
``W = WK WQ^T`` tends to (Tarzanagh et al., "Transformers as SVMs"). It is a semidefinite
program, solved with cvxpy (the optional extra ``svm``), imported only when called.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from einops import rearrange, repeat

from attnlab.blocks.attention import check_prompts
from mlp.contract import contract
from mlp.validation import as_float_array, check_finite

__all__ = [
    "SVMSolution",
    "attention_svm",
    "attention_svm_nuclear",
    "correlation",
    "cosines",
    "prompt_svm",
]

#: Constraints whose left side has norm below this (relative to the largest) count as zero.
_ZERO_ROW = 1e-12
#: A solution must meet every constraint to this tolerance, else the problem is infeasible.
_FEASIBLE = 1e-8


@dataclass(frozen=True)
class SVMSolution:
    """The attention SVM's solution and the evidence that it is optimal.

    ``solution``: ``W (d, d)`` or ``p (d, j)``. ``margin``: the smallest constraint value
    ``min (x_a - x_t)^T W z`` over all constraints (1 at the optimum). ``dual (n, c, j)``: the
    KKT multiplier of the constraint of prompt ``n``, token ``c``, query column ``j`` (0 at the
    selected token, which has no constraint). ``support (n, c, j)``: the constraints with a
    positive multiplier (the support tokens, each met with equality). ``kkt``: the residuals of
    the four KKT conditions, each relative to the scale of its terms: ``primal`` (how far the
    smallest constraint value is below 1), ``dual`` (the most negative multiplier),
    ``complementarity`` (largest ``|lambda_k (value_k - 1)|``) and ``stationarity``
    (``||w - G^T lambda|| / ||w||``).
    """

    solution: np.ndarray
    margin: float
    dual: np.ndarray
    support: np.ndarray
    kkt: dict[str, float]

    @property
    def norm(self) -> float:
        """``||solution||_F``: the inverse of the max margin."""
        return float(np.linalg.norm(self.solution))


def cosines(P: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``<P_s, T> / (||P_s||_F ||T||_F)`` for each ``P_s`` along the first axis of ``P (s, ...)``.

    ``T`` has the shape of one ``P_s``; the result is ``(s,)``, NaN where ``P_s = 0`` or
    ``T = 0`` (a trajectory of parameters against an SVM solution, say).
    """
    flat = rearrange(P, "s ... -> s (...)")
    norms = np.linalg.norm(flat, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return flat @ T.ravel() / (norms * np.linalg.norm(T))


def correlation(A: np.ndarray, B: np.ndarray) -> float:
    """``<A, B> / (||A||_F ||B||_F)``: the cosine between two parameters of the same shape."""
    A = as_float_array("A", A)
    B = as_float_array("B", B)
    if A.shape != B.shape:
        raise ValueError(f"B: expected the shape of A {A.shape}, received {B.shape}")
    na, nb = np.linalg.norm(A), np.linalg.norm(B)
    if na == 0 or nb == 0:
        raise ValueError(f"correlation: undefined for a zero array (||A|| = {na}, ||B|| = {nb})")
    return float(cosines(A[None], B)[0])


def _selected(selected: object, n: int, c: int, j: int) -> np.ndarray:
    """``selected`` as int64 ``(n, j)``; ``(n,)`` is accepted when ``j = 1``."""
    a = np.asarray(selected)
    if a.dtype.kind not in "iu":
        raise TypeError(f"selected: expected integer token indices, received dtype {a.dtype}")
    if a.ndim == 1 and j == 1:
        a = a[:, None]
    if a.shape != (n, j):
        want = f"(n={n},) or (n={n}, j={j})" if j == 1 else f"(n={n}, j={j})"
        raise ValueError(f"selected: expected shape {want}, received {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= c):
        bad = a[(a < 0) | (a >= c)][0]
        raise ValueError(f"selected: expected token indices in 0..{c - 1}, received {bad}")
    return a.astype(np.int64)


def _pairs(X: np.ndarray, Z: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two vectors of every constraint ``(x_{i,a_ij} - x_{i,t})^T P z_ij >= 1``, one row per
    prompt ``i``, token ``t`` and query column ``j`` (``m = n c j`` rows, in that order).

    ``X (n, d, c)``, ``Z (n, k, j)``, ``a (n, j)``; returns ``x_a - x_t (m, d)`` and
    ``z (m, k)``. The rows of the selected tokens are zero on the left; the callers drop them.
    """
    Xa = np.take_along_axis(X, a[:, None, :], axis=2)  # (n, d, j)
    D = rearrange(Xa, "n d j -> n d 1 j") - rearrange(X, "n d c -> n d c 1")
    c = X.shape[2]
    return rearrange(D, "n d c j -> (n c j) d"), repeat(Z, "n k j -> (n c j) k", c=c)


def _rows(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``vec(left_m right_m^T)`` for each row ``m``: ``(m, d)`` and ``(m, k)`` -> ``(m, d k)``,
    the constraint ``<G_m, P> >= 1`` as a row of ``G``."""
    return rearrange(contract("m d, m k -> m d k", left, right), "m d k -> m (d k)")


def _cross_inputs(
    X: np.ndarray, Z: np.ndarray, selected: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked ``X (n, d, c)``, ``Z (n, d, j)`` (a 2-d ``Z`` gets ``j = 1``) and ``a (n, j)``."""
    X = check_prompts(X)
    Z = as_float_array("Z", Z, ndim=(2, 3))
    if Z.ndim == 2:
        Z = rearrange(Z, "n d -> n d 1")
    n, d, c = X.shape
    if Z.shape[:2] != (n, d) or Z.shape[2] == 0:
        raise ValueError(f"Z: expected shape (n={n}, d={d}, j) to match X, received {Z.shape}")
    check_finite("Z", Z)
    return X, Z, _selected(selected, n, c, Z.shape[2])


def _kept(a: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The flat indices, in ``(n, c, j)`` order, of the constraints (every token but the
    selected one of each prompt and query column)."""
    n, _, j = shape
    keep = np.ones(shape, dtype=bool)
    keep[np.arange(n)[:, None], a, np.arange(j)[None, :]] = False
    return np.flatnonzero(keep.ravel())


def attention_svm(X: np.ndarray, Z: np.ndarray, selected: np.ndarray) -> SVMSolution:
    """Cross attention's SVM: ``W_mm = argmin ||W||_F`` s.t. ``(x_{i,a} - x_{i,t})^T W z_ij >= 1``.

    ``X (n, d, c)`` prompts (tokens as columns), ``Z (n, d, j)`` queries (``(n, d)`` means
    ``j = 1``), ``selected (n, j)`` (or ``(n,)`` when ``j = 1``): the index ``a_ij`` of the token
    that query column ``j`` of prompt ``i`` selects. The score of token ``t`` is ``x_t^T W z``,
    as in :class:`attnlab.ContextWindowModel` with ``attention="cross"``. Returns an
    :class:`SVMSolution` whose ``solution`` is ``W (d, d)``.

    Raises ``ValueError`` naming the prompt and token when the constraints cannot all hold (a
    token equal to the selected one, a zero query, or constraints that contradict each other).
    """
    X, Z, a = _cross_inputs(X, Z, selected)
    (n, d, c), j = X.shape, Z.shape[2]
    rows = _rows(*_pairs(X, Z, a))  # (n c j, e d): vec((x_a - x_t) z^T)
    w, dual, kkt, margin = _least_distance(rows, a, (n, c, j), "W z")
    return _solution(w.reshape(d, d), dual, kkt, margin, (n, c, j))


def attention_svm_nuclear(X: np.ndarray, Z: np.ndarray, selected: np.ndarray) -> SVMSolution:
    """Cross attention's nuclear-norm SVM: ``W_* = argmin ||W||_*`` s.t. the constraints of
    :func:`attention_svm`, ``(x_{i,a_ij} - x_{i,t})^T W z_ij >= 1``.

    ``X (n, d, c)``, ``Z (n, d, j)`` (or ``(n, d)``), ``selected (n, j)`` (or ``(n,)``) as in
    :func:`attention_svm`, which is called first: it validates the input and raises its
    ``ValueError`` naming the prompt and token when the constraints cannot all hold (the two
    problems share their constraints). The semidefinite program is solved by cvxpy
    (``cp.norm(W, "nuc")``, its default conic solver); the solution is then divided by its
    smallest constraint value, so that it meets every constraint with margin 1 to rounding (the
    solver's own tolerance is about 1e-8). Returns an :class:`SVMSolution` with ``solution``
    ``W_* (d, d)``; its ``kkt['stationarity']`` checks that ``L = sum_k lambda_k G_k`` is a
    subgradient of the nuclear norm at ``W_*``: ``max(||L||_2 - 1, |<L, W_*> - ||W_*||_*| /
    ||W_*||_*)`` (spectral norm at most 1, and it attains the norm).

    Raises ``ImportError`` when cvxpy is missing and ``RuntimeError`` when the solver fails.
    """
    try:
        import cvxpy as cp
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "attention_svm_nuclear needs cvxpy: install the optional extra with "
            "`pip install attnlab[svm]` (or `pip install cvxpy`)"
        ) from err
    frobenius = attention_svm(X, Z, selected)  # validation and infeasibility errors
    X, Z, a = _cross_inputs(X, Z, selected)
    (n, d, c), j = X.shape, Z.shape[2]
    idx = _kept(a, (n, c, j))
    left, right = (v[idx] for v in _pairs(X, Z, a))  # (m, e): x_a - x_t and (m, d): z
    W = cp.Variable((d, d))
    constraint = cp.sum(cp.multiply(left @ W, right), axis=1) >= 1
    problem = cp.Problem(cp.Minimize(cp.norm(W, "nuc")), [constraint])
    try:
        problem.solve()
    except cp.error.SolverError as err:
        raise RuntimeError(f"attention_svm_nuclear: the solver failed ({err})") from err
    if problem.status != cp.OPTIMAL or W.value is None:
        raise RuntimeError(
            f"attention_svm_nuclear: the solver ended with status {problem.status!r}, expected "
            "'optimal' (the Frobenius SVM of the same constraints exists, with norm "
            f"{frobenius.norm:.6g})"
        )

    def values(W: np.ndarray) -> np.ndarray:  # (x_a - x_t)^T W z per constraint, (m,)
        return contract("m d, m d -> m", contract("m e, e d -> m d", left, W), right)

    Wn = np.asarray(W.value, dtype=np.float64)
    Wn = Wn / values(Wn).min()  # margin exactly 1 (to rounding): scales ||W||_* by ~1 +- 1e-8
    margins = values(Wn)
    raw = np.asarray(constraint.dual_value, dtype=np.float64).ravel()
    lam = np.maximum(raw, 0.0)
    L = contract("m e, m d -> e d", lam[:, None] * left, right)  # sum_k lambda_k (x_a - x_t) z^T
    nuclear = float(np.linalg.svd(Wn, compute_uv=False).sum())
    kkt = {
        "primal": float(max(0.0, 1.0 - margins.min())),
        "dual": float(max(0.0, -raw.min())),
        "complementarity": float(np.max(np.abs(lam * (margins - 1.0))) / max(lam.max(), 1e-300)),
        "stationarity": float(
            max(np.linalg.norm(L, 2) - 1.0, abs(np.vdot(L, Wn) - nuclear) / nuclear)
        ),
    }
    dual = np.zeros(n * c * j)
    dual[idx] = lam
    dual = dual.reshape(n, c, j)
    # support: multipliers above the solver's tolerance (interior-point duals are never 0)
    support = dual > 1e-6 * max(float(lam.max()), 1e-300)
    return SVMSolution(Wn, float(margins.min()), dual, support, kkt)


def prompt_svm(X: np.ndarray, selected: np.ndarray) -> SVMSolution:
    """Prompt attention's SVM: ``p_mm = argmin ||p||_F`` s.t. ``(x_{i,a_ij} - x_{i,t})^T p_j >= 1``.

    ``X (n, d, c)`` prompts, ``selected (n,)`` (one query column) or ``(n, j)``: the token each
    query column ``p_j`` of prompt ``i`` selects. The score of token ``t`` is ``x_t^T p_j`` on
    all ``d`` coordinates, as in :class:`attnlab.ContextWindowModel` with ``attention="prompt"``.
    It is cross attention's constraint with ``W = p (d, j)`` and the one-hot query ``z = e_j``.
    Returns an :class:`SVMSolution` whose ``solution`` is ``p (d, j)``.

    Raises ``ValueError`` naming the prompt and token when the constraints cannot all hold.
    """
    X = check_prompts(X)
    n, d, c = X.shape
    a0 = np.asarray(selected)
    j = a0.shape[1] if a0.ndim == 2 else 1
    a = _selected(selected, n, c, j)
    onehot = repeat(np.eye(j, dtype=X.dtype), "k j -> n k j", n=n)  # z_ij = e_j
    rows = _rows(*_pairs(X, onehot, a))  # (n c j, d k): vec((x_a - x_t) e_j^T)
    w, dual, kkt, margin = _least_distance(rows, a, (n, c, j), "p")
    return _solution(w.reshape(d, j), dual, kkt, margin, (n, c, j))


def _solution(
    P: np.ndarray, dual: np.ndarray, kkt: dict[str, float], margin: float, shape: tuple
) -> SVMSolution:
    dual = dual.reshape(shape)
    return SVMSolution(P, margin, dual, dual > 0, kkt)


def _name(k: int, shape: tuple[int, int, int]) -> str:
    i, t, jj = np.unravel_index(k, shape)
    col = f", query column {jj}" if shape[2] > 1 else ""
    return f"prompt {i}, token {t}{col}"


def _least_distance(
    rows: np.ndarray, a: np.ndarray, shape: tuple[int, int, int], what: str
) -> tuple[np.ndarray, np.ndarray, dict[str, float], float]:
    """``min ||w|| s.t. G w >= 1`` over the constraint rows of unselected tokens.

    ``rows (n*c*j, D)`` holds a row for every (prompt, token, column); the rows of the selected
    tokens are dropped. Returns ``w (D,)``, the multipliers ``(n*c*j,)`` (0 at dropped rows), the
    KKT residuals and the margin.
    """
    n, c, j = shape
    idx = _kept(a, shape)
    if idx.size == 0:
        raise ValueError(
            "X: expected at least two tokens per prompt, so that there are constraints"
        )
    G = rows[idx]
    size = np.linalg.norm(G, axis=1)
    zero = size <= _ZERO_ROW * max(float(size.max()), 1.0)
    if zero.any():
        k = int(idx[np.flatnonzero(zero)[0]])
        i, t, jj = np.unravel_index(k, shape)
        raise ValueError(
            f"selected: the constraint of {_name(k, shape)} is infeasible: token {t} and the "
            f"selected token {a[i, jj]} give the same score for every parameter "
            f"((x_a - x_t)^T {what} is 0, which cannot be >= 1): equal tokens or a zero query"
        )
    m, D = G.shape
    E = np.vstack([G.T, np.ones((1, m))])
    f = np.zeros(D + 1)
    f[-1] = 1.0
    from scipy.optimize import nnls  # here: slow to import, and only the SVM needs it

    u, _ = nnls(E, f, maxiter=50 * (m + D + 1))
    r = E @ u - f
    w = -r[:-1] / r[-1] if r[-1] < 0 else np.full(D, np.nan)
    values = G @ w
    if not (r[-1] < 0 and np.all(np.isfinite(w)) and values.min() >= 1.0 - _FEASIBLE):
        _raise_infeasible(G, idx, u, shape)
    lam = -u / r[-1]
    scale = max(float(np.linalg.norm(w)), 1e-300)
    kkt = {
        "primal": float(max(0.0, 1.0 - values.min())),
        "dual": float(max(0.0, -lam.min())),
        "complementarity": float(np.max(np.abs(lam * (values - 1.0))) / max(lam.max(), 1e-300)),
        "stationarity": float(np.linalg.norm(w - G.T @ lam) / scale),
    }
    dual = np.zeros(n * c * j)
    dual[idx] = lam
    return w, dual, kkt, float(values.min())


def _raise_infeasible(G: np.ndarray, idx: np.ndarray, u: np.ndarray, shape: tuple) -> None:
    """Confirm infeasibility with a linear program and name the contradicting constraints."""
    m, D = G.shape
    from scipy.optimize import linprog

    lp = linprog(np.zeros(D), A_ub=-G, b_ub=-np.ones(m), bounds=[(None, None)] * D, method="highs")
    if lp.status != 2:  # 2: infeasible; anything else means the least-distance solve failed
        raise RuntimeError(
            f"attention SVM: the least-distance solve failed although the constraints are "
            f"feasible (linprog status {lp.status}: {lp.message})"
        )
    cert = np.flatnonzero(u > 1e-9 * max(float(u.max()), 1e-300))
    names = "; ".join(_name(int(idx[k]), shape) for k in cert[:6])
    more = f" and {cert.size - 6} more" if cert.size > 6 else ""
    raise ValueError(
        "selected: the constraints are infeasible: no parameter scores every selected token "
        f"above the others; a nonnegative combination of the constraints of {names}{more} "
        "has a zero left side"
    )
