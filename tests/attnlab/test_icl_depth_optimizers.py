"""The optimizers of the icl-depth study: the second moment of the prompts' ``x``
(against a loop), and :class:`Whitened`: its gradients are those of the loss in the whitened
coordinates (finite differences in float64 through the model), ``S = I`` is the inner optimizer
itself, and one step moves the parameters as the inner optimizer moves the whitened ones; and
:class:`Trust` (LAMB's layer-wise trust ratio)."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import numerical_gradient, rel_error

from attnlab.models.regression_stack import RegressionStack
from attnlab.studies.icl_depth import prompts
from attnlab.studies.icl_depth.optimizers import (
    AdamThenSGD,
    Trust,
    Whitened,
    second_moment,
)
from mlp.train import SGD, Adam

D = 5


def test_second_moment_of_the_prompts_x_against_a_loop() -> None:
    X = prompts.train_batch(3, 0, n=7, covariance="rotated").X  # (7, d+1, N+1)
    S = second_moment(X, D)
    ref = np.zeros((D, D))
    for p in range(X.shape[0]):
        for c in range(X.shape[2]):
            ref += np.outer(X[p, :D, c], X[p, :D, c])
    np.testing.assert_allclose(S, ref / (X.shape[0] * X.shape[2]), rtol=1e-12)
    big = prompts.train_batch(3, 1, n=4000, covariance="rotated").X
    Sigma = prompts.covariance_matrix("rotated", D, 3)
    assert np.linalg.norm(second_moment(big, D) - Sigma) < 0.03 * np.linalg.norm(Sigma)


def _spd(seed: int) -> np.ndarray:
    G = np.random.default_rng(seed).standard_normal((D, D))
    return G @ G.T / D + 0.3 * np.eye(D)


def test_whitened_gradients_are_the_gradients_in_whitened_coordinates() -> None:
    """f(W) = loss(A(W), B(W)) with W the optimizer's coordinates: the gradient Whitened hands
    to the inner optimizer agrees with central differences of f."""
    model = RegressionStack(D, 2, init_std=0.3, seed=1)
    data = prompts.train_batch(0, 0, n=6, covariance="rotated")
    opt = Whitened(SGD(), _spd(2))
    grads = model.loss_and_grads(data.X, data.y)[1]
    for key in ("A0", "B0", "A1"):
        W = opt.to_whitened(key, model.params[key]).copy()
        saved = model.params[key]

        def f(W: np.ndarray = W, key: str = key) -> float:
            model.params[key] = opt.from_whitened(key, W)
            return model.loss_and_grads(data.X, data.y)[0]

        numeric = numerical_gradient(lambda _: f(), W)
        model.params[key] = saved
        assert rel_error(opt.gradient(key, grads[key]), numeric) < 1e-6, key


def test_whitened_with_identity_is_the_inner_optimizer_and_maps_a_step() -> None:
    rng = np.random.default_rng(4)
    params = {"A0": rng.standard_normal((D, D)), "B0": rng.standard_normal((D, D))}
    grads = {k: rng.standard_normal((D, D)) for k in params}
    plain, white = (
        {k: v.copy() for k, v in params.items()},
        {k: v.copy() for k, v in params.items()},
    )
    Adam().step(plain, grads, 0.01)
    Whitened(Adam(), np.eye(D)).step(white, grads, 0.01)
    for k in params:
        np.testing.assert_allclose(white[k], plain[k], rtol=1e-12, atol=1e-14)
    # an SGD step in whitened coordinates: A <- A - lr S^-1 dA S^-1, B <- B - lr S dB S^-1
    S = _spd(5)
    Si = np.linalg.inv(S)
    moved = {k: v.copy() for k, v in params.items()}
    Whitened(SGD(), S).step(moved, grads, 0.1)
    np.testing.assert_allclose(moved["A0"], params["A0"] - 0.1 * Si @ grads["A0"] @ Si, atol=1e-12)
    np.testing.assert_allclose(moved["B0"], params["B0"] - 0.1 * S @ grads["B0"] @ Si, atol=1e-12)


def test_whitened_state_round_trips_and_bad_arguments_are_named() -> None:
    opt = Whitened(AdamThenSGD(Adam(), switch=3), _spd(0))
    params = {"A0": np.ones((D, D))}
    opt.step(params, {"A0": np.full((D, D), 0.5)}, 0.01)
    again = Whitened(AdamThenSGD(Adam(), switch=3), _spd(0))
    again.load_state_dict(opt.state_dict())
    assert again.inner.t == 1 and np.array_equal(again.inner.adam.m["A0"], opt.inner.adam.m["A0"])
    with pytest.raises(ValueError, match="S: expected a symmetric"):
        Whitened(Adam(), np.ones((D, D + 1)))
    with pytest.raises(ValueError, match="S: expected a positive definite"):
        Whitened(Adam(), -np.eye(D))
    with pytest.raises(TypeError, match="inner: expected an optimizer"):
        Whitened(object(), np.eye(D))


def test_trust_moves_every_matrix_by_the_fraction_lr_of_its_norm() -> None:
    rng = np.random.default_rng(6)
    params = {"A0": 0.1 * rng.standard_normal((D, D)), "A1": 10 * rng.standard_normal((D, D))}
    params["B0"] = np.zeros((D, D))
    grads = {k: rng.standard_normal((D, D)) for k in params}
    moved = {k: v.copy() for k, v in params.items()}
    opt = Trust(SGD())
    assert opt.name == "trust-sgd"
    opt.step(moved, grads, 0.01)
    for k in ("A0", "A1"):
        step = moved[k] - params[k]
        assert np.linalg.norm(step) == pytest.approx(0.01 * np.linalg.norm(params[k]), rel=1e-12)
        np.testing.assert_allclose(
            step / np.linalg.norm(step), -grads[k] / np.linalg.norm(grads[k])
        )
    np.testing.assert_allclose(moved["B0"], -0.01 * grads["B0"])  # a zero matrix: the inner step
    with pytest.raises(TypeError, match="inner: expected an optimizer"):
        Trust(object())
