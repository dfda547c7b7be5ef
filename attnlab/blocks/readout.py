"""What reads the attention's output: a pool, a head and a loss, each a forward/backward pair.

For the layer's output ``out (n, d, j)``::

    pool   mean:  u = mean_j out[:, :, j]        du -> dOut = du / j, the same in every column
           last:  u = out[:, :, -1]             du -> dOut zero but in the last column
    head   linear: z = u v            v (d, k)                 dv = u^T dz,  du = dz v^T
           mlp:    z = MLP(u)         W1, b1, W2, b2           the mlp package's backward
    loss   logistic (k = 1, labels +-1), cross_entropy (k >= 2), squared (k = 1, real targets)

The mean pool's gradient is one column ``(n, d, 1)`` (the primitive broadcasts it), so the
backward computes ``dS = X^T dOut`` as matrix-vector products. :func:`weight_on_target` reads the
attention weights the way the pool does. Nothing here checks its inputs: the model did.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mlp.contract import contract
from mlp.network import backward as mlp_backward
from mlp.network import hidden_and_logits
from mlp.numerics import (
    cross_entropy_unchecked,
    logistic_loss_unchecked,
    squared_loss_unchecked,
)

POOLS = ("mean", "last")
HEADS = ("linear", "mlp")
#: Each loss: ``(z (n, k), y (n,)) -> (mean loss, dz (n, k))``, for labels the model checked.
LOSSES: dict[str, Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]] = {
    "logistic": logistic_loss_unchecked,
    "cross_entropy": cross_entropy_unchecked,
    "squared": squared_loss_unchecked,
}


def pool_forward(out: np.ndarray, pool: str) -> np.ndarray:
    """``u (n, d)`` from ``out (n, d, j)``: the mean over the columns, or the last one."""
    return out.mean(axis=2) if pool == "mean" else out[:, :, -1]


def pool_backward(du: np.ndarray, pool: str, j: int) -> np.ndarray:
    """``dOut`` from ``du (n, d)``: ``(n, d, 1)`` (the same in every column) for the mean pool,
    ``(n, d, j)`` zero but in the last column for the last."""
    if pool == "mean":
        return (du / j)[:, :, None]
    n, d = du.shape
    dOut = np.zeros((n, d, j), dtype=du.dtype)
    dOut[:, :, -1] = du
    return dOut


def head_forward(
    params: dict[str, np.ndarray], u: np.ndarray, head: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits ``z (n, k)`` and the cache of the head's backward (the MLP's hidden layer)."""
    if head == "linear":
        return contract("n d, d k -> n k", u, params["v"]), None
    H, z = hidden_and_logits(u, params)
    return z, H


def head_backward(
    params: dict[str, np.ndarray], u: np.ndarray, dz: np.ndarray, H: np.ndarray | None, head: str
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``(grads of the head's parameters, du (n, d))``."""
    if head == "linear":
        return {"v": contract("n d, n k -> d k", u, dz)}, contract(
            "n k, d k -> n d", dz, params["v"]
        )
    return mlp_backward(u, H, dz, params)


def weight_on_target(S: np.ndarray, target: np.ndarray, pool: str = "mean") -> np.ndarray:
    """Weight on the target token of each prompt: ``S (..., p, c, j)``, ``target (p,)`` ->
    ``(..., p)``. Averaged over the query columns ``j`` for ``pool='mean'``; the last column
    (the one the head reads) for ``pool='last'``."""
    S = np.asarray(S)
    target = np.asarray(target)
    if S.ndim < 3 or target.shape != (S.shape[-3],) or target.dtype.kind not in "iu":
        raise ValueError(
            f"target: expected integer token indices of shape (p,) for S of shape "
            f"(..., p, c, j), received target {target.shape} {target.dtype} and S {S.shape}"
        )
    if pool not in POOLS:
        raise ValueError(f"pool: expected 'mean' or 'last', received {pool!r}")
    bad = target[(target < 0) | (target >= S.shape[-2])]
    if bad.size:
        raise ValueError(
            f"target: expected token indices in 0..{S.shape[-2] - 1}, received {bad[0]}"
        )
    idx = target.reshape((1,) * (S.ndim - 3) + (-1, 1, 1))
    w = np.take_along_axis(S, idx, axis=-2)[..., 0, :]  # (..., p, j)
    return w.mean(axis=-1) if pool == "mean" else w[..., -1]
