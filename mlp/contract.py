"""Named-axis contractions at matmul speed.

``contract("n d c, n d j -> n c j", X, Q)`` reads like an einops pattern (the axis names of
``docs/concepts.md``, separated by spaces) and computes ``einsum`` of two operands, but runs
through ``np.matmul`` (BLAS) instead of ``np.einsum``'s loops: the axes are sorted into batch
axes (in the output and in one or both operands), one contracted axis ``K``, and one "row" axis
of each operand, so the call is a batched matrix product of transposed *views*, with no copies.
Further contracted axes become batch axes summed after the product. The output is the product
itself, so its axes come in the order a matrix product leaves them: the batch axes, then
operand 1's own axis, then operand 2's (a pattern that would need a transpose of the result is
refused and told the order). The plan depends only on the pattern and is computed once.

Sizes are checked per axis, and a mismatch names the axis: ``axis 'd' has size 3 in operand 1
and 4 in operand 2``. einops' own ``einsum`` on numpy calls ``np.einsum`` without ``optimize``
(a three-operand call is a nested loop, hundreds of times slower); this helper takes two
operands.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mlp.validation import as_float_array

__all__ = ["contract"]


@dataclass(frozen=True)
class _Plan:
    a_axes: tuple[str, ...]  # the operands' and the output's axes, as the pattern names them
    b_axes: tuple[str, ...]
    out_axes: tuple[str, ...]
    a_perm: tuple[str | None, ...]  # layout of the matmul operands (None: a size-1 axis)
    b_perm: tuple[str | None, ...]
    n_summed: int  # leading axes of the product summed after it (further contracted axes)
    squeeze: tuple[int, ...]  # size-1 axes of the summed product that the output drops
    # compiled from the above, so that a call does no string or list work:
    a_t: tuple[int, ...]  # the transpose of operand 1 into its matmul layout
    b_t: tuple[int, ...]
    a_ones: tuple[int, ...] | None  # where size-1 axes go after the transpose (None: nowhere)
    b_ones: tuple[int, ...] | None
    shared: tuple[tuple[int, int, str], ...]  # (axis in a, axis in b, name) of the shared axes


def _split(spec: str, what: str, pattern: str) -> tuple[str, ...]:
    axes = tuple(spec.split())
    if len(set(axes)) != len(axes):
        raise ValueError(f"contract: repeated axis in {what} of pattern {pattern!r}")
    return axes


@lru_cache(maxsize=256)
def _plan(pattern: str) -> _Plan:
    """Sort the axes into ``(*summed, *batch, row, K) @ (*summed, *batch, K, col)``: ``K`` is
    the last contracted axis, the other contracted axes are summed after the product, ``row``
    and ``col`` are the last output axis of each operand alone (None: none)."""
    if "->" not in pattern or pattern.count(",") != 1:
        raise ValueError(
            f"contract: expected a pattern 'a-axes, b-axes -> out-axes', got {pattern!r}"
        )
    lhs, out_s = pattern.split("->")
    a_s, b_s = lhs.split(",")
    a = _split(a_s, "operand 1", pattern)
    b = _split(b_s, "operand 2", pattern)
    out = _split(out_s, "the output", pattern)
    for ax in out:
        if ax not in a and ax not in b:
            raise ValueError(f"contract: output axis {ax!r} is in no operand of {pattern!r}")
    for name, axes, other in (("operand 1", a, b), ("operand 2", b, a)):
        for ax in axes:
            if ax not in other and ax not in out:
                raise ValueError(
                    f"contract: axis {ax!r} of {name} is in neither the other operand nor the "
                    f"output of {pattern!r} (sum it before the contraction)"
                )
    contracted = [ax for ax in a if ax in b and ax not in out]
    left = [ax for ax in out if ax in a and ax not in b]
    right = [ax for ax in out if ax in b and ax not in a]
    k = contracted[-1] if contracted else None
    summed = contracted[:-1]
    row = left[-1] if left else None
    col = right[-1] if right else None
    batch = [ax for ax in out if ax not in (row, col)]
    kept = tuple(ax for ax in (*batch, row, col) if ax is not None)
    if kept != out:
        raise ValueError(
            f"contract: the output of {pattern!r} must be '{' '.join(kept)}': the batch axes, "
            "then operand 1's own axis, then operand 2's, as a matrix product leaves them "
            "(swap the operands or reorder the output)"
        )
    lead = [*summed, *batch]
    a_perm = (*[ax if ax in a else None for ax in lead], row, k)
    b_perm = (*[ax if ax in b else None for ax in lead], k, col)
    squeeze = tuple(i for i, ax in enumerate((*batch, row, col)) if ax is None)
    shared = tuple((a.index(ax), b.index(ax), ax) for ax in a if ax in b)
    keep = bool(summed)  # the summed axes must stay first in both operands
    (a_t, a_ones), (b_t, b_ones) = _compile(a, a_perm, keep), _compile(b, b_perm, keep)
    return _Plan(a, b, out, a_perm, b_perm, len(summed), squeeze, a_t, b_t, a_ones, b_ones, shared)


def _compile(
    axes: tuple[str, ...], perm: tuple[str | None, ...], keep_leading: bool
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """The transpose of an operand with ``axes`` into ``perm``, and the positions of the size-1
    axes (``None`` in ``perm``) to insert after it (``None``: no axis to insert). Leading
    size-1 batch axes are left to matmul's broadcasting, unless ``keep_leading``."""
    lead = 0
    while not keep_leading and lead < len(perm) - 2 and perm[lead] is None:
        lead += 1
    rest = perm[lead:]
    ones = tuple(i for i, p in enumerate(rest) if p is None)
    return tuple(axes.index(p) for p in rest if p is not None), (ones or None)


