"""Cross attention with ``W = WK WQ^T`` whose gradient is carried in log space: a normalized-GD
direction that keeps its relative accuracy however saturated the softmax is.

The setting is Tarzanagh et al.'s ``local_converge`` ("Transformers as Support Vector Machines",
arXiv 2308.16898): prompts ``X (n, d, c)``, one query ``z_i`` per prompt, the fixed linear
head ``v``, the logistic loss::

    sigma_it = x_it^T W z_i      s_i = softmax_t(sigma_i)      o_i = v^T X_i s_i
    J        = (1/n) sum_i log(1 + exp(-y_i o_i))

and ``dJ/dW = sum_i sum_t a_it x_it z_i^T`` with, for ``g_it = v^T x_it``,

    a_it = sum_b c_i s_it s_ib (g_it - g_ib)      c_i = dJ/do_i = -(y_i / n) sigmoid(-y_i o_i)

(the softmax Jacobian product ``s_t (g_t - sum_b s_b g_b)`` written with ``sum_b s_b = 1`` as
a sum of products, so that nothing cancels). Once the softmax saturates, every product
``s_it s_ib`` is a number far below 1e-308 and float64 rounds it to 0: the gradient is exactly
zero and normalized GD stops, although its direction ``g / ||g||`` is well defined. Here every
term is carried by its logarithm,

    L_itb = log|c_i| + log s_it + log s_ib     (b != t; log s from the log-softmax,
                                                log|c_i| = -log n - logaddexp(0, y_i o_i)),

the largest ``M = max L_itb`` is factored out, and

    dJ/dW = exp(M) G,    G = sum_i sum_t a~_it x_it z_i^T,
    a~_it = sum_{b != t} sign(c_i) exp(L_itb - M) (g_it - g_ib),

is computed in float64: its largest term is of order 1, every term keeps its relative accuracy
(``L_itb - M`` is computed from the scores with an absolute error of about ``1e-16 |sigma|``),
and only terms more than ``e^745`` times smaller than the largest are lost. Normalized GD needs
only the direction, ``G / ||G||``; per factor, ``dJ/dWK = exp(M) G WQ`` and
``dJ/dWQ = exp(M) G^T WK``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from einops import rearrange

from attnlab.blocks.attention import check_prompts
from mlp.contract import contract
from mlp.validation import as_float_array, check_finite, positive, sign_labels

__all__ = ["LogSpaceKQModel", "log_gradient", "log_gradient_loop"]


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    """``log softmax`` over the last axis, ``(n, c)``: ``(sigma - top) - log1p(sum of the other
    exponentials)``, so the top token's value is accurate to ``1e-16`` absolutely."""
    top = np.max(scores, axis=1, keepdims=True)
    shifted = scores - top
    e = np.exp(shifted)
    others = e.sum(axis=1, keepdims=True) - 1.0  # the top entry is exp(0) = 1, exactly
    return shifted - np.log1p(others)


def log_gradient(
    X: np.ndarray, Z: np.ndarray, y: np.ndarray, v: np.ndarray, W: np.ndarray
) -> tuple[float, np.ndarray, float]:
    """``(M, G, J)``: ``dJ/dW = exp(M) G`` and the loss ``J`` (see the module docstring).

    ``X (n, d, c)`` prompts, ``Z (n, d)`` one query per prompt, ``y (n,)`` labels in {-1, +1},
    ``v (d,)`` the head, ``W (d, d)`` with scores ``x^T W z``. ``G (d, d)`` has entries of order
    1 (at most ``2 max|x| max|z|`` times the number of terms); ``M`` is a float that may be far
    below ``log(1e-308)``. Inputs are trusted (the model's public method checks them).
    """
    n = X.shape[0]
    scores = contract("n e c, n e -> n c", X, contract("n d, e d -> n e", Z, W))
    ls = _log_softmax(scores)  # (n, c)
    g = contract("n d c, d -> n c", X, v)  # g_it = v^T x_it
    o = np.sum(np.exp(ls) * g, axis=1)  # o_i = v^T X_i s_i
    margin = y * o
    log_c = -math.log(n) - np.logaddexp(0.0, margin)  # log|dJ/do_i|
    L = log_c[:, None, None] + ls[:, :, None] + ls[:, None, :]  # (n, c_t, c_b)
    diagonal = np.arange(X.shape[2])
    L[:, diagonal, diagonal] = -np.inf  # b = t: no term (g_it - g_it = 0)
    M = float(np.max(L))
    E = np.exp(L - M)
    a = -y[:, None] * np.sum(E * (g[:, :, None] - g[:, None, :]), axis=2)  # (n, c)
    G = contract("n e, n d -> e d", contract("n d c, n c -> n d", X, a), Z)
    loss = float(np.mean(np.logaddexp(0.0, -margin)))
    return M, G, loss


