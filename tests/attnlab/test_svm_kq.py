"""The (K, Q) study: the log-space gradient (its loop reference, finite differences, the float64
model where that is exact, the 50-digit reference where float64's gradient is exactly zero), the
penalty, one run of each variant and the report's fields."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from gradcheck import check_gradient, rel_error

from attnlab.models.context_window import ContextWindowModel
from attnlab.models.logspace import LogSpaceKQModel, log_gradient, log_gradient_loop
from attnlab.models.penalized import Penalized
from attnlab.tasks import fixed_head, max_margin
from mlp.train.folders import load_arrays, read_json

pytest.importorskip("cvxpy")


def _setting(seed: int = 3, scale: float = 1.0, rank: int = 10) -> tuple:
    """The max-margin data, random factors times ``scale``, a log-space model and a float64
    cross-kq model at those factors."""
    task = max_margin(seed=seed)
    rng = np.random.default_rng(seed + 100)
    WK, WQ = scale * rng.standard_normal((2, task.d, rank))
    logspace = LogSpaceKQModel(task.d, rank=rank)
    logspace.params.update(WK=WK.copy(), WQ=WQ.copy(), v=task.info["v"][:, None].copy())
    exact = ContextWindowModel(task.d, attention="cross-kq", rank=rank)
    fixed_head(task, exact)
    exact.params.update(WK=WK.copy(), WQ=WQ.copy())
    return task, logspace, exact


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_gradient_matches_its_loop_and_the_float64_model(seed):
    task, logspace, exact = _setting(seed)
    X, y, Z = task.train.X, task.train.y, task.train.Z
    W = logspace.params["WK"] @ logspace.params["WQ"].T
    M, G, J = log_gradient(X, Z[:, :, 0], y, task.info["v"], W)
    M2, G2, J2 = log_gradient_loop(X, Z[:, :, 0], y, task.info["v"], W)
    assert G.shape == (task.d, task.d) and np.isfinite(M)
    assert abs(M - M2) < 1e-12 * max(1.0, abs(M)) and rel_error(G, G2) < 1e-12
    assert J == pytest.approx(J2, rel=1e-14)
    assert np.abs(G).max() == pytest.approx(1.0, rel=1.5)  # factored to order 1
    loss, grads = exact.loss_and_grads(X, y, Z)
    assert J == pytest.approx(loss, rel=1e-13)
    for key, g in logspace.gradients(X, y, Z).items():
        assert g.shape == exact.params[key].shape
        assert rel_error(g, grads[key]) < 1e-11, key


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.0])
def test_log_gradient_finite_differences(scale):
    task, logspace, _ = _setting(4, scale)
    X, y, Z = task.train.X, task.train.y, task.train.Z

    def loss(_: np.ndarray) -> float:
        return logspace.loss_and_grads(X, y, Z)[0]

    grads = logspace.gradients(X, y, Z)
    for key in ("WK", "WQ"):
        assert check_gradient(loss, logspace.params[key], grads[key], name=key) < 1e-6


@pytest.mark.parametrize("scale", [30.0, 100.0, 300.0])
def test_log_gradient_keeps_its_digits_where_float64_is_exactly_zero(scale):
    """Against the 50-digit mpmath gradient: float64's plain gradient is exactly zero at these
    scores (relative error 1); the log-space one keeps about 1e-16 times the scores' size."""
    pytest.importorskip("mpmath")
    from attnlab.precision import kq_gradient_reference, scaled_relative_error

    task, logspace, exact = _setting(5, scale)
    X, y, Z = task.train.X, task.train.y, task.train.Z
    p = logspace.params
    reference = kq_gradient_reference(X, Z[:, :, 0], y, task.info["v"], p["WK"], p["WQ"])
    _, scaled = logspace.loss_and_grads(X, y, Z)
    _, plain = exact.loss_and_grads(X, y, Z)
    scores = np.abs(np.einsum("ndc,de,ne->nc", X, p["WK"] @ p["WQ"].T, Z[:, :, 0])).max()
    for key in ("WK", "WQ"):
        error = scaled_relative_error(scaled[key], logspace.log_scale, reference[key])
        assert error < 1e-15 * scores, (key, error, scores)
        if scale >= 100:
            assert not np.any(plain[key])  # underflowed to exactly 0 in float64
            assert scaled_relative_error(plain[key], 0.0, reference[key]) == 1.0
    assert logspace.log_scale < math.log(np.finfo(np.float64).tiny) or scale < 100


def test_reference_agrees_with_float64_at_moderate_scores():
    pytest.importorskip("mpmath")
    from attnlab.precision import kq_gradient_reference, scaled_relative_error

    task, _, exact = _setting(6)
    X, y, Z = task.train.X, task.train.y, task.train.Z
    p = exact.params
    reference = kq_gradient_reference(X, Z[:, :, 0], y, task.info["v"], p["WK"], p["WQ"])
    _, grads = exact.loss_and_grads(X, y, Z)
    for key in ("WK", "WQ"):
        assert scaled_relative_error(grads[key], 0.0, reference[key]) < 1e-13
    with pytest.raises(ValueError, match=r"WK, WQ: expected two arrays of shape \(d=10, r\)"):
        kq_gradient_reference(X, Z[:, :, 0], y, task.info["v"], p["WK"], p["WQ"][:3])


