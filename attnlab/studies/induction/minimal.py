"""The minimal model of Edelman et al. 2024 (``mingpt/min_model.py``), built from the stack's
layer (:class:`attnlab.blocks.heads.MultiHeadAttention`) with frozen and structured parameters.

On tokens ``x_0..x_{c-1}`` in ``0..k-1``, one-hot ``e_t`` (the columns of ``E (k, c)``)::

    layer 1:  a_{s,t} = softmax over s <= t of v[t - s]          scores by offset alone
              f_t     = sum_{s <= t} a_{s,t} e_s                   (k,)
    layer 2:  z_t     = sum_{s <= t} (e_t^T W f_s) e_s             linear, causal: the logits

The loss is the mean cross-entropy of ``z_t`` against the next token ``x_{t+1}`` at every
position. Trained: ``v (context,)`` (a score per offset) and ``W (k, k)``. When ``v[1]`` stands
above every other offset, ``f_s`` is the previous token ``e_{s-1}``, and ``z_t[j]`` counts the
earlier tokens ``j`` that followed an occurrence of ``x_t``, weighted by ``W[x_t, x_{s-1}]``:
the in-context bigram counts.

Layer 1 is the stack's layer with one head, ``attention="self"``, softmax scores, the causal
mask and ``positions="relative"``, on ``Y = E``, with ``W = 0`` (no token dependence), ``V = I``
and ``R[0] = v``. Layer 2 is the layer with linear scores and the causal mask on the stacked
input ``Y = [E; F] (2k, c)``: its score matrix ``A (2k, 2k)`` is zero but for the block
``A[k:, :k] = (c - 1) W^T`` (so ``y_s^T A y_t / (c - 1) = f_s^T W^T e_t``: the layer's linear
form divides by ``c - 1``, the minimal model does not), and its value matrix keeps the tokens,
``V[:k, :k] = I``, else 0; the logits are the first ``k`` rows of its output. Gradients: the
layers' backward passes, then ``dW = (c - 1) dA[k:, :k]^T`` and ``dv = dR[0]``.

Differences from the authors' code: their layer 1 calls ``masked_fill`` without assigning its
result, so the softmax runs over every key, the later ones scored ``v[0]`` (each token sees the
future through layer 1); here the mask is applied, as the paper's model states it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnlab.blocks.heads import MultiHeadAttention
from mlp.numerics import cross_entropy_unchecked, softmax
from mlp.validation import positive

__all__ = ["MinimalModel"]


class MinimalModel:
    """``MinimalModel(states=2, context=100, w_init=0.01)``: the module docstring's model on
    integer tokens ``X (n, c)``, ``c <= context``.

    ``params``: ``v (context,)`` (zeros: uniform causal attention at first) and ``W (k, k)``
    (every entry ``w_init``, the authors' constant init). The engine's contract:
    ``loss_and_grads(X, y)`` with next-token targets ``y (n, c)``; ``metrics`` (``loss``,
    ``accuracy``) and ``forward(X) -> logits (n, k, c)``; :meth:`attention_weights` gives layer
    1's softmax ``(n, 1, c, c)`` and layer 2's linear scores, both indexed ``[.., s, t]``."""

    def __init__(self, states: int = 2, context: int = 100, w_init: float = 0.01) -> None:
        self.states = positive("states", states, integer=True)
        self.context = positive("context", context, integer=True)
        if self.states < 2:
            raise ValueError(f"states: expected at least 2 states, received {states}")
        self.w_init = float(w_init)
        self.layer1 = MultiHeadAttention(1, "self", "softmax", "causal", "relative")
        self.layer2 = MultiHeadAttention(1, "self", "linear", "causal")
        k = self.states
        self.params: dict[str, np.ndarray] = {
            "v": np.zeros(self.context),
            "W": np.full((k, k), self.w_init),
        }

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments."""
        return {"states": self.states, "context": self.context, "w_init": self.w_init}

    # --- the two layers' parameters -----------------------------------------------------

    def layer_params(self, c: int | None = None) -> dict[str, np.ndarray]:
        """Both layers' parameters under the stack's keys (layer 1: ``W0, V0 (1, k, k)``,
        ``R0 (1, context)``; layer 2: ``W1, V1 (1, 2k, 2k)``) for prompts of ``c`` tokens
        (default ``context``; layer 2's scores carry the factor ``c - 1``)."""
        k, c = self.states, self.context if c is None else c
        W1 = np.zeros((1, 2 * k, 2 * k))
        W1[0, k:, :k] = (c - 1) * self.params["W"].T
        V1 = np.zeros((1, 2 * k, 2 * k))
        V1[0, :k, :k] = np.eye(k)
        return {
            "W0": np.zeros((1, k, k)),
            "V0": np.eye(k)[None],
            "R0": self.params["v"][None, :],
            "W1": W1,
            "V1": V1,
        }

    @staticmethod
    def _layer(p: dict[str, np.ndarray], l: int) -> dict[str, np.ndarray]:
        names = ("W", "V", "R") if l == 0 else ("W", "V")
        return {name: p[f"{name}{l}"] for name in names}

    # --- forward and backward -----------------------------------------------------------

    def _tokens(self, X: object) -> np.ndarray:
        x = np.asarray(X)
        k = self.states
        if x.dtype.kind not in "iu" or x.ndim != 2 or 0 in x.shape:
            raise ValueError(
                f"X: expected integer tokens of shape (n >= 1, c >= 2), received "
                f"{x.dtype} {x.shape}"
            )
        if x.shape[1] < 2 or x.shape[1] > self.context:
            raise ValueError(
                f"X: expected 2..context={self.context} tokens per sequence, received {x.shape[1]}"
            )
        if x.min() < 0 or x.max() >= k:
            bad = x[(x < 0) | (x >= k)][0]
            raise ValueError(f"X: expected tokens in 0..{k - 1}, received {bad}")
        for key, shape in (("v", (self.context,)), ("W", (k, k))):
            p = self.params.get(key)
            if not isinstance(p, np.ndarray) or p.shape != shape or p.dtype.kind != "f":
                raise ValueError(f"params[{key!r}]: expected a float array of shape {shape}")
        return x

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, tuple]:
        """``z (n, k, c)`` and what the backward needs."""
        n, c = x.shape
        k = self.states
        E = np.zeros((n, k, c))
        np.put_along_axis(E, x[:, None, :], 1.0, axis=1)
        p = self.layer_params(c)
        F, cache1 = self.layer1.forward(self._layer(p, 0), E)
        Y2 = np.concatenate([E, F], axis=1)
        out, cache2 = self.layer2.forward(self._layer(p, 1), Y2)
        return out[:, :k, :], (p, cache1, cache2)

    def forward(self, X: object) -> np.ndarray:
        """Logits ``z (n, k, c)``: ``z[i, :, t]`` predicts the token after ``x_t``."""
        return self._forward(self._tokens(X))[0]

    def attention_weights(self, X: object) -> list[np.ndarray]:
        """``[S1, S2]``, each ``(n, 1, c, c)`` indexed ``[.., s, t]``: layer 1's softmax and
        layer 2's linear scores ``e_t^T W f_s`` (0 for ``s > t``)."""
        x = self._tokens(X)
        c = x.shape[1]
        _, (_, cache1, cache2) = self._forward(x)
        return [cache1.weights, cache2.weights * (c - 1)]

    def loss_and_grads(
        self, X: object, y: object, **inputs: Any
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Mean cross-entropy over sequences and positions, and fresh ``{"v", "W"}``
        gradients; ``y (n, c)``: the next tokens."""
        x = self._tokens(X)
        n, c = x.shape
        k = self.states
        t = np.asarray(y)
        if t.shape != x.shape or t.dtype.kind not in "iu" or t.min() < 0 or t.max() >= k:
            raise ValueError(
                f"y: expected integer targets in 0..{k - 1} of X's shape {x.shape}, received "
                f"{t.dtype} {t.shape}"
            )
        z, (p, cache1, cache2) = self._forward(x)
        loss, dz = cross_entropy_unchecked(z.transpose(0, 2, 1).reshape(n * c, k), t.reshape(-1))
        dOut = np.zeros((n, 2 * k, c))
        dOut[:, :k, :] = dz.reshape(n, c, k).transpose(0, 2, 1)
        g2, dY2 = self.layer2.backward(dOut, cache2, self._layer(p, 1), need_input=True)
        g1, _ = self.layer1.backward(dY2[:, k:, :], cache1, self._layer(p, 0), need_input=False)
        dv = np.zeros(self.context)
        dv[:] = g1["R"][0]
        return loss, {"v": dv, "W": (c - 1) * g2["W"][0, k:, :k].T}

    def metrics(self, X: object, y: object, **inputs: Any) -> dict[str, float]:
        """``loss`` and ``accuracy`` (argmax of the logits), means over sequences and
        positions."""
        x = self._tokens(X)
        t = np.asarray(y)
        z = self._forward(x)[0]
        n, k, c = z.shape
        loss, _ = cross_entropy_unchecked(z.transpose(0, 2, 1).reshape(n * c, k), t.reshape(-1))
        return {"loss": loss, "accuracy": float(np.mean(np.argmax(z, axis=1) == t))}

    def predict_last(self, X: object) -> np.ndarray:
        """``(n, k)``: the predicted distribution of the token after the last one."""
        return softmax(self.forward(X)[:, :, -1], axis=1)

    def jump_margin(self) -> float:
        """``v[1] - max_{o != 1} v[o]``: how far the previous token's score stands above
        every other offset's."""
        v = self.params["v"]
        return float(v[1] - np.max(np.delete(v, 1)))
