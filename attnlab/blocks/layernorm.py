"""Layer norm over the features of each token, forward and backward (a CS231n pair).

For ``X (n, d, c)`` (tokens as columns) or ``X (n, d)`` (one token per row), per token::

    mu   = mean_d X                      var = mean_d (X - mu)^2     (biased: divided by d)
    xhat = (X - mu) / sqrt(var + eps)    eps = 1e-5, inside the square root
    Y    = g * xhat + b                  g, b (d,)

as ``torch.nn.functional.layer_norm`` over the feature axis. Backward, given ``dY``::

    dg = sum over tokens of dY * xhat    db = sum over tokens of dY
    dX = (dxhat - mean_d dxhat - xhat * mean_d(dxhat * xhat)) / sqrt(var + eps),  dxhat = g dY

Nothing here checks its inputs: the model that calls it did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Added to the variance inside the square root (torch's default).
EPS = 1e-5


@dataclass(frozen=True)
class LayerNormCache:
    """What :func:`layernorm_backward` needs: ``xhat`` (``X``'s shape), ``rstd = 1 /
    sqrt(var + eps)`` (size 1 on the feature axis) and the gain ``g (d,)``."""

    xhat: np.ndarray
    rstd: np.ndarray
    g: np.ndarray


def _column(v: np.ndarray, ndim: int) -> np.ndarray:
    """``v (d,)`` shaped to broadcast along axis 1 of an ``ndim``-d array."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def layernorm_forward(
    X: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = EPS
) -> tuple[np.ndarray, LayerNormCache]:
    """``Y = g * (X - mu) / sqrt(var + eps) + b`` over axis 1 (the features ``d``) of
    ``X (n, d, c)`` or ``(n, d)``; returns ``(Y, cache)``, ``Y`` of ``X``'s shape."""
    mu = X.mean(axis=1, keepdims=True)
    xhat = X - mu
    var = np.mean(xhat * xhat, axis=1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat *= rstd
    Y = xhat * _column(g, X.ndim)
    Y += _column(b, X.ndim)
    return Y, LayerNormCache(xhat, rstd, g)


def layernorm_backward(
    dY: np.ndarray, cache: LayerNormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dX, dg (d,), db (d,))`` of ``<dY, Y>`` for ``dY`` of ``Y``'s shape."""
    xhat, rstd = cache.xhat, cache.rstd
    axes = (0, *range(2, dY.ndim))  # every axis but the features
    dg = np.sum(dY * xhat, axis=axes)
    db = np.sum(dY, axis=axes)
    dxhat = dY * _column(cache.g, dY.ndim)
    dX = dxhat - dxhat.mean(axis=1, keepdims=True)
    dX -= xhat * np.mean(dxhat * xhat, axis=1, keepdims=True)
    dX *= rstd
    return dX, dg, db


def layernorm_forward_loop(
    X: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = EPS
) -> np.ndarray:
    """Per-token loop reference of :func:`layernorm_forward` for ``X (n, d, c)``: ``Y``."""
    Y = np.empty_like(X)
    for i in range(X.shape[0]):
        for t in range(X.shape[2]):
            x = X[i, :, t]
            mu = sum(x) / len(x)
            var = sum((v - mu) ** 2 for v in x) / len(x)
            Y[i, :, t] = g * (x - mu) / np.sqrt(var + eps) + b
    return Y
