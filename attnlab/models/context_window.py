"""The context-window model: ``attention -> pool -> head -> loss``.

For prompts ``X (n, d, c)`` (and queries ``Z (n, d, j)`` for cross attention)::

    out = X softmax(X^T Q)          (n, d, j)   Q from the attention's parameters
          or X (X^T Q) / (c - 1)                the linear form (scores="linear")
    u   = pool(out)                 (n, d)      mean over the j columns, or the last column
    z   = head(u)                   (n, k)      linear: u v;  mlp: the mlp package's network
    J   = loss(z, y)                            logistic (k = 1, y in {-1, +1}), cross-entropy,
                                                or squared (k = 1, real targets)

Gradients are hand-written: the head's (``mlp.backward`` for the MLP head), then the pool's, then
the attention primitive's (:func:`attnlab.attend_backward` or
:func:`attnlab.attend_linear_backward`), then the query's (:mod:`attnlab.blocks.queries`). With
``pool='last'`` only the last query column reaches the head, so only that column is computed
(for self and kq attention: the query ``Q`` of the last token alone).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

import mlp
from attnlab.blocks.attention import (
    AttentionCache,
    LinearAttentionCache,
    attend,
    attend_backward,
    attend_linear,
    attend_linear_backward,
    check_prompts,
    linear_scale,
)
from attnlab.blocks.memory import check_step_fits
from attnlab.blocks.queries import ATTENTIONS, CROSS, init_query_params, make_query, query_backward
from mlp.threads import num_threads
from mlp.contract import contract
from mlp.validation import (
    as_float_array,
    check_finite,
    check_seed,
    choice,
    class_labels,
    float_dtype,
    positive,
    real_targets,
    sign_labels,
)

POOLS = ("mean", "last")
HEADS = ("linear", "mlp")
SCORES = ("softmax", "linear")
LOSSES = ("logistic", "cross_entropy", "squared")


def weight_on_target(S: np.ndarray, target: np.ndarray, pool: str = "mean") -> np.ndarray:
    """Weight on the target token of each prompt: ``S (..., p, c, j)``, ``target (p,)`` ->
    ``(..., p)``. Averaged over the query columns ``j`` for ``pool='mean'``; the last column
    (the one the head reads) for ``pool='last'``."""
    S = np.asarray(S)
    target = np.asarray(target)
    if S.ndim < 3 or target.shape != (S.shape[-3],) or target.dtype.kind not in "iu":
        raise ValueError(
            f"target: expected integer token indices of shape (p,) for S of shape "
            f"(..., p, c, j), received target {target.shape} {target.dtype} and S {S.shape}"
        )
    if pool not in POOLS:
        raise ValueError(f"pool: expected 'mean' or 'last', received {pool!r}")
    bad = target[(target < 0) | (target >= S.shape[-2])]
    if bad.size:
        raise ValueError(
            f"target: expected token indices in 0..{S.shape[-2] - 1}, received {bad[0]}"
        )
    idx = target.reshape((1,) * (S.ndim - 3) + (-1, 1, 1))
    w = np.take_along_axis(S, idx, axis=-2)[..., 0, :]  # (..., p, j)
    return w.mean(axis=-1) if pool == "mean" else w[..., -1]


class ContextWindowModel:
    """``ContextWindowModel(d, attention="self", pool="mean", head="linear", n_classes=1,
    n_queries=1, rank=None, hidden=16, seed=0, scores="softmax", loss=None)``.

    ``attention`` in ``prompt, self, kq, cross, cross-kq`` (the cross variants take queries
    ``Z``); ``pool`` in ``mean, last``; ``head`` in ``linear, mlp``. ``n_classes=1``: one
    logit, logistic loss, labels in {-1, +1}; ``>= 2``: cross-entropy, labels in ``0..k-1``.
    ``n_queries`` is ``j`` for prompt attention, ``rank`` is ``r`` for kq and cross-kq (None:
    ``r = d``), ``hidden`` is ``m`` for the MLP head.
    ``scores="linear"`` is the linear form of the layer, ``X (X^T Q) / (c - 1)`` (prompts need
    ``c >= 2`` tokens). ``loss``: None (logistic for ``n_classes=1``, else cross-entropy) or
    ``"squared"``: one real output per prompt (``n_classes=1``), mean ``(z - y)^2 / 2`` with
    real targets ``y``; ``predict`` then returns ``z``.

    ``params``: the attention's (``p`` or ``W`` or ``WK, WQ``) then the head's (``v (d, k)`` or
    ``W1, b1, W2, b2``); a key can be replaced by assignment. ``dtype=np.float32`` makes float32
    parameters (float32 prompts then give float32 logits and gradients).
    ``textbook_backward=True`` swaps the exact softmax backward for the textbook one (for
    comparisons only).
    """

    def __init__(
        self,
        d: int,
        attention: str = "self",
        pool: str = "mean",
        head: str = "linear",
        n_classes: int = 1,
        n_queries: int = 1,
        rank: int | None = None,
        hidden: int = 16,
        seed: int = 0,
        dtype: npt.DTypeLike = np.float64,
        textbook_backward: bool = False,
        scores: str = "softmax",
        loss: str | None = None,
    ) -> None:
        self.d = positive("d", d, integer=True)
        self.attention = choice("attention", attention, ATTENTIONS)
        self.pool = choice("pool", pool, POOLS)
        self.head = choice("head", head, HEADS)
        self.n_classes = positive("n_classes", n_classes, integer=True)
        self.n_queries = positive("n_queries", n_queries, integer=True)
        self.rank = self.d if rank is None else positive("rank", rank, integer=True)
        self.hidden = positive("hidden", hidden, integer=True)
        self.seed = check_seed(seed)
        self.dtype = float_dtype("dtype", dtype)
        self.scores = choice("scores", scores, SCORES)
        self.loss = "logistic" if self.n_classes == 1 else "cross_entropy"
        if loss is not None:
            self.loss = choice("loss", loss, LOSSES)
        if (self.loss == "cross_entropy") != (self.n_classes >= 2):
            need = "n_classes >= 2" if self.loss == "cross_entropy" else "n_classes=1"
            raise ValueError(
                f"loss: {self.loss!r} needs {need}, received n_classes={self.n_classes}"
            )
        if not isinstance(textbook_backward, (bool, np.bool_)):
            raise TypeError(
                f"textbook_backward: expected True or False, received {textbook_backward!r}"
            )
        self.textbook_backward = bool(textbook_backward)
        rng = np.random.default_rng(seed)
        self.params: dict[str, np.ndarray] = init_query_params(
            self.attention, self.d, self.n_queries, self.rank, rng, self.dtype
        )
        k = self.n_classes
        if self.head == "linear":
            v = rng.standard_normal((self.d, k)) / np.sqrt(self.d)
            self.params["v"] = v.astype(self.dtype)
        else:
            theta = mlp.init_params(
                self.d,
                self.hidden,
                k,
                seed=int(rng.integers(2**31)),
                scale=1.0 / np.sqrt(self.d),
                dtype=self.dtype,
            )
            self.params.update(theta)
        self._shapes = {k: v.shape for k, v in self.params.items()}

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments (to rebuild the model from a run folder)."""
        return {
            "d": self.d,
            "attention": self.attention,
            "pool": self.pool,
            "head": self.head,
            "n_classes": self.n_classes,
            "n_queries": self.n_queries,
            "rank": self.rank,
            "hidden": self.hidden,
            "seed": self.seed,
            "dtype": self.dtype.name,
            "scores": self.scores,
            "loss": self.loss,
        }

    # --- input checks ----------------------------------------------------------------------

    def _inputs(
        self, X: object, Z: object | None, training: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``X`` and ``Z`` checked against the model; then, before anything is allocated,
        ``MemoryError`` naming the sizes when the step's activations cannot fit."""
        for k, shape in self._shapes.items():
            p = self.params.get(k)
            if not isinstance(p, np.ndarray) or p.shape != shape or p.dtype.kind != "f":
                got = "missing" if p is None else f"{type(p).__name__} {np.shape(p)}"
                raise ValueError(
                    f"params[{k!r}]: expected a float array of shape {shape}, received {got}"
                    + (f" {p.dtype}" if isinstance(p, np.ndarray) else "")
                )
            check_finite(f"params[{k!r}]", p)  # else NaN logits and a stream of RuntimeWarnings
        X = check_prompts(X)
        if X.shape[1] != self.d:
            raise ValueError(
                f"X: expected d={self.d} features per token (the model's d), received shape "
                f"{X.shape} with d={X.shape[1]}"
            )
        if self.attention in CROSS:
            if Z is None:
                raise ValueError(
                    f"Z: {self.attention} attention needs the queries Z of shape (n, d, j)"
                )
            Z = as_float_array("Z", Z, ndim=3)
            if Z.shape[:2] != X.shape[:2] or Z.shape[2] == 0:
                raise ValueError(
                    f"Z: expected shape (n={X.shape[0]}, d={self.d}, j) to match X, "
                    f"received {Z.shape}"
                )
            check_finite("Z", Z)
        elif Z is not None:
            raise ValueError(
                f"Z: only cross attention takes queries Z, this model has "
                f"attention={self.attention!r}"
            )
        self.check_fits(X.shape[0], X.shape[2], training, None if Z is None else Z.shape[2])
        return X, Z

    def check_fits(self, n: int, c: int, training: bool = True, j: int | None = None) -> None:
        """``MemoryError`` naming the sizes when a step (``training``) or an evaluation on ``n``
        prompts of ``c`` tokens (and ``j`` cross queries) cannot fit in the available memory."""
        if self.attention in ("self", "kq"):
            j = 1 if self.pool == "last" and self.scores == "linear" else c
        elif j is None:
            j = self.n_queries
        check_step_fits(
            n,
            self.d,
            c,
            j,
            self.dtype,
            training=training,
            threads=num_threads(),
            rank=self.rank if self.attention in ("kq", "cross-kq") else 0,
        )

    def _labels(self, y: object, n: int) -> np.ndarray:
        if self.loss == "squared":
            return real_targets("y", y, n)
        if self.n_classes == 1:
            return sign_labels("y", y, n)
        return class_labels("y", y, n, self.n_classes)

    # --- forward ---------------------------------------------------------------------------

    def _query_tokens(self, X: np.ndarray) -> np.ndarray:  # check_fits counts the same columns
        """The tokens that make queries in self and kq attention: all of them, or, for the
        linear form with ``pool='last'``, only the last one (the other columns of ``out`` never
        reach the head). The softmax form computes every column, so that a trained model's bits
        do not depend on the pool (its maps show every column anyway)."""
        return X[:, :, -1:] if self.pool == "last" and self.scores == "linear" else X

    def _scores_forward(self, X: np.ndarray, Q: np.ndarray):
        """``(out, cache)`` of the softmax or the linear form of the primitive."""
        if self.scores == "linear":
            return attend_linear(X, Q, linear_scale(X, None))
        return attend(X, Q)

    def _attend(self, X: np.ndarray, Z: np.ndarray | None):
        Q, aux = make_query(self.attention, self.params, self._query_tokens(X), Z)
        out, cache = self._scores_forward(X, Q)
        if self.pool == "mean":
            u = out.mean(axis=2)
        else:
            u = out[:, :, -1]
        return u, cache, aux

    @staticmethod
    def _weights(cache: AttentionCache | LinearAttentionCache) -> np.ndarray:
        """Each token's weight in each output column ``(n, c, j)``: ``S``, or ``A / (c - 1)``."""
        if isinstance(cache, LinearAttentionCache):
            return cache.A * cache.scale
        return cache.S

    def _head_forward(self, u: np.ndarray):
        if self.head == "linear":
            return contract("n d, d k -> n k", u, self.params["v"]), None
        H, z = mlp.network.hidden_and_logits(u, self.params)
        return z, H

    def forward(self, X: np.ndarray, Z: np.ndarray | None = None) -> np.ndarray:
        """Logits ``z (n, k)`` for prompts ``X (n, d, c)`` (and queries ``Z (n, d, j)``)."""
        X, Z = self._inputs(X, Z)
        u, _, _ = self._attend(X, Z)
        return self._head_forward(u)[0]

    def attention_weights(self, X: np.ndarray, Z: np.ndarray | None = None) -> np.ndarray:
        """``S = softmax(X^T Q) (n, c, j)`` (linear form: ``X^T Q / (c - 1)``): column ``j`` holds
        query ``j``'s weights over the ``c`` key tokens (``j = c`` for self and kq attention,
        where query ``j`` is token ``j``)."""
        X, Z = self._inputs(X, Z)
        Q, _ = make_query(self.attention, self.params, X, Z)
        return self._weights(self._scores_forward(X, Q)[1])

    def attention_on_target(
        self, X: np.ndarray, target: np.ndarray, Z: np.ndarray | None = None
    ) -> float:
        """Mean weight on the target token ``target (n,)``, over the query columns that reach the
        head (all of them for ``pool='mean'``, the last one for ``pool='last'``) and prompts."""
        return float(np.mean(weight_on_target(self.attention_weights(X, Z), target, self.pool)))

    def snapshot(
        self, X: np.ndarray, Z: np.ndarray | None = None, target: np.ndarray | None = None
    ) -> np.ndarray:
        """The trainer's snapshot hook: the attention weights ``S (n, c, j)`` of ``X``."""
        return self.attention_weights(X, Z)

    def metrics(
        self,
        X: np.ndarray,
        y: np.ndarray,
        Z: np.ndarray | None = None,
        target: np.ndarray | None = None,
    ) -> dict[str, float]:
        """The trainer's evaluation hook, means over the prompts: ``loss``, ``accuracy`` (not for
        the squared loss) and, given the target tokens ``target (n,)``, ``attention_on_target``."""
        X, Z = self._inputs(X, Z)
        y = self._labels(y, X.shape[0])
        u, cache, _ = self._attend(X, Z)
        z = self._head_forward(u)[0]
        row = {"loss": float(self._loss(z, y)[0])}
        if self.loss != "squared":
            row["accuracy"] = float(np.mean(self._classes(z) == y))
        if target is not None:
            row["attention_on_target"] = float(
                np.mean(weight_on_target(self._weights(cache), target, self.pool))
            )
        return row

    def predict(self, X: np.ndarray, Z: np.ndarray | None = None) -> np.ndarray:
        """Predicted labels ``(n,)``: the sign (+1 on ties) for k = 1, else the argmax class; the
        real output ``z (n,)`` for the squared loss. Non-finite outputs (an overflow) raise
        ``FloatingPointError``: no class or value is made up."""
        z = self.forward(X, Z)
        if not np.isfinite(z).all():
            bad = int(np.count_nonzero(~np.isfinite(z).all(axis=1)))
            raise FloatingPointError(
                f"predict: the outputs of {bad} of {len(z)} prompts are NaN or inf (overflow of "
                f"{z.dtype}?): nothing to predict"
            )
        return z[:, 0] if self.loss == "squared" else self._classes(z)

    def _classes(self, z: np.ndarray) -> np.ndarray:
        if self.n_classes == 1:
            return np.where(z[:, 0] >= 0, 1.0, -1.0)
        return np.argmax(z, axis=1)

    # --- loss and gradients ----------------------------------------------------------------

    def loss_and_grads(
        self,
        X: np.ndarray,
        y: np.ndarray,
        Z: np.ndarray | None = None,
        target: np.ndarray | None = None,
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Mean loss and fresh gradients for every key of ``params`` (same shapes and dtypes).

        ``target`` (the tasks' target tokens) is accepted and not used: the trainer passes every
        input of a data set to every hook."""
        X, Z = self._inputs(X, Z, training=True)
        y = self._labels(y, X.shape[0])
        u, cache, aux = self._attend(X, Z)
        z, H = self._head_forward(u)
        loss, dz = self._loss(z, y)
        if self.head == "linear":
            grads = {"v": contract("n d, n k -> d k", u, dz)}
            du = contract("n k, d k -> n d", dz, self.params["v"])
        else:
            grads, du = mlp.backward(u, H, dz, self.params)
        dOut = self._pool_backward(du, cache)
        if isinstance(cache, LinearAttentionCache):
            _, dQ = attend_linear_backward(dOut, cache, need_dX=False)
        else:
            _, dQ = attend_backward(dOut, cache, need_dX=False, textbook=self.textbook_backward)
        Xq = self._query_tokens(X)
        grads.update(query_backward(self.attention, self.params, dQ, Xq, Z, aux))
        ordered = {k: grads[k] for k in self.params}
        return loss, ordered

    def _loss(self, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean loss and ``dJ/dz``: logistic, cross-entropy or squared."""
        if self.loss == "squared":
            return mlp.squared_loss(z, y)
        if self.loss == "logistic":
            return mlp.logistic_loss(z, y)
        return mlp.cross_entropy(z, y)

    def _pool_backward(
        self, du: np.ndarray, cache: AttentionCache | LinearAttentionCache
    ) -> np.ndarray:
        n, d = du.shape
        j = (cache.A if isinstance(cache, LinearAttentionCache) else cache.S).shape[2]
        if self.pool == "mean":  # the same gradient du / j for every column: (n, d, 1)
            return (du / j)[:, :, None]
        dOut = np.zeros((n, d, j), dtype=du.dtype)
        dOut[:, :, -1] = du
        return dOut
