"""Multi-head attention with masks and positions: one layer of the attention stack.

For one prompt ``Y (d, c)`` (tokens as columns; ``s`` keys, ``t`` queries) and ``h`` heads::

    scores_h = Y^T A_h Y + bias_h                  (c, c) indexed [s, t]
    softmax: S_h = softmax over s of scores_h      a masked key has bias -inf: weight exactly 0
    linear:  S_h = scores_h * M / (c - 1)          M[s, t] = 0 for a masked key, else 1
    out      = sum_h V_h Y S_h                     (d, c)

with ``A_h = W_h`` (``attention="self"``, ``W (h, d, d)``) or ``WK_h WQ_h^T`` (``"kq"``,
``WK, WQ (h, d, r)``), ``V (h, d, d)``. Masks: ``"causal"`` masks the keys ``s > t``,
``"exclude-last"`` the key ``s = c - 1`` for every query. The bias: ``R[h, t - s]`` for
``positions="relative"`` (``R (h, context)``, causal only), and for ``"relative-key"`` (kq and
causal only; Shaw et al.'s form as Edelman et al. use it) a learned vector ``RK[h, t - s]`` per
head and offset added to each key, with their scaling by ``1 / sqrt(r)``::

    scores_h[s, t] = (WK_h^T y_s + RK[h, t - s]) . (WQ_h^T y_t) / sqrt(r)

(Edelman et al.'s code, ``mingpt/model_rpe.py``: ``(q k^T + q . wpe[t - s]) / sqrt(head size)``,
an embedding of the offsets ``0..context-1`` drawn from ``normal(0, 0.02)``, so ``RK`` starts at
that scale; ``r`` plays their head size.)

Masked keys never see the bias, and offsets ``>= c`` get gradient 0.

The heads are an axis, not a loop: the queries of every head are the columns of one matrix
``Q (n, d, h c)`` (column ``(h, t)`` is ``A_h y_t``), so the primitive of
:mod:`attnlab.blocks.attention` computes every head's scores ``(n, c, h c)``, softmax and
``P = Y S (n, d, h c)`` at once, with the bias added to the scores, and ``out`` is one product
``V' P`` with ``V' (d, d h)`` (``V'[e, (k, h)] = V[h, e, k]``) and ``P`` read as ``(n, d h, c)``.
Backward, given ``dOut (n, d, c)``::

    dV' = sum_n dOut P^T            dP = V'^T dOut
    dY, dQ, dBias = the primitive's backward of dP     (Y as keys and values)
    dA' = sum_n dQ Y^T              dY += A'^T dQ      (Y as queries; A' (d h, d) stacks A_h)
    kq: dWK_h = dA_h WQ_h,  dWQ_h = dA_h^T WK_h;   relative: dR[h, o] = sum_{t - s = o} dBias

``queries="last"``: only the last token queries (``out (n, d, 1)``), what a readout of the last
token needs from the top layer. A CS231n pair: :meth:`MultiHeadAttention.forward` ``-> (out,
cache)``, :meth:`MultiHeadAttention.backward` ``(dOut, cache, params) -> (grads, dY)``, on a dict
of this layer's parameters under the names ``W`` or ``WK, WQ``, ``V``, ``R``, ``RK``. Inputs
are trusted: the model validates them once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from attnlab.blocks.attention import (
    AttentionCache,
    LinearAttentionCache,
    attend,
    attend_bias_grads,
    attend_linear,
    attend_linear_bias_grads,
)
from mlp.contract import contract
from mlp.threads import contract_by_prompts
from mlp.validation import choice, positive

#: The masks, the position options of the layer (absolute positions are added to the stack's
#: input instead), the attentions and the score forms.
MASKS = (None, "causal", "exclude-last")
POSITIONS = (None, "absolute", "relative", "relative-key")
ATTENTIONS = ("self", "kq")
SCORES = ("softmax", "linear")

#: Standard deviation of ``RK`` at initialization (Edelman et al.'s ``normal(0, 0.02)``).
RK_INIT_STD = 0.02


@lru_cache(maxsize=64)
def allowed_keys(mask: str | None, c: int, tq: int) -> np.ndarray:
    """``(c, tq)`` booleans, True where key ``s`` may be seen by query ``t = c - tq + ti`` (the
    last ``tq`` tokens query). Read-only."""
    s = np.arange(c)[:, None]
    t = np.arange(c - tq, c)[None, :]
    if mask == "causal":
        ok = s <= t
    elif mask == "exclude-last":
        ok = np.broadcast_to(s != c - 1, (c, tq)).copy()
    else:
        ok = np.ones((c, tq), dtype=bool)
    ok.flags.writeable = False
    return ok


@lru_cache(maxsize=64)
def _offsets(c: int, tq: int) -> tuple[np.ndarray, np.ndarray]:
    """``off (c, tq)``: ``t - s`` clipped to ``[0, c)``; ``entries``: the flat indices
    ``s tq + ti`` of the pairs with ``s <= t`` (those that see a relative bias). Read-only."""
    s = np.arange(c)[:, None]
    t = np.arange(c - tq, c)[None, :]
    off = np.clip(t - s, 0, c - 1)
    entries = np.flatnonzero(t >= s)
    off.flags.writeable = False
    entries.flags.writeable = False
    return off, entries


@lru_cache(maxsize=64)
def _sources(c: int, tq: int) -> tuple[np.ndarray, np.ndarray]:
    """``s_of (c, tq)``: the key ``s = t - o`` of offset ``o`` for query ``t`` (clipped to 0),
    and ``valid (c, tq)``: 1.0 where ``o <= t``, else 0.0. Read-only."""
    o = np.arange(c)[:, None]
    t = np.arange(c - tq, c)[None, :]
    s_of = np.clip(t - o, 0, c - 1)
    valid = (o <= t).astype(np.float64)
    s_of.flags.writeable = False
    valid.flags.writeable = False
    return s_of, valid


@lru_cache(maxsize=64)
def _mask_bias(mask: str | None, c: int, tq: int, heads: int, dtype: np.dtype) -> np.ndarray:
    """The softmax's bias ``(c, h tq)`` of a mask alone: 0, or ``-inf`` at a masked key."""
    ok = allowed_keys(mask, c, tq)
    bias = np.where(ok, 0.0, -np.inf).astype(dtype)
    bias = np.ascontiguousarray(np.broadcast_to(bias[:, None, :], (c, heads, tq)))
    bias = bias.reshape(c, heads * tq)
    bias.flags.writeable = False
    return bias


