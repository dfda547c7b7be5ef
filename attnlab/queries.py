"""How each attention variant makes its query ``Q`` from its parameters, and how ``dQ`` flows back.

| attention | parameters                   | query             | scores of prompt i       |
| --------- | ---------------------------- | ----------------- | ------------------------ |
| prompt    | ``p (d, j)``                 | ``Q = p`` shared  | ``X^T p (c, j)``         |
| self      | ``W (d, d)``                 | ``Q = W X``       | ``X^T W X (c, c)``       |
| kq        | ``WK (d, r)``, ``WQ (d, r)`` | ``Q = WK WQ^T X`` | ``X^T WK WQ^T X``        |
| cross     | ``W (d, d)``                 | ``Q = W Z``       | ``X^T W Z (c, j)``       |
| cross-kq  | ``WK (d, r)``, ``WQ (d, r)`` | ``Q = WK WQ^T Z`` | ``X^T WK WQ^T Z (c, j)`` |

The cross variants (:data:`CROSS`) take a second input, the queries ``Z (n, d, j)``. cross-kq is
cross attention at ``W = WK WQ^T``: its backward is cross's ``dW`` and the chain rule
``dWK = dW WQ``, ``dWQ = dW^T WK``. ``make_query(kind, params, X, Z) -> (Q, aux)`` and
``query_backward(kind, params, dQ, X, Z, aux) -> grads``. Axis names: ``e`` is the second copy of
``d`` (rows of ``W``), ``r`` the rank of the factored variants.
"""

from __future__ import annotations

import numpy as np

from attnlab.threads import contract_by_prompts
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


def make_query(
    kind: str, params: dict[str, np.ndarray], X: np.ndarray, Z: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The query ``Q``: ``(d, j)`` shared for prompt, ``(n, d, c)`` for self/kq, ``(n, d, j)``
    for the cross variants; and an intermediate the backward reuses (``WQ^T X`` for kq)."""
    if kind == "prompt":
        return params["p"], None
    if kind == "self":
        return contract_by_prompts("e d, n d c -> n e c", params["W"], X), None
    if kind == "kq":
        T = contract_by_prompts("d r, n d c -> n r c", params["WQ"], X)  # WQ^T X
        return contract_by_prompts("e r, n r c -> n e c", params["WK"], T), T
    assert Z is not None
    if kind == "cross-kq":
        W = contract("e r, d r -> e d", params["WK"], params["WQ"])  # WK WQ^T
        return contract_by_prompts("e d, n d j -> n e j", W, Z), None
    return contract_by_prompts("e d, n d j -> n e j", params["W"], Z), None


def query_backward(
    kind: str,
    params: dict[str, np.ndarray],
    dQ: np.ndarray,
    X: np.ndarray,
    Z: np.ndarray | None,
    aux: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """Parameter gradients from ``dQ`` (``X`` and ``Z`` are data: no gradient flows to them)."""
    if kind == "prompt":
        return {"p": dQ}
    if kind == "self":
        return {"W": contract_by_prompts("n e c, n d c -> e d", dQ, X)}
    if kind == "kq":
        assert aux is not None
        dT = contract_by_prompts("e r, n e c -> n r c", params["WK"], dQ)
        return {
            "WK": contract_by_prompts("n e c, n r c -> e r", dQ, aux),
            "WQ": contract_by_prompts("n d c, n r c -> d r", X, dT),
        }
    assert Z is not None
    dW = contract_by_prompts("n e j, n d j -> e d", dQ, Z)
    if kind == "cross-kq":  # the chain rule through W = WK WQ^T
        return {
            "WK": contract("e d, d r -> e r", dW, params["WQ"]),
            "WQ": contract("e d, e r -> d r", dW, params["WK"]),
        }
    return {"W": dW}
