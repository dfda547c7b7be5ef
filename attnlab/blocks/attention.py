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

The linear form leaves the scores as they are and divides by the ``N = c - 1`` in-context
tokens (the last token is the query)::

    out = X (X^T Q) / N            (d, j)
    dX  = (dOut A^T + Q dA^T) / N  with A = X^T Q, dA = X^T dOut
    dQ  = X dA / N

Both forms take an optional additive ``bias (c, j)`` (shared by the prompts) or ``(n, c, j)``
(per prompt) on the scores: ``softmax(X^T Q + bias)``, where a ``-inf`` entry masks its key
(weight exactly 0, and then gradient exactly 0); the linear form takes a 0/1 ``mask (c, j)``
instead, ``A = (X^T Q + bias) * mask``. Their backward (:func:`attend_bias_grads`,
:func:`attend_linear_bias_grads`) also returns ``dBias``, the gradient of the scores (summed over
the prompts for a shared bias). This is how the stack's heads, masks and relative positions sit
on the same primitive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlp.contract import contract
from mlp.numerics import softmax_backward_unchecked, softmax_with_argmax_unchecked
from mlp.threads import map_blocks, prompt_blocks
from mlp.validation import as_float_array, check_finite, check_nonempty, positive


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
    return attend(X, Q)


def attend(
    X: np.ndarray, Q: np.ndarray, bias: np.ndarray | None = None
) -> tuple[np.ndarray, AttentionCache]:
    """:func:`attend_forward` without its checks: the one path under it and the models, for
    ``X (n, d, c)`` and ``Q`` already checked.

    ``bias`` (``(c, j)`` shared, or ``(n, c, j)``, of the scores' dtype) is added to the scores
    before the softmax; ``-inf`` masks a key. Every column needs a finite entry (else the
    softmax raises ``FloatingPointError``)."""
    n, d, c = X.shape
    j = Q.shape[-1]
    dtype = np.result_type(X, Q)

    # block by block (on the threads of mlp.threads when large), so that the softmax's
    # passes over the scores read them from cache
    def block(b: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scores = attention_scores(X[b], Q if Q.ndim == 2 else Q[b])
        if bias is not None:
            scores += bias if bias.ndim == 2 else bias[b]
        Sb, top_b = softmax_with_argmax_unchecked(scores, axis=1, overwrite=True)
        return Sb, top_b, contract("n d c, n c j -> n d j", X[b], Sb)

    blocks = prompt_blocks(n, c * j * dtype.itemsize)
    if len(blocks) == 1:  # one block: its arrays are the results
        S, top, out = block(blocks[0])
        return out, AttentionCache(X, Q, S, top, Q.ndim == 2)
    S = np.empty((n, c, j), dtype=dtype)
    top = np.empty((n, 1, j), dtype=np.intp)
    out = np.empty((n, d, j), dtype=dtype)

    def write(b: slice) -> None:
        S[b], top[b], out[b] = block(b)

    map_blocks(write, blocks, S.nbytes)
    return out, AttentionCache(X, Q, S, top, Q.ndim == 2)


def _check_dout(dOut: object, X: np.ndarray, j: int) -> np.ndarray:
    """``dOut`` as a float array of shape ``(n, d, j)``, or ``(n, d, 1)``: the same gradient
    for every query column (what the mean pool sends back)."""
    dOut = as_float_array("dOut", dOut, ndim=3)
    n, d = X.shape[0], X.shape[1]
    if dOut.shape not in ((n, d, j), (n, d, 1)):
        raise ValueError(
            f"dOut: expected shape (n={n}, d={d}, j={j}), received {dOut.shape} "
            f"(or (n={n}, d={d}, 1): the same gradient for every query column)"
        )
    return dOut


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
    return attend_grads(_check_dout(dOut, cache.X, cache.S.shape[2]), cache, need_dX, textbook)


def attend_grads(
    dOut: np.ndarray, cache: AttentionCache, need_dX: bool = True, textbook: bool = False
) -> tuple[np.ndarray | None, np.ndarray]:
    """:func:`attend_backward` without its checks: the layer's path, for a ``dOut (n, d, j)``
    or ``(n, d, 1)`` that the model made."""
    dX, dQ, _ = attend_bias_grads(dOut, cache, need_dX, textbook, None)
    return dX, dQ


def attend_bias_grads(
    dOut: np.ndarray,
    cache: AttentionCache,
    need_dX: bool = True,
    textbook: bool = False,
    bias: str | None = "shared",
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """:func:`attend_grads` and the gradient of the scores, ``dBias``: ``(dX, dQ, dBias)``.

    ``bias="shared"``: ``dBias (c, j)`` summed over the prompts (in block order); ``"prompt"``:
    ``(n, c, j)``; None: not computed (returns None). A masked key (bias ``-inf``) has weight 0,
    so its ``dBias`` and its share of every other gradient are exactly 0."""
    X, Q, S = cache.X, cache.Q, cache.S
    n, d, j = X.shape[0], X.shape[1], S.shape[2]
    top = None if textbook else cache.top

    # block by block, as in the forward: the softmax backward's passes and the products that
    # read dScores find them in cache. A block returns its dQ (a partial sum for a shared Q),
    # dX, dBias (a partial sum for a shared bias); partial sums are added in block order.
    def block(b: slice) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        dS = contract("n d c, n d j -> n c j", X[b], dOut[b])  # (nb, c, 1) for a broadcast dOut
        dScores = softmax_backward_unchecked(
            S[b], dS, axis=1, top=None if top is None else top[b], overwrite=True
        )
        dX_b = None
        if need_dX:
            if dOut.shape[2] == j:
                dX_b = contract("n d j, n c j -> n d c", dOut[b], S[b])
            else:  # sum_j dOut[:, :, j] S[:, c, j] with dOut constant in j
                dX_b = np.multiply(dOut[b], S[b].sum(axis=2)[:, None, :])
            if cache.shared:
                dX_b += contract("d j, n c j -> n d c", Q, dScores)
            else:
                dX_b += contract("n d j, n c j -> n d c", Q[b], dScores)
        dB_b = dScores.sum(axis=0) if bias == "shared" else dScores if bias == "prompt" else None
        if cache.shared:
            return contract("n d c, n c j -> d j", X[b], dScores), dX_b, dB_b
        return contract("n d c, n c j -> n d j", X[b], dScores), dX_b, dB_b

    blocks = prompt_blocks(n, S.shape[1] * j * S.itemsize)
    if len(blocks) == 1:  # one block: its arrays are the results
        dQ, dX, dB = block(blocks[0])
        return dX, dQ, dB
    dtype = np.result_type(X, S, dOut)
    dX = np.empty((n, d, X.shape[2]), dtype=np.result_type(dOut, S)) if need_dX else None
    dQ = None if cache.shared else np.empty((n, d, j), dtype=dtype)
    dB = np.empty(S.shape, dtype=dtype) if bias == "prompt" else None

    def write(b: slice) -> tuple[np.ndarray | None, np.ndarray | None]:
        dQ_b, dX_b, dB_b = block(b)
        if dX is not None:
            dX[b] = dX_b
        if dB is not None:
            dB[b] = dB_b
        if dQ is not None:
            dQ[b] = dQ_b
            dQ_b = None
        return dQ_b, dB_b if bias == "shared" else None

    partials = map_blocks(write, blocks, S.nbytes)
    if dQ is None:  # a shared Q: the sum of the blocks' partial sums, in block order
        dQ = partials[0][0].copy()
        for p, _ in partials[1:]:
            dQ += p
    if bias == "shared":
        dB = partials[0][1].copy()
        for _, p in partials[1:]:
            dB += p
    return dX, dQ, dB


# --- the linear form: scores not passed through a softmax ------------------------------------


@dataclass(frozen=True)
class LinearAttentionCache:
    """What :func:`attend_linear_backward` needs: ``X (n, d, c)``, ``Q``, the scores
    ``A = X^T Q (n, c, j)`` (with a bias and mask: ``(X^T Q + bias) * mask``), the ``scale``,
    whether ``Q`` was shared ``(d, j)``, and the 0/1 ``mask (c, j)`` or None."""

    X: np.ndarray
    Q: np.ndarray
    A: np.ndarray
    scale: float
    shared: bool
    mask: np.ndarray | None = None


def linear_scale(X: np.ndarray, scale: object) -> float:
    """``scale``, or ``1 / N`` with ``N = c - 1`` in-context tokens (the last is the query)."""
    if scale is None:
        if X.shape[2] < 2:
            raise ValueError(
                f"X: the linear form divides by N = c - 1 in-context tokens, so it needs "
                f"c >= 2 tokens, received shape {X.shape} (or give a scale)"
            )
        return 1.0 / (X.shape[2] - 1)
    positive("scale", scale)  # type: ignore[arg-type]
    return float(scale)  # type: ignore[arg-type]


def attend_linear_forward(
    X: np.ndarray, Q: np.ndarray, scale: float | None = None
) -> tuple[np.ndarray, LinearAttentionCache]:
    """``out = scale * X (X^T Q)``: linear attention, ``out (n, d, j)`` and the cache.

    ``X (n, d, c)``; ``Q (n, d, j)`` (per prompt) or ``(d, j)`` (shared). The scores
    ``A = X^T Q (n, c, j)`` weight the tokens as they are, without a softmax. ``scale`` defaults
    to ``1 / N`` with ``N = c - 1``: the last token is the query, the other ``N`` are the
    in-context examples, and ``out`` is the mean over them of ``x_t (x_t^T Q)`` plus the
    query's own term divided by ``N``.
    """
    X = check_prompts(X)
    Q = _check_query(X, Q)
    return attend_linear(X, Q, linear_scale(X, scale))


def attend_linear(
    X: np.ndarray,
    Q: np.ndarray,
    scale: float,
    bias: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, LinearAttentionCache]:
    """:func:`attend_linear_forward` without its checks (``scale`` from :func:`linear_scale`).

    ``bias`` (``(c, j)`` or ``(n, c, j)``, finite) is added to the scores and the 0/1
    ``mask (c, j)`` multiplies them: ``out = scale * X ((X^T Q + bias) * mask)``."""
    A = attention_scores(X, Q)
    if bias is not None:
        A += bias
    if mask is not None:
        A *= mask
    out = contract("n d c, n c j -> n d j", X, A)
    out *= scale
    return out, LinearAttentionCache(X, Q, A, scale, Q.ndim == 2, mask)


def attend_linear_backward(
    dOut: np.ndarray, cache: LinearAttentionCache, *, need_dX: bool = True
) -> tuple[np.ndarray | None, np.ndarray]:
    """Gradients ``(dX (n, d, c), dQ)`` of ``<dOut, out>`` for ``out = s X (X^T Q)``.

    With ``dA = s X^T dOut (n, c, j)``::

        dX = s dOut A^T + Q dA^T      (n, d, c)
        dQ = X dA                     (n, d, j), or (d, j) summed over n if Q was shared

    ``dOut (n, d, j)``, or ``(n, d, 1)`` for the same gradient in every query column (what the
    mean pool sends back). ``need_dX=False`` skips ``dX`` (returns None).
    """
    if not isinstance(cache, LinearAttentionCache):
        raise TypeError(
            f"cache: expected the LinearAttentionCache returned by attend_linear_forward, "
            f"received {type(cache).__name__}"
        )
    return attend_linear_grads(_check_dout(dOut, cache.X, cache.A.shape[2]), cache, need_dX)


def attend_linear_grads(
    dOut: np.ndarray, cache: LinearAttentionCache, need_dX: bool = True
) -> tuple[np.ndarray | None, np.ndarray]:
    """:func:`attend_linear_backward` without its checks (the layer's path)."""
    dX, dQ, _ = attend_linear_bias_grads(dOut, cache, need_dX, None)
    return dX, dQ


def attend_linear_bias_grads(
    dOut: np.ndarray, cache: LinearAttentionCache, need_dX: bool = True, bias: str | None = "shared"
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """:func:`attend_linear_grads` and ``dBias``, the gradient of the (masked) scores:
    ``(dX, dQ, dBias)``, with ``dBias (c, j)`` summed over the prompts for ``bias="shared"``,
    ``(n, c, j)`` for ``"prompt"``, None for None. Masked entries get exactly 0."""
    X, Q, A, s = cache.X, cache.Q, cache.A, cache.scale
    n, d, j = X.shape[0], X.shape[1], A.shape[2]
    dOut = np.broadcast_to(dOut, (n, d, j))
    dA = contract("n d c, n d j -> n c j", X, dOut)
    dA *= s
    if cache.mask is not None:
        dA *= cache.mask
    if cache.shared:
        dQ = contract("n d c, n c j -> d j", X, dA)
    else:
        dQ = contract("n d c, n c j -> n d j", X, dA)
    dB = dA.sum(axis=0) if bias == "shared" else dA if bias == "prompt" else None
    if not need_dX:
        return None, dQ, dB
    dX = contract("n d j, n c j -> n d c", dOut, A)
    dX *= s
    if cache.shared:
        dX += contract("d j, n c j -> n d c", Q, dA)
    else:
        dX += contract("n d j, n c j -> n d c", Q, dA)
    return dX, dQ, dB


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


def _loop_backward_inputs(dOut: object, X: object, Q: object) -> tuple[np.ndarray, ...]:
    """The loop references' checked ``X``, ``Q``, ``dOut (n, d, j)`` and zero ``dX``, ``dQ``."""
    X = check_prompts(X)
    Q = _check_query(X, Q)
    dOut = as_float_array("dOut", dOut, ndim=3)
    if dOut.shape != (*X.shape[:2], Q.shape[-1]):
        raise ValueError(
            f"dOut: expected shape (n={X.shape[0]}, d={X.shape[1]}, j={Q.shape[-1]}), "
            f"received {dOut.shape}"
        )
    dX = np.zeros_like(X, dtype=np.result_type(X, Q))
    return X, Q, dOut, dX, np.zeros_like(Q, dtype=dX.dtype)


def attend_backward_loop(
    dOut: np.ndarray, X: np.ndarray, Q: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt, per-column loop reference of :func:`attend_backward`: ``(dX, dQ)``.

    Each column ``s`` of ``S`` has the softmax Jacobian ``diag(s) - s s^T``; its product with
    ``ds`` is ``s * (ds - s . ds)``, written with ``ds`` shifted to 0 at the largest weight.
    """
    X, Q, dOut, dX, dQ = _loop_backward_inputs(dOut, X, Q)
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


def attend_linear_forward_loop(
    X: np.ndarray, Q: np.ndarray, scale: float | None = None
) -> np.ndarray:
    """Per-prompt, per-column loop reference of :func:`attend_linear_forward`: ``out (n, d, j)``.

    Query column ``q`` of prompt ``i``: ``a = X_i^T q`` (one score per token), then
    ``out = s sum_t a_t x_t``.
    """
    X = check_prompts(X)
    Q = _check_query(X, Q)
    s = linear_scale(X, scale)
    n, d, c = X.shape
    j = Q.shape[-1]
    out = np.zeros((n, d, j), dtype=np.result_type(X, Q))
    for i in range(n):
        Qi = Q if Q.ndim == 2 else Q[i]
        for col in range(j):
            a = X[i].T @ Qi[:, col]
            for t in range(c):
                out[i, :, col] += s * a[t] * X[i][:, t]
    return out


def attend_linear_backward_loop(
    dOut: np.ndarray, X: np.ndarray, Q: np.ndarray, scale: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt, per-column loop reference of :func:`attend_linear_backward`: ``(dX, dQ)``.

    For query column ``q`` with upstream ``g``: ``a = X^T q`` and ``da = s X^T g``; token ``t``
    gets ``dx_t = s a_t g + da_t q`` and the query ``dq = X da``.
    """
    X, Q, dOut, dX, dQ = _loop_backward_inputs(dOut, X, Q)
    s = linear_scale(X, scale)
    for i in range(X.shape[0]):
        Qi = Q if Q.ndim == 2 else Q[i]
        for col in range(Qi.shape[1]):
            q, g = Qi[:, col], dOut[i][:, col]
            a, da = X[i].T @ q, s * (X[i].T @ g)
            for t in range(X.shape[2]):
                dX[i][:, t] += s * a[t] * g + da[t] * q
            dq = X[i] @ da
            if Q.ndim == 2:
                dQ[:, col] += dq
            else:
                dQ[i][:, col] = dq
    return dX, dQ
