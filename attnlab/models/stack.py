"""The attention stack: ``L`` residual layers of ``H`` heads, with masks, positions, layer norm,
real prompts or tokens, and a readout at the last token or at every token.

For prompts ``X (n, d, c)`` (or tokens ``T (n, c)`` embedded as ``X0 = E[:, T]``, ``E (d, V)``;
with ``positions="absolute"`` also ``X0 += P[:, :c]``, ``P (d, context)``), layer ``l``::

    Y  = LN(X) with g{l}, b{l} if layernorm else X        per token over d, eps 1e-5
    X <- X + sum_h V{l}[h] Y S_h                          S_h: the heads of attnlab.blocks.heads

then ``readout="last"``: ``z = u v`` with ``u`` the last token of ``X_L`` (after the final layer
norm ``gF, bF`` if any), ``v (d, k)``, and the loss of the context-window model (logistic,
cross-entropy or squared); ``readout="tokens"``: logits ``U X_L (V, c)`` per prompt, ``U (V, d)``,
and the mean over prompts and positions of the cross-entropy against integer targets
``y (n, c)``. With ``shared=True`` every layer uses the parameters of layer 0.

Gradients are hand-written: the readout's backward, then each layer's in turn (the heads' and
the layer norm's), the residual passing ``dX`` down unchanged. A readout of the last token reads
only the last column of the top layer, so that layer computes the last token's query alone. The
public methods check their inputs once per call; the blocks under them trust what they get.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from attnlab.blocks.heads import ATTENTIONS, MASKS, POSITIONS, SCORES, MultiHeadAttention
from attnlab.blocks.layernorm import layernorm_backward, layernorm_forward
from attnlab.blocks.memory import check_stack_fits
from attnlab.blocks.readout import LOSSES
from mlp.contract import contract
from mlp.numerics import cross_entropy_unchecked
from mlp.threads import num_threads
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

__all__ = ["READOUTS", "AttentionStack"]

#: Where the stack is read: the last token (``v``) or every token (``U``, needs ``vocab``).
READOUTS = ("last", "tokens")


class AttentionStack:
    """``AttentionStack(d, layers=1, heads=1, attention="self", rank=None, scores="softmax",
    mask=None, positions=None, context=None, vocab=None, layernorm=False, shared=False,
    readout="last", n_classes=1, loss=None, seed=0, dtype=np.float64,
    textbook_backward=False)``.

    ``attention``: ``"self"`` (``W{l} (h, d, d)``) or ``"kq"`` (``WK{l}, WQ{l} (h, d, r)``,
    ``r = rank``, None: ``d``); ``scores``: ``"softmax"`` or ``"linear"`` (divided by ``c - 1``);
    ``mask``: None, ``"causal"``, ``"exclude-last"``; ``positions``: None, ``"absolute"``
    (``P (d, context)``), ``"relative"`` (``R{l} (h, context)``, causal only),
    ``"relative-key"`` (``RK{l} (h, context, r)``, causal and kq only); ``context`` is the
    longest prompt (needed by positions; when given, longer prompts are refused); ``vocab=V``:
    inputs are integer tokens ``(n, c)`` embedded by ``E (d, V)``; ``layernorm``: pre-layer norm
    ``g{l}, b{l} (d,)`` and the final ``gF, bF``; ``shared``: one set of layer parameters (those
    of ``l = 0``) for every layer. ``readout="last"``: ``v (d, k)``, ``n_classes`` and ``loss``
    as in the context-window model (None: logistic for 1 class, else cross-entropy; or
    ``"squared"``); ``readout="tokens"`` (needs ``vocab``): ``U (V, d)`` and the cross-entropy
    at every position. Invalid combinations raise ``ValueError`` naming the option.

    ``params``: the keys above, per layer ``W{l}`` or ``WK{l}, WQ{l}``, then ``V{l}``,
    ``R{l}`` or ``RK{l}``, ``g{l}, b{l}``; replace one by assigning ``.params[key]``.
    Initialization (from ``seed``): ``E``, ``P`` standard normal; ``W``, ``WK``, ``WQ``, ``v``,
    ``U`` of standard deviation ``1/sqrt(d)``; ``V`` of ``1/sqrt(h d)``; ``RK`` of 0.02; ``R``
    zero; gains one, biases zero. ``textbook_backward=True`` swaps the exact softmax backward
    for the textbook one (for comparisons only).
    """

    def __init__(
        self,
        d: int,
        layers: int = 1,
        heads: int = 1,
        attention: str = "self",
        rank: int | None = None,
        scores: str = "softmax",
        mask: str | None = None,
        positions: str | None = None,
        context: int | None = None,
        vocab: int | None = None,
        layernorm: bool = False,
        shared: bool = False,
        readout: str = "last",
        n_classes: int = 1,
        loss: str | None = None,
        seed: int = 0,
        dtype: npt.DTypeLike = np.float64,
        textbook_backward: bool = False,
    ) -> None:
        self.d = positive("d", d, integer=True)
        self.layers = positive("layers", layers, integer=True)
        self.heads = positive("heads", heads, integer=True)
        self.attention = choice("attention", attention, ATTENTIONS)
        self.scores = choice("scores", scores, SCORES)
        self.mask = choice("mask", mask, MASKS)
        self.positions = choice("positions", positions, POSITIONS)
        self.readout = choice("readout", readout, READOUTS)
        for name, flag in (
            ("layernorm", layernorm),
            ("shared", shared),
            ("textbook_backward", textbook_backward),
        ):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name}: expected True or False, received {flag!r}")
        self.layernorm, self.shared = bool(layernorm), bool(shared)
        self.textbook_backward = bool(textbook_backward)
        self.block = MultiHeadAttention(
            self.heads, attention, scores, mask, positions, rank, self.textbook_backward
        )
        self.rank = self.block.rank
        self.context = None if context is None else positive("context", context, integer=True)
        self.vocab = None if vocab is None else positive("vocab", vocab, integer=True)
        self.n_classes = positive("n_classes", n_classes, integer=True)
        self.seed = check_seed(seed)
        self.dtype = float_dtype("dtype", dtype)
        self._check_combinations()
        self.loss = self._resolve_loss(loss)
        self.params = self._init_params()
        self._shapes = {k: v.shape for k, v in self.params.items()}

    def _check_combinations(self) -> None:
        """The options the layer does not check (it checked masks, positions and rank)."""
        if self.positions is not None and self.context is None:
            raise ValueError(
                f"context: positions={self.positions!r} needs the longest prompt length "
                f"context (a positive integer), received None"
            )
        if self.readout == "tokens" and self.vocab is None:
            raise ValueError(
                "readout: 'tokens' predicts a token at every position, so it needs vocab "
                "(integer token inputs), received vocab=None"
            )
        if self.readout == "tokens" and self.n_classes != 1:
            raise ValueError(
                f"n_classes: readout='tokens' predicts one of the vocab={self.vocab} tokens; "
                f"leave n_classes at 1, received {self.n_classes}"
            )

    def _resolve_loss(self, loss: str | None) -> str:
        if self.readout == "tokens":
            if loss not in (None, "cross_entropy"):
                raise ValueError(
                    f"loss: readout='tokens' uses the cross-entropy, received loss={loss!r}"
                )
            return "cross_entropy"
        resolved = "logistic" if self.n_classes == 1 else "cross_entropy"
        if loss is not None:
            resolved = choice("loss", loss, tuple(LOSSES))
        if (resolved == "cross_entropy") != (self.n_classes >= 2):
            need = "n_classes >= 2" if resolved == "cross_entropy" else "n_classes=1"
            raise ValueError(
                f"loss: {resolved!r} needs {need}, received n_classes={self.n_classes}"
            )
        return resolved

    def _init_params(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        d, dt = self.d, self.dtype
        params: dict[str, np.ndarray] = {}
        if self.vocab is not None:
            params["E"] = rng.standard_normal((d, self.vocab)).astype(dt)
        if self.positions == "absolute":
            params["P"] = rng.standard_normal((d, self.context)).astype(dt)
        for l in range(1 if self.shared else self.layers):
            for k, v in self.block.init_params(d, self.context, rng, dt).items():
                params[f"{k}{l}"] = v
            if self.layernorm:
                params[f"g{l}"], params[f"b{l}"] = np.ones(d, dt), np.zeros(d, dt)
        if self.layernorm:
            params["gF"], params["bF"] = np.ones(d, dt), np.zeros(d, dt)
        if self.readout == "last":
            params["v"] = (rng.standard_normal((d, self.n_classes)) / np.sqrt(d)).astype(dt)
        else:
            params["U"] = (rng.standard_normal((self.vocab, d)) / np.sqrt(d)).astype(dt)
        return params

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments (to rebuild the model from a run folder)."""
        keys = (
            "d layers heads attention rank scores mask positions context vocab layernorm "
            "shared readout n_classes loss seed"
        ).split()
        return {k: getattr(self, k) for k in keys} | {"dtype": self.dtype.name}

    def layer_params(self, l: int) -> dict[str, np.ndarray]:
        """Layer ``l``'s parameters under the layer's own names (``W``, ``V``, ``R``, ...)."""
        k = 0 if self.shared else l
        names = self.block.shapes(self.d, self.context)
        return {name: self.params[f"{name}{k}"] for name in names}

    # --- the edge: every public method checks its inputs here, once ------------------------

    def _inputs(self, X: object, training: bool = False, full: bool = False) -> np.ndarray:
        """``X`` checked against the model (real prompts ``(n, d, c)``, then in the model's
        dtype, or integer tokens ``(n, c)`` in ``0..V-1``; float arrays of whole numbers count
        as tokens), and the parameters' shapes; then ``MemoryError`` naming the sizes when the
        step cannot fit."""
        for k, shape in self._shapes.items():
            p = self.params.get(k)
            if not isinstance(p, np.ndarray) or p.shape != shape or p.dtype.kind != "f":
                got = "missing" if p is None else f"{type(p).__name__} {np.shape(p)}"
                raise ValueError(
                    f"params[{k!r}]: expected a float array of shape {shape}, received {got}"
                    + (f" {p.dtype}" if isinstance(p, np.ndarray) else "")
                )
        if self.vocab is not None:
            X = self._tokens(X)
            n, c = X.shape
        else:
            if not (isinstance(X, np.ndarray) and X.ndim == 3 and X.dtype.kind == "f"):
                X = as_float_array("X", X, ndim=3)
            n, d, c = X.shape
            if d != self.d or n == 0 or c == 0:
                raise ValueError(
                    f"X: expected prompts of shape (n >= 1, d={self.d}, c >= 1), received {X.shape}"
                )
            X = X.astype(self.dtype, copy=False)  # computed in the model's dtype
        if self.context is not None and c > self.context:
            raise ValueError(
                f"X: expected at most context={self.context} tokens per prompt, received {c} "
                f"(shape {X.shape})"
            )
        if c < 2 and (self.scores == "linear" or self.mask == "exclude-last"):
            why = "scores='linear' divides by c - 1"
            if self.scores != "linear":
                why = "mask='exclude-last' leaves no key for a single token"
            raise ValueError(f"X: expected c >= 2 tokens ({why}), received shape {X.shape}")
        self.check_fits(n, c, training, full)
        return X

    def _tokens(self, T: object) -> np.ndarray:
        arr = np.asarray(T)
        if arr.dtype.kind not in "biuf" or arr.ndim != 2 or 0 in arr.shape:
            raise ValueError(
                f"X: expected integer tokens of shape (n >= 1, c >= 1) for vocab={self.vocab}, "
                f"received {arr.dtype} {arr.shape}"
            )
        if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise ValueError("X: expected integer tokens, received non-integer values")
        bad = (arr < 0) | (arr >= self.vocab)
        if bad.any():
            raise ValueError(
                f"X: expected tokens in 0..{self.vocab - 1} (vocab={self.vocab}), received "
                f"{arr[bad][0]}"
            )
        return arr.astype(np.intp, copy=False)

    def _labels(self, y: object, n: int, c: int) -> np.ndarray:
        if self.readout == "tokens":
            arr = np.asarray(y)
            if arr.shape != (n, c):
                raise ValueError(
                    f"y: expected integer targets of shape (n={n}, c={c}), one per position, "
                    f"received {arr.shape}"
                )
            return class_labels("y", arr.reshape(-1), n * c, self.vocab)  # type: ignore[arg-type]
        if self.loss == "squared":
            return real_targets("y", y, n)
        if self.n_classes == 1:
            return sign_labels("y", y, n)
        return class_labels("y", y, n, self.n_classes)

    def check_fits(self, n: int, c: int, training: bool = True, full: bool = False) -> None:
        """``MemoryError`` naming the sizes when a step (``training``) or an evaluation on ``n``
        prompts of ``c`` tokens cannot fit in the available memory; ``full``: every layer's
        every query (the attention weights), where a readout of the last token needs only the
        top layer's last one."""
        check_stack_fits(
            n,
            self.d,
            c,
            self.layers,
            self.heads,
            self.dtype,
            training=training,
            threads=num_threads(),
            rank=(self.rank or self.d) if self.positions == "relative-key" else 0,
            layernorm=self.layernorm,
            last_query=self.readout == "last" and not full,
            linear=self.scores == "linear",
            vocab=self.vocab if self.readout == "tokens" else 0,
        )

    def _diagnose(self, X: np.ndarray) -> None:
        """After a non-finite result: ``ValueError`` naming the input or parameter that holds
        NaN or inf; if none does, the caller reports an overflow."""
        if self.vocab is None:
            check_finite("X", X)
        for k, p in self.params.items():
            check_finite(f"params[{k!r}]", p)

    # --- forward ---------------------------------------------------------------------------

    def _embed(self, X: np.ndarray) -> np.ndarray:
        """``X0 (n, d, c)``: the prompts, or the tokens' embeddings; plus ``P[:, :c]``."""
        if self.vocab is not None:
            X0 = np.ascontiguousarray(self.params["E"].T[X].transpose(0, 2, 1))
        else:
            X0 = X
        if self.positions == "absolute":
            X0 = X0 + self.params["P"][:, : X.shape[-1]]
        return X0

    def _layers(self, X0: np.ndarray, full: bool = False) -> tuple[np.ndarray, list[tuple]]:
        """``X_L`` (its last column alone, ``(n, d, 1)``, when the readout is the last token and
        not ``full``) and each layer's ``(layer-norm cache, heads cache)``."""
        X, caches = X0, []
        for l in range(self.layers):
            last = not full and self.readout == "last" and l == self.layers - 1
            p = self.layer_params(l)
            ln = None
            Y = X
            if self.layernorm:
                k = 0 if self.shared else l
                Y, ln = layernorm_forward(X, self.params[f"g{k}"], self.params[f"b{k}"])
            out, hc = self.block.forward(p, Y, "last" if last else "all")
            X = (X[:, :, -1:] if last else X) + out
            caches.append((ln, hc))
        return X, caches

    def _run(self, X: np.ndarray, full: bool = False) -> tuple[np.ndarray, np.ndarray, list]:
        """``(X0, X_L, caches)``; a softmax whose scores are not finite raises
        ``FloatingPointError`` after naming a non-finite input or parameter if there is one."""
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                X0 = self._embed(X)
                XL, caches = self._layers(X0, full)
        except FloatingPointError:
            self._diagnose(X)
            raise
        return X0, XL, caches

    def _head(self, XL: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        """``(logits, the normed top, layer-norm cache)``: ``z (n, k)`` for the last token,
        ``(n, c, V)`` for every token."""
        top = XL[:, :, -1] if self.readout == "last" else XL
        ln = None
        if self.layernorm:
            top, ln = layernorm_forward(top, self.params["gF"], self.params["bF"])
        if self.readout == "last":
            return contract("n d, d k -> n k", top, self.params["v"]), top, ln
        return contract("n d c, v d -> n c v", top, self.params["U"]), top, ln

    def _loss(self, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        if self.readout == "tokens":
            n, c, V = z.shape
            loss, dz = cross_entropy_unchecked(z.reshape(n * c, V), y)
            return loss, dz.reshape(n, c, V)
        return LOSSES[self.loss](z, y)

    def forward(self, X: np.ndarray, **inputs: Any) -> np.ndarray:
        """Logits: ``z (n, k)`` for ``readout="last"``, ``(n, V, c)`` (``U X_L`` per prompt)
        for ``"tokens"``; ``X`` is prompts ``(n, d, c)`` or tokens ``(n, c)``."""
        X = self._inputs(X)
        z = self._head(self._run(X)[1])[0]
        if not np.isfinite(z).all():
            self._diagnose(X)
        return z if self.readout == "last" else z.transpose(0, 2, 1)

    def attention_weights(self, X: np.ndarray, **inputs: Any) -> list[np.ndarray]:
        """Each layer's weights ``S (n, h, c, c)`` indexed ``[.., s, t]`` (keys, then queries):
        the softmax, or the linear form's masked scores divided by ``c - 1`` (views of the
        layers' arrays, which hold the heads as columns: not C-contiguous)."""
        X = self._inputs(X, full=True)
        caches = self._run(X, full=True)[2]
        weights = [hc.weights for _, hc in caches]
        # a softmax is finite (it raises otherwise); linear scores may have overflowed
        if self.scores == "linear" and not all(np.isfinite(np.sum(S)) for S in weights):
            self._diagnose(X)
        return weights

    def snapshot(self, X: np.ndarray, **inputs: Any) -> np.ndarray:
        """The trainer's snapshot hook: every layer's weights, ``(n, l, h, c, c)``."""
        return np.stack(self.attention_weights(X), axis=1)

    def metrics(self, X: np.ndarray, y: np.ndarray, **inputs: Any) -> dict[str, float]:
        """The trainer's evaluation hook: ``loss`` and (but for the squared loss) ``accuracy``,
        means over the prompts (and positions, for ``readout="tokens"``)."""
        X = self._inputs(X)
        y = self._labels(y, X.shape[0], X.shape[-1])
        z = self._head(self._run(X)[1])[0]
        if not np.isfinite(z).all():
            self._diagnose(X)
        row = {"loss": float(self._loss(z, y)[0])}
        if self.loss != "squared":
            if self.readout == "tokens":
                predicted = np.argmax(z, axis=2).reshape(-1)
            elif self.n_classes == 1:
                predicted = np.where(z[:, 0] >= 0, 1.0, -1.0)
            else:
                predicted = np.argmax(z, axis=1)
            row["accuracy"] = float(np.mean(predicted == y))
        return row

    # --- loss and gradients ----------------------------------------------------------------

    def loss_and_grads(
        self, X: np.ndarray, y: np.ndarray, **inputs: Any
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Mean loss and fresh gradients for every key of ``params`` (same shapes and dtypes).

        ``X``: prompts ``(n, d, c)`` or tokens ``(n, c)``; ``y``: labels ``(n,)`` for the last
        token's readout, integer targets ``(n, c)`` for ``readout="tokens"``. Other inputs of a
        data set (the trainer passes every one) are accepted and not used."""
        X = self._inputs(X, training=True)
        y = self._labels(y, X.shape[0], X.shape[-1])
        X0, XL, caches = self._run(X)
        z, top, ln = self._head(XL)
        loss, dz = self._loss(z, y)
        if not np.isfinite(loss):
            self._diagnose(X)  # an input or parameter, else an overflow (the trainer says)
        grads: dict[str, np.ndarray] = {}
        if self.readout == "last":
            grads["v"] = contract("n d, n k -> d k", top, dz)
            dtop = contract("n k, d k -> n d", dz, self.params["v"])
        else:
            grads["U"] = contract("n c v, n d c -> v d", dz, top)
            dtop = contract("v d, n c v -> n d c", self.params["U"], dz)
        if self.layernorm:
            dtop, grads["gF"], grads["bF"] = layernorm_backward(dtop, ln)
        dX = dtop[:, :, None] if self.readout == "last" else dtop
        dX = self._layers_backward(dX, caches, X0.shape[2], grads)
        if dX is not None:
            self._embed_backward(X, dX, grads)
        return loss, {k: grads[k] for k in self.params}

    def _layers_backward(
        self, dX: np.ndarray, caches: list[tuple], c: int, grads: dict[str, np.ndarray]
    ) -> np.ndarray | None:
        """Each layer's backward, top down, adding its gradients into ``grads``; returns
        ``dX0`` when the input has parameters (embedding or absolute positions), else None."""
        need_x0 = self.vocab is not None or self.positions == "absolute"
        for l in reversed(range(self.layers)):
            ln, hc = caches[l]
            k = 0 if self.shared else l
            need = l > 0 or need_x0 or self.layernorm
            layer_grads, dY = self.block.backward(dX, hc, self.layer_params(l), need)
            if dX.shape[2] != c:  # the top layer of a last-token readout: one column
                full = np.zeros((dX.shape[0], dX.shape[1], c), dtype=dX.dtype)
                full[:, :, -1:] = dX
                dX = full
            if self.layernorm and (l > 0 or need_x0):
                dYX, dg, db = layernorm_backward(dY, ln)
                dX = dX + dYX
                layer_grads |= {"g": dg, "b": db}
            elif self.layernorm:
                _, layer_grads["g"], layer_grads["b"] = layernorm_backward(dY, ln)
            elif l > 0 or need_x0:
                dX = dX + dY
            for name, g in layer_grads.items():
                key = f"{name}{k}"
                grads[key] = grads[key] + g if key in grads else g
        return dX if need_x0 else None

    def _embed_backward(self, X: np.ndarray, dX0: np.ndarray, grads: dict) -> None:
        """``dE`` (rows of ``dX0`` added at their tokens) and ``dP`` (summed over prompts)."""
        _, d, c = dX0.shape
        if self.vocab is not None:
            dET = np.zeros((self.vocab, d), dtype=dX0.dtype)
            np.add.at(dET, X.reshape(-1), dX0.transpose(0, 2, 1).reshape(-1, d))
            grads["E"] = np.ascontiguousarray(dET.T)
        if self.positions == "absolute":
            dP = np.zeros_like(self.params["P"])
            dP[:, :c] = dX0.sum(axis=0)
            grads["P"] = dP
