"""In-context linear regression: the task's distribution, Gamma and R(M) against Monte Carlo, the
one-step-GD and sensitivity formulas, the model with the linear form and the squared loss
(whole-model finite differences), bit-identical resume from a stream, and a reduced reproduction.

Monte Carlo checks compare a sample mean with the formula within 5 standard errors of that mean
(the standard error estimated from the same sample), so they fail when a formula is off by more
than the sampling noise and pass with probability about 1 - 6e-7 per entry otherwise.
"""

import json

import numpy as np
import pytest
from gradcheck import check_gradient, numerical_gradient, rel_error

from attnlab import ContextWindowModel, make_task
from attnlab.studies.icl import (
    DEFAULTS,
    compare_with_gd,
    gamma,
    gd_sensitivity,
    layer_sensitivity,
    linear_predict,
    make_model,
    off_block_norm,
    one_step_gd,
    paper_init,
    prepare,
    product,
    reproduce,
    risk,
    run_experiment,
    scale_inputs,
    shift_risk,
)
from attnlab.studies.icl import rel_error as icl_rel_error
from attnlab.tasks import covariance_matrix, regression_prompts
from mlp.train.trainer import TrainingInterrupted

SPREAD3 = np.diag([0.5, 1.25, 2.0])


def _within_5_se(samples: np.ndarray, expected: np.ndarray | float) -> None:
    """``mean(samples, axis=0)`` equals ``expected`` within 5 standard errors, entrywise."""
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    z = np.abs(mean - expected) / se
    assert np.all(z < 5), f"mean {mean} vs {expected}: {np.max(z):.1f} standard errors"


def _prompts(n: int, M: int, Lambda: np.ndarray, seed: int = 0):
    data = regression_prompts(n, M, Lambda, np.random.default_rng(seed))
    return data.X, data.y


# --- the task --------------------------------------------------------------------------------


def test_prompt_layout_shapes_and_the_query_column() -> None:
    task = make_task("linear-regression-in-context", d=3, N=7, batch_size=11, n_test=13)
    batch = task.train.batch(0)
    assert batch.X.shape == (11, 4, 8) and batch.y.shape == (11,)
    assert task.test.X.shape == (13, 4, 8) and task.d == 4 and task.n_classes == 1
    assert np.all(batch.X[:, 3, 7] == 0)  # the query's label slot
    np.testing.assert_array_equal(task.info["Lambda"], np.eye(3))


def test_labels_and_target_come_from_one_w_per_prompt() -> None:
    """With N >= d examples, ``w`` is recovered exactly from ``(x_i, y_i)``; the target is then
    ``<w, x_q>``, and different prompts have different ``w``."""
    E, t = _prompts(50, 6, SPREAD3)
    ws = []
    for i in range(50):
        w, *_ = np.linalg.lstsq(E[i, :3, :6].T, E[i, 3, :6], rcond=None)
        np.testing.assert_allclose(E[i, :3, :6].T @ w, E[i, 3, :6], atol=1e-10)
        assert t[i] == pytest.approx(w @ E[i, :3, 6], abs=1e-10)
        ws.append(w)
    assert np.std(ws, axis=0).min() > 0.5


def test_moments_of_x_and_y() -> None:
    """``x ~ N(0, Lambda)`` (mean 0, covariance Lambda) and ``y = <w, x>`` with ``w ~ N(0, I)``:
    mean 0, ``E[y^2] = tr(Lambda)``; the same for the target."""
    E, t = _prompts(40_000, 3, SPREAD3)
    x = E[:, :3, :].transpose(0, 2, 1).reshape(-1, 3)  # every x, examples and queries
    _within_5_se(x, np.zeros(3))
    outer = (x[:, :, None] * x[:, None, :]).reshape(len(x), 9)
    _within_5_se(outer, SPREAD3.reshape(9))
    y = E[:, 3, :3].reshape(-1)
    _within_5_se(y, 0.0)
    _within_5_se(y**2, np.trace(SPREAD3))
    _within_5_se(t**2, np.trace(SPREAD3))


