"""The attention layer passes gradients on: its backward returns the gradients of its parameters
and of its inputs (``dX``, and ``dZ`` for the cross variants), for every registered variant and
both score forms, against central differences in float64; a variant added through the registry
alone works in every model; and a two-layer composition of the layer, defined only here, trains
through the engine."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gradcheck import check_vjp

from attnlab import ContextWindowModel
from attnlab.blocks.layer import AttentionLayer
from attnlab.blocks.queries import VARIANTS, Variant, register_variant
from mlp.contract import contract
from mlp.numerics import logistic_loss
from mlp.train import SGD, Dataset, Trainer

LIBRARY = ("prompt", "self", "kq", "cross", "cross-kq")


def _inputs(variant: Variant, n: int = 3, d: int = 4, c: int = 5, j: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d, c))
    Z = rng.standard_normal((n, d, j)) if variant.cross else None
    return X, Z


@pytest.mark.parametrize("scores", ["softmax", "linear"])
@pytest.mark.parametrize("attention", LIBRARY)
@pytest.mark.parametrize("query_tokens", ["all", "last"])
def test_backward_gives_the_gradients_of_parameters_and_inputs(
    attention: str, scores: str, query_tokens: str
) -> None:
    layer = AttentionLayer(attention, scores, query_tokens)
    X, Z = _inputs(layer.variant)
    params = layer.init_params(4, 2, 3, np.random.default_rng(1), np.float64)
    out, cache = layer.forward(params, X, Z)
    j = layer.columns(X.shape[2], 2, None if Z is None else Z.shape[2])
    assert out.shape == (3, 4, j)
    dOut = np.random.default_rng(2).standard_normal(out.shape)
    grads, dX, dZ = layer.backward(dOut, cache, params)
    assert dX.shape == X.shape
    assert (dZ is None) == (Z is None) and (Z is None or dZ.shape == Z.shape)
    assert set(grads) == set(params) and all(grads[k].shape == params[k].shape for k in params)

    def f(X: np.ndarray, Z: np.ndarray | None = None, **p: np.ndarray) -> np.ndarray:
        return layer.forward(p, X, Z)[0]

    inputs = {"X": X, **({"Z": Z} if Z is not None else {}), **params}
    analytic = {"X": dX, **({"Z": dZ} if Z is not None else {}), **grads}
    errors = check_vjp(f, inputs, dOut, analytic, tol=1e-7)
    assert set(errors) == set(inputs)


def test_the_mean_pools_broadcast_gradient_gives_the_same_input_gradients() -> None:
    """``dOut (n, d, 1)`` (the same gradient in every column) against the full array."""
    for attention in LIBRARY:
        layer = AttentionLayer(attention)
        X, Z = _inputs(layer.variant)
        params = layer.init_params(4, 2, 3, np.random.default_rng(1), np.float64)
        out, cache = layer.forward(params, X, Z)
        g = np.random.default_rng(3).standard_normal((3, 4, 1))
        one = layer.backward(g, cache, params)
        full = layer.backward(np.broadcast_to(g, out.shape).copy(), cache, params)
        np.testing.assert_allclose(one[1], full[1], rtol=1e-12, atol=1e-14)
        for k in params:
            np.testing.assert_allclose(one[0][k], full[0][k], rtol=1e-12, atol=1e-14)


def test_no_input_gradients_when_not_needed() -> None:
    layer = AttentionLayer("cross")
    X, Z = _inputs(layer.variant)
    params = layer.init_params(4, 2, 3, np.random.default_rng(1), np.float64)
    out, cache = layer.forward(params, X, Z)
    grads, dX, dZ = layer.backward(np.ones_like(out), cache, params, need_inputs=False)
    assert dX is None and dZ is None and set(grads) == {"W"}


# --- a variant added through the registry alone -----------------------------------------------


def _diag_query(params: dict, X: np.ndarray, Z: np.ndarray | None) -> tuple[np.ndarray, None]:
    """``Q = diag(a) X``: each feature of a token scaled by its own weight."""
    return params["a"][None, :, None] * X, None


def _diag_backward(params, dQ, X, Z, aux, need_inputs):
    da = np.einsum("ndc,ndc->d", dQ, X)
    dX = params["a"][None, :, None] * dQ if need_inputs else None
    return {"a": da}, dX, None


@pytest.fixture(scope="module")
def toy() -> Variant:
    """A toy variant, registered for this module's tests and removed after them."""
    variant = register_variant(
        Variant(
            "toy-diag", lambda d, j, r: {"a": (d,)}, _diag_query, _diag_backward, per_token=True
        )
    )
    yield variant
    del VARIANTS["toy-diag"]


