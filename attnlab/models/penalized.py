"""A model's loss plus a squared-norm penalty on some of its parameters.

    J~(theta) = J(theta) + eps * sum_k ||theta_k||_F^2
    dJ~/dtheta_k = dJ/dtheta_k + 2 eps theta_k

Tarzanagh et al. ("Transformers as Support Vector Machines", arXiv 2308.16898) train the
``(K, Q)`` factors with ``eps`` = float64's machine epsilon: the penalty bounds the factors, and
since ``||WK||^2 + ||WQ||^2 >= 2 ||WK WQ^T||_*`` its path leads to the nuclear-norm SVM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

__all__ = ["Penalized"]


class _Model(Protocol):
    params: dict[str, np.ndarray]

    def loss_and_grads(
        self, X: np.ndarray, y: np.ndarray, **inputs: Any
    ) -> tuple[float, dict[str, np.ndarray]]: ...


class Penalized:
    """``Penalized(model, eps, keys)``: ``model`` with ``eps * sum ||params[k]||_F^2`` over
    ``keys`` added to its loss (and ``2 eps params[k]`` to those gradients).

    ``params`` is the model's own dict (assignments reach the model); ``config`` is the model's,
    with ``penalty`` and ``penalized`` added. ``eps`` must be a finite number >= 0; ``keys`` a
    non-empty list of the model's parameter names.
    """

    def __init__(self, model: _Model, eps: float, keys: Sequence[str]) -> None:
        if not isinstance(getattr(model, "params", None), dict):
            raise TypeError(f"model: expected a model with a params dict, received {model!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)):
            raise ValueError(f"eps: expected a finite number >= 0, received {eps!r}")
        if not 0.0 <= eps < np.inf:
            raise ValueError(f"eps: expected a finite number >= 0, received {eps!r}")
        keys = [keys] if isinstance(keys, str) else list(keys)
        unknown = [k for k in keys if k not in model.params]
        if not keys or unknown:
            raise ValueError(
                f"keys: expected some of the model's parameters {list(model.params)}, "
                f"received {keys}"
            )
        self.model, self.eps, self.keys = model, float(eps), keys

    @property
    def params(self) -> dict[str, np.ndarray]:
        return self.model.params

    @property
    def config(self) -> dict[str, Any]:
        base = dict(getattr(self.model, "config", {}))
        return {**base, "penalty": self.eps, "penalized": list(self.keys)}

    def loss_and_grads(
        self, X: np.ndarray, y: np.ndarray, **inputs: Any
    ) -> tuple[float, dict[str, np.ndarray]]:
        """The model's ``(loss, grads)`` with the penalty added (fresh arrays for ``keys``)."""
        loss, grads = self.model.loss_and_grads(X, y, **inputs)
        grads = dict(grads)
        for k in self.keys:
            p = self.model.params[k]
            loss += self.eps * float(np.vdot(p, p))
            grads[k] = grads[k] + (2.0 * self.eps) * p
        return loss, grads