def test_penalized_adds_the_squared_norms_and_their_gradient():
    task, _, exact = _setting(7)
    X, y, Z = task.train.X, task.train.y, task.train.Z
    eps = 1e-3
    model = Penalized(exact, eps, ("WK", "WQ"))
    assert model.params is exact.params and model.config["penalty"] == eps
    loss, grads = model.loss_and_grads(X, y, Z=Z)
    base, base_grads = exact.loss_and_grads(X, y, Z)
    norms = sum(float(np.sum(exact.params[k] ** 2)) for k in ("WK", "WQ"))
    assert loss == pytest.approx(base + eps * norms, rel=1e-14)
    np.testing.assert_array_equal(grads["v"], base_grads["v"])  # not penalized

    def f(_: np.ndarray) -> float:
        return model.loss_and_grads(X, y, Z=Z)[0]

    for key in ("WK", "WQ"):
        assert check_gradient(f, exact.params[key], grads[key], name=key) < 1e-6


@pytest.mark.parametrize(
    ("eps", "keys", "match"),
    [(-1.0, ["WK"], "eps: expected a finite number >= 0"), (1e-3, ["A"], "keys: expected some")],
)
def test_penalized_refuses_bad_options(eps, keys, match):
    _, _, exact = _setting()
    with pytest.raises(ValueError, match=match):
        Penalized(exact, eps, keys)


def test_logspace_model_checks_its_inputs():
    task, logspace, _ = _setting()
    X, y, Z = task.train.X, task.train.y, task.train.Z
    with pytest.raises(ValueError, match="Z: expected shape"):
        logspace.loss_and_grads(X, y, Z[:3])
    with pytest.raises(ValueError, match="y"):
        logspace.loss_and_grads(X, np.zeros(6), Z)
    logspace.params["WK"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"params\['WK'\]: expected shape"):
        logspace.loss_and_grads(X, y, Z)


def test_authors_recipe_is_the_same_on_the_float64_model():
    """The authors' variant takes its loss gradients from the log-space model (``scaled=False``);
    on the float64 cross-kq model the same recipe follows the same path."""
    from attnlab.studies.svm_kq import EPS
    from mlp.train.optim import NormalizedGD

    task, logspace, exact = _setting(8, scale=0.3)
    logspace.scaled = False
    X, y, Z = task.train.X, task.train.y, task.train.Z
    models = [Penalized(m, EPS, ("WK", "WQ")) for m in (logspace, exact)]
    for _ in range(300):
        for model in models:
            _, grads = model.loss_and_grads(X, y, Z=Z)
            NormalizedGD(per_param=True, eps=EPS).step(
                model.params, {k: grads[k] for k in ("WK", "WQ")}, 0.1
            )
    for key in ("WK", "WQ"):
        assert rel_error(logspace.params[key], exact.params[key]) < 1e-8, key
    assert np.linalg.norm(exact.params["WK"]) > 10  # the scores are large: the softmax saturated


@pytest.mark.parametrize("variant", ["authors", "logspace", "plain"])
def test_one_run_of_each_variant(tmp_path, variant):
    from attnlab.studies.svm_kq import resolve, run_experiment

    steps = 800 if variant == "plain" else 200
    metrics = run_experiment({"seed": 2, "variant": variant, "steps": steps}, tmp_path / "run")
    run = tmp_path / "run"
    assert read_json(run / "metrics.json") == json.loads(json.dumps(metrics))
    task = load_arrays(run / "task.npz")
    assert {k: v.shape for k, v in task.items()} == {
        "X": (6, 10, 8),
        "Z": (6, 10),
        "y": (6,),
        "v": (10,),
    }
    params = load_arrays(run / "params.npz")
    assert sorted(params) == ["WK", "WQ"] and params["WK"].shape == (10, 10)
    curves = load_arrays(run / "curves.npz")
    assert all(c.shape == (steps + 1,) for c in curves.values())
    assert metrics["max_softmax_150"] > 0.99 and metrics["correlation"] > 0.9
    assert metrics["nuclear_kkt"] < 1e-6
    if variant == "plain":  # the float64 gradient underflows to exactly 0 and the run stalls
        assert metrics["stalled_at"] is not None and 300 < metrics["stalled_at"] < steps
        assert curves["correlation"][-1] == curves["correlation"][metrics["stalled_at"]]
    else:
        assert metrics["stalled_at"] is None
    if variant == "authors":  # the penalty bounds the factors
        assert metrics["norm_WK"] < 20
    with pytest.raises(ValueError, match="variant: expected one of"):
        resolve({"variant": "torch"})


def test_reproduce_writes_the_fields(tmp_path):
    from attnlab.studies.svm_kq_report import reproduce

    _, written = reproduce(tmp_path, seeds=2, steps=160, long_steps=180, worst=1, workers=0)
    saved = read_json(tmp_path / "results.json")
    assert len(saved["runs"]) == 6 and len(saved["long_runs"]) == 1
    for run in saved["runs"]:
        for field in (
            "variant",
            "seed",
            "run_dir",
            "correlation",
            "max_softmax_150",
            "max_softmax",
        ):
            assert field in run
        assert (tmp_path / run["run_dir"] / "params.npz").is_file()
        assert (tmp_path / run["run_dir"] / "task.npz").is_file()
    worst = saved["logspace_worst"][0]
    assert set(worst) == {"seed", "correlation_160", "correlation_180"}
    assert {p.name for p in written} >= {
        "results.json",
        "results.md",
        "svm_kq_correlation.png",
        "svm_kq_norms.png",
        "svm_kq_long.png",
    }
    assert "| authors |" in (tmp_path / "results.md").read_text()
