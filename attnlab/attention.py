"""The attention primitive ``out = X softmax(X^T Q)``, forward and backward, and its loop reference.

For one prompt ``X (d, c)`` (tokens as columns) and a query matrix ``Q (d, j)``::

    scores = X^T Q            (c, j)
    S      = softmax(scores)  over the token axis c: every column of S sums to 1
    out    = X S              (d, j)

Backward, given ``dOut (d, j)``::

    dS      = X^T dOut                     (c, j)
    dScores = S * (dS - sum_c S * dS)      computed exactly when S saturates
    dX      = dOut S^T + Q dScores^T       (d, c)
    dQ      = X dScores                    (d, j)

Batched: ``X (n, d, c)``; ``Q (n, d, j)`` per prompt or ``(d, j)`` shared by all prompts (then
``dQ`` is summed over the prompts). Every query parametrization of the model is built on this.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnlab.threads import map_blocks, prompt_blocks
from mlp.contract import contract
from mlp.numerics import softmax_backward, softmax_with_argmax
from mlp.validation import as_float_array, check_finite, check_nonempty


@dataclass(frozen=True)
class AttentionCache:
    """What the backward pass needs: ``X (n, d, c)``, ``Q``, ``S (n, c, j)``, the argmax of
    ``S`` over tokens ``top (n, 1, j)``, and whether ``Q`` was shared ``(d, j)``."""

    X: np.ndarray
    Q: np.ndarray
    S: np.ndarray
    top: np.ndarray
    shared: bool


def check_prompts(X: object, name: str = "X") -> np.ndarray:
    """``X`` as a finite float array of shape ``(n, d, c)`` with ``n, d, c >= 1``."""
    X = as_float_array(name, X, ndim=3)
    check_nonempty(name, X)
    if X.shape[1] == 0 or X.shape[2] == 0:
        raise ValueError(f"{name}: expected d >= 1 features and c >= 1 tokens, received {X.shape}")
    check_finite(name, X)
    return X


def _check_query(X: np.ndarray, Q: object) -> np.ndarray:
    Q = as_float_array("Q", Q, ndim=(2, 3))
    n, d, _ = X.shape
    if Q.ndim == 2 and Q.shape[0] != d:
        raise ValueError(f"Q: expected shape (d={d}, j) to match X {X.shape}, received {Q.shape}")
    if Q.ndim == 3 and Q.shape[:2] != (n, d):
        raise ValueError(
            f"Q: expected shape (n={n}, d={d}, j) to match X {X.shape}, received {Q.shape}"
        )
    if Q.shape[-1] == 0:
        raise ValueError(f"Q: expected at least one query column, received {Q.shape}")
    check_finite("Q", Q)
    return Q


def attention_scores(X: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """``scores = X^T Q``: ``(n, c, j)`` from ``X (n, d, c)`` and ``Q (n, d, j)`` or ``(d, j)``."""
    if Q.ndim == 2:
        return contract("n d c, d j -> n c j", X, Q)
    return contract("n d c, n d j -> n c j", X, Q)


def attend_forward(X: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, AttentionCache]:
    """``out = X softmax(X^T Q)``: ``out (n, d, j)`` and the cache for :func:`attend_backward`.

    ``X (n, d, c)``; ``Q (n, d, j)`` (a query matrix per prompt) or ``(d, j)`` (shared).
    The softmax runs over the token axis ``c`` and is finite for any finite scores.
    """
    X = check_prompts(X)
    Q = _check_query(X, Q)
    return _forward(X, Q)


def _forward(X: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, AttentionCache]:
    n, d, c = X.shape
    j = Q.shape[-1]
    dtype = np.result_type(X, Q)
    S = np.empty((n, c, j), dtype=dtype)
    top = np.empty((n, 1, j), dtype=np.intp)
    out = np.empty((n, d, j), dtype=dtype)

    # block by block (on the threads of attnlab.threads when large), so that the softmax's
    # passes over the scores read them from cache
    def block(b: slice) -> None:
        Sb, top[b] = softmax_with_argmax(
            attention_scores(X[b], Q if Q.ndim == 2 else Q[b]), axis=1, overwrite=True
        )
        S[b] = Sb
        out[b] = contract("n d c, n c j -> n d j", X[b], Sb)

    map_blocks(block, prompt_blocks(n, c * j * dtype.itemsize), S.nbytes)
    return out, AttentionCache(X, Q, S, top, Q.ndim == 2)


def attend_backward(
    dOut: np.ndarray, cache: AttentionCache, *, need_dX: bool = True, textbook: bool = False
) -> tuple[np.ndarray | None, np.ndarray]:
    """Gradients ``(dX (n, d, c), dQ)`` of ``<dOut, out>``; ``dQ`` has the shape ``Q`` had.

    ``dOut (n, d, j)``, or ``(n, d, 1)`` for the same gradient in every query column (what the
    mean pool sends back): then ``dS = X^T dOut`` is one column per prompt, a matrix-vector
    product instead of a matrix product. Exact when the attention saturates (see
    :func:`mlp.numerics.softmax_backward`); ``textbook=True`` uses the plain formula
    ``S * (dS - sum S dS)`` instead (for comparison only: it loses every digit there).
    ``need_dX=False`` skips ``dX`` (returns None): the model's parameters do not need it.
    ``dOut`` is not checked for NaN or inf (a non-finite upstream gradient gives non-finite
    gradients, which the trainer reports as divergence).
    """
    if not isinstance(cache, AttentionCache):
        raise TypeError(
            f"cache: expected the AttentionCache returned by attend_forward, "
            f"received {type(cache).__name__}"
        )
    X, Q, S = cache.X, cache.Q, cache.S
    dOut = as_float_array("dOut", dOut, ndim=3)
    n, d, j = X.shape[0], X.shape[1], S.shape[2]
    if dOut.shape not in ((n, d, j), (n, d, 1)):
        raise ValueError(
            f"dOut: expected shape (n={n}, d={d}, j={j}), received {dOut.shape} "
            f"(or (n={n}, d={d}, 1): the same gradient for every query column)"
        )
    top = None if textbook else cache.top
    dtype = np.result_type(X, S, dOut)
    dQ = np.zeros((d, j), dtype=dtype) if cache.shared else np.empty((n, d, j), dtype=dtype)
    dX = np.empty((n, d, X.shape[2]), dtype=np.result_type(dOut, S)) if need_dX else None

    # block by block, as in the forward: the softmax backward's passes and the products that
    # read dScores find them in cache; a shared Q's dQ is summed over the blocks in their order
    def block(b: slice) -> np.ndarray | None:
        dS = contract("n d c, n d j -> n c j", X[b], dOut[b])  # (nb, c, 1) for a broadcast dOut
        dScores = softmax_backward(
            S[b], dS, axis=1, top=None if top is None else top[b], overwrite=True
        )
        if dX is not None:
            if dOut.shape[2] == j:
                dX[b] = contract("n d j, n c j -> n d c", dOut[b], S[b])
            else:  # sum_j dOut[:, :, j] S[:, c, j] with dOut constant in j
                np.multiply(dOut[b], S[b].sum(axis=2)[:, None, :], out=dX[b])
            if cache.shared:
                dX[b] += contract("d j, n c j -> n d c", Q, dScores)
            else:
                dX[b] += contract("n d j, n c j -> n d c", Q[b], dScores)
        if cache.shared:
            return contract("n d c, n c j -> d j", X[b], dScores)
        dQ[b] = contract("n d c, n c j -> n d j", X[b], dScores)
        return None

    partials = map_blocks(block, prompt_blocks(n, S.shape[1] * j * S.itemsize), S.nbytes)
    if cache.shared:
        for p in partials:
            dQ += p
    return dX, dQ


# --- the lecture's non-vectorized form: one prompt at a time ---------------------------------


def _column_softmax(scores: np.ndarray) -> np.ndarray:
    S = np.empty_like(scores)
    for j in range(scores.shape[1]):
        col = scores[:, j]
        e = np.exp(col - col.max())
        S[:, j] = e / e.sum()
    return S


def attend_forward_loop(X: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt loop reference of :func:`attend_forward`: returns ``(out (n, d, j), S)``."""
    X = check_prompts(X)
    Q = _check_query(X, Q)
    n, d, _ = X.shape
    j = Q.shape[-1]
    out = np.zeros((n, d, j), dtype=np.result_type(X, Q))
    S_all = np.zeros((n, X.shape[2], j), dtype=out.dtype)
    for i in range(n):
        Qi = Q if Q.ndim == 2 else Q[i]
        S = _column_softmax(X[i].T @ Qi)
        out[i] = X[i] @ S
        S_all[i] = S
    return out, S_all


