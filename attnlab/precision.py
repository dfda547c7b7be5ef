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


def kq_gradient_reference(
    X: np.ndarray,
    Z: np.ndarray,
    y: np.ndarray,
    v: np.ndarray,
    WK: np.ndarray,
    WQ: np.ndarray,
    digits: int = 50,
) -> dict[str, list]:
    """The gradients of ``J = (1/n) sum_i log(1 + exp(-y_i v^T X_i softmax(X_i^T WK WQ^T z_i)))``
    with respect to ``WK`` and ``WQ``, in mpmath at ``digits`` significant digits, from the
    float64 inputs taken exactly: ``{"WK": rows, "WQ": rows}``, each ``d`` lists of ``r``
    ``mpf`` (whose exponent range has no underflow: the terms that float64 rounds to 0 stay).

    ``X (n, d, c)``, ``Z (n, d)``, ``y (n,)``, ``v (d,)``, ``WK, WQ (d, r)``. Per prompt: the
    scores ``sigma_t = x_t^T WK WQ^T z``, ``s = softmax(sigma)``, ``g_t = v^T x_t``,
    ``o = sum_t s_t g_t``, ``c = -(y / n) / (1 + exp(y o))``, ``a_t = c s_t sum_b s_b (g_t -
    g_b)``; ``G = sum_i sum_t a_it x_it z_i^T``, ``dWK = G WQ``, ``dWQ = G^T WK``.
    """
    import mpmath  # the optional test extra: only this reference needs it

    X = check_prompts(X)
    n, d, c = X.shape
    arrays = {"Z": (Z, (n, d)), "y": (y, (n,)), "v": (v, (d,))}
    for name, (a, shape) in arrays.items():
        if np.shape(a) != shape:
            raise ValueError(f"{name}: expected shape {shape} to match X, received {np.shape(a)}")
    if np.shape(WK) != np.shape(WQ) or np.ndim(WK) != 2 or np.shape(WK)[0] != d:
        raise ValueError(
            f"WK, WQ: expected two arrays of shape (d={d}, r), received {np.shape(WK)} and "
            f"{np.shape(WQ)}"
        )
    for name, a in (("Z", Z), ("y", y), ("v", v), ("WK", WK), ("WQ", WQ)):
        check_finite(name, as_float_array(name, a))
    digits = positive("digits", digits, integer=True)
    r = np.shape(WK)[1]

    def mp(a: np.ndarray) -> mpmath.matrix:
        a = np.asarray(a, dtype=np.float64)
        return mpmath.matrix([[mpmath.mpf(float(u)) for u in row] for row in np.atleast_2d(a)])

    with mpmath.workdps(digits):
        K, Q, V = mp(WK), mp(WQ), mp(np.asarray(v)[None, :])
        W = K * Q.T
        G = mpmath.zeros(d, d)
        for i in range(n):
            x, z = mp(X[i]), mp(np.asarray(Z)[i][:, None])  # (d, c), (d, 1)
            sigma = [(x[:, t].T * W * z)[0] for t in range(c)]
            top = max(sigma)
            e = [mpmath.exp(s - top) for s in sigma]
            s = [u / sum(e) for u in e]
            g = [(V * x[:, t])[0] for t in range(c)]
            o = sum(s[t] * g[t] for t in range(c))
            yi = mpmath.mpf(float(y[i]))
            ci = -(yi / n) / (1 + mpmath.exp(yi * o))
            for t in range(c):
                a = ci * s[t] * sum(s[b] * (g[t] - g[b]) for b in range(c))
                G += a * x[:, t] * z.T
        grads = {"WK": G * Q, "WQ": G.T * K}
        return {k: [[g[e, j] for j in range(r)] for e in range(d)] for k, g in grads.items()}


def scaled_relative_error(
    a: np.ndarray, log_scale: float, reference: list, digits: int = 50
) -> float:
    """``||exp(log_scale) a - ref||_F / ||ref||_F`` in mpmath at ``digits`` digits: ``a (d, r)``
    a gradient carried as ``exp(log_scale) a`` (``log_scale = 0`` for a plain float64 one; an
    exactly zero ``a`` gives 1), ``reference`` the rows of :func:`kq_gradient_reference`."""
    import mpmath

    a = as_float_array("a", a, ndim=2)
    if a.shape != (len(reference), len(reference[0])):
        raise ValueError(
            f"a: expected the reference's shape ({len(reference)}, {len(reference[0])}), "
            f"received {a.shape}"
        )
    with mpmath.workdps(digits):
        scale = mpmath.exp(mpmath.mpf(float(log_scale)))
        num = den = mpmath.mpf(0)
        for row, ref in zip(a, reference, strict=True):
            for u, r in zip(row, ref, strict=True):
                num += (scale * mpmath.mpf(float(u)) - r) ** 2
                den += r**2
        return float(mpmath.sqrt(num / den))
