"""The attention SVM: hand-solvable cases, KKT optimality, a second solver, infeasibility."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from attnlab.svm import attention_svm, correlation, cosines, prompt_svm
from attnlab.tasks import max_margin, prompt_norm

KKT_TOL = 1e-9


def cross_rows(X: np.ndarray, Z: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """Constraint rows ``vec((x_a - x_t) z^T)``, one prompt and token at a time (j = 1)."""
    rows = []
    for i in range(X.shape[0]):
        a = selected[i]
        for t in range(X.shape[2]):
            if t != a:
                rows.append(np.outer(X[i, :, a] - X[i, :, t], Z[i, :, 0]).ravel())
    return np.array(rows)


def slsqp_min_norm(G: np.ndarray) -> np.ndarray:
    """The second method: ``min 1/2 ||w||^2 s.t. G w >= 1`` by SLSQP on the primal."""
    res = minimize(
        lambda w: 0.5 * w @ w,
        np.zeros(G.shape[1]),
        jac=lambda w: w,
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda w: G @ w - 1.0, "jac": lambda w: G}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return res.x


def random_cross(seed: int, n: int = 4, d: int = 5, c: int = 6):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d, c))
    Z = rng.standard_normal((n, d, 1))
    selected = rng.integers(0, c, size=n)
    return X, Z, selected


# --- hand-solvable cases -------------------------------------------------------------------


def test_prompt_svm_two_constraints_by_hand():
    # tokens 0, -e1, -e2 with token 0 selected: p1 >= 1 and p2 >= 1, so p = (1, 1, 0)
    X = np.zeros((1, 3, 3))
    X[0, 0, 1] = -1.0
    X[0, 1, 2] = -1.0
    sol = prompt_svm(X, np.array([0]))
    np.testing.assert_allclose(sol.solution[:, 0], [1.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(sol.dual[0, :, 0], [0.0, 1.0, 1.0], atol=1e-12)
    assert sol.support[0, :, 0].tolist() == [False, True, True]
    assert sol.norm == pytest.approx(np.sqrt(2.0), abs=1e-12)


def test_prompt_svm_inactive_constraint_has_zero_multiplier():
    # x_a = e1, tokens -e1 (value 2 p1 >= 1) and -3 e1 (4 p1 >= 1, slack at p1 = 1/2)
    X = np.zeros((1, 2, 3))
    X[0, 0] = [1.0, -1.0, -3.0]
    sol = prompt_svm(X, np.array([0]))
    np.testing.assert_allclose(sol.solution[:, 0], [0.5, 0.0], atol=1e-12)
    assert sol.dual[0, 1, 0] == pytest.approx(0.25, abs=1e-12)  # w = lambda (x_a - x_t)
    assert sol.dual[0, 2, 0] == 0.0
    assert sol.margin == pytest.approx(1.0, abs=1e-12)


def test_attention_svm_one_constraint_by_hand():
    # d = 2, z = e1, x_a - x_t = e2: the constraint is W[1, 0] >= 1, so W_mm = E_10
    X = np.zeros((1, 2, 2))
    X[0, 1, 0] = 1.0
    Z = np.array([[[1.0], [0.0]]])
    sol = attention_svm(X, Z, np.array([0]))
    np.testing.assert_allclose(sol.solution, [[0.0, 0.0], [1.0, 0.0]], atol=1e-12)
    assert sol.margin == pytest.approx(1.0, abs=1e-12)


# --- optimality on the experiment's data ---------------------------------------------------


@pytest.mark.parametrize("seed", [0, 3, 7])
def test_attention_svm_is_optimal_on_max_margin_data(seed):
    task = max_margin(seed=seed)
    X, Z, a = task.train.X, task.train.Z, task.train.target
    sol = attention_svm(X, Z, a)
    G = cross_rows(X, Z, a)
    values = G @ sol.solution.ravel()
    assert values.min() >= 1.0 - 1e-9
    assert values.min() == pytest.approx(1.0, abs=1e-6)  # margin 1: some constraint is tight
    assert sol.margin == pytest.approx(values.min(), abs=1e-12)
    for name, residual in sol.kkt.items():
        assert residual < KKT_TOL, (name, residual)
    # KKT recomputed here from the returned multipliers (independent of the solver's own numbers)
    lam = np.array([sol.dual[i, t, 0] for i in range(6) for t in range(8) if t != a[i]])
    assert lam.min() >= 0.0
    np.testing.assert_allclose(G.T @ lam, sol.solution.ravel(), atol=1e-9 * sol.norm)
    assert np.max(np.abs(lam * (values - 1.0))) < 1e-9
    assert np.all(sol.dual[np.arange(6), a, 0] == 0.0)  # the selected token has no constraint
    # a second method: SLSQP on the primal
    w2 = slsqp_min_norm(G)
    np.testing.assert_allclose(sol.solution.ravel(), w2, atol=1e-6 * sol.norm)


@pytest.mark.parametrize("seed", [1, 2])
def test_attention_svm_matches_slsqp_on_random_prompts(seed):
    X, Z, a = random_cross(seed)
    sol = attention_svm(X, Z, a)
    w2 = slsqp_min_norm(cross_rows(X, Z, a))
    np.testing.assert_allclose(sol.solution.ravel(), w2, atol=1e-6 * sol.norm)
    assert max(sol.kkt.values()) < KKT_TOL


def test_prompt_svm_on_prompt_norm_matches_slsqp():
    task = prompt_norm()
    X = task.train.X
    sol = prompt_svm(X, task.train.target)
    rows = [X[i, :, 0] - X[i, :, t] for i in range(3) for t in range(1, 7)]
    w2 = slsqp_min_norm(np.array(rows))
    np.testing.assert_allclose(sol.solution[:, 0], w2, atol=1e-6 * sol.norm)
    assert sol.margin == pytest.approx(1.0, abs=1e-6)
    assert max(sol.kkt.values()) < KKT_TOL


def test_prompt_svm_columns_decouple():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((3, 12, 4))  # 9 constraints per column in 12 dimensions: feasible
    a = np.array([[0, 2], [3, 1], [3, 3]])
    both = prompt_svm(X, a)
    assert both.solution.shape == (12, 2)
    for col in range(2):
        alone = prompt_svm(X, a[:, col])
        np.testing.assert_allclose(both.solution[:, col], alone.solution[:, 0], atol=1e-9)


def test_attention_svm_accepts_2d_queries():
    X, Z, a = random_cross(4)
    np.testing.assert_allclose(
        attention_svm(X, Z[:, :, 0], a).solution, attention_svm(X, Z, a).solution
    )


def test_scaling_the_tokens_scales_the_solution_inversely():
    X, Z, a = random_cross(6)
    w1 = attention_svm(X, Z, a).solution
    w3 = attention_svm(3.0 * X, Z, a).solution
    np.testing.assert_allclose(w3, w1 / 3.0, atol=1e-9 * np.abs(w1).max())


# --- infeasible constraints and bad input --------------------------------------------------


def test_token_equal_to_the_selected_one_is_infeasible():
    X = prompt_norm().train.X.copy()
    X[1, :, 3] = X[1, :, 0]
    with pytest.raises(ValueError, match=r"prompt 1, token 3 .*selected token 0"):
        prompt_svm(X, np.zeros(3, dtype=int))


def test_zero_query_is_infeasible():
    X, Z, a = random_cross(0)
    Z[2] = 0.0
    with pytest.raises(ValueError, match=r"prompt 2, token \d"):
        attention_svm(X, Z, a)


def test_contradicting_constraints_name_the_tokens():
    # two prompts with the same tokens, each selecting the other's: x0 > x1 and x1 > x0
    X = np.stack([np.eye(2), np.eye(2)])
    with pytest.raises(ValueError, match=r"infeasible.*prompt 0, token 1.*prompt 1, token 0"):
        prompt_svm(X, np.array([0, 1]))
    Z = np.ones((2, 2, 1))
    with pytest.raises(ValueError, match=r"infeasible.*prompt 0, token 1.*prompt 1, token 0"):
        attention_svm(X, Z, np.array([0, 1]))


@pytest.mark.parametrize(
    ("selected", "error", "match"),
    [
        (np.array([0, 1]), ValueError, r"selected: expected shape \(n=4,\)"),
        (np.array([0, 1, 2, 6]), ValueError, r"selected: expected token indices in 0\.\.5"),
        (np.array([0, 1, 2, -1]), ValueError, r"received -1"),
        (np.array([0.0, 1.0, 2.0, 3.0]), TypeError, r"selected: expected integer"),
    ],
)
def test_bad_selected(selected, error, match):
    X, Z, _ = random_cross(0)
    with pytest.raises(error, match=match):
        attention_svm(X, Z, selected)


def test_bad_queries_and_prompts():
    X, Z, a = random_cross(0)
    with pytest.raises(ValueError, match=r"Z: expected shape \(n=4, d=5, j\)"):
        attention_svm(X, Z[:, :4], a)
    with pytest.raises(ValueError, match="X: expected a 3-d array"):
        prompt_svm(X[0], a)
    with pytest.raises(ValueError, match="at least two tokens"):
        prompt_svm(X[:, :, :1], np.zeros(4, dtype=int))


def test_correlation():
    A = np.array([[1.0, 0.0], [0.0, 0.0]])
    B = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert correlation(A, B) == pytest.approx(1 / np.sqrt(2), abs=1e-15)
    assert correlation(A, -A) == pytest.approx(-1.0, abs=1e-15)
    with pytest.raises(ValueError, match=r"B: expected the shape of A \(2, 2\)"):
        correlation(A, B[0])
    with pytest.raises(ValueError, match="zero array"):
        correlation(A, np.zeros((2, 2)))


def test_cosines_along_a_trajectory():
    T = np.array([[1.0, 1.0], [0.0, 0.0]])
    P = np.array([np.zeros((2, 2)), [[2.0, 0.0], [0.0, 0.0]], -3 * T, [[0.0, 0.0], [0.0, 5.0]]])
    got = cosines(P, T)
    assert got.shape == (4,) and np.isnan(got[0])  # undefined at P_s = 0, no warning
    np.testing.assert_allclose(got[1:], [1 / np.sqrt(2), -1.0, 0.0], rtol=1e-15, atol=1e-16)
    assert got[1] == correlation(P[1], T)
