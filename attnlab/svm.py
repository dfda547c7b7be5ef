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

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from einops import rearrange, repeat

from attnlab.blocks.attention import check_prompts
from mlp.contract import contract
from mlp.validation import as_float_array, check_finite

__all__ = [
    "SVMEq",
    "SVMSolution",
    "attention_svm",
    "attention_svm_nuclear",
    "correlation",
    "cosines",
    "least_distance",
    "multi_token_svm",
    "prompt_svm",
    "svm_eq",
]

#: Constraints whose left side has norm below this (relative to the largest) count as zero.
_ZERO_ROW = 1e-12
#: A solution must meet every constraint to this tolerance, else the problem is infeasible.
_FEASIBLE = 1e-8
#: The nuclear-norm SVM's solver: SCS (cvxpy's first-order conic solver) to 1e-11. Measured
#: here on 18 instances (n, c, d) in {(6, 8, 10), (15, 5, 20), (10, 5, 15)}: its nuclear norms
#: (the solution scaled to margin 1) are the lowest of SCS, Clarabel at its defaults and
#: Clarabel at 1e-11, Clarabel's defaults up to 1e-8 relative higher; the singular values that
#: should vanish come out below 1e-11 of the largest (SCS's defaults: up to 5e-6, which a rank
#: count at 1e-6 sees), and it takes about 0.05 s at d = 20 (Clarabel: 1 s).
_NUCLEAR_SOLVER = {"solver": "SCS", "eps_abs": 1e-11, "eps_rel": 1e-11, "max_iters": 100_000}


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


