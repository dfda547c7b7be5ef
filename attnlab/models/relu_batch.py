"""Cross attention with a fixed ReLU value head, batched over independent problems: the
multi-token setting of Tarzanagh et al. ("Transformers as Support Vector Machines", arXiv
2308.16898, ``multi_token_converge``), one problem per seed, all trained side by side.

Problem ``s`` has prompts ``X_s (n, d, c)``, queries ``z_si``, labels ``y_si`` in {-1, +1}, a
fixed value matrix ``V_s (d, d)`` and its own ``W_s (d, d)``::

    sigma_sit = x_sit^T W_s z_si     a_si = softmax_t(sigma_si)     u_si = V_s^T X_si a_si
    o_si      = 1^T relu(u_si)       J_s  = (1/n) sum_i log(1 + exp(-y_si o_si))

which is :class:`attnlab.ContextWindowModel` ``(attention="cross", head="mlp")`` with the head
fixed at ``W1 = V``, ``b1 = 0``, ``W2 = 1``, ``b2 = 0`` (:func:`relu_head_loop` runs it problem by
problem, the reference of the tests). Backward, per problem::

    do = -(y / n) sigmoid(-y o)     du = do 1[u > 0]     dS_t = x_t^T V du
    dsigma = the exact softmax backward of dS     dW = sum_i (X_i dsigma_i) z_i^T

The batch is a leading axis ``s`` of every array; each contraction is one batched matrix product
(:func:`mlp.contract.contract`), so a step of a thousand problems costs about as many numpy calls
as a step of one.
"""

from __future__ import annotations

import numpy as np

from attnlab.models.context_window import ContextWindowModel
from mlp.contract import contract
from mlp.numerics import softmax_backward, softmax_with_argmax

__all__ = ["relu_head_batch", "relu_head_loop"]


def relu_head_batch(
    W: np.ndarray, X: np.ndarray, Z: np.ndarray, y: np.ndarray, V: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(J (s,), dJ/dW (s, d, d), weights (s, n, c))`` of each problem (see the module).

    ``W (s, d, d)``, ``X (s, n, d, c)``, ``Z (s, n, d)``, ``y (s, n)`` in {-1, +1},
    ``V (s, d, d)``; ``weights[s, i]`` is the softmax of prompt ``i`` of problem ``s``. Inputs
    are trusted (float64, finite, of matching shapes): the study that calls it made them.
    """
    n = X.shape[1]
    WZ = contract("s n d, s e d -> s n e", Z, W)  # W_s z_si
    scores = contract("s n e c, s n e -> s n c", X, WZ)
    S, top = softmax_with_argmax(scores, axis=2)
    u = contract("s n e, s e d -> s n d", contract("s n e c, s n c -> s n e", X, S), V)
    o = np.maximum(u, 0.0).sum(axis=2)  # (s, n)
    margin = y * o
    loss = np.logaddexp(0.0, -margin).mean(axis=1)
    do = -(y / n) * np.exp(-np.logaddexp(0.0, margin))  # -(y/n) sigmoid(-y o)
    du = do[:, :, None] * (u > 0)
    dXa = contract("s n d, s e d -> s n e", du, V)  # V_s du_si
    dS = contract("s n e c, s n e -> s n c", X, dXa)
    dsigma = softmax_backward(S, dS, axis=2, top=top)
    dW = contract("s n e, s n d -> s e d", contract("s n e c, s n c -> s n e", X, dsigma), Z)
    return loss, dW, S


def relu_head_loop(
    W: np.ndarray, X: np.ndarray, Z: np.ndarray, y: np.ndarray, V: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`relu_head_batch` one problem at a time, each as a
    :class:`attnlab.ContextWindowModel` with cross attention and the fixed MLP head
    ``W1 = V_s``, ``b1 = 0``, ``W2 = 1``, ``b2 = 0`` (the reference of the tests)."""
    s, n, d, c = X.shape
    loss, dW, weights = np.empty(s), np.empty((s, d, d)), np.empty((s, n, c))
    for k in range(s):
        model = ContextWindowModel(d, attention="cross", pool="mean", head="mlp", hidden=d)
        model.params.update(W=W[k], W1=V[k], b1=np.zeros(d), W2=np.ones((d, 1)), b2=np.zeros(1))
        loss[k], grads = model.loss_and_grads(X[k], y[k], Z[k][:, :, None])
        dW[k] = grads["W"]
        weights[k] = model.attention_weights(X[k], Z[k][:, :, None])[:, :, 0]
    return loss, dW, weights
