"""The stable numerics, in one place: relu, softmax, log-sum-exp, and the losses (cross-entropy,
logistic, squared).

Every other module (the MLP and the attention layer) calls these; none re-implements them.
Shapes use the axis names ``n`` samples, ``k`` classes.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from mlp.validation import (
    as_float_array,
    check_nonempty,
    class_labels,
    real_targets,
    sign_labels,
)


def relu(x: np.ndarray) -> np.ndarray:
    """``relu(x) = max(x, 0)`` elementwise; same shape and dtype as ``x``."""
    return np.maximum(x, 0)


def relu_grad(h: np.ndarray) -> np.ndarray:
    """``relu'`` as a 0/1 mask of ``x``'s dtype, from the pre-activation or from ``relu(x)``.

    Both give the same mask: ``relu(x) > 0`` exactly where ``x > 0`` (the derivative at 0 is 0).
    """
    h = np.asarray(h)
    return (h > 0).astype(h.dtype)


def _logits(z: object, axis: int) -> np.ndarray:
    """``z`` as a real float array with at least one entry along ``axis`` (for the softmaxes)."""
    z = as_float_array("z", z)
    if not -z.ndim <= axis < z.ndim:
        raise ValueError(f"axis: expected an axis of z (ndim {z.ndim}), received {axis!r}")
    if z.shape[axis] == 0:
        raise ValueError(f"z: expected at least one entry along axis {axis}, received {z.shape}")
    return z


def logsumexp(z: np.ndarray, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """``log sum_a exp(z_a)`` along ``axis``, shifted by the max: finite for any finite ``z``."""
    z = _logits(z, axis)
    m = np.max(z, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(z - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """``exp(z) / sum exp(z)`` along ``axis`` (max-shifted): entries in [0, 1], sums of 1.

    Finite for any finite input: logits of +-1e4 give exact 0/1 weights, never NaN.
    """
    z = _logits(z, axis)
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


#: Softmaxes over at most this many entries in all take the argmax first (see below).
_SMALL_SOFTMAX = 2**16


@lru_cache(maxsize=64)
def _to_last(ndim: int, axis: int) -> tuple[int, ...]:
    """The transpose that moves ``axis`` to the end (what ``np.moveaxis`` computes per call)."""
    return (*(i for i in range(ndim) if i != axis), axis)


@lru_cache(maxsize=64)
def _along(shape: tuple[int, ...], axis: int) -> tuple[np.ndarray | None, ...]:
    """Open index arrays of every axis but ``axis`` of an array of ``shape`` (kept, small)."""
    return tuple(
        None
        if i == axis
        else np.arange(n).reshape([-1 if k == i else 1 for k in range(len(shape))])
        for i, n in enumerate(shape)
    )


def take_along(a: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    """``np.take_along_axis(a, idx, axis)`` for ``idx`` of size 1 along ``axis`` (the other
    axes broadcast), with the index arrays made once per shape of ``a``."""
    axis %= a.ndim
    rows = _along(a.shape, axis)
    return a[tuple(idx if r is None else r for r in rows)]


def softmax_with_argmax(
    z: np.ndarray, axis: int = -1, overwrite: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`softmax` along ``axis`` and the index of the largest entry (``keepdims`` shape).

    The max-shift needs the max anyway; its position is what :func:`softmax_backward` uses to
    stay exact when the softmax saturates. ``overwrite`` computes the softmax in ``z``'s memory
    (no new array; ``z`` then holds the weights, when it is a float array). Ties give the first
    largest entry. Scores that hold NaN or inf (for example products that overflowed the dtype)
    have no finite weights: ``FloatingPointError``, never NaN weights.
    """
    z = _logits(z, axis)  # integers become a float64 copy: exp cannot write into them
    return softmax_with_argmax_unchecked(z, axis, overwrite)


