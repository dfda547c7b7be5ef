"""Studies build their own models from the stack's layer, and freeze parameters with the
engine's ``trainable``.

1. ``LinearTransformerGD``, defined only here: Ahn et al.'s in-context regression layers
   ``Z <- Z + (1/N) P_l Z M (Z^T Q_l Z)`` with ``P_l = [[B_l, 0], [0, 1]]`` and
   ``Q_l = [[A_l, 0], [0, 0]]``: each layer is ``MultiHeadAttention`` (one head, linear scores,
   ``mask="exclude-last"``) whose ``W`` and ``V`` are blocks around the smaller trained
   ``A_l, B_l (d, d)``; the gradients of ``A_l, B_l`` are the blocks of the layer's ``dW, dV``.
   With ``B = 0`` and ``A_l = -a_l I`` the prediction is ``L`` steps of gradient descent.
2. An ``AttentionStack`` whose first layer scores by position only: ``W0`` fixed at 0 (left out
   of ``trainable``), ``R0`` learned.
3. The stack with a readout at every token on the engine's token stream (``repeated-tokens``).

Both train a few steps through ``mlp.train.Trainer`` and have their gradients checked by central
differences.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_gradient

from attnlab import AttentionStack, make_task
from attnlab.blocks.heads import MultiHeadAttention
from attnlab.induction import induction_score
from mlp.train import SGD, Adam, Dataset, Trainer


class LinearTransformerGD:
    """``L`` layers of Ahn et al. on prompts ``Z (n, d+1, N+1)`` (columns ``(x_i, y_i)``, then
    ``(x_q, 0)``); prediction ``-Z_L[d, N]``, loss ``mean (prediction - y)^2``.

    ``params``: ``A{l}, B{l} (d, d)``. The layer sees ``W = [[A, 0], [0, 0]]``,
    ``V = [[B, 0], [0, 1]]`` (one head)."""

    def __init__(self, d: int, layers: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.d, self.layers = d, layers
        self.layer = MultiHeadAttention(1, "self", "linear", "exclude-last")
        self.params = {}
        for l in range(layers):
            self.params[f"A{l}"] = -0.5 * np.eye(d) + 0.1 * rng.standard_normal((d, d))
            self.params[f"B{l}"] = 0.1 * rng.standard_normal((d, d))

    def _blocks(self, l: int) -> dict[str, np.ndarray]:
        d = self.d
        W = np.zeros((1, d + 1, d + 1))
        V = np.zeros((1, d + 1, d + 1))
        W[0, :d, :d] = self.params[f"A{l}"]
        V[0, :d, :d] = self.params[f"B{l}"]
        V[0, d, d] = 1.0
        return {"W": W, "V": V}

    def _forward(self, Z: np.ndarray) -> tuple[np.ndarray, list]:
        caches = []
        for l in range(self.layers):
            out, cache = self.layer.forward(self._blocks(l), Z)
            Z = Z + out
            caches.append(cache)
        return -Z[:, self.d, -1], caches

    def predict(self, Z: np.ndarray) -> np.ndarray:
        return self._forward(Z)[0]

    def loss_and_grads(self, Z: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
        pred, caches = self._forward(Z)
        r = pred - y
        loss = float(np.mean(r * r))
        dZ = np.zeros_like(Z)
        dZ[:, self.d, -1] = -2 * r / len(y)
        grads = {}
        for l in reversed(range(self.layers)):
            layer_grads, dY = self.layer.backward(dZ, caches[l], self._blocks(l))
            dZ = dZ + dY  # the residual
            grads[f"A{l}"] = layer_grads["W"][0, : self.d, : self.d]
            grads[f"B{l}"] = layer_grads["V"][0, : self.d, : self.d]
        return loss, grads


def _regression_prompts(n: int, d: int, N: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``Z (n, d+1, N+1)`` and the query targets ``y (n,)``: ``x ~ N(0, I)``, ``w ~ N(0, I)``
    per prompt, ``y = <w, x>``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d, N + 1))
    w = rng.standard_normal((n, d))
    ys = np.einsum("nd,ndc->nc", w, x)
    Z = np.concatenate([x, ys[:, None, :]], axis=1)
    target = Z[:, d, -1].copy()
    Z[:, d, -1] = 0.0
    return Z, target


def test_with_B_zero_the_layers_are_steps_of_gradient_descent() -> None:
    d, N = 3, 10
    Z, _ = _regression_prompts(4, d, N, seed=1)
    model = LinearTransformerGD(d, 2)
    rates = [0.7, 0.4]
    for l, a in enumerate(rates):
        model.params[f"A{l}"] = -a * np.eye(d)
        model.params[f"B{l}"] = np.zeros((d, d))
    X, y, xq = Z[:, :d, :N].transpose(0, 2, 1), Z[:, d, :N], Z[:, :d, N]  # (n, N, d)
    w = np.zeros((4, d))
    for a in rates:  # w <- w + (A / N) X^T (X w - y) with A = -a I
        w = w - a / N * np.einsum("nid,ni->nd", X, np.einsum("nid,nd->ni", X, w) - y)
    np.testing.assert_allclose(model.predict(Z), np.einsum("nd,nd->n", xq, w), rtol=1e-12)


def test_a_model_built_from_the_layer_trains_and_has_exact_gradients() -> None:
    d, N = 3, 10
    Z, y = _regression_prompts(256, d, N, seed=2)
    model = LinearTransformerGD(d, 2, seed=3)
    trainer = Trainer(model, Adam(), Dataset(Z, y), steps=60, lr=0.02, batch_size=64,
                      progress=False)  # fmt: skip
    before = model.loss_and_grads(Z, y)[0]
    trainer.run()
    after, grads = model.loss_and_grads(Z[:16], y[:16])
    assert model.loss_and_grads(Z, y)[0] < 0.8 * before
    for k, p in model.params.items():
        check_gradient(lambda _: model.loss_and_grads(Z[:16], y[:16])[0], p, grads[k], name=k)
    assert np.isfinite(after)


def _previous_token_data(n: int, vocab: int, c: int, seed: int) -> Dataset:
    """Random tokens; the label is the token before the last one (``x_{c-2}``): what a layer
    that attends by position to the previous token can read."""
    T = np.random.default_rng(seed).integers(0, vocab, size=(n, c))
    return Dataset(T.astype(np.float64), T[:, -2])


@pytest.mark.parametrize("optimizer", [SGD, Adam])
def test_a_positional_first_layer_learns_R_with_W_frozen_at_zero(optimizer: type) -> None:
    vocab, c = 5, 6
    model = AttentionStack(8, layers=2, heads=1, mask="causal", positions="relative",
                           context=c, vocab=vocab, n_classes=vocab, seed=4)  # fmt: skip
    model.params["W0"] = np.zeros_like(model.params["W0"])
    frozen = {k: model.params[k].copy() for k in ("W0",)}
    R0 = model.params["R0"].copy()
    train = _previous_token_data(512, vocab, c, seed=5)
    trainable = [k for k in model.params if k != "W0"]
    trainer = Trainer(model, optimizer(), train, steps=40, lr=0.05 if optimizer is Adam else 0.5,
                      batch_size=128, trainable=trainable, test=train, eval_every=40,
                      progress=False)  # fmt: skip
    history = trainer.run()
    assert np.array_equal(model.params["W0"], frozen["W0"])  # exactly zero still
    assert not np.array_equal(model.params["R0"], R0)
    assert history.last["test_loss"] < history.rows[0]["test_loss"]
    # layer 0 scores by position alone: every prompt gets the same weights
    S0 = model.attention_weights(train.X[:8])[0]
    np.testing.assert_array_equal(S0, np.broadcast_to(S0[:1], S0.shape))
    # its gradients at W0 = 0, by central differences
    T, y = train.X[:32], train.y[:32]
    _, grads = model.loss_and_grads(T, y)
    for k in ("R0", "W0", "V0", "E", "W1"):
        check_gradient(lambda _: model.loss_and_grads(T, y)[0], model.params[k], grads[k],
                       name=k, max_entries=12)  # fmt: skip


def test_the_stack_trains_on_the_repeated_tokens_stream_through_the_engine() -> None:
    """Token sequences ``(n, c)`` and next-token targets ``(n, c)`` from the task's stream, the
    readout at every token; the snapshots are every layer's weights, which the induction probe
    reads."""
    task = make_task("repeated-tokens", vocab=8, context=12, batch_size=32, n_test=64)
    model = AttentionStack(16, layers=2, heads=1, mask="causal", positions="relative", context=12,
                           vocab=8, readout="tokens", layernorm=True, seed=1)  # fmt: skip
    trainer = Trainer(model, Adam(), task.train, steps=60, lr=0.01, test=task.test, eval_every=30,
                      snapshot=task.test.subset(np.arange(4)), progress=False)  # fmt: skip
    history = trainer.run()
    assert [r["step"] for r in history.rows] == [0, 30, 60]
    assert history.last["test_loss"] < history.rows[0]["test_loss"]
    assert 0 <= history.last["test_accuracy"] <= 1
    assert [s.shape for s in history.snapshots] == [(4, 2, 1, 12, 12)] * 3
    S1 = model.attention_weights(task.test.X)[1]
    score = induction_score(S1, task.test.X)
    assert score.shape == (1,) and 0 <= score[0] <= 1
