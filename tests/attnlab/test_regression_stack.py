"""``RegressionStack``: Ahn et al.'s layers built from the stack's layer. Its prediction against
the loop reference and the numpy model of the study, its hand-written gradients of ``A_l, B_l``
by central differences, the engine's ``trainable`` holding ``B = 0``, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_gradient

from attnlab.models.regression_stack import RegressionStack, regression_stack_loop
from attnlab.studies.icl_depth import forward, prompts
from mlp.train import Adam, Trainer

D, N = 5, 20


def _model(L: int, seed: int, scale: float = 0.3) -> RegressionStack:
    model = RegressionStack(D, L, init_std=scale, seed=seed)
    assert sorted(model.params) == sorted([f"A{l}" for l in range(L)] + [f"B{l}" for l in range(L)])
    assert all(v.shape == (D, D) for v in model.params.values())
    return model


@pytest.mark.parametrize("L", [1, 2, 4])
def test_prediction_matches_the_loop_reference_and_the_numpy_model(L: int) -> None:
    Z = prompts.train_batch(0, 0, n=5, N=6, covariance="rotated").X
    model = _model(L, seed=L)
    A, B = model.stacked()
    assert A.shape == B.shape == (L, D, D)
    yhat = model.predict(Z)
    assert yhat.shape == (5,)
    np.testing.assert_allclose(yhat, regression_stack_loop(Z, A, B), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(yhat, forward.stack_predict(Z, A, B), rtol=1e-12, atol=1e-12)


def test_layer_params_are_the_blocks_q_and_p() -> None:
    model = _model(2, seed=0)
    p = model.layer_params(1)
    assert p["W"].shape == p["V"].shape == (1, D + 1, D + 1)
    np.testing.assert_array_equal(p["W"][0, :D, :D], model.params["A1"])
    np.testing.assert_array_equal(p["V"][0, :D, :D], model.params["B1"])
    assert p["V"][0, D, D] == 1.0
    assert not p["W"][0, D].any() and not p["W"][0, :, D].any()
    assert not p["V"][0, D, :D].any() and not p["V"][0, :D, D].any()


@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("covariance", prompts.COVARIANCES)
def test_gradients_of_a_and_b_by_central_differences(L: int, covariance: str) -> None:
    data = prompts.train_batch(1, 0, n=6, N=7, covariance=covariance)
    model = _model(L, seed=10 + L)
    loss, grads = model.loss_and_grads(data.X, data.y)
    r = model.predict(data.X) - data.y
    assert loss == pytest.approx(float(np.mean(r * r)), rel=1e-12)  # no 1/2
    assert set(grads) == set(model.params)
    for key, p in model.params.items():
        assert grads[key].shape == p.shape
        check_gradient(lambda _: model.loss_and_grads(data.X, data.y)[0], p, grads[key], name=key)
    # the last layer's B never reaches the prediction
    assert not grads[f"B{L - 1}"].any()


def test_gradients_are_fresh_arrays() -> None:
    data = prompts.train_batch(2, 0, n=4, N=5)
    model = _model(2, seed=3)
    _, g1 = model.loss_and_grads(data.X, data.y)
    g1["A0"] += 1.0
    _, g2 = model.loss_and_grads(data.X, data.y)
    assert not np.allclose(g1["A0"], g2["A0"])


def test_trainable_a_alone_keeps_b_zero_and_lowers_the_loss() -> None:
    model = _model(2, seed=4, scale=1e-3)
    for l in range(2):
        model.params[f"B{l}"] = np.zeros((D, D))
    stream = prompts.stream(0, n=64)
    (test,) = prompts.eval_prompts(0, n=512, chunk=512)
    trainer = Trainer(model, Adam(), stream, steps=60, lr=0.02, test=test, eval_every=60,
                      trainable=["A0", "A1"], progress=False)  # fmt: skip
    history = trainer.run()
    assert not model.params["B0"].any() and not model.params["B1"].any()
    assert history.last["test_loss"] < 0.8 * history.rows[0]["test_loss"]
    assert model.metrics(test.X, test.y)["loss"] == pytest.approx(history.last["test_loss"])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m.predict(np.zeros((2, D, 6))), r"Z: expected prompts \(n, d\+1=6, N\+1\)"),
        (lambda m: m.predict(np.zeros((2, D + 1, 1))), "Z: expected prompts"),
        (lambda m: m.predict(np.full((1, D + 1, 4), np.nan)), "Z"),
        (lambda m: m.loss_and_grads(np.zeros((3, D + 1, 4)), np.zeros(2)), "y: expected"),
        (lambda m: RegressionStack(0), "d: expected a positive integer"),
        (lambda m: RegressionStack(D, 0), "layers: expected a positive integer"),
        (lambda m: RegressionStack(D, 1, init_std=-1.0), "init_std"),
    ],
)
def test_errors_name_the_argument(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(_model(1, seed=0))


def test_a_replaced_parameter_of_the_wrong_shape_is_named() -> None:
    model = _model(1, seed=0)
    model.params["A0"] = np.zeros((D, D + 1))
    with pytest.raises(ValueError, match=r"params\['A0'\]: expected shape \(5, 5\)"):
        model.predict(np.zeros((1, D + 1, 3)))