def attend_backward_loop(
    dOut: np.ndarray, X: np.ndarray, Q: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt, per-column loop reference of :func:`attend_backward`: ``(dX, dQ)``.

    Each column ``s`` of ``S`` has the softmax Jacobian ``diag(s) - s s^T``; its product with
    ``ds`` is ``s * (ds - s . ds)``, written with ``ds`` shifted to 0 at the largest weight.
    """
    X = check_prompts(X)
    Q = _check_query(X, Q)
    dOut = as_float_array("dOut", dOut, ndim=3)
    if dOut.shape != (*X.shape[:2], Q.shape[-1]):
        raise ValueError(
            f"dOut: expected shape (n={X.shape[0]}, d={X.shape[1]}, j={Q.shape[-1]}), "
            f"received {dOut.shape}"
        )
    dX = np.zeros_like(X, dtype=np.result_type(X, Q))
    dQ = np.zeros_like(Q, dtype=dX.dtype)
    for i in range(X.shape[0]):
        Qi = Q if Q.ndim == 2 else Q[i]
        S = _column_softmax(X[i].T @ Qi)
        dS = X[i].T @ dOut[i]
        dScores = np.zeros_like(S)
        for j in range(S.shape[1]):
            s, ds = S[:, j], dS[:, j] - dS[np.argmax(S[:, j]), j]
            dScores[:, j] = s * (ds - s @ ds)
        dX[i] = dOut[i] @ S.T + Qi @ dScores.T
        if Q.ndim == 2:
            dQ += X[i] @ dScores
        else:
            dQ[i] = X[i] @ dScores
    return dX, dQ
