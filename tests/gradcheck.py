"""Gradient-check helpers shared by the test tree (``tests/mlp`` and ``tests/attnlab``).

Central differences in float64: ``(f(x + eps e_i) - f(x - eps e_i)) / (2 eps)`` with
``eps = 1e-6``; the truncation error is ``O(eps^2)`` and the rounding error about
``1e-16 |f| / eps``, so an exact analytic gradient agrees to about 1e-9 relative. Errors are
measured as ``max|a - b| / max(max|a|, max|b|, floor)``: relative to the largest entry, with a
small floor so an all-zero gradient compares absolutely. Large arrays can be checked on a seeded
sample of their entries.

Usage::

    from gradcheck import check_gradient, check_vjp, numerical_gradient, rel_error
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

EPS = 1e-6
TOL = 1e-6
FLOOR = 1e-12


def rel_error(a: np.ndarray, b: np.ndarray, floor: float = FLOOR) -> float:
    """``max|a - b| / max(max|a|, max|b|, floor)``; 0 for two empty arrays."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), floor)
    return float(np.max(np.abs(a - b))) / scale


def sample_indices(size: int, max_entries: int | None, seed: int = 0) -> np.ndarray:
    """Flat indices to check: all of them, or ``max_entries`` drawn without replacement."""
    if max_entries is None or size <= max_entries:
        return np.arange(size)
    return np.sort(np.random.default_rng(seed).choice(size, size=max_entries, replace=False))


def numerical_gradient(
    f: Callable[[np.ndarray], float],
    x: np.ndarray,
    eps: float = EPS,
    indices: np.ndarray | None = None,
) -> np.ndarray:
    """Central-difference gradient of the scalar ``f`` at the float64 array ``x``.

    Returns the gradient at the flat ``indices`` (all entries if None: then with ``x``'s shape).
    ``x`` is perturbed in place and restored, so ``f`` may close over it.
    """
    if x.dtype != np.float64:
        raise TypeError(f"numerical_gradient needs float64, received {x.dtype}")
    flat = x.reshape(-1)  # a view: x must be contiguous so that perturbations reach f
    if not np.shares_memory(flat, x):
        raise ValueError("numerical_gradient needs a contiguous array")
    idx = np.arange(x.size) if indices is None else np.asarray(indices)
    out = np.empty(idx.shape[0], dtype=np.float64)
    for j, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + eps
        fp = float(f(x))
        flat[i] = old - eps
        fm = float(f(x))
        flat[i] = old
        out[j] = (fp - fm) / (2 * eps)
    return out.reshape(x.shape) if indices is None else out


def check_gradient(
    f: Callable[[np.ndarray], float],
    x: np.ndarray,
    analytic: np.ndarray,
    *,
    tol: float = TOL,
    eps: float = EPS,
    max_entries: int | None = None,
    seed: int = 0,
    name: str = "x",
) -> float:
    """Assert that ``analytic`` is the gradient of ``f`` at ``x`` to relative error ``tol``.

    Checks every entry, or a seeded sample of ``max_entries``. Returns the relative error.
    """
    analytic = np.asarray(analytic)
    if analytic.shape != x.shape:
        raise AssertionError(f"gradient of {name}: shape {analytic.shape}, expected {x.shape}")
    idx = sample_indices(x.size, max_entries, seed)
    num = numerical_gradient(f, x, eps, idx)
    err = rel_error(analytic.reshape(-1)[idx], num)
    assert err < tol, f"gradient of {name}: relative error {err:.3e} >= {tol:g}"
    return err


def _call(f: Callable, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> np.ndarray:
    return f(**inputs) if isinstance(inputs, Mapping) else f(*inputs)


def check_vjp(
    f: Callable[..., np.ndarray],
    inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    upstream: np.ndarray,
    analytic: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    *,
    tol: float = TOL,
    eps: float = EPS,
    max_entries: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Assert a vector-Jacobian product: ``analytic[i] == d <upstream, f(inputs)> / d inputs[i]``.

    ``f`` maps the inputs (a dict of keyword arguments or a sequence of positional ones, all
    float64) to one array of ``upstream``'s shape; ``analytic`` holds the claimed gradients in the
    same structure. Each input is checked by central differences of the scalar
    ``sum(upstream * f(...))``. Returns the relative error per input (keys: names or positions).
    """
    upstream = np.asarray(upstream, dtype=np.float64)
    out = np.asarray(_call(f, inputs))
    if out.shape != upstream.shape:
        raise AssertionError(f"check_vjp: f returned shape {out.shape}, upstream {upstream.shape}")
    names = list(inputs) if isinstance(inputs, Mapping) else list(range(len(inputs)))
    grads = analytic if isinstance(analytic, Mapping) else dict(enumerate(analytic))
    errors: dict[str, float] = {}
    for name in names:
        x = inputs[name]

        def scalar(_: np.ndarray) -> float:
            return float(np.sum(upstream * _call(f, inputs)))

        errors[str(name)] = check_gradient(
            scalar,
            x,
            grads[name],
            tol=tol,
            eps=eps,
            max_entries=max_entries,
            seed=seed,
            name=str(name),
        )
    return errors
