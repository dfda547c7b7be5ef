"""The (K, Q) max-margin experiment: factor gradients, the correlation with W_*, the script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gradcheck import check_gradient

from attnlab.max_margin import kq_loss_and_grads, run_max_margin_kq
from attnlab.model import ContextWindowModel
from attnlab.tasks import max_margin

pytest.importorskip("cvxpy")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_max_margin.py"


@pytest.mark.parametrize("rank", [3, 10])
def test_factor_gradients_match_finite_differences(rank):
    task = max_margin(seed=1)
    X, y, Z, d = task.train.X, task.train.y, task.train.Z, task.d
    model = ContextWindowModel(d, attention="cross", pool="mean", head="linear")
    model.params["v"] = task.info["v"][:, None].copy()
    rng = np.random.default_rng(7)
    WK, WQ = rng.standard_normal((d, rank)), rng.standard_normal((d, rank))
    _, dWK, dWQ = kq_loss_and_grads(model, WK, WQ, X, y, Z)

    def loss() -> float:
        # an independent forward: the scores x_t^T WK WQ^T z through the model's W
        model.params["W"] = WK @ WQ.T
        return model.loss_and_grads(X, y, Z)[0]

    assert check_gradient(lambda _: loss(), WK, dWK, name="WK") < 1e-6
    assert check_gradient(lambda _: loss(), WQ, dWQ, name="WQ") < 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kq_product_aligns_with_the_nuclear_svm(seed):
    run = run_max_margin_kq(seed, iterations=2000)
    # measured (20 seeds, 2000 iterations): seeds 0, 1, 2 end at 0.989, 0.981, 0.971
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
        run_max_margin_kq(0, iterations=5, init="zero")
    with pytest.raises(ValueError, match="rank"):
        run_max_margin_kq(0, iterations=5, rank=0)
    model = ContextWindowModel(4, attention="cross")
    with pytest.raises(ValueError, match=r"WQ: expected the shape of WK \(4, 2\)"):
        kq_loss_and_grads(
            model,
            np.ones((4, 2)),
            np.ones((4, 3)),
            np.ones((1, 4, 3)),
            np.ones(1),
            np.ones((1, 4, 1)),
        )


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
