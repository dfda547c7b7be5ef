"""How accurate the attention backward stays as the scores grow: ``dQ`` of the exact and of the
textbook softmax backward against a high-precision reference.

Once one weight of a softmax column is within 1e-16 of 1 (its score leads the next by more than
about 37), the textbook ``dScores = S * (dS - sum_c S * dS)`` subtracts two numbers that agree
in all their digits; :func:`attnlab.attend_backward` first shifts ``dS`` to 0 at the dominant
token, so nothing cancels. The reference :func:`dq_reference` is the lecture's per-prompt loop
in Python's ``decimal`` arithmetic at ``digits`` significant digits, from the float64 inputs
taken exactly, with the softmax Jacobian product written as
``dscore_a = s_a sum_b s_b (g_a - g_b)`` (the same quantity, since ``sum_b s_b = 1``, but with
no cancellation).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, localcontext

import numpy as np

from attnlab.blocks.attention import (
    attend_backward,
    attend_forward,
    attention_scores,
    check_prompts,
)
from mlp.validation import as_float_array, check_finite, check_seed, positive

#: The shapes ``(n, d, c, j)`` of the random prompts of :func:`dq_errors`.
SHAPE = (3, 4, 6, 2)


def _exact(a: np.ndarray) -> list:
    """A float array as nested lists of ``Decimal`` (every double is a decimal, exactly)."""
    return [_exact(row) for row in a] if a.ndim > 1 else [Decimal(float(v)) for v in a]


def _flat(rows: list) -> list:
    return [v for row in rows for v in row]


def _dq_prompt(x: list, q: list, g: list) -> list:
    """``dQ (d, j)`` of one prompt ``x (d, c)``, ``q (d, j)``, ``dOut = g (d, j)``, in the
    current decimal context."""
    d, c, j = len(x), len(x[0]), len(q[0])
    dQ = [[Decimal(0)] * j for _ in range(d)]
    for col in range(j):
        scores = [sum(x[e][t] * q[e][col] for e in range(d)) for t in range(c)]
        top = max(scores)
        w = [(s - top).exp() for s in scores]
        total = sum(w)
        s = [v / total for v in w]
        ds = [sum(x[e][t] * g[e][col] for e in range(d)) for t in range(c)]
        dscore = [s[a] * sum(s[b] * (ds[a] - ds[b]) for b in range(c)) for a in range(c)]
        for e in range(d):
            dQ[e][col] = sum(x[e][t] * dscore[t] for t in range(c))
    return dQ


def dq_reference(X: np.ndarray, Q: np.ndarray, dOut: np.ndarray, digits: int = 50) -> list:
    """``dQ`` of ``<dOut, X softmax(X^T Q)>`` per prompt at ``digits`` significant digits:
    a list of ``n`` nested lists ``d x j`` of ``Decimal``.

    ``X (n, d, c)``, a query per prompt ``Q (n, d, j)``, ``dOut (n, d, j)``; per prompt and
    query column, ``scores = x^T q``, ``s = softmax(scores)``, ``ds = x^T g``,
    ``dscore_a = s_a sum_b s_b (ds_a - ds_b)`` and ``dQ = x dscore``.
    """
    X = check_prompts(X)
    Q = as_float_array("Q", Q, ndim=3)
    dOut = as_float_array("dOut", dOut, ndim=3)
    n, d, _ = X.shape
    if Q.shape[:2] != (n, d) or dOut.shape != Q.shape:
        raise ValueError(
            f"Q, dOut: expected both of shape (n={n}, d={d}, j) to match X {X.shape}, "
            f"received {Q.shape} and {dOut.shape}"
        )
    check_finite("Q", Q)
    check_finite("dOut", dOut)
    digits = positive("digits", digits, integer=True)
    with localcontext() as ctx:
        ctx.prec = digits
        return [_dq_prompt(_exact(X[i]), _exact(Q[i]), _exact(dOut[i])) for i in range(n)]


def relative_error(a: np.ndarray, reference: list, digits: int = 50) -> np.ndarray:
    """``||a_i - ref_i||_F / ||ref_i||_F`` per prompt ``i``: ``a (n, d, j)`` against the
    :func:`dq_reference` lists, computed in decimal (so errors far below 1e-16 still show);
    returns ``(n,)``."""
    a = as_float_array("a", a, ndim=3)
    if a.shape[0] != len(reference):
        raise ValueError(
            f"a: expected {len(reference)} prompts like the reference, received {a.shape}"
        )
    out = np.empty(a.shape[0])
    with localcontext() as ctx:
        ctx.prec = digits
        for i, (ai, ref) in enumerate(zip(_exact(a), reference, strict=True)):
            pairs = zip(_flat(ai), _flat(ref), strict=True)
            num = sum((u - r) ** 2 for u, r in pairs)
            den = sum(r**2 for r in _flat(ref))
            out[i] = float((num / den).sqrt()) if den else float("nan")
    return out


def dq_errors(
    scales: Sequence[float] | np.ndarray, seed: int = 0, digits: int = 50
) -> dict[str, np.ndarray]:
    """The worst relative error of ``dQ`` over a few random prompts, for the exact and the
    textbook backward, at each score scale: ``{"exact": (k,), "textbook": (k,)}`` for
    ``scales (k,)``.

    Prompts ``X (n, d, c)``, query directions ``(n, d, j)`` and upstream gradients
    ``dOut (n, d, j)`` are standard normal from ``default_rng(seed)``, with ``(n, d, c, j)``
    :data:`SHAPE`. At scale ``s`` each prompt's query is scaled so that its largest
    ``|score|`` is ``s``; ``dQ`` comes from :func:`attnlab.attend_backward` (``textbook=False``
    and ``True``) and is compared per prompt with :func:`dq_reference` by
    :func:`relative_error`.
    """
    scales = as_float_array("scales", scales, ndim=1)
    check_finite("scales", scales)
    if scales.size == 0 or np.any(scales <= 0):
        raise ValueError(f"scales: expected positive numbers, received {scales.tolist()}")
    seed = check_seed(seed)
    n, d, c, j = SHAPE
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d, c))
    direction = rng.standard_normal((n, d, j))
    dOut = rng.standard_normal((n, d, j))
    largest = np.abs(attention_scores(X, direction)).max(axis=(1, 2))  # (n,)
    errors = {"exact": np.empty(scales.size), "textbook": np.empty(scales.size)}
    for k, s in enumerate(scales):
        Q = direction * (s / largest)[:, None, None]
        reference = dq_reference(X, Q, dOut, digits)
        _, cache = attend_forward(X, Q)
        for name in errors:
            _, dQ = attend_backward(dOut, cache, need_dX=False, textbook=name == "textbook")
            errors[name][k] = relative_error(dQ, reference, digits).max()
    return errors
