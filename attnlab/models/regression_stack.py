"""Ahn, Cheng, Daneshmand and Sra's linear transformer for in-context regression (arXiv
2306.00297), built from the attention stack's layer, with the parameters ``A_l, B_l (d, d)``.

A prompt ``Z (d+1, N+1)`` holds the examples ``(x_i, y_i)`` as columns, then the query
``(x_q, 0)``. Layer ``l``::

    Z <- Z + (1/N) P_l Z M (Z^T Q_l Z),   P_l = [[B_l, 0], [0, 1]],   Q_l = [[A_l, 0], [0, 0]]

``M`` drops the query column from the keys; the prediction is ``yhat = -Z_L[d, N]`` and the loss
the mean of ``(yhat - y_q)^2`` (no 1/2). Each layer is
:class:`attnlab.blocks.heads.MultiHeadAttention` with one head, ``scores="linear"`` (divided by
``c - 1 = N``) and ``mask="exclude-last"``, whose ``W (1, d+1, d+1)`` is ``Q_l`` and ``V (1, d+1,
d+1)`` is ``P_l``: the trained ``A_l``, ``B_l`` are their top-left blocks, the rest fixed. The
gradients of ``A_l``, ``B_l`` are the top-left blocks of the layer's ``dW``, ``dV``. Only the
query column of ``Z_L`` reaches the prediction, so the top layer computes the query's column
alone (the layer's ``queries="last"``), and its ``B`` gets gradient 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnlab.blocks.heads import HeadsCache, MultiHeadAttention
from mlp.validation import as_float_array, check_finite, check_seed, positive, real_targets

__all__ = ["RegressionStack"]


class RegressionStack:
    """``RegressionStack(d, layers=1, init_std=1e-3, seed=0)``: the model of the module
    docstring on prompts ``Z (n, d+1, N+1)``.

    ``params``: ``A{l}, B{l} (d, d)`` for ``l = 0..layers-1``, drawn from ``N(0, init_std^2)``
    (``default_rng(seed)``); replace one by assigning ``.params[key]`` (``B{l} = 0`` held fixed,
    with the trainer's ``trainable`` naming the ``A{l}`` only, makes the layers steps of
    preconditioned gradient descent). :meth:`loss_and_grads` and :meth:`predict` check their
    inputs once; the layer under them trusts them.
    """

    def __init__(self, d: int, layers: int = 1, init_std: float = 1e-3, seed: int = 0) -> None:
        self.d = positive("d", d, integer=True)
        self.layers = positive("layers", layers, integer=True)
        self.init_std = float(positive("init_std", init_std))
        self.seed = check_seed(seed)
        self.block = MultiHeadAttention(1, "self", "linear", "exclude-last")
        rng = np.random.default_rng(self.seed)
        self.params: dict[str, np.ndarray] = {}
        for l in range(self.layers):
            for key in ("A", "B"):
                self.params[f"{key}{l}"] = self.init_std * rng.standard_normal((d, d))

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments (to rebuild the model from a run folder)."""
        return {"d": self.d, "layers": self.layers, "init_std": self.init_std, "seed": self.seed}

    def stacked(self) -> tuple[np.ndarray, np.ndarray]:
        """``A, B (L, d, d)``: the layers' parameters stacked."""
        A = np.stack([self.params[f"A{l}"] for l in range(self.layers)])
        B = np.stack([self.params[f"B{l}"] for l in range(self.layers)])
        return A, B

    def layer_params(self, l: int) -> dict[str, np.ndarray]:
        """Layer ``l`` under the layer's names: ``W = Q_l``, ``V = P_l``, each ``(1, d+1, d+1)``."""
        d = self.d
        W = np.zeros((1, d + 1, d + 1))
        V = np.zeros((1, d + 1, d + 1))
        W[0, :d, :d] = self.params[f"A{l}"]
        V[0, :d, :d] = self.params[f"B{l}"]
        V[0, d, d] = 1.0
        return {"W": W, "V": V}

    # --- checks at the public entry ---------------------------------------------------------

    def _prompts(self, Z: object) -> np.ndarray:
        Z = as_float_array("Z", Z, ndim=3).astype(np.float64, copy=False)
        if Z.shape[1] != self.d + 1 or Z.shape[2] < 2 or Z.shape[0] == 0:
            raise ValueError(
                f"Z: expected prompts (n, d+1={self.d + 1}, N+1) with n >= 1 and N >= 1, "
                f"received {Z.shape}"
            )
        check_finite("Z", Z)
        for k, v in self.params.items():
            if np.shape(v) != (self.d, self.d):
                raise ValueError(
                    f"params[{k!r}]: expected shape {(self.d, self.d)}, got {np.shape(v)}"
                )
            check_finite(f"params[{k!r}]", v)
        return Z

    # --- forward and backward ---------------------------------------------------------------

    def _run(self, Z: np.ndarray) -> tuple[np.ndarray, list[HeadsCache]]:
        """``yhat (n,)`` and the layers' caches. Every layer but the top updates every column;
        the top layer computes the query column only."""
        caches = []
        last = self.layers - 1
        for l in range(self.layers):
            out, cache = self.block.forward(self.layer_params(l), Z, "last" if l == last else "all")
            caches.append(cache)
            if l < last:
                Z = Z + out
        return -(Z[:, self.d, -1] + out[:, self.d, 0]), caches

    def predict(self, Z: object) -> np.ndarray:
        """``yhat = -Z_L[:, d, N] (n,)`` for prompts ``Z (n, d+1, N+1)``."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self._run(self._prompts(Z))[0]

    def metrics(self, Z: np.ndarray, y: np.ndarray, **inputs: Any) -> dict[str, float]:
        """The trainer's evaluation hook: ``{"loss": mean (yhat - y)^2}`` (forward only)."""
        Z = self._prompts(Z)
        r = self._run(Z)[0] - real_targets("y", y, Z.shape[0])
        return {"loss": float(r @ r) / len(r)}

    def loss_and_grads(
        self, Z: np.ndarray, y: np.ndarray, **inputs: Any
    ) -> tuple[float, dict[str, np.ndarray]]:
        """The mean of ``(yhat - y)^2`` over the prompts ``Z (n, d+1, N+1)`` with query targets
        ``y (n,)``, and fresh gradients ``A{l}, B{l} (d, d)``: from ``dyhat = 2 (yhat - y) / n``,
        each layer's backward from the top down, the residual passing ``dZ`` on unchanged."""
        Z = self._prompts(Z)
        y = real_targets("y", y, Z.shape[0])
        d, n, c = self.d, Z.shape[0], Z.shape[2]
        yhat, caches = self._run(Z)
        r = yhat - y
        loss = float(r @ r) / n
        dZ = np.zeros((n, d + 1, 1))
        dZ[:, d, 0] = -2.0 * r / n  # yhat = -Z_L[d, N]
        grads: dict[str, np.ndarray] = {}
        for l in reversed(range(self.layers)):
            g, dY = self.block.backward(dZ, caches[l], self.layer_params(l), need_input=l > 0)
            grads[f"A{l}"] = g["W"][0, :d, :d].copy()
            grads[f"B{l}"] = g["V"][0, :d, :d].copy()
            if l > 0:
                if dZ.shape[2] == 1:  # the top layer: only the query column had a gradient
                    full = np.zeros((n, d + 1, c))
                    full[:, :, -1:] = dZ
                    dZ = full
                dZ = dZ + dY
        return loss, {k: grads[k] for k in self.params}


def regression_stack_loop(Z: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``yhat (n,)`` of :class:`RegressionStack` with ``A, B (L, d, d)``, one prompt, one layer
    and one (key, query) pair at a time, straight from the formula of the module docstring."""
    Z = np.array(Z, dtype=np.float64)
    n, D, C = Z.shape
    d, N = D - 1, C - 1
    for A_l, B_l in zip(A, B, strict=True):
        for i in range(n):
            old = Z[i].copy()
            for t in range(C):
                for s in range(N):
                    score = old[:d, s] @ A_l @ old[:d, t] / N
                    Z[i, :d, t] += score * (B_l @ old[:d, s])
                    Z[i, d, t] += score * old[d, s]
    return -Z[:, d, N]