def softmax_with_argmax_unchecked(
    z: np.ndarray, axis: int, overwrite: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`softmax_with_argmax` for a float array ``z`` that its caller made (the attention
    layer's scores): no checks of ``z`` or ``axis``."""
    # np.max reduces along a strided axis in place; np.argmax would copy it to make it the last
    # (measured at (1024, 64, 64), axis 1: 3.8 ms + 2.6 ms for the argmax of the 0/1 mask below
    # against 10.7 ms + 2.5 ms for np.argmax and the gather of the max). Small arrays, where a
    # call costs more than its pass, take the argmax first and gather the max: the same max and
    # the same first index of it (a NaN or +inf is found either way: it is the argmax then).
    small = z.size <= _SMALL_SOFTMAX
    if small:
        top = np.argmax(z, axis=axis, keepdims=True)
        top_value = take_along(z, top, axis)
    else:
        top_value = np.max(z, axis=axis, keepdims=True)  # NaN or inf iff a score is NaN or +inf
    finite = np.isfinite(top_value)
    if not finite.all():
        raise FloatingPointError(
            f"softmax: the scores of {finite.size - np.count_nonzero(finite)} of {finite.size} "
            f"softmaxes hold NaN or inf (overflow of {z.dtype}?): their weights would be NaN"
        )
    e = np.subtract(z, top_value, out=z if overwrite else None)
    if not small:
        top = np.argmax(e == 0, axis=axis, keepdims=True)  # z - max == 0 exactly at the max
    np.exp(e, out=e)
    e /= _sum_keepdims(e, axis, small)
    return e, top


def _sum_keepdims(e: np.ndarray, axis: int, small: bool) -> np.ndarray:
    """``np.add.reduce(e, axis, keepdims=True)``, the same bits, faster on small arrays.

    Over an axis that is not the last (and with more than one entry after it), numpy adds the
    slices along ``axis`` one after the other, in an inner loop as short as the axes after it
    (2 for the last pool's two query columns: 14 us at (64, 16, 2)). In a contiguous copy with
    ``axis`` first, the same slices are added in the same order, in one long inner loop (5 us
    with the copy). Large arrays (where the copy costs more) and sums along the last axis
    (numpy's pairwise sum, a different order) are left to ``np.add.reduce``.
    """
    axis %= e.ndim
    if not small or math.prod(e.shape[axis + 1 :]) <= 1:
        return np.add.reduce(e, axis=axis, keepdims=True)
    front = np.ascontiguousarray(e.transpose(_to_front(e.ndim, axis)))
    return np.add.reduce(front, axis=0).reshape((*e.shape[:axis], 1, *e.shape[axis + 1 :]))


@lru_cache(maxsize=64)
def _to_front(ndim: int, axis: int) -> tuple[int, ...]:
    """The transpose that moves ``axis`` to the front, the other axes in their order."""
    return (axis, *(i for i in range(ndim) if i != axis))


def softmax_backward(
    S: np.ndarray,
    dS: np.ndarray,
    axis: int = -1,
    top: np.ndarray | None = None,
    overwrite: bool = False,
) -> np.ndarray:
    """Vector-Jacobian product of the softmax: ``dz = S * (dS - sum_axis(S * dS))``.

    With ``top`` (the argmax of ``S`` along ``axis``, keepdims, from
    :func:`softmax_with_argmax`) it is computed in a form that keeps full relative accuracy when
    the softmax saturates: the product is unchanged by adding a constant to ``dS`` along
    ``axis``, so ``dS`` is first shifted to be 0 at the dominant entry. Then ``sum(S * dS)`` is a
    sum of small terms and ``dz`` at the dominant entry, ``-S_top * sum(...)``, has no
    cancellation (the textbook form subtracts two numbers that agree to all their digits).
    ``top=None`` gives the textbook form. ``dS`` has ``S``'s shape, or size 1 on other axes than
    ``axis`` (a gradient that is the same along them: it is broadcast). ``overwrite`` lets it
    reuse ``dS``'s memory (when it has ``S``'s shape and the result's dtype); otherwise the
    result is a new array in ``S``'s memory order.
    """
    return softmax_backward_unchecked(
        as_float_array("S", S), as_float_array("dS", dS), axis, top, overwrite
    )


def softmax_backward_unchecked(
    S: np.ndarray,
    dS: np.ndarray,
    axis: int,
    top: np.ndarray | None = None,
    overwrite: bool = False,
) -> np.ndarray:
    """:func:`softmax_backward` for float arrays its caller made (the attention layer's)."""
    dtype = np.result_type(S, dS)
    if overwrite and dS.shape == S.shape and dS.dtype == dtype:
        g = dS
    else:
        g = np.empty_like(S, dtype=dtype)  # float32 dS with float64 S: computed in float64
    if top is not None:
        np.subtract(dS, take_along(dS, top, axis), out=g)
    elif g is not dS:
        g[...] = dS
    # sum_axis(S * g) without an array of the products: one pass over S and g (a two-operand
    # einsum has no contraction order to optimize; it is faster here than a batched matmul)
    axis %= S.ndim
    last = _to_last(S.ndim, axis)
    sigma = np.einsum("...c,...c->...", S.transpose(last), g.transpose(last))
    g -= sigma.reshape((*sigma.shape[:axis], 1, *sigma.shape[axis:]))
    g *= S
    return g


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """``z - logsumexp(z)`` along ``axis``; finite for any finite ``z``.

    Computed as ``(z - max) - log(sum exp(z - max))``: subtracting the max first keeps the
    result exact where ``z - logsumexp(z)`` would round ``logsumexp`` to ``max`` (equal logits of
    1e17 would get log-probabilities 0 instead of ``-log 2``).
    """
    z = _logits(z, axis)
    s = z - np.max(z, axis=axis, keepdims=True)
    return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


def cross_entropy(Z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of logits and its gradient, fused.

    ``J = -(1/n) sum_i log softmax(Z)[i, y_i]``, ``dZ = (softmax(Z) - onehot(y)) / n``.

    Shapes: ``Z (n, k)``, ``y (n,)`` integers in ``0..k-1``; returns ``(J, dZ (n, k))``.
    Computed through log-sum-exp: logits of +-1e4 give a finite loss and gradient. Non-finite
    logits are not refused: they give a non-finite loss (what the trainer reports as divergence).
    """
    Z = as_float_array("Z", Z, ndim=2)
    check_nonempty("Z", Z)
    return cross_entropy_unchecked(Z, class_labels("y", y, Z.shape[0], Z.shape[1]))


def cross_entropy_unchecked(Z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """:func:`cross_entropy` for a model that checked ``Z (n, k)`` and ``y (n,)`` already."""
    n = Z.shape[0]
    s = Z - np.maximum.reduce(Z, axis=1, keepdims=True)  # log_softmax and softmax from one exp
    dZ = np.exp(s)
    total = np.add.reduce(dZ, axis=1, keepdims=True)
    rows = np.arange(n)
    loss = -float(np.add.reduce(s[rows, y] - np.log(total[:, 0])) / n)
    dZ /= total
    dZ[rows, y] -= 1
    dZ /= n
    return loss, dZ


def logistic_loss(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean logistic loss of one logit per sample and its gradient.

    ``J = (1/n) sum_i log(1 + exp(-y_i z_i))`` with labels ``y`` in ``{-1, +1}``;
    ``dJ/dz_i = -y_i sigmoid(-y_i z_i) / n``.

    Shapes: ``z (n,)`` or ``(n, 1)``, ``y (n,)``; ``dz`` has ``z``'s shape. Stable for any margin:
    ``log(1 + exp(-m))`` is ``np.logaddexp(0, -m)`` and ``sigmoid(-m) = exp(-logaddexp(0, m))``
    keeps its relative accuracy when the loss is 1e-300 (what normalized GD divides by).
    """
    z = as_float_array("z", z, ndim=(1, 2))
    check_nonempty("z", z)
    if z.ndim == 2 and z.shape[1] != 1:
        raise ValueError(f"z: expected shape (n,) or (n, 1), received {z.shape}")
    return logistic_loss_unchecked(z, sign_labels("y", y, z.shape[0]))


def logistic_loss_unchecked(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """:func:`logistic_loss` for a model that checked ``z (n,)`` or ``(n, 1)`` and ``y`` already."""
    zf = z.reshape(z.shape[0])
    margin = y.astype(z.dtype, copy=False) * zf
    n = zf.shape[0]
    loss = float(np.mean(np.logaddexp(0, -margin)))
    dz = -y * np.exp(-np.logaddexp(0, margin)) / n
    return loss, dz.astype(z.dtype, copy=False).reshape(z.shape)


def squared_loss(z: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared loss of one real output per sample and its gradient.

    ``J = (1/n) sum_i (z_i - t_i)^2 / 2``, ``dJ/dz_i = (z_i - t_i) / n``.

    Shapes: ``z (n,)`` or ``(n, 1)``, targets ``t (n,)``; ``dz`` has ``z``'s shape and dtype.
    Targets must be finite (NaN or inf targets are refused); non-finite outputs ``z`` give a
    non-finite loss (what the trainer reports as divergence).
    """
    z = as_float_array("z", z, ndim=(1, 2))
    check_nonempty("z", z)
    if z.ndim == 2 and z.shape[1] != 1:
        raise ValueError(f"z: expected shape (n,) or (n, 1), received {z.shape}")
    return squared_loss_unchecked(z, real_targets("t", t, z.shape[0]))


def squared_loss_unchecked(z: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    """:func:`squared_loss` for a model that checked ``z (n,)`` or ``(n, 1)`` and ``t`` already."""
    r = z.reshape(z.shape[0]) - t
    n = r.shape[0]
    loss = float(np.dot(r, r)) / (2 * n)
    return loss, (r / n).astype(z.dtype, copy=False).reshape(z.shape)
