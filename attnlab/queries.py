"""How each attention variant makes its query ``Q`` from its parameters, and how ``dQ`` flows back.

| attention | parameters                  | query             | scores of prompt i     |
| --------- | --------------------------- | ----------------- | ---------------------- |
| prompt    | ``p (d, j)``                | ``Q = p`` shared  | ``X^T p (c, j)``       |
| self      | ``W (d, d)``                | ``Q = W X``       | ``X^T W X (c, c)``     |
| kq        | ``WK (d, r)``, ``WQ (d, r)``| ``Q = WK WQ^T X`` | ``X^T WK WQ^T X``      |
| cross     | ``W (d, d)``                | ``Q = W Z``       | ``X^T W Z (c, j)``     |
| cross-kq  | ``WK (d, r)``, ``WQ (d, r)``| ``Q = WK WQ^T Z`` | ``X^T WK WQ^T Z (c, j)``|

The query is made from a source ``(n, d, j)``: the prompts ``X`` themselves for self and kq
(``j = c``: query ``j`` is token ``j``), the second input ``Z`` for the cross variants
(:data:`CROSS`). ``make_query(kind, params, X, Z) -> (Q, aux)`` and
``query_backward(kind, params, dQ, X, Z, aux) -> grads``. Axis names: ``e`` is the second copy
of ``d`` (rows of ``W``), ``r`` the rank of the factored variants.
"""

from __future__ import annotations

import numpy as np

from mlp.contract import contract

ATTENTIONS = ("prompt", "self", "kq", "cross", "cross-kq")
#: The variants whose query is made from a second input ``Z (n, d, j)``.
CROSS = ("cross", "cross-kq")


def init_query_params(
    kind: str, d: int, n_queries: int, rank: int, rng: np.random.Generator, dtype: type
) -> dict[str, np.ndarray]:
    """Gaussian parameters with standard deviation ``1/sqrt(d)`` (scores of order one)."""
    s = 1.0 / np.sqrt(d)
    shapes = {
        "prompt": {"p": (d, n_queries)},
        "self": {"W": (d, d)},
        "kq": {"WK": (d, rank), "WQ": (d, rank)},
        "cross": {"W": (d, d)},
        "cross-kq": {"WK": (d, rank), "WQ": (d, rank)},
    }[kind]
    return {k: (s * rng.standard_normal(shape)).astype(dtype) for k, shape in shapes.items()}


def _source(kind: str, X: np.ndarray, Z: np.ndarray | None) -> np.ndarray:
    """What the query is made from: ``Z (n, d, j)`` for the cross variants, else ``X``."""
    if kind in CROSS:
        assert Z is not None
        return Z
    return X


def make_query(
    kind: str, params: dict[str, np.ndarray], X: np.ndarray, Z: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The query ``Q``: ``(d, j)`` shared for prompt, ``(n, d, c)`` for self/kq, ``(n, d, j)``
    for the cross variants; and an intermediate the backward reuses (``WQ^T X`` or ``WQ^T Z``
    for the factored variants)."""
    if kind == "prompt":
        return params["p"], None
    src = _source(kind, X, Z)
    if kind in ("kq", "cross-kq"):
        T = contract("d r, n d j -> n r j", params["WQ"], src)  # WQ^T X or WQ^T Z
        return contract("e r, n r j -> n e j", params["WK"], T), T
    return contract("e d, n d j -> n e j", params["W"], src), None


def query_backward(
    kind: str,
    params: dict[str, np.ndarray],
    dQ: np.ndarray,
    X: np.ndarray,
    Z: np.ndarray | None,
    aux: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """Parameter gradients from ``dQ`` (``X`` and ``Z`` are data: no gradient flows to them).

    ``Q = W S``: ``dW = sum_n dQ S^T``; ``Q = WK T`` with ``T = WQ^T S``: ``dWK = sum_n dQ T^T``
    and ``dWQ = sum_n S (WK^T dQ)^T``, for the source ``S`` (``X`` or ``Z``)."""
    if kind == "prompt":
        return {"p": dQ}
    src = _source(kind, X, Z)
    if kind in ("kq", "cross-kq"):
        assert aux is not None
        dT = contract("e r, n e j -> n r j", params["WK"], dQ)
        return {
            "WK": contract("n e j, n r j -> e r", dQ, aux),
            "WQ": contract("n d j, n r j -> d r", src, dT),
        }
    return {"W": contract("n e j, n d j -> e d", dQ, src)}
