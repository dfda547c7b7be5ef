"""The optimizers of the in-context regression study with depth: :class:`AdamThenSGD` (two
phases) and :class:`Whitened` (any optimizer run in coordinates whitened by an estimate of the
covariance of ``x``), and :func:`second_moment`, that estimate from training prompts.

Why :class:`Whitened`: in the ``rotated`` setting (``Sigma``'s eigenvalues 1 to 1/16) the loss
of ``A_l, B_l`` is the loss of the ``identity`` setting in the coordinates ``M_l = Sigma^1/2 A_l
Sigma^1/2``, ``K_l = Sigma^-1/2 B_l Sigma^1/2``; Adam in the coordinates ``A_l, B_l`` meets that
loss ill-conditioned (the authors train it for 100,000 updates of 20,000 prompts). With ``S``
the second moment of the training prompts' ``x`` and ``R = S^1/2``, :class:`Whitened` runs the
inner optimizer on ``M_l = R A_l R`` and ``K_l = R^-1 B_l R`` (gradients ``R^-1 dA_l R^-1`` and
``R dB_l R^-1``, the chain rule through ``A_l = R^-1 M_l R^-1``, ``B_l = R K_l R^-1``) and maps
the step back: the model, its loss and its gradients are unchanged, only the optimizer's
coordinates are (as whitening the inputs would do). ``S`` is estimated from training prompts
(their ``x`` alone, never the labels nor the distribution's ``Sigma``).
"""

from __future__ import annotations

import numpy as np

from mlp.contract import contract
from mlp.train.optim import SGD, Adam

__all__ = ["AdamThenSGD", "Trust", "Whitened", "second_moment"]


class AdamThenSGD:
    """Adam for the first ``switch`` updates, then plain SGD (see :mod:`.experiment` for why):
    the engine's optimizer contract (``step(params, grads, lr)``, ``state_dict``,
    ``load_state_dict``), the rate given by the run's schedule."""

    name = "adam-then-sgd"

    def __init__(self, adam: Adam, switch: int) -> None:
        self.adam, self.sgd, self.switch, self.t = adam, SGD(), int(switch), 0

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        (self.adam if self.t < self.switch else self.sgd).step(params, grads, lr)
        self.t += 1

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {f"adam/{k}": v for k, v in self.adam.state_dict().items()}
        return {"t": np.array(self.t, dtype=np.int64), **state}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.t = int(state["t"])
        self.adam.load_state_dict(
            {k[len("adam/") :]: v for k, v in state.items() if k.startswith("adam/")}
        )


def second_moment(X: np.ndarray, d: int) -> np.ndarray:
    """``S (d, d)``: the mean of ``x x^T`` over every column (examples and query) of prompts
    ``X (n, d+1, C)``: an estimate of ``Sigma`` from the prompts' ``x`` alone."""
    x = X[:, :d, :]  # (n, d, C)
    n, _, C = x.shape
    return contract("n d c, n e c -> d e", x, x) / (n * C)


def _roots(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lam, V = np.linalg.eigh(S)
    if lam[0] <= 0:
        raise ValueError(
            f"S: expected a positive definite matrix, its least eigenvalue is {lam[0]}"
        )
    return (V * np.sqrt(lam)) @ V.T, (V / np.sqrt(lam)) @ V.T


class Whitened:
    """``Whitened(inner, S)``: ``inner`` (any optimizer of the engine's contract) run on the
    whitened coordinates of the module docstring, ``S (d, d)`` symmetric positive definite.
    Keys ``A<l>`` map as ``M = R A R`` (gradient ``R^-1 dA R^-1``), keys ``B<l>`` as ``K = R^-1
    B R`` (gradient ``R dB R^-1``); the inner optimizer's state (moments, clipping) lives in those
    coordinates. ``S = I`` gives the inner optimizer itself."""

    def __init__(self, inner: object, S: np.ndarray) -> None:
        if not all(hasattr(inner, a) for a in ("step", "state_dict", "load_state_dict")):
            raise TypeError(
                "inner: expected an optimizer with step, state_dict and load_state_dict, "
                f"received {type(inner).__name__}"
            )
        S = np.asarray(S, dtype=float)
        if S.ndim != 2 or S.shape[0] != S.shape[1] or not np.allclose(S, S.T):
            raise ValueError(f"S: expected a symmetric (d, d) matrix, received shape {S.shape}")
        self.inner, self.S = inner, S
        self.R, self.R_inv = _roots(S)
        self.name = f"whitened-{getattr(inner, 'name', type(inner).__name__)}"

    def to_whitened(self, key: str, P: np.ndarray) -> np.ndarray:
        """The whitened coordinates of parameter ``key`` (``A<l>`` or ``B<l>``), ``(d, d)``."""
        return self.R @ P @ self.R if key.startswith("A") else self.R_inv @ P @ self.R

    def from_whitened(self, key: str, W: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_whitened`."""
        return self.R_inv @ W @ self.R_inv if key.startswith("A") else self.R @ W @ self.R_inv

    def gradient(self, key: str, G: np.ndarray) -> np.ndarray:
        """The gradient in whitened coordinates of the gradient ``G (d, d)`` of ``key``."""
        return self.R_inv @ G @ self.R_inv if key.startswith("A") else self.R @ G @ self.R_inv

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        white = {k: self.to_whitened(k, params[k]) for k in grads}
        self.inner.step(white, {k: self.gradient(k, g) for k, g in grads.items()}, lr)
        for k in grads:
            params[k] = self.from_whitened(k, white[k])

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.inner.load_state_dict(state)


class Trust:
    """``Trust(inner)``: the layer-wise trust ratio of LAMB (You et al. 2019) around any
    optimizer: the inner optimizer's step ``u_k`` of parameter ``k`` (taken at rate 1) is
    rescaled to ``lr ||W_k|| / ||u_k||`` (Frobenius norms; ``||W_k|| = 0`` or ``u_k = 0``: the
    inner step at rate ``lr``), so every matrix moves by the same fraction ``lr`` of its norm.
    Why: Adam's steps have the same size in every coordinate while the learned ``A_l`` differ in
    scale by a factor 25 across layers; its noise then moves the smallest matrix most, relative
    to its size, and a direction the loss hardly sees (the antisymmetric part of the first
    ``A_l``) keeps that noise."""

    def __init__(self, inner: object) -> None:
        if not all(hasattr(inner, a) for a in ("step", "state_dict", "load_state_dict")):
            raise TypeError(
                "inner: expected an optimizer with step, state_dict and load_state_dict, "
                f"received {type(inner).__name__}"
            )
        self.inner = inner
        self.name = f"trust-{getattr(inner, 'name', type(inner).__name__)}"

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        before = {k: np.array(params[k], copy=True) for k in grads}
        self.inner.step(params, grads, 1.0)
        for k in grads:
            u = params[k] - before[k]
            norm_w, norm_u = float(np.linalg.norm(before[k])), float(np.linalg.norm(u))
            scale = lr * norm_w / norm_u if norm_w > 0 and norm_u > 0 else lr
            params[k] = before[k] + scale * u

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.inner.load_state_dict(state)