def log_gradient_loop(
    X: np.ndarray, Z: np.ndarray, y: np.ndarray, v: np.ndarray, W: np.ndarray
) -> tuple[float, np.ndarray, float]:
    """:func:`log_gradient` as the formulas read, one prompt, token and pair at a time (a
    readable reference for tests; the same inputs and results)."""
    n, d, c = X.shape
    terms = []  # (i, t, log of |term| without the factor (g_it - g_ib), sign, g_it - g_ib)
    loss = 0.0
    for i in range(n):
        x = [X[i, :, t] for t in range(c)]
        sigma = [float(x[t] @ W @ Z[i]) for t in range(c)]
        top = max(sigma)
        rest = sum(math.exp(s - top) for s in sigma) - 1.0
        ls = [s - top - math.log1p(rest) for s in sigma]
        g = [float(v @ x[t]) for t in range(c)]
        o = sum(math.exp(ls[t]) * g[t] for t in range(c))
        log_c = -math.log(n) - float(np.logaddexp(0.0, y[i] * o))
        loss += float(np.logaddexp(0.0, -y[i] * o)) / n
        for t in range(c):
            for b in range(c):
                if b != t:
                    terms.append((i, t, log_c + ls[t] + ls[b], -y[i], g[t] - g[b]))
    M = max(term[2] for term in terms)
    G = np.zeros((d, d))
    for i, t, log_term, sign, diff in terms:
        G += sign * math.exp(log_term - M) * diff * np.outer(X[i, :, t], Z[i])
    return M, G, loss


class LogSpaceKQModel:
    """``LogSpaceKQModel(d, rank=None, scaled=True)``: cross attention with ``W = WK WQ^T``, the
    fixed head ``v``, the logistic loss, and the gradient carried in log space
    (:func:`log_gradient`).

    ``params``: ``WK (d, r)``, ``WQ (d, r)`` (zero until set; ``r = rank``, ``d`` if None) and
    ``v (d, 1)``, the head (zero until set; not trained). With ``scaled=True``
    :meth:`loss_and_grads` returns the gradients of ``WK`` and ``WQ`` **divided by**
    ``exp(log_scale)`` (``log_scale`` is kept as an attribute after each call): the true
    gradient's direction with full relative accuracy, not its size, which is what normalized GD
    uses. With ``scaled=False`` it returns the true gradients, ``exp(log_scale)`` times those:
    exact in float64 until they underflow (:meth:`gradients` gives them either way).
    """

    def __init__(self, d: int, rank: int | None = None, scaled: bool = True) -> None:
        self.d = positive("d", d, integer=True)
        self.rank = self.d if rank is None else positive("rank", rank, integer=True)
        if not isinstance(scaled, (bool, np.bool_)):
            raise TypeError(f"scaled: expected True or False, received {scaled!r}")
        self.scaled = bool(scaled)
        self.params: dict[str, np.ndarray] = {
            "WK": np.zeros((self.d, self.rank)),
            "WQ": np.zeros((self.d, self.rank)),
            "v": np.zeros((self.d, 1)),
        }
        self.log_scale = 0.0

    @property
    def config(self) -> dict[str, Any]:
        return {"d": self.d, "rank": self.rank, "scaled": self.scaled}

    def _inputs(
        self, X: object, y: object, Z: object
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Checked ``X (n, d, c)``, ``Z (n, d)``, ``y (n,)``, ``v (d,)`` and ``W (d, d)``."""
        X = check_prompts(X)
        n, d, _ = X.shape
        if d != self.d:
            raise ValueError(f"X: expected d = {self.d} features per token, received {X.shape}")
        Z = as_float_array("Z", Z, ndim=(2, 3))
        if Z.shape not in ((n, d), (n, d, 1)):
            raise ValueError(f"Z: expected shape (n={n}, d={d}, 1) or (n, d), received {Z.shape}")
        check_finite("Z", Z)
        y = sign_labels("y", y, n)
        for key, shape in (("WK", (d, self.rank)), ("WQ", (d, self.rank)), ("v", (d, 1))):
            p = self.params[key]
            if p.shape != shape:
                raise ValueError(f"params[{key!r}]: expected shape {shape}, received {p.shape}")
            check_finite(f"params[{key!r}]", p)
        W = self.params["WK"] @ self.params["WQ"].T
        return X, rearrange(Z, "n d ... -> n (d ...)"), y, self.params["v"][:, 0], W

    def loss_and_grads(
        self, X: np.ndarray, y: np.ndarray, Z: np.ndarray, target: np.ndarray | None = None
    ) -> tuple[float, dict[str, np.ndarray]]:
        """``(J, {"WK": G WQ, "WQ": G^T WK})``: the loss and the factors' gradients, divided by
        ``exp(self.log_scale)`` (set by this call) when ``scaled``. ``X (n, d, c)``, ``y (n,)``
        in {-1, +1}, ``Z (n, d, 1)`` or ``(n, d)``; ``target`` (the task's target tokens) is
        accepted and not used: the trainer passes every input of a data set to the model."""
        X, Z, y, v, W = self._inputs(X, y, Z)
        self.log_scale, G, loss = log_gradient(X, Z, y, v, W)
        if not self.scaled:
            G = math.exp(self.log_scale) * G
        return loss, {"WK": G @ self.params["WQ"], "WQ": G.T @ self.params["WK"]}

    def gradients(self, X: np.ndarray, y: np.ndarray, Z: np.ndarray) -> dict[str, np.ndarray]:
        """The true gradients ``exp(log_scale) * (G WQ, G^T WK)`` in float64 (they underflow
        to 0 where the softmax saturates; for comparisons)."""
        _, grads = self.loss_and_grads(X, y, Z)
        scale = math.exp(self.log_scale) if self.scaled else 1.0
        return {k: scale * g for k, g in grads.items()}

    def attention_weights(self, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """``S (n, c)``: the softmax weights of each prompt's tokens."""
        X, Z, _, _, W = self._inputs(X, np.ones(np.shape(X)[0]), Z)
        scores = contract("n e c, n e -> n c", X, contract("n d, e d -> n e", Z, W))
        return np.exp(_log_softmax(scores))