@lru_cache(maxsize=64)
def _mask_01(mask: str, c: int, tq: int, heads: int, dtype: np.dtype) -> np.ndarray:
    """The linear form's mask ``(c, h tq)``: 1 where a key is seen, 0 where it is masked."""
    ok = allowed_keys(mask, c, tq).astype(dtype)
    m = np.ascontiguousarray(np.broadcast_to(ok[:, None, :], (c, heads, tq)))
    m = m.reshape(c, heads * tq)
    m.flags.writeable = False
    return m


@dataclass(frozen=True)
class HeadsCache:
    """What :meth:`MultiHeadAttention.backward` needs: the primitive's cache (it holds ``Y``
    and ``Q (n, d, h tq)``), ``P = Y S (n, d, h tq)``, the query tokens ``Yq (n, d, tq)``,
    ``A' (d h, d)``, and for relative-key ``Qr = WQ^T Yq (n, h, r, tq)``."""

    attention: AttentionCache | LinearAttentionCache
    P: np.ndarray
    Yq: np.ndarray
    A: np.ndarray
    Qr: np.ndarray | None

    @property
    def weights(self) -> np.ndarray:
        """Each head's weights ``(n, h, c, tq)`` indexed ``[.., s, t]`` (linear form: the masked
        scores divided by ``c - 1``)."""
        a = self.attention
        S = a.A * a.scale if isinstance(a, LinearAttentionCache) else a.S
        n, c, _ = S.shape
        tq = self.Yq.shape[2]
        return S.reshape(n, c, -1, tq).transpose(0, 2, 1, 3)


