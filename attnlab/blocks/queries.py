"""The query variants: how each makes its query ``Q`` from its parameters, and how ``dQ`` flows
back to the parameters and the inputs. One registry, :data:`VARIANTS`; nothing else in the
library names a variant.

| attention | parameters                   | query             | scores of prompt i       |
| --------- | ---------------------------- | ----------------- | ------------------------ |
| prompt    | ``p (d, j)``                 | ``Q = p`` shared  | ``X^T p (c, j)``         |
| self      | ``W (d, d)``                 | ``Q = W X``       | ``X^T W X (c, c)``       |
| kq        | ``WK (d, r)``, ``WQ (d, r)`` | ``Q = WK WQ^T X`` | ``X^T WK WQ^T X``        |
| cross     | ``W (d, d)``                 | ``Q = W Z``       | ``X^T W Z (c, j)``       |
| cross-kq  | ``WK (d, r)``, ``WQ (d, r)`` | ``Q = WK WQ^T Z`` | ``X^T WK WQ^T Z (c, j)`` |

Backward, given ``dQ`` (summed over the prompts for the shared ``Q`` of prompt attention)::

    prompt    dp = dQ
    self      dW = sum_n dQ X^T                 dX = W^T dQ
    kq        T = WQ^T X, dT = WK^T dQ:
              dWK = sum_n dQ T^T, dWQ = sum_n X dT^T          dX = WQ dT
    cross     dW = sum_n dQ Z^T                 dZ = W^T dQ
    cross-kq  dW as cross; dWK = dW WQ, dWQ = dW^T WK         dZ = WQ WK^T dQ

The per-token variants (:attr:`Variant.per_token`: self, kq) make one query column per token of
the tokens they are given; the cross variants (:attr:`Variant.cross`) take a second input, the
queries ``Z (n, d, j)``. Axis names: ``e`` is the second copy of ``d`` (rows of ``W``), ``r`` the
rank of the factored variants.

A new variant is one :func:`register_variant` call with a :class:`Variant`: its parameter
shapes, its query and its backward. Every model that takes ``attention=`` then accepts it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mlp.contract import contract
from mlp.threads import contract_by_prompts

Params = dict[str, np.ndarray]
#: ``(params, X (n, d, c), Z (n, d, j) or None) -> (Q, aux)``: the query and what its backward
#: reuses.
Query = Callable[[Params, np.ndarray, "np.ndarray | None"], "tuple[np.ndarray, object]"]
#: ``(params, dQ, X, Z, aux, need_inputs) -> (grads, dX or None, dZ or None)``: the gradients of
#: the parameters, and (when ``need_inputs``) of the inputs the query was made from.
QueryBackward = Callable[
    [Params, np.ndarray, np.ndarray, "np.ndarray | None", object, bool],
    "tuple[Params, np.ndarray | None, np.ndarray | None]",
]


@dataclass(frozen=True)
class Variant:
    """Everything about one query variant.

    ``shapes(d, n_queries, rank)``: its parameters' names and shapes, in the order they are
    drawn at initialization (Gaussian, standard deviation ``1/sqrt(d)``: scores of order one);
    ``query`` and ``backward``: see :data:`Query` and :data:`QueryBackward`; ``per_token``: ``Q``
    has one column per query token of ``X`` (scores ``(c, c)`` when every token queries);
    ``cross``: the query is made from a second input ``Z (n, d, j)``; ``shared``: one ``Q
    (d, j)`` for every prompt; ``factored``: the parameters have a rank ``r``.
    """

    name: str
    shapes: Callable[[int, int, int], dict[str, tuple[int, ...]]]
    query: Query
    backward: QueryBackward
    per_token: bool = False
    cross: bool = False
    shared: bool = False
    factored: bool = False

    def init_params(
        self, d: int, n_queries: int, rank: int, rng: np.random.Generator, dtype: type
    ) -> Params:
        """Gaussian parameters with standard deviation ``1/sqrt(d)``, drawn in ``shapes``'
        order from ``rng``."""
        s = 1.0 / np.sqrt(d)
        return {
            k: (s * rng.standard_normal(shape)).astype(dtype)
            for k, shape in self.shapes(d, n_queries, rank).items()
        }


#: The query variants, by name. Add one with :func:`register_variant`.
VARIANTS: dict[str, Variant] = {}


def register_variant(variant: Variant) -> Variant:
    """Add ``variant`` to :data:`VARIANTS` (a name already taken raises ``ValueError``)."""
    if variant.name in VARIANTS:
        raise ValueError(f"attention: {variant.name!r} is registered already")
    VARIANTS[variant.name] = variant
    return variant


# --- the library's variants --------------------------------------------------------------------


def _prompt_query(params: Params, X: np.ndarray, Z: np.ndarray | None) -> tuple[np.ndarray, None]:
    return params["p"], None


def _prompt_backward(params, dQ, X, Z, aux, need_inputs):
    return {"p": dQ}, None, None


def _self_query(params: Params, X: np.ndarray, Z: np.ndarray | None) -> tuple[np.ndarray, None]:
    return contract_by_prompts("e d, n d c -> n e c", params["W"], X), None


def _self_backward(params, dQ, X, Z, aux, need_inputs):
    dX = contract_by_prompts("e d, n e c -> n d c", params["W"], dQ) if need_inputs else None
    return {"W": contract_by_prompts("n e c, n d c -> e d", dQ, X)}, dX, None


def _kq_query(params: Params, X: np.ndarray, Z: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    T = contract_by_prompts("d r, n d c -> n r c", params["WQ"], X)  # WQ^T X
    return contract_by_prompts("e r, n r c -> n e c", params["WK"], T), T


def _kq_backward(params, dQ, X, Z, T, need_inputs):
    dT = contract_by_prompts("e r, n e c -> n r c", params["WK"], dQ)
    grads = {
        "WK": contract_by_prompts("n e c, n r c -> e r", dQ, T),
        "WQ": contract_by_prompts("n d c, n r c -> d r", X, dT),
    }
    dX = contract_by_prompts("d r, n r c -> n d c", params["WQ"], dT) if need_inputs else None
    return grads, dX, None


def _cross_query(params: Params, X: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, None]:
    return contract_by_prompts("e d, n d j -> n e j", params["W"], Z), None


def _cross_backward(params, dQ, X, Z, aux, need_inputs):
    dZ = contract_by_prompts("e d, n e j -> n d j", params["W"], dQ) if need_inputs else None
    return {"W": contract_by_prompts("n e j, n d j -> e d", dQ, Z)}, None, dZ


def _product(params: Params) -> np.ndarray:
    return contract("e r, d r -> e d", params["WK"], params["WQ"])  # WK WQ^T


def _cross_kq_query(params: Params, X: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, None]:
    return contract_by_prompts("e d, n d j -> n e j", _product(params), Z), None


def _cross_kq_backward(params, dQ, X, Z, aux, need_inputs):
    dW = contract_by_prompts("n e j, n d j -> e d", dQ, Z)
    grads = {  # the chain rule through W = WK WQ^T
        "WK": contract("e d, d r -> e r", dW, params["WQ"]),
        "WQ": contract("e d, e r -> d r", dW, params["WK"]),
    }
    dZ = contract_by_prompts("e d, n e j -> n d j", _product(params), dQ) if need_inputs else None
    return grads, None, dZ


register_variant(
    Variant(
        "prompt",
        lambda d, j, r: {"p": (d, j)},
        _prompt_query,
        _prompt_backward,
        shared=True,
    )
)
register_variant(
    Variant("self", lambda d, j, r: {"W": (d, d)}, _self_query, _self_backward, per_token=True)
)
register_variant(
    Variant(
        "kq",
        lambda d, j, r: {"WK": (d, r), "WQ": (d, r)},
        _kq_query,
        _kq_backward,
        per_token=True,
        factored=True,
    )
)
register_variant(
    Variant("cross", lambda d, j, r: {"W": (d, d)}, _cross_query, _cross_backward, cross=True)
)
register_variant(
    Variant(
        "cross-kq",
        lambda d, j, r: {"WK": (d, r), "WQ": (d, r)},
        _cross_kq_query,
        _cross_kq_backward,
        cross=True,
        factored=True,
    )
)

#: The names of the library's variants (``VARIANTS`` holds any registered later too).
ATTENTIONS = tuple(VARIANTS)
