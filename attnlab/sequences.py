"""Token sequences for next-token tasks, drawn from a ``np.random.Generator``.

In-context Markov chains (Edelman, Edelman, Goel, Malach, Tsilivis 2024, "The Evolution of
Statistical Induction Heads"): each sequence draws its own ``k x k`` transition matrix ``P``
with rows ~ Dirichlet(1), a first state from the stationary distribution ``pi`` of ``P``
(``pi P = pi``), then follows the chain. With ``C`` tokens of input the chain has ``C + 1``
states ``s_0..s_C``: the input is ``X = s_0..s_{C-1}`` and the targets are the next tokens
``y = s_1..s_C`` (the authors' ``x = inp[:-1]``, ``y = inp[1:]`` on ``length = C + 1``).

Repeated random tokens (the induction probe): ``r_1..r_m`` uniform over the vocabulary, then the
same ``m`` tokens again; targets are the next tokens, the last one ``r_1`` (the sequence read as
a repeating cycle, which is what an induction head predicts there).

Tokens are int64 arrays ``(n, C)``. Sampling is vectorized over the sequences; the chains loop
over positions only. :func:`chains_from_uniforms_loop` is the readable one-sequence-at-a-time
reference of :func:`chains_from_uniforms` (same uniforms, same tokens).
"""

from __future__ import annotations

import numpy as np

from mlp.train.data import Dataset
from mlp.validation import positive


def dirichlet_transitions(n: int, states: int, rng: np.random.Generator) -> np.ndarray:
    """``P (n, k, k)``: ``n`` transition matrices whose rows are independent Dirichlet(1)
    draws (uniform on the simplex), as normalized standard exponentials ``e / sum(e)``."""
    n = positive("n", n, integer=True)
    k = _states(states)
    E = rng.standard_exponential((n, k, k))
    return E / E.sum(axis=2, keepdims=True)


def stationary_distributions(P: np.ndarray) -> np.ndarray:
    """``pi (n, k)`` with ``pi P = pi`` and ``sum pi = 1`` for each ``P (n, k, k)`` (rows of
    ``P`` summing to 1, irreducible: with Dirichlet rows every entry is positive).

    Solves ``(P^T - I) pi = 0`` with the last equation replaced by ``sum pi = 1``.
    """
    n, k, _ = P.shape
    A = np.swapaxes(P, 1, 2) - np.eye(k)
    A[:, k - 1, :] = 1.0
    b = np.zeros((n, k, 1))
    b[:, k - 1, 0] = 1.0
    return np.linalg.solve(A, b)[:, :, 0]


def chains_from_uniforms(P: np.ndarray, first: np.ndarray, U: np.ndarray) -> np.ndarray:
    """Markov chains by the inverse CDF: ``tokens (n, L)`` int64 from ``P (n, k, k)``, the
    first-state distributions ``first (n, k)`` and uniforms ``U (n, L)`` in [0, 1).

    ``s_0 = #{j < k-1 : F_first[j] <= U[:, 0]}`` with ``F`` the cumulative sums; then
    ``s_t = #{j < k-1 : F_{P[s_{t-1}]}[j] <= U[:, t]}`` (``P(s_t = j) = P[s_{t-1}, j]``).
    """
    n, L = U.shape
    F = np.cumsum(P, axis=2)[:, :, :-1]  # (n, k, k-1): the last sum (1) is never needed
    tokens = np.empty((n, L), dtype=np.int64)
    tokens[:, 0] = np.sum(np.cumsum(first, axis=1)[:, :-1] <= U[:, :1], axis=1)
    rows = np.arange(n)
    for t in range(1, L):
        tokens[:, t] = np.sum(F[rows, tokens[:, t - 1]] <= U[:, t : t + 1], axis=1)
    return tokens


def chains_from_uniforms_loop(P: np.ndarray, first: np.ndarray, U: np.ndarray) -> np.ndarray:
    """Loop reference of :func:`chains_from_uniforms`: each sequence and step on its own, the
    next state the first ``j`` whose cumulative probability exceeds the uniform."""
    n, L = U.shape
    k = P.shape[1]
    tokens = np.empty((n, L), dtype=np.int64)
    for i in range(n):
        probs = first[i]
        for t in range(L):
            total, state = 0.0, k - 1
            for j in range(k - 1):
                total += probs[j]
                if U[i, t] < total:
                    state = j
                    break
            tokens[i, t] = state
            probs = P[i, state]
    return tokens


def markov_sequences(
    n: int, states: int, context: int, rng: np.random.Generator
) -> tuple[Dataset, np.ndarray]:
    """``n`` in-context Markov chains: ``(Dataset(X (n, C), y (n, C)), P (n, k, k))``.

    Each sequence: ``P`` from :func:`dirichlet_transitions`, ``s_0 ~ pi(P)``, then ``C``
    transitions; ``X = s_0..s_{C-1}``, ``y = s_1..s_C`` (int64, in ``0..k-1``). ``P`` holds the
    true transition matrices (the last token's true next-token distribution is
    ``P[i, X[i, -1]]``).
    """
    context = positive("context", context, integer=True)
    P = dirichlet_transitions(n, states, rng)
    U = rng.random((len(P), context + 1))
    s = chains_from_uniforms(P, stationary_distributions(P), U)
    return Dataset(s[:, :-1], s[:, 1:]), P


def repeated_token_sequences(n: int, vocab: int, context: int, rng: np.random.Generator) -> Dataset:
    """``n`` sequences ``[r_1..r_m, r_1..r_m]`` with ``m = C / 2`` tokens uniform over
    ``0..V-1``: ``Dataset(X (n, C), y (n, C))``, ``y`` the next tokens (``y[:, -1] = r_1``)."""
    n = positive("n", n, integer=True)
    vocab = positive("vocab", vocab, integer=True)
    context = positive("context", context, integer=True)
    if context % 2 or context < 2:
        raise ValueError(
            f"context: expected an even number of tokens >= 2 (two copies), received {context}"
        )
    r = rng.integers(0, vocab, size=(n, context // 2), dtype=np.int64)
    X = np.concatenate([r, r], axis=1)
    return Dataset(X, np.roll(X, -1, axis=1))


def _states(states: int) -> int:
    k = positive("states", states, integer=True)
    if k < 2:
        raise ValueError(f"states: expected at least 2 states, received {k}")
    return k
