"""The nuclear-norm attention SVM: feasibility, optimality cross-checks, a hand-solvable case."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from attnlab.svm import attention_svm, attention_svm_nuclear
from attnlab.tasks import max_margin

pytest.importorskip("cvxpy")


def nuclear_norm(W: np.ndarray) -> float:
    return float(np.linalg.svd(W, compute_uv=False).sum())


def constraint_values(X: np.ndarray, Z: np.ndarray, a: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``(x_a - x_t)^T W z`` for every prompt and unselected token, one at a time."""
    return np.array(
        [
            (X[i, :, a[i]] - X[i, :, t]) @ W @ Z[i, :, 0]
            for i in range(X.shape[0])
            for t in range(X.shape[2])
            if t != a[i]
        ]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nuclear_svm_is_feasible_and_beats_the_frobenius_svm_in_nuclear_norm(seed):
    task = max_margin(seed=seed)
    X, Z, a = task.train.X, task.train.Z, task.train.target
    nuc = attention_svm_nuclear(X, Z, a)
    fro = attention_svm(X, Z, a)
    values = constraint_values(X, Z, a, nuc.solution)
    assert values.min() == pytest.approx(1.0, abs=1e-6)
    assert nuc.margin == pytest.approx(values.min(), abs=1e-12)
    # each solution is optimal for its own norm: a cross-check of both solvers
    assert nuclear_norm(nuc.solution) <= nuclear_norm(fro.solution) + 1e-6
    assert np.linalg.norm(nuc.solution) >= fro.norm - 1e-6
    # the two problems differ here: the nuclear solution has lower rank
    assert nuclear_norm(nuc.solution) < nuclear_norm(fro.solution) - 1e-3
    s = np.linalg.svd(nuc.solution, compute_uv=False)
    assert np.sum(s > 1e-4 * s[0]) < np.linalg.matrix_rank(fro.solution)
    # KKT to the interior-point solver's tolerance
    assert max(nuc.kkt.values()) < 1e-4
    assert nuc.dual.shape == (6, 8, 1) and np.all(nuc.dual[np.arange(6), a, 0] == 0)


def test_single_constraint_has_the_rank_one_solution():
    # min ||W||_* s.t. g^T W h >= 1 is W = g h^T / (|g|^2 |h|^2), nuclear norm 1 / (|g| |h|)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((1, 4, 2))
    Z = rng.standard_normal((1, 4, 1))
    g, h = X[0, :, 0] - X[0, :, 1], Z[0, :, 0]
    nuc = attention_svm_nuclear(X, Z, np.array([0]))
    expected = np.outer(g, h) / (g @ g * (h @ h))
    np.testing.assert_allclose(nuc.solution, expected, atol=1e-6 * np.abs(expected).max())
    assert nuclear_norm(nuc.solution) == pytest.approx(
        1.0 / (np.linalg.norm(g) * np.linalg.norm(h)), rel=1e-6
    )


def test_infeasible_constraints_name_the_token():
    task = max_margin(seed=0)
    X = task.train.X.copy()
    X[2, :, 5] = X[2, :, task.train.target[2]]  # token 5 equals the selected token
    with pytest.raises(ValueError, match="prompt 2, token 5"):
        attention_svm_nuclear(X, task.train.Z, task.train.target)


def test_missing_cvxpy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cvxpy", None)  # makes `import cvxpy` raise ImportError
    task = max_margin(seed=0)
    with pytest.raises(ImportError, match=r"attnlab\[svm\]"):
        attention_svm_nuclear(task.train.X, task.train.Z, task.train.target)