def attention_svm_nuclear(
    X: np.ndarray,
    Z: np.ndarray,
    selected: np.ndarray,
    *,
    solver: Mapping[str, Any] | None = None,
) -> SVMSolution:
    """Cross attention's nuclear-norm SVM: ``W_* = argmin ||W||_*`` s.t. the constraints of
    :func:`attention_svm`, ``(x_{i,a_ij} - x_{i,t})^T W z_ij >= 1``.

    ``X (n, d, c)``, ``Z (n, d, j)`` (or ``(n, d)``), ``selected (n, j)`` (or ``(n,)``) as in
    :func:`attention_svm`, which is called first: it validates the input and raises its
    ``ValueError`` naming the prompt and token when the constraints cannot all hold (the two
    problems share their constraints). The semidefinite program is solved by cvxpy
    (``cp.norm(W, "nuc")``) with SCS at a tolerance of 1e-11 (:data:`_NUCLEAR_SOLVER`; Clarabel
    when SCS does not reach 'optimal'); the solution is then divided by its smallest constraint
    value, so that it meets every constraint with margin 1 to rounding. Returns an
    :class:`SVMSolution` with ``solution`` ``W_* (d, d)``; its ``kkt['stationarity']`` checks
    that ``L = sum_k lambda_k G_k`` is a subgradient of the nuclear norm at ``W_*``:
    ``max(||L||_2 - 1, |<L, W_*> - ||W_*||_*| / ||W_*||_*)`` (spectral norm at most 1, and it
    attains the norm).

    ``solver``: other keyword arguments of cvxpy's ``Problem.solve`` (for example ``{"solver":
    "SCS"}``, SCS at its own defaults, to compare with results computed that way); then an
    'optimal_inaccurate' status is accepted too, as cvxpy's callers who read ``W.value`` do.

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
    accepted = (cp.OPTIMAL,) if solver is None else (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
    try:
        with warnings.catch_warnings():  # cvxpy warns of an inaccurate solution: checked here
            warnings.simplefilter("ignore", UserWarning)
            problem.solve(**(_NUCLEAR_SOLVER if solver is None else solver))
            if solver is None and (problem.status != cp.OPTIMAL or W.value is None):
                problem.solve(solver="CLARABEL")  # the interior-point solver
    except cp.error.SolverError as err:
        raise RuntimeError(f"attention_svm_nuclear: the solver failed ({err})") from err
    if problem.status not in accepted or W.value is None:
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
    found = least_distance(G)
    if isinstance(found, np.ndarray):  # the Farkas certificate
        _raise_infeasible(G, idx, found, shape)
    w, lam = found
    values = G @ w
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


def least_distance(G: np.ndarray) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
    """``w = argmin ||w|| s.t. G w >= 1`` for ``G (m, D)``: ``(w (D,), lambda (m,))`` with
    ``w = G^T lambda``, ``lambda >= 0``; or, when no ``w`` meets every constraint to
    :data:`_FEASIBLE`, the nonnegative ``u (m,)`` of the Lawson-Hanson reduction (with ``G^T u``
    near 0: a Farkas certificate naming contradicting constraints).

    Lawson and Hanson's reduction to nonnegative least squares (scipy's active-set ``nnls``):
    with ``E = [G^T; 1^T]`` and ``f = e_last``, ``u = argmin_{u >= 0} ||E u - f||`` and
    ``r = E u - f``, the solution is ``w = -r[:-1] / r[-1]`` and ``lambda = -u / r[-1]``.
    """
    m, D = G.shape
    E = np.vstack([G.T, np.ones((1, m))])
    f = np.zeros(D + 1)
    f[-1] = 1.0
    from scipy.optimize import nnls  # here: slow to import, and only the SVM needs it

    u, _ = nnls(E, f, maxiter=50 * (m + D + 1))
    r = E @ u - f
    if not r[-1] < 0:
        return u
    w = -r[:-1] / r[-1]
    if not (np.all(np.isfinite(w)) and (G @ w).min() >= 1.0 - _FEASIBLE):
        return u
    return w, -u / r[-1]


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


# --- multi-token selection: the SVM with equalities inside the selected set -------------------


@dataclass(frozen=True)
class SVMEq:
    """A trained ``W``'s multi-token decomposition ``W^SVMeq = W^fin + R W^mm``.

    ``mm``: :func:`multi_token_svm` of the ``selected (n, c)`` set; ``finite``: ``W^fin (d, d)``,
    the smallest ``W`` whose score differences inside each prompt's selected set are the
    log-ratios of its softmax weights; ``R``: the least-squares fit of ``W - W^fin`` by ``R
    W^mm``; ``solution``: ``W^fin + R W^mm (d, d)``.
    """

    mm: SVMSolution
    finite: np.ndarray
    R: float
    solution: np.ndarray
    selected: np.ndarray


def _selected_set(selected: object, n: int, c: int) -> np.ndarray:
    """``selected`` as a boolean ``(n, c)`` with at least one token per prompt."""
    sel = np.asarray(selected)
    if sel.dtype != np.bool_ or sel.shape != (n, c):
        raise ValueError(
            f"selected: expected a boolean array of shape (n={n}, c={c}), received "
            f"{sel.dtype} {sel.shape}"
        )
    empty = np.flatnonzero(~sel.any(axis=1))
    if empty.size:
        raise ValueError(f"selected: prompt {empty[0]} selects no token")
    return sel


def _pair_rows(X: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """``vec((x_it - x_ib) z_i^T)`` for every prompt ``i`` and ordered pair of tokens ``(t,
    b)``: ``X (n, d, c)``, ``Z (n, e)`` -> ``(n, c, c, d e)``."""
    D = rearrange(X, "n d t -> n t 1 d 1") - rearrange(X, "n d b -> n 1 b d 1")
    return rearrange(D * rearrange(Z, "n e -> n 1 1 1 e"), "n t b d e -> n t b (d e)")


def _multi_inputs(X: object, Z: object) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``X (n, d, c)`` and ``Z (n, d)`` (``(n, d, 1)`` accepted)."""
    X = check_prompts(X)
    n, d, _ = X.shape
    Z = as_float_array("Z", Z, ndim=(2, 3))
    if Z.shape not in ((n, d), (n, d, 1)):
        raise ValueError(f"Z: expected shape (n={n}, d={d}, 1) or (n, d), received {Z.shape}")
    check_finite("Z", Z)
    return X, rearrange(Z, "n d ... -> n (d ...)")