def _arrange(x: np.ndarray, t: tuple[int, ...], ones: tuple[int, ...] | None) -> np.ndarray:
    """``x`` transposed by ``t`` (a view), with size-1 axes inserted at ``ones``."""
    x = x.transpose(t)
    if ones is None:
        return x
    shape = list(x.shape)
    for i in ones:
        shape.insert(i, 1)
    return x.reshape(shape)


_CHUNK_BYTES = 2**21  # products summed over a batch axis are formed this much at a time


def _summed_matmul(A: np.ndarray, B: np.ndarray, n_summed: int) -> np.ndarray:
    """``np.matmul(A, B).sum(axis=(0, ..., n_summed - 1))``, formed in chunks of axis 0.

    Summing over the prompts (``"n e c, n d c -> e d"``) would otherwise write an ``(n, e, d)``
    product to fresh memory and read it back; chunks of about 2 MiB stay in cache.
    """
    rows, cols = A.shape[-2], B.shape[-1]
    n = max(A.shape[0], B.shape[0])
    per_item = np.result_type(A, B).itemsize * rows * cols
    for a_len, b_len in zip(A.shape[1:-2], B.shape[1:-2], strict=True):
        per_item *= max(a_len, b_len)
    axes = tuple(range(n_summed))
    step = max(1, _CHUNK_BYTES // max(per_item, 1))
    if n <= step:
        return np.matmul(A, B).sum(axis=axes)
    total = np.matmul(A[:step], B[:step]).sum(axis=axes)
    for i in range(step, n, step):
        total += np.matmul(A[i : i + step], B[i : i + step]).sum(axis=axes)
    return total


def contract(pattern: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Contract two arrays over the axes a named-axis ``pattern`` says, at matmul speed.

    ``pattern`` is ``"a-axes, b-axes -> out-axes"`` with space-separated axis names, e.g.
    ``"n d c, n d j -> n c j"`` (``X^T Q`` per prompt) or ``"e d, n d c -> n e c"`` (``W X``
    with a shared ``W``). Axes in both operands and not in the output are summed. Returns a new
    C-contiguous array with the output axes in the pattern's order.

    Raises ``ValueError`` naming the axis when sizes disagree, naming the operand when its
    number of axes does not match the pattern, and for a pattern that is not a matrix product
    (an axis in one operand only and not in the output, or an output order that needs a
    transpose: the message gives the order to write); ``TypeError`` for a pattern that is not a
    string or an operand that is not real (complex, object, strings). Lists are converted.
    """
    if not isinstance(pattern, str):
        raise TypeError(
            f"contract: pattern: expected a str like 'n d, d m -> n m', "
            f"received {type(pattern).__name__}"
        )
    plan = _plan(pattern)
    if type(a) is not np.ndarray or a.dtype.kind not in "biuf":
        a = as_float_array("contract: operand 1", a)
    if type(b) is not np.ndarray or b.dtype.kind not in "biuf":
        b = as_float_array("contract: operand 2", b)
    if a.ndim != len(plan.a_axes) or b.ndim != len(plan.b_axes):
        for name, x, axes in (("operand 1", a, plan.a_axes), ("operand 2", b, plan.b_axes)):
            if x.ndim != len(axes):
                raise ValueError(
                    f"contract {pattern!r}: {name} needs {len(axes)} axes ({' '.join(axes)}), "
                    f"received shape {x.shape}"
                )
    sa, sb = a.shape, b.shape
    for i, j, ax in plan.shared:
        if sa[i] != sb[j]:
            raise ValueError(
                f"contract {pattern!r}: axis {ax!r} has size {sa[i]} in operand 1 "
                f"and {sb[j]} in operand 2"
            )
    A = _arrange(a, plan.a_t, plan.a_ones)
    B = _arrange(b, plan.b_t, plan.b_ones)
    if plan.n_summed:
        r = _summed_matmul(A, B, plan.n_summed)
    else:
        r = np.matmul(A, B)
    if plan.squeeze:
        r = r.reshape([s for i, s in enumerate(r.shape) if i not in plan.squeeze])
    return r
