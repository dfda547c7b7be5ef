"""The context-window model: ``attention -> pool -> head -> loss``, composed from blocks.

For prompts ``X (n, d, c)`` (and queries ``Z (n, d, j)`` for cross attention)::

    out = X softmax(X^T Q)          (n, d, j)   the attention layer (attnlab.blocks.layer)
          or X (X^T Q) / (c - 1)                its linear form (scores="linear")
    u   = pool(out)                 (n, d)      mean over the j columns, or the last column
    z   = head(u)                   (n, k)      linear: u v;  mlp: the mlp package's network
    J   = loss(z, y)                            logistic (k = 1, y in {-1, +1}), cross-entropy,
                                                or squared (k = 1, real targets)

Gradients are hand-written, each block's backward in turn (attnlab.blocks.readout, then the
layer's). With ``pool='last'`` and the linear form only the last query column reaches the head,
so only that column is computed (the query of the last token alone). The public methods check
their inputs once per call; the blocks under them trust what they get. Parameters are checked
for NaN and inf only when a result is not finite (then the message names the culprit), so a
small step pays for no pass over them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

import mlp
from attnlab.blocks.layer import SCORES, AttentionLayer, LayerCache
from attnlab.blocks.memory import check_step_fits
from attnlab.blocks.queries import VARIANTS
from attnlab.blocks.readout import (
    HEADS,
    LOSSES,
    POOLS,
    head_backward,
    head_forward,
    pool_backward,
    pool_forward,
    weight_on_target,
)
from mlp.threads import num_threads
from mlp.validation import (
    as_float_array,
    check_finite,
    check_nonempty,
    check_seed,
    choice,
    class_labels,
    float_dtype,
    positive,
    real_targets,
    sign_labels,
)

__all__ = ["HEADS", "LOSSES", "POOLS", "SCORES", "ContextWindowModel", "weight_on_target"]


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
        self.attention = choice("attention", attention, tuple(VARIANTS))
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
            self.loss = choice("loss", loss, tuple(LOSSES))
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
        # the last pool reads the last column: the layer computes the last queries alone (their
        # bits are those of the full layer's columns); the maps use the full layer
        self.layer = AttentionLayer(
            self.attention,
            self.scores,
            self.pool if self.pool == "last" else "all",
            self.textbook_backward,
        )
        self._full_layer = AttentionLayer(self.attention, self.scores, "all")  # for the maps
        rng = np.random.default_rng(seed)
        self.params: dict[str, np.ndarray] = self.layer.init_params(
            self.d, self.n_queries, self.rank, rng, self.dtype
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
        self._checked: dict[str, np.ndarray] = {}  # the parameter arrays last found valid

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

    # --- the edge: every public method checks its inputs here, once ------------------------

    def _inputs(
        self, X: object, Z: object | None, training: bool = False, maps: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``X`` and ``Z`` checked against the model (shapes and dtypes; NaN and inf are found
        by :meth:`_diagnose` when a result is not finite), and the parameters' shapes; then,
        before anything is allocated, ``MemoryError`` naming the sizes when the step's
        activations (``maps``: every query's weights) cannot fit."""
        params = self.params
        if len(params) != len(self._checked) or any(
            params.get(k) is not p for k, p in self._checked.items()
        ):  # a parameter was replaced since the last check (an update in place keeps them)
            for k, shape in self._shapes.items():
                p = params.get(k)
                if not isinstance(p, np.ndarray) or p.shape != shape or p.dtype.kind != "f":
                    got = "missing" if p is None else f"{type(p).__name__} {np.shape(p)}"
                    raise ValueError(
                        f"params[{k!r}]: expected a float array of shape {shape}, received {got}"
                        + (f" {p.dtype}" if isinstance(p, np.ndarray) else "")
                    )
            self._checked = dict(params)
        if not (isinstance(X, np.ndarray) and X.ndim == 3 and X.dtype.kind == "f"):
            X = as_float_array("X", X, ndim=3)
        if X.shape[0] == 0 or X.shape[2] == 0:
            check_nonempty("X", X)
            raise ValueError(f"X: expected d >= 1 features and c >= 1 tokens, received {X.shape}")
        if X.shape[1] != self.d:
            raise ValueError(
                f"X: expected d={self.d} features per token (the model's d), received shape "
                f"{X.shape} with d={X.shape[1]}"
            )
        if self.scores == "linear" and X.shape[2] < 2:
            raise ValueError(
                f"X: the linear form divides by N = c - 1 in-context tokens, so it needs "
                f"c >= 2 tokens, received shape {X.shape}"
            )
        if self.layer.variant.cross:
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
        elif Z is not None:
            raise ValueError(
                f"Z: only cross attention takes queries Z, this model has "
                f"attention={self.attention!r}"
            )
        self.check_fits(
            X.shape[0], X.shape[2], training, None if Z is None else Z.shape[2], maps=maps
        )
        return X, Z

    def _diagnose(self, X: np.ndarray, Z: np.ndarray | None) -> None:
        """After a non-finite result: ``ValueError`` naming the input or parameter that holds
        NaN or inf; if none does, the result overflowed and the caller reports that."""
        check_finite("X", X)
        if Z is not None:
            check_finite("Z", Z)
        for k, p in self.params.items():
            check_finite(f"params[{k!r}]", p)

    def check_fits(
        self, n: int, c: int, training: bool = True, j: int | None = None, maps: bool = False
    ) -> None:
        """``MemoryError`` naming the sizes when a step (``training``) or an evaluation on ``n``
        prompts of ``c`` tokens (and ``j`` cross queries) cannot fit in the available memory;
        ``maps``: the evaluation of every query's weights (:meth:`attention_weights`), which the
        last pool's step does not compute."""
        layer = self._full_layer if maps else self.layer
        check_step_fits(
            n,
            self.d,
            c,
            layer.columns(c, self.n_queries, j),
            self.dtype,
            training=training,
            threads=num_threads(),
            rank=self.rank if self.layer.variant.factored else 0,
        )

    def _labels(self, y: object, n: int) -> np.ndarray:
        if self.loss == "squared":
            return real_targets("y", y, n)
        if self.n_classes == 1:
            return sign_labels("y", y, n)
        return class_labels("y", y, n, self.n_classes)

    # --- forward ---------------------------------------------------------------------------

    def _attend(
        self, X: np.ndarray, Z: np.ndarray | None, layer: AttentionLayer | None = None
    ) -> tuple[np.ndarray, LayerCache]:
        """The layer's ``(out, cache)`` for checked inputs. A softmax whose scores are not
        finite raises ``FloatingPointError``, after :meth:`_diagnose` has named a non-finite
        input or parameter if there is one."""
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # non-finite X: named below
                return (layer or self.layer).forward(self.params, X, Z)
        except FloatingPointError:
            self._diagnose(X, Z)
            raise

    def _forward(
        self, X: np.ndarray, Z: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, LayerCache, np.ndarray | None]:
        """``(z, u, layer cache, head cache)`` for checked inputs."""
        out, cache = self._attend(X, Z)
        u = pool_forward(out, self.pool)
        z, H = head_forward(self.params, u, self.head)
        return z, u, cache, H

    def _finite(self, z: np.ndarray, X: np.ndarray, Z: np.ndarray | None) -> np.ndarray:
        """``z``, after naming a non-finite input or parameter if ``z`` is not finite."""
        if not np.isfinite(z).all():
            self._diagnose(X, Z)
        return z

    def forward(self, X: np.ndarray, Z: np.ndarray | None = None) -> np.ndarray:
        """Logits ``z (n, k)`` for prompts ``X (n, d, c)`` (and queries ``Z (n, d, j)``)."""
        X, Z = self._inputs(X, Z)
        return self._finite(self._forward(X, Z)[0], X, Z)

    def attention_weights(self, X: np.ndarray, Z: np.ndarray | None = None) -> np.ndarray:
        """``S = softmax(X^T Q) (n, c, j)`` (linear form: ``X^T Q / (c - 1)``): column ``j`` holds
        query ``j``'s weights over the ``c`` key tokens (``j = c`` for self and kq attention,
        where query ``j`` is token ``j``)."""
        X, Z = self._inputs(X, Z, maps=True)
        _, cache = self._attend(X, Z, self._full_layer)
        S = cache.weights
        if not np.isfinite(S).all():
            self._diagnose(X, Z)
        return S

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
        z, _, cache, _ = self._forward(X, Z)
        self._finite(z, X, Z)
        row = {"loss": float(LOSSES[self.loss](z, y)[0])}
        if self.loss != "squared":
            row["accuracy"] = float(np.mean(self._classes(z) == y))
        if target is not None:
            row["attention_on_target"] = float(
                np.mean(weight_on_target(cache.weights, target, self.pool))
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
        z, u, cache, H = self._forward(X, Z)
        loss, dz = LOSSES[self.loss](z, y)
        if not np.isfinite(loss):
            self._diagnose(X, Z)  # an input or parameter, else an overflow (the trainer says)
        grads, du = head_backward(self.params, u, dz, H, self.head)
        dOut = pool_backward(du, self.pool, cache.columns)
        layer_grads, _, _ = self.layer.backward(dOut, cache, self.params, need_inputs=False)
        grads.update(layer_grads)
        return loss, {k: grads[k] for k in self.params}
