"""Multi-token selection: the batched ReLU-head model against the model run one problem at a
time and finite differences, the multi-token SVM and W^SVMeq (feasibility, KKT, a hand-made
case), a small run and the report's fields."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_gradient, rel_error

from attnlab.models.relu_batch import relu_head_batch, relu_head_loop
from attnlab.studies.svm_multi_token import OUTCOMES, prompts, run_experiment, train_chunk
from attnlab.svm import attention_svm, multi_token_svm, svm_eq
from attnlab.tasks import max_margin
from mlp.train.folders import load_arrays, read_json


def _problems(s: int = 4, d: int = 6, scale: float = 3.0) -> dict[str, np.ndarray]:
    chunk = [p for p in (prompts(seed, d) for seed in range(1, 4 * s)) if p is not None][:s]
    data = {k: np.stack([p[k] for p in chunk]) for k in ("W", "X", "Z", "y", "V")}
    data["W"] = scale * np.random.default_rng(0).standard_normal(data["W"].shape)
    return data


def test_prompts_are_the_notebooks_draws():
    p = prompts(3, 5)
    assert {k: v.shape for k, v in p.items()} == {
        "X": (3, 5, 4),
        "Z": (3, 5),
        "y": (3,),
        "V": (5, 5),
        "W": (5, 5),
    }
    np.testing.assert_allclose(np.linalg.norm(p["X"], axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(p["Z"], axis=1), 1.0)
    assert np.linalg.norm(p["V"]) == pytest.approx(1.0) and (p["y"] == -1).any()
    assert np.abs(p["W"]).max() <= 1 / np.sqrt(5)
    skipped = [s for s in range(1, 60) if prompts(s, 5) is None]
    assert skipped
    for s in skipped:  # the labels, drawn after V and X, are all +1
        rng = np.random.default_rng(s)
        rng.standard_normal((5, 5))
        rng.standard_normal((3, 5, 4))
        assert (rng.standard_normal(3) > 0).all()


@pytest.mark.parametrize("scale", [0.5, 3.0, 30.0])
def test_batched_model_is_the_model_run_one_problem_at_a_time(scale):
    data = _problems(scale=scale)
    args = tuple(data[k] for k in ("W", "X", "Z", "y", "V"))
    loss, dW, weights = relu_head_batch(*args)
    loss2, dW2, weights2 = relu_head_loop(*args)
    assert loss.shape == (4,) and dW.shape == (4, 6, 6) and weights.shape == (4, 3, 4)
    assert rel_error(loss, loss2) < 1e-13 and rel_error(weights, weights2) < 1e-13
    for k in range(4):
        assert rel_error(dW[k], dW2[k]) < 1e-12


def test_batched_model_finite_differences():
    data = _problems(scale=1.0)
    args = [data[k] for k in ("W", "X", "Z", "y", "V")]
    _, dW, _ = relu_head_batch(*args)
    W = data["W"]
    for k in range(2):  # problem k's loss depends on W[k] alone

        def loss_k(_: np.ndarray, k: int = k) -> float:
            return float(relu_head_batch(W, *args[1:])[0][k])

        analytic = np.zeros_like(dW)
        analytic[k] = dW[k]
        assert check_gradient(loss_k, W, analytic, name=f"W of problem {k}") < 1e-6


def test_training_records_and_normalized_steps():
    data = _problems(s=3, d=4, scale=0.1)
    records, last, recorded = train_chunk(data, steps=201, lr=0.1)
    assert records.shape == (3, 3, 4, 4) and last.shape == (3, 3, 4)
    np.testing.assert_array_equal(recorded, [1, 101, 201])
    one, _, _ = train_chunk({k: v[:1] for k, v in data.items()}, steps=201, lr=0.1)
    np.testing.assert_allclose(one[:, 0], records[:, 0], rtol=1e-12, atol=1e-14)
    step = np.linalg.norm(train_chunk(data, 1, 0.1)[0][0] - data["W"], axis=(1, 2))
    np.testing.assert_allclose(step, 0.1, rtol=1e-12)  # lr g / (||g|| + eps)


def test_multi_token_svm_with_one_token_each_is_the_attention_svm():
    task = max_margin(n=3, context=4, d=6, seed=2)
    X, Z, a = task.train.X, task.train.Z, task.train.target
    sel = np.zeros((3, 4), dtype=bool)
    sel[np.arange(3), a] = True
    mm, one = multi_token_svm(X, Z, sel), attention_svm(X, Z, a)
    np.testing.assert_allclose(mm.solution, one.solution, atol=1e-12)
    assert mm.dual.shape == (3, 4, 4) and max(mm.kkt.values()) < 1e-10


def test_multi_token_svm_meets_equalities_and_margins():
    task = max_margin(n=3, context=4, d=6, seed=4)
    X, Z = task.train.X, task.train.Z[:, :, 0]
    sel = np.array([[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 1]], dtype=bool)
    mm = multi_token_svm(X, Z, sel)
    W = mm.solution
    score = np.einsum("ndc,de,ne->nc", X, W, Z)
    for i in range(3):
        chosen, rest = score[i, sel[i]], score[i, ~sel[i]]
        assert np.ptp(chosen) < 1e-10
        assert rest.max() <= chosen.min() - 1 + 1e-10
    assert mm.margin == pytest.approx(1.0) and max(mm.kkt.values()) < 1e-10
    cp = pytest.importorskip("cvxpy")
    V = cp.Variable((6, 6))
    cons = []
    for i in range(3):
        s = [X[i, :, t] @ V @ Z[i] for t in range(4)]
        for o in np.flatnonzero(sel[i]):
            cons += [s[o] == s[u] for u in np.flatnonzero(sel[i]) if u > o]
            cons += [s[o] - s[u] >= 1 for u in np.flatnonzero(~sel[i])]
    cp.Problem(cp.Minimize(cp.norm(V, "fro")), cons).solve()
    assert np.linalg.norm(V.value - W) < 1e-6 * np.linalg.norm(W)


def test_multi_token_svm_errors():
    task = max_margin(n=3, context=4, d=6, seed=4)
    X, Z = task.train.X, task.train.Z
    with pytest.raises(ValueError, match="every token is selected"):
        multi_token_svm(X, Z, np.ones((3, 4), dtype=bool))
    with pytest.raises(ValueError, match="prompt 1 selects no token"):
        multi_token_svm(X, Z, np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=bool))
    X2 = X.copy()
    X2[0, :, 1] = X2[0, :, 0]  # token 1 equals the selected token 0, unselected: infeasible
    sel = np.zeros((3, 4), dtype=bool)
    sel[:, 0] = True
    with pytest.raises(ValueError, match="multi-token SVM is infeasible"):
        multi_token_svm(X2, Z, sel)


def test_svm_eq_fits_the_log_ratios_and_the_direction():
    task = max_margin(n=3, context=4, d=6, seed=4)
    X, Z = task.train.X, task.train.Z[:, :, 0]
    S = np.array([[0.7, 0.3, 1e-9, 1e-9], [1.0, 1e-12, 1e-12, 1e-12], [0.2, 1e-8, 0.5, 0.3]])
    sel = S > 1e-3
    mm = multi_token_svm(X, Z, sel)
    fin = svm_eq(X, Z, S, mm.solution, 1e-3).finite
    eq = svm_eq(X, Z, S, fin + 3.0 * mm.solution, 1e-3)
    assert eq.R == pytest.approx(3.0, rel=1e-10)
    np.testing.assert_allclose(eq.solution, fin + 3.0 * mm.solution, atol=1e-10)
    score = np.einsum("ndc,de,ne->nc", X, eq.finite, Z)
    for i in range(3):
        chosen = np.flatnonzero(sel[i])
        for t in chosen:
            for b in chosen:
                want = np.log(S[i, t] / S[i, b])
                assert score[i, t] - score[i, b] == pytest.approx(want, abs=1e-10)
    with pytest.raises(ValueError, match="threshold"):
        svm_eq(X, Z, S, mm.solution, 1.5)


def test_a_block_of_seeds(tmp_path):
    metrics = run_experiment({"d": 4, "seeds": 24, "chunk": 10}, tmp_path / "run")
    runs = load_arrays(tmp_path / "run" / "runs.npz")
    k = metrics["kept_runs"]
    assert k > 0 and runs["gap_svmeq"].shape == (k, 21) and runs["steps"][-1] == 2001
    np.testing.assert_array_equal(runs["seeds"], np.arange(1, 25))
    assert sum(metrics[name] for name in OUTCOMES[1:]) + k == 24
    np.testing.assert_array_equal(runs["kept_seeds"], runs["seeds"][runs["outcome"] == 0])
    assert (runs["masked_max"] <= 1e-6).all() and 0 <= metrics["svmeq"] <= metrics["one_token"]
    assert read_json(tmp_path / "run" / "metrics.json") == metrics
    # a block is the same seeds trained in any chunks: the kept runs do not depend on it
    again = run_experiment({"d": 4, "seeds": 24, "chunk": 24}, tmp_path / "again")
    assert again == metrics


def test_reproduce_takes_the_first_kept_runs_in_seed_order(tmp_path):
    from attnlab.studies.svm_multi_token_report import reproduce

    _, written = reproduce(tmp_path, kept=3, ds=(4,), block=6, chunk=6, pilot=1, workers=0)
    saved = read_json(tmp_path / "results.json")
    (row,) = saved["by_d"]
    assert {"d", "svmeq", "mm", "one_token", "kept_runs"} <= set(row)
    assert row["kept_runs"] == 3 and saved["benchmark"]["speedup"] > 0
    outcomes = np.concatenate(
        [load_arrays(tmp_path / r / "runs.npz")["outcome"] for r in row["run_dirs"]]
    )
    assert len(row["run_dirs"]) > 1  # the pilot block kept too few: more blocks were run
    third = np.flatnonzero(outcomes == 0)[2]
    assert row["seeds_examined"] == third + 1  # seeds 1 .. the third kept one
    assert {p.name for p in written} == {"results.json", "results.md", "svm_multi_token.png"}


def test_bootstrap_interval_brackets_the_mean():
    from attnlab.studies.svm_multi_token_report import bootstrap

    values = np.random.default_rng(1).exponential(size=400)
    lo, hi = bootstrap(values)
    assert lo < values.mean() < hi and hi - lo < 0.4
    assert bootstrap(np.full(10, 0.25)) == [0.25, 0.25]
