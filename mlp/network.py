"""The lecture's one-hidden-layer network: vectorized forward/backward and the per-sample loops.

Forward for a batch (one sample per row):  ``H = relu(X W1 + b1)``,  ``Z = H W2 + b2``.
Loss: mean cross-entropy of ``softmax(Z)`` against integer labels.
Backward, with ``G = dJ/dZ = (P - onehot(y)) / n``::

    dW2 = H^T G      db2 = sum_i G[i]      D = (G W2^T) * relu'(H)
    dW1 = X^T D      db1 = sum_i D[i]      dX = D W1^T

Shapes: ``X (n, d)``, ``W1 (d, m)``, ``b1 (m,)``, ``W2 (m, k)``, ``b2 (k,)``, ``H (n, m)``,
``Z (n, k)``. Parameters are the lecture's ``theta``: a dict with keys ``W1, b1, W2, b2``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mlp.contract import contract
from mlp.numerics import cross_entropy, relu, relu_grad, softmax
from mlp.validation import (
    as_float_array,
    check_finite,
    check_nonempty,
    check_seed,
    class_labels,
    float_dtype,
    positive,
)

PARAM_KEYS = ("W1", "b1", "W2", "b2")


def init_params(
    input_dim: int,
    hidden_dim: int,
    output_dim: int,
    seed: int = 0,
    scale: float | None = None,
    dtype: npt.DTypeLike = np.float64,
) -> dict[str, np.ndarray]:
    """Standard-normal ``W1 (d, m)``, ``b1 (m,)``, ``W2 (m, k)``, ``b2 (k,)`` as in the lecture.

    ``scale`` multiplies every entry (None: 1, the lecture's choice). Seeded with a
    ``np.random.Generator``; the same seed gives the same parameters.
    """
    for name, v in (
        ("input_dim", input_dim),
        ("hidden_dim", hidden_dim),
        ("output_dim", output_dim),
    ):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, received {v!r}")
    if scale is not None:
        positive("scale", scale)
    dtype = float_dtype("dtype", dtype)
    rng = np.random.default_rng(check_seed(seed))
    s = 1.0 if scale is None else float(scale)
    shapes = {
        "W1": (input_dim, hidden_dim),
        "b1": (hidden_dim,),
        "W2": (hidden_dim, output_dim),
        "b2": (output_dim,),
    }
    return {k: (s * rng.standard_normal(shape)).astype(dtype) for k, shape in shapes.items()}


def check_params(
    theta: dict[str, np.ndarray], input_dim: int | None = None
) -> tuple[int, int, int]:
    """Validate ``theta``'s keys, shapes and finiteness; return ``(d, m, k)``."""
    if not isinstance(theta, dict):
        raise TypeError(
            f"theta: expected a dict with keys {PARAM_KEYS}, received {type(theta).__name__}"
        )
    missing = [k for k in PARAM_KEYS if k not in theta]
    if missing:
        raise ValueError(f"theta: expected keys {PARAM_KEYS}, missing {missing}")
    W1, b1, W2, b2 = (np.asarray(theta[k]) for k in PARAM_KEYS)
    for key, a in zip(PARAM_KEYS, (W1, b1, W2, b2), strict=True):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"theta[{key!r}]: expected a real array, received dtype {a.dtype}")
    if W1.ndim != 2:
        raise ValueError(f"theta['W1']: expected shape (d, m), received {W1.shape}")
    d, m = W1.shape
    if W2.ndim != 2 or W2.shape[0] != m:
        raise ValueError(f"theta['W2']: expected shape (m={m}, k), received {W2.shape}")
    k = W2.shape[1]
    if b1.shape != (m,):
        raise ValueError(f"theta['b1']: expected shape (m={m},), received {b1.shape}")
    if b2.shape != (k,):
        raise ValueError(f"theta['b2']: expected shape (k={k},), received {b2.shape}")
    for key, a in zip(PARAM_KEYS, (W1, b1, W2, b2), strict=True):
        check_finite(f"theta[{key!r}]", a)  # else NaN logits and a stream of RuntimeWarnings
    if input_dim is not None and input_dim != d:
        raise ValueError(
            f"X: expected d={d} features per sample (theta['W1'] is {W1.shape}), "
            f"received {input_dim}"
        )
    return d, m, k


def _inputs(X: object, theta: dict[str, np.ndarray]) -> np.ndarray:
    X = as_float_array("X", X, ndim=2)
    check_nonempty("X", X)
    check_finite("X", X)
    check_params(theta, X.shape[1])
    return X


def hidden_and_logits(X: np.ndarray, theta: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Unchecked forward ``(H, Z)`` for callers that validated already (the attention head)."""
    H = relu(contract("n d, d m -> n m", X, theta["W1"]) + theta["b1"])
    Z = contract("n m, m k -> n k", H, theta["W2"]) + theta["b2"]
    return H, Z


def backward(
    X: np.ndarray, H: np.ndarray, G: np.ndarray, theta: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Backprop ``G = dJ/dZ (n, k)`` through the network: returns ``(grads, dX (n, d))``."""
    dW2 = contract("n m, n k -> m k", H, G)
    db2 = G.sum(axis=0)
    D = contract("n k, m k -> n m", G, theta["W2"]) * relu_grad(H)
    dW1 = contract("n d, n m -> d m", X, D)
    db1 = D.sum(axis=0)
    dX = contract("n m, d m -> n d", D, theta["W1"])
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}, dX