def multi_token_svm(X: np.ndarray, Z: np.ndarray, selected: np.ndarray) -> SVMSolution:
    """The multi-token attention SVM ``W^mm = argmin ||W||_F`` s.t., for every prompt ``i``,
    ``(x_io - x_io')^T W z_i = 0`` for selected tokens ``o, o'`` and ``(x_io - x_iu)^T W z_i >=
    1`` for selected ``o`` and unselected ``u``.

    ``X (n, d, c)``, ``Z (n, d, 1)`` or ``(n, d)``, ``selected (n, c)`` boolean (at least one
    token per prompt, and one unselected token somewhere). With one selected token per prompt
    it is :func:`attention_svm`. Solved exactly: ``W = N u`` over an orthonormal basis ``N`` of
    the equalities' null space, then the least-distance problem of ``u``
    (:func:`least_distance`). Returns an :class:`SVMSolution` whose ``dual`` is ``(n, c, c)``:
    the multiplier of the pair (selected ``o``, unselected ``u``) at ``[i, o, u]``; its ``kkt``
    adds ``equality`` (``max |(x_o - x_o')^T W z|`` relative to ``||W||``), and
    ``stationarity`` is ``||N^T (w - G^T lambda)|| / ||w||`` (``w - G^T lambda`` must be a
    combination of the equalities). Raises ``ValueError`` when the constraints cannot all hold.
    """
    X, Z = _multi_inputs(X, Z)
    n, d, c = X.shape
    sel = _selected_set(selected, n, c)
    rows = _pair_rows(X, Z)  # (n, c, c, d e)
    upper = np.triu(np.ones((c, c), dtype=bool), 1)
    eq_mask = sel[:, :, None] & sel[:, None, :] & upper
    in_mask = sel[:, :, None] & ~sel[:, None, :]
    if not in_mask.any():
        raise ValueError("selected: every token is selected, so there is no margin constraint")
    E, G = rows[eq_mask], rows[in_mask]
    N = np.eye(d * d)
    if len(E):
        _, s, Vt = np.linalg.svd(E)
        N = Vt[int(np.sum(s > 1e-12 * s[0])) :].T  # (D, D - rank E)
    GN = G @ N
    size = np.linalg.norm(GN, axis=1)
    found = least_distance(GN) if size.min() > _ZERO_ROW * max(float(size.max()), 1.0) else None
    if found is None or isinstance(found, np.ndarray):
        raise ValueError(
            "selected: the multi-token SVM is infeasible: no W scores every selected token of "
            "a prompt equally and 1 above its unselected tokens"
        )
    u, lam = found
    w = N @ u
    values = G @ w
    scale = max(float(np.linalg.norm(w)), 1e-300)
    kkt = {
        "primal": float(max(0.0, 1.0 - values.min())),
        "equality": float(np.max(np.abs(E @ w), initial=0.0) / scale),
        "dual": float(max(0.0, -lam.min())),
        "complementarity": float(np.max(np.abs(lam * (values - 1.0))) / max(lam.max(), 1e-300)),
        "stationarity": float(np.linalg.norm(N.T @ (w - G.T @ lam)) / scale),
    }
    dual = np.zeros((n, c, c))
    dual[in_mask] = lam
    return SVMSolution(w.reshape(d, d), float(values.min()), dual, dual > 0, kkt)


def svm_eq(
    X: np.ndarray, Z: np.ndarray, S: np.ndarray, W: np.ndarray, threshold: float = 1e-3
) -> SVMEq:
    """The decomposition ``W^SVMeq = W^fin + R W^mm`` of a trained ``W (d, d)`` whose softmax
    weights on prompts ``X (n, d, c)`` with queries ``Z (n, d, 1)`` (or ``(n, d)``) are
    ``S (n, c)`` (Tarzanagh et al., "Transformers as SVMs", multi-token selection).

    The selected set of prompt ``i`` is its tokens with ``S > threshold``. ``W^mm``:
    :func:`multi_token_svm` of that set. ``W^fin``: the smallest ``W`` (Frobenius) with
    ``(x_io' - x_io)^T W z_i = log(s_io' / s_io)`` for selected ``o, o'`` (0 when no prompt
    selects two tokens), by least squares; ``R = <W - W^fin, W^mm> / ||W^mm||^2``. Raises
    ``ValueError`` when either problem is infeasible.
    """
    X, Z = _multi_inputs(X, Z)
    n, d, c = X.shape
    S = as_float_array("S", S, ndim=2)
    W = as_float_array("W", W, ndim=2)
    if S.shape != (n, c) or W.shape != (d, d):
        raise ValueError(
            f"S, W: expected shapes (n={n}, c={c}) and (d={d}, d={d}), received {S.shape} and "
            f"{W.shape}"
        )
    check_finite("S", S)
    check_finite("W", W)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold: expected a number in (0, 1), received {threshold!r}")
    sel = S > threshold
    mm = multi_token_svm(X, Z, sel)
    eq_mask = sel[:, :, None] & sel[:, None, :] & np.triu(np.ones((c, c), dtype=bool), 1)
    finite = np.zeros(d * d)
    if eq_mask.any():
        # (x_t - x_b)^T W z = log(s_t / s_b) for selected t < b
        E = _pair_rows(X, Z)[eq_mask]
        log_s = np.log(np.where(sel, S, 1.0))  # (n, c); the selected weights are > threshold
        target = (log_s[:, :, None] - log_s[:, None, :])[eq_mask]
        finite = np.linalg.lstsq(E, target, rcond=None)[0]
        if np.linalg.norm(E @ finite - target) > 1e-8 * (1.0 + np.linalg.norm(target)):
            raise ValueError(
                "S: the log-ratios of the selected tokens' weights cannot all be met by one W"
            )
    finite = finite.reshape(d, d)
    R = float(np.vdot(W - finite, mm.solution) / np.vdot(mm.solution, mm.solution))
    return SVMEq(mm, finite, R, finite + R * mm.solution, sel)
