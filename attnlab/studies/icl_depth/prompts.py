"""The prompts of in-context linear regression in the authors' two settings, a pure function of
``(seed, step)``.

A prompt ``Z (d+1, N+1)`` holds the examples ``(x_i, y_i)`` as columns, then the query
``(x_q, 0)``; the target is ``y_q = <w, x_q>``. Batched: ``Z (n, d+1, N+1)``, targets ``(n,)``.

- ``identity``: ``x ~ N(0, I)``, ``w ~ N(0, I)``;
- ``rotated``: ``x = U D z`` and ``w = U D^-1 z_w`` with ``z, z_w ~ N(0, I)``, ``D =
  diag(1, 1, 1/2, 1/4, 1)`` and ``U`` the left singular vectors of a ``d x d`` matrix of
  uniform(-1, 1) entries, so ``x ~ N(0, Sigma)`` with ``Sigma = U diag(1, 1, 1/4, 1/16, 1) U^T``
  and ``w ~ N(0, Sigma^-1)`` (the authors' ``generate_data`` with their ``U`` and ``D``).

With the root ``R = U D`` (``R = I`` for ``identity``), ``Sigma = R R^T`` and ``x = R z``,
``w = R^-T z_w``: whitening a rotated prompt (``x' = R^-1 x``, ``w' = R^T w``, the labels
unchanged) gives back the standard normal draws, an ``identity`` prompt.

Seeds: update ``step`` of a run draws from ``default_rng([seed, 0, step])``, test piece ``k``
from ``default_rng([seed, 1, k])``, and the rotation ``U`` from ``default_rng([seed, 2])``: one
``U`` per seed, as in the authors' runs (their problem seed is the run's seed).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from mlp.train.data import Dataset, Stream
from mlp.validation import check_seed, choice, positive

COVARIANCES = ("identity", "rotated")
#: The diagonal of ``D`` in the rotated setting (``d = 5``); ``Sigma``'s eigenvalues are its
#: squares.
ROTATED_SCALES = (1.0, 1.0, 0.5, 0.25, 1.0)
#: The first entries of the seed sequences of training batches, test pieces and the rotation.
TRAIN, TEST, ROTATION = 0, 1, 2


def rotation(d: int, seed: int) -> np.ndarray:
    """``U (d, d)``: the left singular vectors of a ``d x d`` matrix of uniform(-1, 1) entries
    drawn from ``default_rng([seed, 2])`` (an orthogonal matrix)."""
    d = positive("d", d, integer=True)
    G = np.random.default_rng([check_seed(seed), ROTATION]).uniform(-1.0, 1.0, (d, d))
    return np.linalg.svd(G)[0]


def covariance_root(covariance: str, d: int, seed: int) -> np.ndarray:
    """``R (d, d)`` with ``x = R z``, ``w = R^-T z_w``: ``I`` for ``'identity'``, ``U D`` for
    ``'rotated'`` (which needs ``d = 5``, the authors' ``D``)."""
    choice("covariance", covariance, COVARIANCES)
    d = positive("d", d, integer=True)
    if covariance == "identity":
        return np.eye(d)
    if d != len(ROTATED_SCALES):
        raise ValueError(
            f"d: the rotated covariance is defined for d = {len(ROTATED_SCALES)} (D = diag"
            f"{ROTATED_SCALES}), received d = {d}"
        )
    return rotation(d, seed) * np.asarray(ROTATED_SCALES)  # U D: column j of U times D[j]


def covariance_matrix(covariance: str, d: int, seed: int) -> np.ndarray:
    """``Sigma = R R^T (d, d)``, the covariance of ``x`` (see :func:`covariance_root`); ``w``
    has covariance ``Sigma^-1`` for ``'rotated'`` and ``I`` for ``'identity'``."""
    R = covariance_root(covariance, d, seed)
    return R @ R.T


def prompts(n: int, N: int, R: np.ndarray, rng: np.random.Generator) -> Dataset:
    """``n`` prompts ``Dataset(Z (n, d+1, N+1), y_q (n,))`` with ``x = R z`` (``z`` drawn first,
    as ``(n, d, N+1)``, the query last) and ``w = R^-T z_w`` (``z_w (n, d)`` drawn next)."""
    d = R.shape[0]
    z = rng.standard_normal((n, d, N + 1))
    z_w = rng.standard_normal((n, d))
    w = np.linalg.solve(R.T, z_w.T).T  # (n, d): w = R^-T z_w
    Z = np.empty((n, d + 1, N + 1))
    np.matmul(R, z, out=Z[:, :d])
    np.matmul(w[:, None, :], Z[:, :d], out=Z[:, d:])  # the labels y = w^T x, the last row
    y_q = Z[:, d, N].copy()
    Z[:, d, N] = 0.0
    return Dataset(Z, y_q)


def _check(n: int, d: int, N: int, covariance: str, seed: int) -> np.ndarray:
    positive("n", n, integer=True)
    positive("N", N, integer=True)
    return covariance_root(covariance, d, check_seed(seed))


def train_batch(
    seed: int, step: int, *, n: int, d: int = 5, N: int = 20, covariance: str = "identity"
) -> Dataset:
    """The ``n`` training prompts of update ``step`` of the run with ``seed``: a pure function
    of its arguments (``default_rng([seed, 0, step])``, see :func:`prompts`)."""
    R = _check(n, d, N, covariance, seed)
    step = check_seed(step, "step")
    return prompts(n, N, R, np.random.default_rng([seed, TRAIN, step]))


def stream(seed: int, *, n: int, d: int = 5, N: int = 20, covariance: str = "identity") -> Stream:
    """A :class:`mlp.train.Stream` of :func:`train_batch`: ``n`` fresh prompts per update."""
    R = _check(n, d, N, covariance, seed)

    def batch(step: int) -> Dataset:
        return prompts(n, N, R, np.random.default_rng([seed, TRAIN, step]))

    return Stream(batch, f"icl-depth {covariance} d={d} N={N}")


def eval_prompts(
    seed: int,
    *,
    n: int,
    d: int = 5,
    N: int = 20,
    covariance: str = "identity",
    chunk: int = 10_000,
) -> Iterator[Dataset]:
    """The ``n`` test prompts of ``seed`` in pieces of at most ``chunk`` (piece ``k`` from
    ``default_rng([seed, 1, k])``): memory grows with the chunk, not with ``n``. The same
    arguments give the same prompts (a different ``chunk`` gives different ones)."""
    R = _check(n, d, N, covariance, seed)
    chunk = positive("chunk", chunk, integer=True)
    for k, start in enumerate(range(0, n, chunk)):
        yield prompts(min(chunk, n - start), N, R, np.random.default_rng([seed, TEST, k]))