def test_stream_is_a_pure_function_of_seed_and_step_and_test_is_apart() -> None:
    a = make_task("linear-regression-in-context", seed=3, batch_size=4, n_test=4)
    b = make_task("linear-regression-in-context", seed=3, batch_size=4, n_test=4)
    np.testing.assert_array_equal(a.train.batch(5).X, b.train.batch(5).X)
    np.testing.assert_array_equal(a.test.X, b.test.X)
    assert not np.array_equal(a.train.batch(5).X, a.train.batch(6).X)
    assert not np.array_equal(a.train.batch(0).X, a.test.X)
    other = make_task("linear-regression-in-context", seed=4, batch_size=4, n_test=4)
    assert not np.array_equal(a.train.batch(5).X, other.train.batch(5).X)


@pytest.mark.parametrize(
    ("covariance", "match"),
    [
        ("diagonal", r"covariance: expected one of 'identity', 'spread', received 'diagonal'"),
        (np.eye(2), r"covariance: expected shape \(d=3, d=3\), received \(2, 2\)"),
        (-np.eye(3), r"covariance: expected a symmetric positive definite matrix"),
        (np.triu(np.ones((3, 3))), r"covariance: expected a symmetric positive definite"),
    ],
)
def test_covariance_errors(covariance: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        covariance_matrix(covariance, 3)


def test_spread_covariance_is_written_out() -> None:
    np.testing.assert_allclose(
        covariance_matrix("spread", 5), np.diag([0.5, 0.875, 1.25, 1.625, 2.0]), rtol=1e-15
    )


# --- Gamma, R(M) and the shift against Monte Carlo -------------------------------------------


def test_gamma_written_out_and_against_monte_carlo() -> None:
    """``E[h h^T] = Lambda Gamma`` for ``h = (1/N) sum_i y_i x_i``: ``h = Lambda_hat w`` and
    ``E[Lambda_hat^2] = (1 + 1/N) Lambda^2 + (tr(Lambda) / N) Lambda``."""
    N = 4
    G = gamma(SPREAD3, N)
    np.testing.assert_allclose(G, np.diag([0.5, 1.25, 2.0]) * 1.25 + np.eye(3) * 3.75 / 4)
    E, _ = _prompts(100_000, N, SPREAD3, seed=1)
    h = np.einsum("ndc,nc->nd", E[:, :3, :N], E[:, 3, :N]) / N
    _within_5_se((h[:, :, None] * h[:, None, :]).reshape(-1, 9), (SPREAD3 @ G).reshape(9))


@pytest.mark.parametrize("M", [4, 9])
@pytest.mark.parametrize("which", ["optimum", "other"])
def test_risk_against_monte_carlo(M: int, which: str) -> None:
    """``R(M)`` of ``A = Gamma_4^-1`` (trained at N = 4) and of another ``A``, tested at M."""
    A = np.linalg.inv(gamma(SPREAD3, 4))
    if which == "other":
        A = A + 0.3 * np.random.default_rng(2).standard_normal((3, 3))
    E, t = _prompts(100_000, M, SPREAD3, seed=3)
    _within_5_se((linear_predict(E, A) - t) ** 2 / 2, risk(A, SPREAD3, M))


def test_gamma_inverse_minimizes_the_risk() -> None:
    """The gradient of ``R(N)`` in ``A`` vanishes at ``Gamma^-1``; any other ``A`` is worse."""
    A = np.linalg.inv(gamma(SPREAD3, 5))
    grad = numerical_gradient(lambda a: risk(a, SPREAD3, 5), A.copy())
    assert np.abs(grad).max() < 1e-8
    rng = np.random.default_rng(4)
    for _ in range(5):
        assert risk(A + 0.01 * rng.standard_normal((3, 3)), SPREAD3, 5) > risk(A, SPREAD3, 5)


def test_shift_risk_against_monte_carlo() -> None:
    A = np.linalg.inv(gamma(np.eye(3), 5))
    assert shift_risk(A, np.eye(3), 5, 1.0) == pytest.approx(risk(A, np.eye(3), 5), rel=1e-14)
    data = regression_prompts(100_000, 5, np.eye(3), np.random.default_rng(5))
    shifted = scale_inputs(1.5)(data)
    np.testing.assert_allclose(shifted.X[:, :3], 1.5 * data.X[:, :3])
    losses = (linear_predict(shifted.X, A) - shifted.y) ** 2 / 2
    _within_5_se(losses, shift_risk(A, np.eye(3), 5, 1.5))


# --- one step of GD and the sensitivities ----------------------------------------------------


def test_identity_optimum_is_one_gd_step_with_eta_n_over_n_d_1() -> None:
    d, N = 4, 10
    eta = N / (N + d + 1)
    np.testing.assert_allclose(np.linalg.inv(gamma(np.eye(d), N)), eta * np.eye(d), rtol=1e-14)
    E, _ = _prompts(20, N, np.eye(d))
    ls = []  # one GD step from w = 0 on (1/2N) sum (y_i - w^T x_i)^2, written out
    for i in range(20):
        x, y = E[i, :d, :N], E[i, d, :N]
        w = -eta * (-(x @ y) / N)
        ls.append(w @ E[i, :d, N])
    np.testing.assert_allclose(one_step_gd(E, eta), ls, rtol=1e-12)
    np.testing.assert_allclose(linear_predict(E, eta * np.eye(d)), ls, rtol=1e-12)


def test_sensitivities_against_finite_differences() -> None:
    """``d yhat / d x_q`` of the layer (any ``W``, ``v``) and of one GD step."""
    rng = np.random.default_rng(6)
    d, N = 3, 5
    model = make_model(d)
    model.params["W"] = rng.standard_normal((d + 1, d + 1))
    model.params["v"] = rng.standard_normal((d + 1, 1))
    E, _ = _prompts(4, N, np.eye(d))
    sens = layer_sensitivity(E, model.params["W"], model.params["v"])
    gd = gd_sensitivity(E, 0.7)
    for i in range(4):
        xq = E[i, :d, N].copy()

        def at(x: np.ndarray, f, i: int = i) -> float:
            Ei = E[i : i + 1].copy()
            Ei[0, :d, N] = x
            return float(f(Ei)[0])

        num = numerical_gradient(lambda x: at(x, model.predict), xq.copy())
        assert rel_error(sens[i], num) < 1e-7
        num_gd = numerical_gradient(lambda x: at(x, lambda e: one_step_gd(e, 0.7)), xq.copy())
        assert rel_error(gd[i], num_gd) < 1e-7


def test_compare_with_gd_at_the_closed_form_is_exact() -> None:
    """Parameters with ``u W11 = Gamma^-1`` and zero off-blocks are one GD step exactly."""
    d, N = 3, 8
    params = {"W": np.zeros((d + 1, d + 1)), "v": np.zeros((d + 1, 1))}
    params["W"][:d, :d] = np.linalg.inv(gamma(np.eye(d), N)) / 2.0
    params["v"][d, 0] = 2.0
    gd, yhat, ygd = compare_with_gd(params, d, N, seed=0, n=500)
    assert gd["eta"] == N / (N + d + 1) and yhat.shape == ygd.shape == (500,)
    assert gd["cosine"] == pytest.approx(1.0, abs=1e-12) and gd["rel_l2"] < 1e-12
    assert gd["sensitivity_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert icl_rel_error(params, np.eye(d), N) < 1e-15 and off_block_norm(params) == 0.0


# --- the init and the metrics ----------------------------------------------------------------


def test_paper_init() -> None:
    p = paper_init(4, 0.1, seed=3)
    W, v = p["W"], p["v"]
    assert W.shape == (5, 5) and v.shape == (5, 1)
    TT = W[:4, :4] / 0.1
    assert np.linalg.norm(TT) == pytest.approx(1.0, rel=1e-14)
    np.testing.assert_allclose(TT, TT.T, atol=1e-15)
    assert np.linalg.eigvalsh(TT).min() > -1e-15  # Theta Theta^T is positive semidefinite
    assert np.all(W[4] == 0) and np.all(W[:, 4] == 0)
    assert v[:, 0].tolist() == [0.0, 0.0, 0.0, 0.0, 0.1]
    assert off_block_norm(p) == 0.0
    np.testing.assert_allclose(product(p), 0.1 * W[:4, :4])


def test_off_block_norm_written_out() -> None:
    W = np.arange(9.0).reshape(3, 3)
    v = np.array([[1.0], [2.0], [3.0]])
    expected = np.sqrt(2**2 + 5**2 + 6**2 + 7**2 + 8**2 + 1**2 + 2**2)
    assert off_block_norm({"W": W, "v": v}) == pytest.approx(expected, rel=1e-15)


# --- the model: linear form, squared loss ----------------------------------------------------


def test_model_prediction_is_the_formula_written_out() -> None:
    """``yhat = v^T E E^T W e_q / N`` per prompt (pool last: only the query column)."""
    rng = np.random.default_rng(7)
    model = make_model(3)
    model.params["W"] = rng.standard_normal((4, 4))
    model.params["v"] = rng.standard_normal((4, 1))
    E, _ = _prompts(5, 6, np.eye(3))
    W, v = model.params["W"], model.params["v"][:, 0]
    expected = [v @ E[i] @ E[i].T @ W @ E[i, :, -1] / 6 for i in range(5)]
    np.testing.assert_allclose(model.predict(E), expected, rtol=1e-12)
    assert model.attention_weights(E).shape == (5, 7, 7)  # every query column, A / N
    np.testing.assert_allclose(
        model.attention_weights(E), np.einsum("ndc,de,nej->ncj", E, W, E) / 6, rtol=1e-12
    )


CONFIGS = [
    (attention, pool, loss)
    for attention in ("prompt", "self", "kq", "cross")
    for pool in ("mean", "last")
    for loss in ("squared", "logistic")
]


@pytest.mark.parametrize(("attention", "pool", "loss"), CONFIGS)
def test_linear_scores_every_parameter_matches_finite_differences(attention, pool, loss) -> None:
    rng = np.random.default_rng([len(attention), len(pool), len(loss)])
    model = ContextWindowModel(
        3, attention=attention, pool=pool, scores="linear", loss=loss, n_queries=2, rank=2
    )
    X = rng.standard_normal((4, 3, 5))
    y = rng.standard_normal(4) if loss == "squared" else rng.choice([-1.0, 1.0], size=4)
    inputs = {"Z": rng.standard_normal((4, 3, 2))} if attention == "cross" else {}
    _, grads = model.loss_and_grads(X, y, **inputs)
    for key, g in grads.items():
        assert np.abs(g).max() > 1e-4, key
        check_gradient(lambda _: model.loss_and_grads(X, y, **inputs)[0], model.params[key], g)
    m = model.metrics(X, y, **inputs)
    assert set(m) == ({"loss"} if loss == "squared" else {"loss", "accuracy"})


@pytest.mark.parametrize("scores", ["softmax", "linear"])
@pytest.mark.parametrize("attention", ["self", "kq"])
def test_pool_last_computes_only_the_last_query_and_agrees_with_all(scores, attention) -> None:
    """Pool last computes the query of the last token alone: its output is the last column of
    the weights that ``attention_weights`` computes for every query column, and its gradients
    match finite differences."""
    rng = np.random.default_rng(8)
    model = ContextWindowModel(3, attention=attention, pool="last", scores=scores, rank=2)
    X = rng.standard_normal((4, 3, 6))
    y = rng.choice([-1.0, 1.0], size=4)
    S = model.attention_weights(X)  # every column, computed independently of the pool
    u = np.einsum("ndc,nc->nd", X, S[:, :, -1])
    np.testing.assert_allclose(model.forward(X), u @ model.params["v"], rtol=1e-12)
    _, grads = model.loss_and_grads(X, y)
    for key, g in grads.items():
        check_gradient(lambda _: model.loss_and_grads(X, y)[0], model.params[key], g, name=key)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: ContextWindowModel(3, scores="cosine"), ValueError,
         r"scores: expected one of 'softmax', 'linear', received 'cosine'"),
        (lambda: ContextWindowModel(3, loss="hinge"), ValueError,
         r"loss: expected one of 'logistic', 'cross_entropy', 'squared', received 'hinge'"),
        (lambda: ContextWindowModel(3, n_classes=3, loss="squared"), ValueError,
         r"loss: 'squared' needs n_classes=1, received n_classes=3"),
        (lambda: ContextWindowModel(3, loss="cross_entropy"), ValueError,
         r"loss: 'cross_entropy' needs n_classes >= 2, received n_classes=1"),
        (lambda: make_model(2).loss_and_grads(np.ones((2, 3, 1)), [0.0, 1.0]), ValueError,
         r"X: the linear form divides by N = c - 1 in-context tokens, so it needs c >= 2"),
        (lambda: make_model(2).loss_and_grads(np.ones((2, 3, 4)), [0.0, np.nan]), ValueError,
         r"y: expected finite values, received 1 NaN or inf entries"),
        (lambda: make_model(2).loss_and_grads(np.ones((2, 3, 4)), [0.0]), ValueError,
         r"y: expected real targets of shape \(n=2,\), received \(1,\)"),
    ],
)  # fmt: skip
def test_model_errors(build, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build()


# --- training: the stream, averaging, resume -------------------------------------------------

SMALL = {"d": 2, "N": 6, "steps": 40, "batch_size": 16, "n_history": 64, "n_test": 256}


def test_resume_from_the_stream_is_bit_identical(tmp_path) -> None:
    """Interrupted at step 25 (inside the averaging window), resumed from the checkpoint: the
    live and the averaged parameters equal those of a run never interrupted, bit for bit."""
    config = {**SMALL, "average": 0.5, "covariance": "spread", "seed": 2}
    whole = prepare(config)
    whole.trainer.run()
    whole.finish()

    ckpt = tmp_path / "checkpoint.npz"
    first = prepare(config, checkpoint=ckpt)

    def stop_at_25(step: int, params: dict) -> None:
        if step == 25:
            raise KeyboardInterrupt

    first.trainer.on_step = stop_at_25
    with pytest.raises(TrainingInterrupted):
        first.trainer.run()
    again = prepare(config, checkpoint=ckpt)
    again.trainer.resume(ckpt)
    assert again.trainer.step == 25
    again.trainer.run()
    again.finish()
    for key in whole.model.params:
        np.testing.assert_array_equal(again.model.params[key], whole.model.params[key])


def test_training_approaches_gamma_inverse() -> None:
    run = prepare({**SMALL, "steps": 600, "batch_size": 64, "lr": 0.05})
    start = run.errors[0]
    run.trainer.run()
    run.finish()
    final = icl_rel_error(run.model.params, np.eye(2), 6)
    assert start > 0.9 and final < 0.1
    assert len(run.steps) == len(run.errors) and run.steps[-1] == 600


def test_reproduction_runs_on_the_sweep_equal_runs_in_this_process(tmp_path) -> None:
    results = reproduce(
        tmp_path / "two", d=2, N=6, seeds=[0, 1], steps=150, n_test=200, n_gd=50, workers=2
    )
    for r in results["runs"]:
        config = json.loads((tmp_path / "two" / r["run_dir"] / "config.json").read_text())
        config = {k: v for k, v in config.items() if k in DEFAULTS}
        here = run_experiment(config, tmp_path / f"{r['covariance']}-{r['seed']}")
        for key in ("rel_error", "u", "off_block_norm", "test_loss", "closed_form_loss"):
            assert here[key] == r[key], (r["covariance"], r["seed"], key)


def test_reduced_reproduction_writes_every_file(tmp_path) -> None:
    lines: list[str] = []
    results = reproduce(
        tmp_path, d=2, N=6, seeds=[1], steps=300, n_test=500, n_gd=200, workers=1,
        log=lines.append,
    )  # fmt: skip
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert set(on_disk) == {"runs", "length", "gd", "shift"}
    run_keys = ["covariance", "seed", "run_dir", "rel_error", "u", "off_block_norm",
                "test_loss", "closed_form_loss", "wall_s"]  # fmt: skip
    assert [list(r) for r in on_disk["runs"]] == [run_keys, run_keys]
    assert [(r["covariance"], r["seed"]) for r in on_disk["runs"]] == [
        ("identity", 1),
        ("spread", 1),
    ]
    assert [r["M"] for r in on_disk["length"]] == [5, 10, 20, 40, 80, 160]
    assert all(set(r) == {"M", "measured", "theory"} for r in on_disk["length"])
    assert set(on_disk["gd"]) == {"eta", "cosine", "rel_l2", "sensitivity_cosine"}
    assert [r["c"] for r in on_disk["shift"]] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert on_disk["runs"][0]["rel_error"] == pytest.approx(results["runs"][0]["rel_error"])
    for r in on_disk["runs"]:
        folder = tmp_path / r["run_dir"]
        with np.load(folder / "params.npz") as f:
            assert f["W"].shape == (3, 3) and f["v"].shape == (3, 1)
        config = json.loads((folder / "config.json").read_text())
        assert {k: config[k] for k in ("d", "N", "sigma", "covariance", "seed")} == {
            "d": 2, "N": 6, "sigma": 0.1, "covariance": r["covariance"], "seed": 1,
        }  # fmt: skip
    for name in ("results.md", "rel_error.png", "length.png", "gd.png", "shift.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "R(M)" in (tmp_path / "results.md").read_text()
    assert len(lines) == 4  # two runs, the length curve, the GD comparison
    assert all(
        (tmp_path / r["run_dir"]).parent == tmp_path / "sweep" / "runs" for r in on_disk["runs"]
    )
