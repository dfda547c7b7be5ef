"""The (K, Q) max-margin experiment: the cross-kq model against cross attention at W = WK WQ^T,
the trainer's run against the explicit per-factor loop, the correlation with W_*, the script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gradcheck import check_gradient

from attnlab.models.context_window import ContextWindowModel
from attnlab.studies.max_margin import run_max_margin_kq
from attnlab.tasks import fixed_head, max_margin
from mlp.train.optim import NormalizedGD, ZeroGradientError

pytest.importorskip("cvxpy")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_max_margin.py"


def _models(rank: int, seed: int = 1) -> tuple:
    """The max-margin data, a cross-kq model with random factors and a cross model at their
    product, both with the task's fixed head."""
    task = max_margin(seed=seed)
    kq = ContextWindowModel(task.d, attention="cross-kq", rank=rank, pool="mean", head="linear")
    cross = ContextWindowModel(task.d, attention="cross", pool="mean", head="linear")
    assert fixed_head(task, kq) == ["WK", "WQ"] and fixed_head(task, cross) == ["W"]
    rng = np.random.default_rng(7)
    kq.params["WK"], kq.params["WQ"] = rng.standard_normal((2, task.d, rank))
    cross.params["W"] = kq.params["WK"] @ kq.params["WQ"].T
    return task, kq, cross


@pytest.mark.parametrize("rank", [3, 10])
def test_cross_kq_is_cross_attention_at_the_product(rank):
    task, kq, cross = _models(rank)
    X, y, Z = task.train.X, task.train.y, task.train.Z
    loss, grads = kq.loss_and_grads(X, y, Z)
    loss_w, grads_w = cross.loss_and_grads(X, y, Z)
    assert loss == loss_w
    dW = grads_w["W"]
    np.testing.assert_array_equal(grads["WK"], dW @ kq.params["WQ"])
    np.testing.assert_array_equal(grads["WQ"], dW.T @ kq.params["WK"])

    def loss_of(_: np.ndarray) -> float:
        return kq.loss_and_grads(X, y, Z)[0]

    assert check_gradient(loss_of, kq.params["WK"], grads["WK"], name="WK") < 1e-6
    assert check_gradient(loss_of, kq.params["WQ"], grads["WQ"], name="WQ") < 1e-6


def test_kq_run_is_the_explicit_per_factor_loop():
    """The trainer's run equals per-factor normalized GD written out on the cross model."""
    steps, seed = 800, 0
    run = run_max_margin_kq(seed, steps=steps)
    task = max_margin(seed=seed)
    X, y, Z, d = task.train.X, task.train.y, task.train.Z, task.d
    cross = ContextWindowModel(d, attention="cross", pool="mean", head="linear")
    fixed_head(task, cross)
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(d)
    factors = {k: rng.uniform(-bound, bound, (d, d)) for k in ("WK", "WQ")}
    optimizer = NormalizedGD(per_param=True)
    Ws = [factors["WK"] @ factors["WQ"].T]
    for _ in range(steps):
        cross.params["W"] = factors["WK"] @ factors["WQ"].T
        dW = cross.loss_and_grads(X, y, Z)[1]["W"]
        try:
            optimizer.step(factors, {"WK": dW @ factors["WQ"], "WQ": dW.T @ factors["WK"]}, 0.1)
        except ZeroGradientError:
            break
        Ws.append(factors["WK"] @ factors["WQ"].T)
    norms = np.linalg.norm(np.reshape(Ws, (len(Ws), -1)), axis=1)
    assert run.stopped == len(norms) - 1 < steps
    np.testing.assert_array_equal(run.norm[: len(norms)], norms)
    assert np.all(run.norm[run.stopped :] == norms[-1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kq_product_aligns_with_the_nuclear_svm(seed):
    run = run_max_margin_kq(seed, steps=2000)
    # measured (20 seeds, 2000 steps): seeds 0, 1, 2 end at 0.989, 0.981, 0.971
    assert abs(run.correlation[0]) < 0.3  # the random init is far from W_*
    assert run.correlation[-1] > 0.96
    assert run.correlation[-1] > run.correlation[50] + 0.02
    # closer to the nuclear-norm SVM than to the Frobenius one
    assert run.correlation[-1] > run.correlation_frobenius[-1] + 0.05
    assert run.probability[-1] > 0.999
    # the gradient underflows to exactly zero once the softmax saturates; the run stops there
    assert run.stopped < 2000 and "stopped at step" in run.stop_reason
    assert np.all(run.norm[run.stopped :] == run.norm[run.stopped])
    assert run.nuclear.margin == pytest.approx(1.0, abs=1e-6)


def test_kq_rejects_bad_options():
    with pytest.raises(ValueError, match="init: expected one of 'uniform', 'small'"):
        run_max_margin_kq(0, steps=5, init="zero")
    with pytest.raises(ValueError, match="rank: expected a positive integer, received 0"):
        run_max_margin_kq(0, steps=5, rank=0)


def test_script_kq_end_to_end(tmp_path):
    out = tmp_path / "run"
    args = ["--seeds", "2", "--iterations", "60", "--kq", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "max_margin_kq_correlation.png").stat().st_size > 0
    res = json.loads((out / "results.json").read_text())
    kq = res["max_margin_kq"]
    curves = np.load(out / "curves.npz")
    assert curves["correlation_kq_nuclear"].shape == (2, 61)
    assert kq["correlation_nuclear_final_mean"] == pytest.approx(
        curves["correlation_kq_nuclear"][:, -1].mean(), abs=1e-12
    )
    assert len(kq["per_seed"]) == 2
    md = (out / "results.md").read_text()
    assert "## max-margin-kq" in md and "with W_* (nuclear), mean" in md
    config = json.loads((out / "config.json").read_text())
    assert config["max_margin_kq"]["model"]["attention"] == "cross-kq"
    assert config["max_margin_kq"]["trainable"] == ["WK", "WQ"]
