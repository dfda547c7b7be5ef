"""The attention layer: a query variant (:mod:`.queries`) on the primitive (:mod:`.attention`).

For prompts ``X (n, d, c)`` (and queries ``Z (n, d, j)`` for the cross variants)::

    Q   = query(params, X_q, Z)          X_q: the query tokens of X (all, or the last ones)
    out = X softmax(X^T Q)               (n, d, j)      scores="softmax"
          X (X^T Q) / (c - 1)                           scores="linear"

Backward, given ``dOut (n, d, j)`` (or ``(n, d, 1)``: the same gradient in every column)::

    dX, dQ       = the primitive's backward                  (X as keys and values)
    grads, dX_q, dZ = the variant's backward of dQ           (X_q and Z as queries)
    dX          += dX_q at the query tokens

so the layer returns the gradients of its parameters *and* of its inputs, and layers can sit on
top of one another. A CS231n pair: :meth:`AttentionLayer.forward` ``-> (out, cache)``,
:meth:`AttentionLayer.backward` ``(dOut, cache) -> (grads, dX, dZ)``. The layer trusts its
inputs: the model that owns it validates them once, at its public entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnlab.blocks.attention import (
    AttentionCache,
    LinearAttentionCache,
    attend,
    attend_grads,
    attend_linear,
    attend_linear_grads,
)
from attnlab.blocks.queries import VARIANTS, Variant
from mlp.validation import choice

#: The forms of the scores: through a softmax over the tokens, or as they are (divided by the
#: ``c - 1`` in-context tokens).
SCORES = ("softmax", "linear")
#: Which tokens of ``X`` make queries in the per-token variants: every token, or the last ones
#: (the last token and, with softmax scores, the one before it: see :class:`AttentionLayer`).
QUERY_TOKENS = ("all", "last")


@dataclass(frozen=True)
class LayerCache:
    """What :meth:`AttentionLayer.backward` needs: the primitive's cache, the query tokens
    ``X_q``, the queries ``Z`` (cross variants) and the variant's own intermediate ``aux``."""

    attention: AttentionCache | LinearAttentionCache
    Xq: np.ndarray
    Z: np.ndarray | None
    aux: object

    @property
    def columns(self) -> int:
        """The output columns ``j``."""
        a = self.attention
        return (a.A if isinstance(a, LinearAttentionCache) else a.S).shape[2]

    @property
    def weights(self) -> np.ndarray:
        """Each key token's weight in each output column, ``(n, c, j)``: ``S``, or the linear
        form's ``X^T Q / (c - 1)``."""
        if isinstance(self.attention, LinearAttentionCache):
            return self.attention.A * self.attention.scale
        return self.attention.S


class AttentionLayer:
    """``AttentionLayer(attention="self", scores="softmax", query_tokens="all",
    textbook=False)``: the variant ``attention`` (a name of :data:`~.queries.VARIANTS`) on the
    softmax or the linear form of the primitive.

    ``query_tokens="last"``: in the per-token variants only the last tokens make queries, for a
    model that reads only the last column (its work no longer grows with the square of ``c``):
    the last token with linear scores (one output column), the last two with softmax scores
    (two columns, of which the model reads the last). Two columns make the products of the
    scores and the output matrix-matrix products, which round as the full layer's do; one
    column would go through BLAS's matrix-vector kernels, whose sums round differently in the
    last bits, and a trained model's bits would then depend on the pool. ``textbook=True``
    swaps the exact softmax backward for the textbook one (for comparisons only).
    """

    def __init__(
        self,
        attention: str = "self",
        scores: str = "softmax",
        query_tokens: str = "all",
        textbook: bool = False,
    ) -> None:
        self.variant: Variant = VARIANTS[choice("attention", attention, tuple(VARIANTS))]
        self.scores = choice("scores", scores, SCORES)
        self.query_tokens = choice("query_tokens", query_tokens, QUERY_TOKENS)
        self.textbook = bool(textbook)
        self._last_only = self.variant.per_token and query_tokens == "last"
        self._tail = 2 if self.scores == "softmax" else 1  # the query tokens when last only

    def init_params(
        self, d: int, n_queries: int, rank: int, rng: np.random.Generator, dtype: type
    ) -> dict[str, np.ndarray]:
        """The variant's parameters (see :meth:`~.queries.Variant.init_params`)."""
        return self.variant.init_params(d, n_queries, rank, rng, dtype)

    def columns(self, c: int, n_queries: int, z_columns: int | None = None) -> int:
        """The output columns ``j`` for prompts of ``c`` tokens: one per query token (per-token
        variants), the queries ``Z``'s columns (cross), or ``n_queries`` (shared)."""
        if self.variant.per_token:
            return min(self._tail, c) if self._last_only else c
        if self.variant.cross:
            return n_queries if z_columns is None else z_columns
        return n_queries

    def forward(
        self, params: dict[str, np.ndarray], X: np.ndarray, Z: np.ndarray | None = None
    ) -> tuple[np.ndarray, LayerCache]:
        """``out (n, d, j)`` and the cache, for ``X (n, d, c)`` (and ``Z (n, d, j)``)."""
        Xq = X[:, :, -self._tail :] if self._last_only else X
        Q, aux = self.variant.query(params, Xq, Z)
        if self.scores == "linear":
            out, cache = attend_linear(X, Q, 1.0 / (X.shape[2] - 1))
        else:
            out, cache = attend(X, Q)
        return out, LayerCache(cache, Xq, Z, aux)

    def backward(
        self,
        dOut: np.ndarray,
        cache: LayerCache,
        params: dict[str, np.ndarray],
        need_inputs: bool = True,
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray | None]:
        """``(grads, dX (n, d, c), dZ (n, d, j))`` of ``<dOut, out>``: the gradients of the
        parameters, of ``X`` and of ``Z`` (None for the variants without ``Z``, and both None
        when ``need_inputs`` is False: a first layer's inputs are data)."""
        if isinstance(cache.attention, LinearAttentionCache):
            dX, dQ = attend_linear_grads(dOut, cache.attention, need_inputs)
        else:
            dX, dQ = attend_grads(dOut, cache.attention, need_inputs, self.textbook)
        grads, dXq, dZ = self.variant.backward(
            params, dQ, cache.Xq, cache.Z, cache.aux, need_inputs
        )
        if need_inputs and dXq is not None:
            if self._last_only:
                dX[:, :, -dXq.shape[2] :] += dXq
            else:
                dX += dXq
        return grads, dX, dZ