def forward(X: np.ndarray, theta: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``H = relu(X W1 + b1) (n, m)`` and logits ``Z = H W2 + b2 (n, k)`` for ``X (n, d)``."""
    return hidden_and_logits(_inputs(X, theta), theta)


def loss_and_grads(
    X: np.ndarray, y: np.ndarray, theta: dict[str, np.ndarray]
) -> tuple[float, dict[str, np.ndarray]]:
    """Mean cross-entropy ``J`` and fresh gradients ``dJ/dtheta`` (same keys and shapes as theta).

    ``X (n, d)``, integer labels ``y (n,)`` in ``0..k-1``. The lecture's vectorized formulas.
    """
    X = _inputs(X, theta)
    y = class_labels("y", y, X.shape[0], theta["W2"].shape[1])
    H, Z = hidden_and_logits(X, theta)
    loss, G = cross_entropy(Z, y)
    grads, _ = backward(X, H, G, theta)
    return loss, grads


def predict(X: np.ndarray, theta: dict[str, np.ndarray]) -> np.ndarray:
    """Predicted classes ``argmax_k Z (n,)`` as int64."""
    return np.argmax(forward(X, theta)[1], axis=1)


def predict_proba(X: np.ndarray, theta: dict[str, np.ndarray]) -> np.ndarray:
    """Class probabilities ``softmax(Z) (n, k)``; rows sum to 1."""
    return softmax(forward(X, theta)[1], axis=1)


def accuracy(X: np.ndarray, y: np.ndarray, theta: dict[str, np.ndarray]) -> float:
    """Fraction of samples whose predicted class equals ``y``."""
    pred = predict(X, theta)
    y = class_labels("y", y, pred.shape[0], theta["W2"].shape[1])
    return float(np.mean(pred == y))


# --- the lecture's non-vectorized form: one sample at a time -------------------------------


def forward_nonvectorized(
    X: np.ndarray, theta: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample loop reference of :func:`forward`: ``(H (n, m), Z (n, k))`` for ``X (n, d)``.

    ``h_i = relu(W1^T x_i + b1)``, ``z_i = W2^T h_i + b2`` for each row ``i``.
    """
    X = _inputs(X, theta)
    W1, b1, W2, b2 = (theta[k] for k in PARAM_KEYS)
    n = X.shape[0]
    H = np.zeros((n, W1.shape[1]), dtype=np.result_type(X, W1))
    Z = np.zeros((n, W2.shape[1]), dtype=H.dtype)
    for i in range(n):
        H[i] = relu(W1.T @ X[i] + b1)
        Z[i] = W2.T @ H[i] + b2
    return H, Z


def loss_and_grads_nonvectorized(
    X: np.ndarray, y: np.ndarray, theta: dict[str, np.ndarray]
) -> tuple[float, dict[str, np.ndarray]]:
    """Per-sample loop reference of :func:`loss_and_grads`: gradients summed sample by sample.

    ``X (n, d)``, integer labels ``y (n,)`` in ``0..k-1``; returns ``(J, grads)`` as there.
    """
    X = _inputs(X, theta)
    W1, b1, W2, b2 = (theta[k] for k in PARAM_KEYS)
    n, k = X.shape[0], W2.shape[1]
    y = class_labels("y", y, n, k)
    grads = {
        key: np.zeros_like(theta[key], dtype=np.result_type(X, theta[key])) for key in PARAM_KEYS
    }
    loss = 0.0
    for i in range(n):
        h = relu(W1.T @ X[i] + b1)
        z = W2.T @ h + b2
        p = softmax(z)
        loss -= float(z[y[i]] - z.max() - np.log(np.sum(np.exp(z - z.max())))) / n
        g = p.copy()
        g[y[i]] -= 1
        g /= n
        grads["W2"] += np.outer(h, g)
        grads["b2"] += g
        delta = (W2 @ g) * relu_grad(h)
        grads["W1"] += np.outer(X[i], delta)
        grads["b1"] += delta
    return loss, grads


class MLP:
    """The network as a model for the trainer: ``params``, ``loss_and_grads(X, y)`` and the
    evaluation hook ``metrics(X, y)``.

    ``MLP(input_dim, hidden_dim, output_dim, seed=0, scale=None)``; ``params`` is ``theta``.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        seed: int = 0,
        scale: float | None = None,
        dtype: npt.DTypeLike = np.float64,
    ) -> None:
        self.params = init_params(
            input_dim, hidden_dim, output_dim, seed=seed, scale=scale, dtype=dtype
        )
        self.config = {
            "input_dim": input_dim,
            "hidden_dim": hidden_dim,
            "output_dim": output_dim,
            "seed": seed,
            "scale": scale,
            "dtype": self.params["W1"].dtype.name,  # so MLP(**config) rebuilds a float32 model
        }

    @property
    def n_classes(self) -> int:
        """``k``: the number of classes (columns of ``W2``)."""
        return int(self.params["W2"].shape[1])

    def forward(self, X: np.ndarray) -> np.ndarray:
        """Logits ``Z (n, k)``."""
        return forward(X, self.params)[1]

    def loss_and_grads(self, X: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """Mean cross-entropy and fresh gradients for ``X (n, d)``, ``y (n,)``."""
        return loss_and_grads(X, y, self.params)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted classes ``(n,)``."""
        return predict(X, self.params)

    def metrics(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """The trainer's evaluation hook: mean cross-entropy ``loss`` and ``accuracy``."""
        X = _inputs(X, self.params)
        y = class_labels("y", y, X.shape[0], self.n_classes)
        Z = hidden_and_logits(X, self.params)[1]
        return {
            "loss": cross_entropy(Z, y)[0],
            "accuracy": float(np.mean(np.argmax(Z, axis=1) == y)),
        }
