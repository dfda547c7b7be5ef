"""The stack's blocks: layer norm and the multi-head layer, each against its loop reference and
by a numerical vector-Jacobian product (CS231n's check: a random upstream gradient, central
differences of ``<dout, f(x)>`` for every input and parameter); the primitive's score bias."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_vjp

from attnlab.blocks.attention import (
    attend,
    attend_bias_grads,
    attend_grads,
    attend_linear,
    attend_linear_bias_grads,
)
from attnlab.blocks.heads import MultiHeadAttention, heads_forward_loop
from attnlab.blocks.layernorm import layernorm_backward, layernorm_forward, layernorm_forward_loop

RNG = np.random.default_rng(11)


@pytest.mark.parametrize("shape", [(3, 4, 5), (3, 4)])
def test_layernorm_matches_its_loop_and_its_vjp(shape: tuple) -> None:
    X = 3 * RNG.standard_normal(shape) + 1
    g, b = 1 + 0.3 * RNG.standard_normal(4), RNG.standard_normal(4)
    Y, cache = layernorm_forward(X, g, b)
    if len(shape) == 3:
        np.testing.assert_allclose(Y, layernorm_forward_loop(X, g, b), rtol=1e-12, atol=1e-14)
    dY = RNG.standard_normal(shape)
    dX, dg, db = layernorm_backward(dY, cache)
    assert dX.shape == X.shape and dg.shape == db.shape == (4,)
    check_vjp(lambda X, g, b: layernorm_forward(X, g, b)[0], {"X": X, "g": g, "b": b}, dY,
              {"X": dX, "g": dg, "b": db})  # fmt: skip


def test_layernorm_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    X = RNG.standard_normal((2, 6, 3))
    g, b = RNG.standard_normal(6), RNG.standard_normal(6)
    ref = torch.nn.functional.layer_norm(torch.tensor(X).transpose(1, 2), (6,), torch.tensor(g),
                                         torch.tensor(b), eps=1e-5).transpose(1, 2)  # fmt: skip
    np.testing.assert_allclose(layernorm_forward(X, g, b)[0], ref.numpy(), rtol=1e-13, atol=1e-15)


LAYERS = [
    (2, "self", "softmax", None, None),
    (3, "self", "softmax", "causal", "relative"),
    (2, "kq", "softmax", "causal", "relative-key"),
    (1, "kq", "softmax", "exclude-last", None),
    (2, "self", "linear", "causal", "relative"),
    (3, "kq", "linear", "exclude-last", None),
    (2, "kq", "linear", "causal", "relative-key"),
    (2, "kq", "softmax", "causal", "relative"),
]


def _layer(heads, attention, scores, mask, positions):
    layer = MultiHeadAttention(
        heads, attention, scores, mask, positions, 3 if attention == "kq" else None
    )
    params = layer.init_params(4, 6, RNG, np.dtype(np.float64))
    params = {k: v + 0.4 * RNG.standard_normal(v.shape) for k, v in params.items()}
    return layer, params


@pytest.mark.parametrize("config", LAYERS)
def test_heads_match_their_loop_reference(config: tuple) -> None:
    layer, params = _layer(*config)
    Y = RNG.standard_normal((3, 4, 5))
    out, cache = layer.forward(params, Y)
    out_loop, S_loop = heads_forward_loop(layer, params, Y)
    np.testing.assert_allclose(out, out_loop, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(cache.weights, S_loop, rtol=1e-12, atol=1e-15)
    last, last_cache = layer.forward(params, Y, "last")
    assert last.shape == (3, 4, 1) and last_cache.weights.shape == (3, config[0], 5, 1)
    np.testing.assert_allclose(last[:, :, 0], out[:, :, -1], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("queries", ["all", "last"])
@pytest.mark.parametrize("config", LAYERS)
def test_heads_vjp_for_the_input_and_every_parameter(config: tuple, queries: str) -> None:
    layer, params = _layer(*config)
    Y = RNG.standard_normal((2, 4, 5))
    out, cache = layer.forward(params, Y, queries)
    dOut = RNG.standard_normal(out.shape)
    grads, dY = layer.backward(dOut, cache, params)
    assert {k: g.shape for k, g in grads.items()} == {k: p.shape for k, p in params.items()}
    assert dY.shape == Y.shape

    def f(Y, **p):
        return layer.forward(p, Y, queries)[0]

    check_vjp(f, {"Y": Y, **params}, dOut, {"Y": dY, **grads})
    assert layer.backward(dOut, cache, params, need_input=False)[1] is None


def test_a_zero_bias_changes_no_bit_and_its_gradient_is_that_of_the_scores() -> None:
    X, Q = RNG.standard_normal((3, 4, 6)), RNG.standard_normal((3, 4, 5))
    dOut = RNG.standard_normal((3, 4, 5))
    out, cache = attend(X, Q)
    out0, cache0 = attend(X, Q, np.zeros((6, 5)))
    assert np.array_equal(out, out0)
    dX, dQ = attend_grads(dOut, cache)
    dX0, dQ0, dB = attend_bias_grads(dOut, cache0, bias="prompt")
    assert np.array_equal(dX, dX0) and np.array_equal(dQ, dQ0)
    _, _, dB_shared = attend_bias_grads(dOut, cache0, bias="shared")
    np.testing.assert_allclose(dB_shared, dB.sum(axis=0), rtol=1e-13)
    bias = RNG.standard_normal((3, 6, 5))
    dB = attend_bias_grads(dOut, attend(X, Q, bias)[1], bias="prompt")[2]
    check_vjp(lambda bias: attend(X, Q, bias)[0], {"bias": bias}, dOut, {"bias": dB})


def test_the_linear_form_takes_a_bias_and_a_mask() -> None:
    X, Q = RNG.standard_normal((3, 4, 6)), RNG.standard_normal((3, 4, 5))
    bias, mask = RNG.standard_normal((6, 5)), RNG.integers(0, 2, (6, 5)).astype(float)
    dOut = RNG.standard_normal((3, 4, 5))
    out, cache = attend_linear(X, Q, 0.2, bias, mask)
    np.testing.assert_allclose(out, 0.2 * X @ ((X.transpose(0, 2, 1) @ Q + bias) * mask),
                               rtol=1e-12)  # fmt: skip
    dX, dQ, dB = attend_linear_bias_grads(dOut, cache, bias="shared")
    check_vjp(lambda X, Q, bias: attend_linear(X, Q, 0.2, bias, mask)[0],
              {"X": X, "Q": Q, "bias": bias}, dOut, {"X": dX, "Q": dQ, "bias": dB})  # fmt: skip
    assert np.all(dB[mask == 0] == 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heads": 0}, r"heads: expected a positive integer, received 0"),
        ({"attention": "cross"}, r"attention: expected one of 'self', 'kq', received 'cross'"),
        ({"mask": "future"}, r"mask: expected one of None, 'causal', 'exclude-last', received"),
        ({"positions": "relative"}, r"positions: 'relative' needs mask='causal'"),
        ({"positions": "relative-key", "mask": "causal"}, r"needs attention='kq', received"),
        ({"rank": 2}, r"rank: only attention='kq' has a rank, received rank=2"),
        ({"rank": 0, "attention": "kq"}, r"rank: expected a positive integer, received 0"),
    ],
)
def test_a_study_building_a_layer_gets_its_options_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultiHeadAttention(**kwargs)