class MultiHeadAttention:
    """``MultiHeadAttention(heads=1, attention="self", scores="softmax", mask=None,
    positions=None, rank=None, textbook=False)``: the layer of the module docstring.

    ``rank`` is ``r`` of ``"kq"`` (None: ``d``); ``positions`` other than ``"relative"`` and
    ``"relative-key"`` add nothing to the layer (absolute positions belong to the input).
    ``textbook=True`` swaps the exact softmax backward for the textbook one (comparisons only).
    The options are checked here, once (``ValueError`` naming the option); the arrays given to
    :meth:`forward` and :meth:`backward` are trusted.
    """

    def __init__(
        self,
        heads: int = 1,
        attention: str = "self",
        scores: str = "softmax",
        mask: str | None = None,
        positions: str | None = None,
        rank: int | None = None,
        textbook: bool = False,
    ) -> None:
        self.heads = positive("heads", heads, integer=True)
        self.attention = choice("attention", attention, ATTENTIONS)
        self.scores = choice("scores", scores, SCORES)
        self.mask = choice("mask", mask, MASKS)
        choice("positions", positions, POSITIONS)
        if positions in ("relative", "relative-key") and mask != "causal":
            raise ValueError(
                f"positions: {positions!r} needs mask='causal' (offsets t - s >= 0), "
                f"received mask={mask!r}"
            )
        if positions == "relative-key" and attention != "kq":
            raise ValueError(
                f"positions: 'relative-key' adds a vector to the keys WK^T y, so it needs "
                f"attention='kq', received attention={attention!r}"
            )
        if rank is not None and attention != "kq":
            raise ValueError(f"rank: only attention='kq' has a rank, received rank={rank!r}")
        self.rank = None if rank is None else positive("rank", rank, integer=True)
        self.positions = positions if positions in ("relative", "relative-key") else None
        self.textbook = bool(textbook)

    def shapes(self, d: int, context: int | None) -> dict[str, tuple[int, ...]]:
        """The layer's parameters and shapes, in the order they are drawn."""
        h, r = self.heads, self.rank or d
        out: dict[str, tuple[int, ...]] = (
            {"W": (h, d, d)} if self.attention == "self" else {"WK": (h, d, r), "WQ": (h, d, r)}
        )
        out["V"] = (h, d, d)
        if self.positions == "relative":
            out["R"] = (h, context)  # type: ignore[assignment]
        elif self.positions == "relative-key":
            out["RK"] = (h, context, r)  # type: ignore[assignment]
        return out

    def init_params(
        self, d: int, context: int | None, rng: np.random.Generator, dtype: np.dtype
    ) -> dict[str, np.ndarray]:
        """Gaussian ``W``, ``WK``, ``WQ`` of standard deviation ``1/sqrt(d)`` (scores of order
        one), ``V`` of ``1/sqrt(h d)`` (the heads' sum of order one), ``RK`` of 0.02; ``R`` 0."""
        std = {"V": 1 / np.sqrt(self.heads * d), "RK": RK_INIT_STD}
        return {
            k: np.zeros(shape, dtype)
            if k == "R"
            else (std.get(k, 1 / np.sqrt(d)) * rng.standard_normal(shape)).astype(dtype)
            for k, shape in self.shapes(d, context).items()
        }

    # --- the pieces ------------------------------------------------------------------------

    def _scale(self, params: dict[str, np.ndarray]) -> float:
        """Edelman et al.'s ``1 / sqrt(r)`` for relative-key, else 1."""
        if self.positions != "relative-key":
            return 1.0
        return 1.0 / np.sqrt(params["WQ"].shape[2])

    def _stacked(self, params: dict[str, np.ndarray], d: int) -> np.ndarray:
        """``A' (d h, d)``: row ``(e, h)`` is row ``e`` of ``A_h``."""
        if self.attention == "self":
            A = params["W"]
        else:
            A = contract("h e r, h d r -> h e d", params["WK"], params["WQ"])
            scale = self._scale(params)
            if scale != 1.0:
                A *= scale
        h = A.shape[0]
        return A.transpose(1, 0, 2).reshape(d * h, d)

    def _bias(
        self, params: dict[str, np.ndarray], Qr: np.ndarray | None, c: int, tq: int, dtype
    ) -> np.ndarray | None:
        """The scores' bias: None, ``(c, h tq)`` shared or ``(n, c, h tq)`` (relative-key);
        ``-inf`` at masked keys for the softmax, 0 there for the linear form."""
        h = self.heads
        linear = self.scores == "linear"
        if self.positions is None:
            if self.mask is None or linear:
                return None
            return _mask_bias(self.mask, c, tq, h, np.dtype(dtype))
        off, _ = _offsets(c, tq)
        ok = allowed_keys(self.mask, c, tq)
        fill = 0.0 if linear else -np.inf
        if self.positions == "relative":
            R = params["R"][:, :c][:, off]  # (h, c, tq): R[h, t - s]
            bias = np.where(ok, R, fill).astype(dtype, copy=False)
            return np.ascontiguousarray(bias.transpose(1, 0, 2)).reshape(c, h * tq)
        # relative-key: B[n, h, o, t] = RK[h, o] . Qr[n, h, :, t] / sqrt(r), G[s, t] = B[t - s, t]
        RK = params["RK"][:, :c, :] * self._scale(params)
        B = contract("h o r, n h r t -> n h o t", RK, Qr)
        G = np.take_along_axis(B, off[None, None], axis=2)  # (n, h, c, tq) [s, t]
        G = np.where(ok[None, None], G, fill).astype(dtype, copy=False)
        return np.ascontiguousarray(G.transpose(0, 2, 1, 3)).reshape(Qr.shape[0], c, h * tq)

    # --- forward and backward ------------------------------------------------------------

    def forward(
        self, params: dict[str, np.ndarray], Y: np.ndarray, queries: str = "all"
    ) -> tuple[np.ndarray, HeadsCache]:
        """``out (n, d, tq)`` and the cache, for ``Y (n, d, c)``; ``tq = c`` for
        ``queries="all"``, 1 for ``"last"``."""
        n, d, c = Y.shape
        h = self.heads
        Yq = Y if queries == "all" else Y[:, :, c - 1 :]
        tq = Yq.shape[2]
        Ap = self._stacked(params, d)
        Q = contract_by_prompts("k d, n d t -> n k t", Ap, Yq).reshape(n, d, h * tq)
        Qr = None
        if self.positions == "relative-key":
            r = params["WQ"].shape[2]
            WQp = params["WQ"].transpose(0, 2, 1).reshape(h * r, d)
            Qr = contract_by_prompts("k d, n d t -> n k t", WQp, Yq).reshape(n, h, r, tq)
        bias = self._bias(params, Qr, c, tq, Q.dtype)
        if self.scores == "linear":
            mask = None if self.mask is None else _mask_01(self.mask, c, tq, h, Q.dtype)
            P, acache = attend_linear(Y, Q, 1.0 / (c - 1), bias, mask)
        else:
            P, acache = attend(Y, Q, bias)
        Vp = params["V"].transpose(1, 2, 0).reshape(d, d * h)
        out = contract_by_prompts("e k, n k t -> n e t", Vp, P.reshape(n, d * h, tq))
        return out, HeadsCache(acache, P, Yq, Ap, Qr)

    def backward(
        self,
        dOut: np.ndarray,
        cache: HeadsCache,
        params: dict[str, np.ndarray],
        need_input: bool = True,
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """``(grads, dY (n, d, c))`` of ``<dOut, out>`` for ``dOut (n, d, tq)``: the gradients
        of the layer's parameters, and of its input (None unless ``need_input``)."""
        a, P, Yq = cache.attention, cache.P, cache.Yq
        n, d, tq = Yq.shape
        h = self.heads
        c = a.X.shape[2]
        V = params["V"]
        Vp = V.transpose(1, 2, 0).reshape(d, d * h)
        P3 = P.reshape(n, d * h, tq)
        dVp = contract_by_prompts("n e t, n k t -> e k", dOut, P3)
        grads = {"V": np.ascontiguousarray(dVp.reshape(d, d, h).transpose(2, 0, 1))}
        dP = contract_by_prompts("e k, n e t -> n k t", Vp, dOut).reshape(n, d, h * tq)
        bias = {None: None, "relative": "shared", "relative-key": "prompt"}[self.positions]
        if isinstance(a, LinearAttentionCache):
            dY, dQ, dB = attend_linear_bias_grads(dP, a, need_input, bias)
        else:
            dY, dQ, dB = attend_bias_grads(dP, a, need_input, self.textbook, bias)
        dQ3 = dQ.reshape(n, d * h, tq)
        dAp = contract_by_prompts("n k t, n d t -> k d", dQ3, Yq)
        dA = dAp.reshape(d, h, d).transpose(1, 0, 2)  # (h, e, d)
        dYq = contract_by_prompts("k d, n k t -> n d t", cache.A, dQ3) if need_input else None
        if self.attention == "self":
            grads["W"] = np.ascontiguousarray(dA)
        else:
            scale = self._scale(params)
            grads["WK"] = contract("h e d, h d r -> h e r", dA, params["WQ"])
            grads["WQ"] = contract("h e d, h e r -> h d r", dA, params["WK"])
            if scale != 1.0:
                grads["WK"] *= scale
                grads["WQ"] *= scale
        if self.positions == "relative":
            grads["R"] = self._relative_grad(params["R"], dB, c, tq)
        elif self.positions == "relative-key":
            r = params["WQ"].shape[2]
            grads["RK"], dQr = self._relative_key_grads(params, dB, cache.Qr, c)
            dQr3 = dQr.reshape(n, h * r, tq)
            dWQ = contract_by_prompts("n d t, n k t -> d k", Yq, dQr3)  # (d, h r)
            grads["WQ"] += dWQ.reshape(d, h, r).transpose(1, 0, 2)
            if need_input:
                WQp = params["WQ"].transpose(0, 2, 1).reshape(h * r, d)
                dYq += contract_by_prompts("k d, n k t -> n d t", WQp, dQr3)
        if need_input:
            if tq == c:
                dY += dYq
            else:
                dY[:, :, c - tq :] += dYq
        return grads, dY

    def _relative_grad(self, R: np.ndarray, dB: np.ndarray, c: int, tq: int) -> np.ndarray:
        """``dR (h, context)``: ``dR[h, o]`` is the sum of ``dBias (c, h tq)`` over the pairs
        with ``t - s = o`` (one ``bincount`` over ``(h, o)``, in a fixed order)."""
        h = self.heads
        off, entries = _offsets(c, tq)
        dBh = dB.reshape(c, h, tq).transpose(1, 0, 2).reshape(h, c * tq)[:, entries]
        bins = (np.arange(h)[:, None] * c + off.reshape(-1)[entries]).reshape(-1)
        dR = np.zeros_like(R)
        dR[:, :c] = np.bincount(bins, dBh.reshape(-1), minlength=h * c).reshape(h, c)
        return dR

    def _relative_key_grads(
        self, params: dict[str, np.ndarray], dG: np.ndarray, Qr: np.ndarray, c: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(dRK (h, context, r), dQr (n, h, r, tq))`` from the scores' gradient
        ``dG (n, c, h tq)``: ``dB[n, h, o, t] = dG[n, t - o, h, t]`` for ``o <= t`` (else 0),
        ``dRK = sum_{n, t} dB Qr^T / sqrt(r)``, ``dQr = RK^T dB / sqrt(r)``."""
        n, h, _, tq = Qr.shape
        scale = self._scale(params)
        dGh = dG.reshape(n, c, h, tq).transpose(0, 2, 1, 3)  # (n, h, c, tq) [s, t]
        s_of, valid = _sources(c, tq)
        dB = np.take_along_axis(dGh, s_of[None, None], axis=2)  # (n, h, c, tq) [o, t]
        dB *= valid
        dRK = np.zeros_like(params["RK"])
        dRK[:, :c, :] = contract("n h o t, n h r t -> h o r", dB, Qr)
        dRK *= scale
        dQr = contract("h o r, n h o t -> n h r t", params["RK"][:, :c, :], dB)
        dQr *= scale
        return dRK, dQr


def heads_forward_loop(
    layer: MultiHeadAttention, params: dict[str, np.ndarray], Y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt, per-head, per-query loop reference of :meth:`MultiHeadAttention.forward`
    (every token queries): ``(out (n, d, c), S (n, h, c, c))``, straight from the formulas of
    the module docstring."""
    n, _, c = Y.shape
    out = np.zeros_like(Y)
    S_all = np.zeros((n, layer.heads, c, c), dtype=Y.dtype)
    ok = allowed_keys(layer.mask, c, c)
    for i in range(n):
        y = Y[i]
        for h in range(layer.heads):
            if layer.attention == "self":
                A, scale = params["W"][h], 1.0
            else:
                scale = 1.0
                if layer.positions == "relative-key":
                    scale = 1.0 / np.sqrt(params["WQ"].shape[2])
                A = params["WK"][h] @ params["WQ"][h].T * scale
            for t in range(c):
                keys = [s for s in range(c) if ok[s, t]]
                score = np.array([y[:, s] @ A @ y[:, t] for s in keys])
                if layer.positions == "relative":
                    score += np.array([params["R"][h, t - s] for s in keys])
                if layer.positions == "relative-key":
                    q = params["WQ"][h].T @ y[:, t]
                    score += np.array([params["RK"][h, t - s] @ q for s in keys]) * scale
                if layer.scores == "softmax":
                    w = np.exp(score - score.max())
                    w /= w.sum()
                else:
                    w = score / (c - 1)
                S_all[i, h, keys, t] = w
            out[i] += params["V"][h] @ y @ S_all[i, h]
    return out, S_all
