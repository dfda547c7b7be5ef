"""The rank study: infeasible instances skipped and counted, the ranks of both SVMs, the
published accounting (infeasible as rank 1, SCS at its defaults), the report's fields."""

from __future__ import annotations

import numpy as np
import pytest

from attnlab.studies.svm_rank import resolve, run_experiment
from attnlab.svm import attention_svm, attention_svm_nuclear
from attnlab.tasks import max_margin
from mlp.train.folders import load_arrays, read_json

pytest.importorskip("cvxpy")


def test_d1_instances_are_infeasible_and_counted(tmp_path):
    metrics = run_experiment({"n": 5, "d": 1, "instances": 6}, tmp_path / "run")
    assert metrics["feasible"] == 0 and metrics["infeasible"] == 6
    assert metrics["rank_mm"] is None and metrics["rank_nuclear"] is None
    assert metrics["rank_mm_as_published"] == 1.0  # the authors' figure counts them as rank 1
    ranks = load_arrays(tmp_path / "run" / "ranks.npz")
    assert (ranks["rank_mm"] == -1).all() and not ranks["feasible"].any()


@pytest.mark.parametrize(("n", "d"), [(5, 3), (5, 10)])
def test_ranks_of_both_solutions(tmp_path, n, d):
    metrics = run_experiment({"n": n, "d": d, "instances": 4}, tmp_path / "run")
    ranks = load_arrays(tmp_path / "run" / "ranks.npz")
    ok = ranks["feasible"]
    assert metrics["feasible"] == ok.sum() > 0
    assert (ranks["rank_mm"][ok] == min(n, d)).all()  # W^mm = sum lambda (x_a - x_t) z^T
    assert (ranks["rank_nuclear"][ok] <= ranks["rank_mm"][ok]).all()
    assert ranks["sv_mm"].shape == (4, d)
    assert read_json(tmp_path / "run" / "metrics.json") == metrics


def test_scs_defaults_leave_singular_values_that_should_vanish():
    """The published nuclear ranks: SCS at its defaults and a rank at 1e-7 (absolute) count
    singular values that the accurate solution (SCS to 1e-11, as Clarabel) does not have."""
    task = max_margin(n=10, context=5, d=10, seed=1)
    X, Z, a = task.train.X, task.train.Z, task.train.target
    accurate = attention_svm_nuclear(X, Z, a)
    rough = attention_svm_nuclear(X, Z, a, solver={"solver": "SCS"})
    s = np.linalg.svd(accurate.solution, compute_uv=False)
    s_rough = np.linalg.svd(rough.solution, compute_uv=False)
    rank = int(np.sum(s > 1e-6 * s[0]))
    assert rank < 10 and s[rank] < 1e-9 * s[0]  # a clear gap in the accurate solution
    assert np.sum(s_rough > 1e-7) > rank
    assert max(accurate.kkt.values()) < 1e-6
    nuclear = float(s.sum())
    assert nuclear <= np.linalg.svd(attention_svm(X, Z, a).solution, compute_uv=False).sum()


def test_resolve_refuses_bad_options():
    with pytest.raises(ValueError, match="threshold"):
        resolve({"threshold": 2.0})
    with pytest.raises(ValueError, match="context: expected at least 2"):
        resolve({"context": 1})
    with pytest.raises(ValueError, match="unknown option"):
        resolve({"T": 5})


def test_reproduce_writes_the_points(tmp_path):
    from attnlab.studies.svm_rank import reproduce

    _, written = reproduce(tmp_path, ns=(5,), ds=(1, 4), instances=3, workers=0)
    points = read_json(tmp_path / "results.json")["points"]
    assert [(p["n"], p["d"]) for p in points] == [(5, 1), (5, 4)]
    for p in points:
        assert {"n", "d", "feasible", "rank_mm", "rank_nuclear"} <= set(p)
    assert points[0]["feasible"] == 0 and points[0]["rank_mm"] is None
    assert {p.name for p in written} == {"results.json", "results.md", "svm_rank.png"}