def test_a_variant_added_through_the_registry_works_in_the_model(toy: Variant) -> None:
    with pytest.raises(ValueError, match="registered already"):
        register_variant(toy)
    model = ContextWindowModel(4, attention="toy-diag", pool="mean", head="linear")
    assert set(model.params) == {"a", "v"} and model.params["a"].shape == (4,)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((6, 4, 5))
    y = np.where(rng.standard_normal(6) > 0, 1.0, -1.0)
    assert model.attention_weights(X).shape == (6, 5, 5)  # per token: one query per token
    loss, grads = model.loss_and_grads(X, y)

    check_vjp(
        lambda a: np.array(model.loss_and_grads(X, y)[0]),
        {"a": model.params["a"]},
        np.array(1.0),
        {"a": grads["a"]},
    )
    assert np.isfinite(loss)


# --- a two-layer composition of the layer, defined only in this test -------------------------


class TwoLayers:
    """``X1 = X + V1 attn1(X)``, ``u = last column of attn2(X1)``, ``z = u v``, logistic loss:
    two self-attention layers composed through the layer's input gradients."""

    def __init__(self, d: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.layers = (AttentionLayer("self"), AttentionLayer("kq"))
        p1 = self.layers[0].init_params(d, 1, d, rng, np.float64)
        p2 = self.layers[1].init_params(d, 1, 2, rng, np.float64)
        self.params = {
            "W": p1["W"],
            "V1": 0.5 * rng.standard_normal((d, d)) / np.sqrt(d),
            "WK": p2["WK"],
            "WQ": p2["WQ"],
            "v": rng.standard_normal((d, 1)) / np.sqrt(d),
        }

    def _forward(self, X: np.ndarray) -> tuple[Any, ...]:
        p = self.params
        a1, c1 = self.layers[0].forward({"W": p["W"]}, X)
        X1 = X + contract("e d, n d c -> n e c", p["V1"], a1)
        a2, c2 = self.layers[1].forward({"WK": p["WK"], "WQ": p["WQ"]}, X1)
        u = a2[:, :, -1]
        return a1, c1, X1, c2, u, contract("n d, d k -> n k", u, p["v"])

    def loss_and_grads(self, X: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
        p = self.params
        a1, c1, _, c2, u, z = self._forward(X)
        loss, dz = logistic_loss(z, y)
        grads = {"v": contract("n d, n k -> d k", u, dz)}
        dOut2 = np.zeros((X.shape[0], X.shape[1], X.shape[2]))
        dOut2[:, :, -1] = contract("n k, d k -> n d", dz, p["v"])
        g2, dX1, _ = self.layers[1].backward(dOut2, c2, {"WK": p["WK"], "WQ": p["WQ"]})
        grads.update(g2)
        grads["V1"] = contract("n e c, n d c -> e d", dX1, a1)
        dA1 = contract("e d, n e c -> n d c", p["V1"], dX1)
        g1, _, _ = self.layers[0].backward(dA1, c1, {"W": p["W"]}, need_inputs=False)
        grads.update(g1)
        return loss, {k: grads[k] for k in p}


def test_a_two_layer_composition_has_exact_gradients_and_trains_through_the_engine() -> None:
    rng = np.random.default_rng(7)
    n, d, c = 256, 4, 6
    X = rng.standard_normal((n, d, c))
    # one token per prompt is marked (feature 1 set to 3); the label is the sign of its feature 0
    marked = rng.integers(0, c, n)
    X[np.arange(n), 1, marked] = 3.0
    y = np.where(X[np.arange(n), 0, marked] > 0, 1.0, -1.0)
    model = TwoLayers(d)
    loss, grads = model.loss_and_grads(X, y)
    check_vjp(
        lambda **p: np.array(_with(model, p).loss_and_grads(X, y)[0]),
        model.params,
        np.array(1.0),
        grads,
    )
    data = Dataset(X, y)
    trainer = Trainer(model, SGD(), data, steps=2000, lr=0.3, batch_size=32, seed=0, progress=False)
    history = trainer.run()
    assert loss > 0.7 and history.last["train_loss"] < 0.3  # 0.78 -> 0.19 when written


def _with(model: TwoLayers, params: dict) -> TwoLayers:
    model.params.update(params)
    return model
