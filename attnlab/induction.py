"""Induction heads on in-context Markov chains: the metric, the closed-form baselines and the
two attention probes (Edelman et al. 2024; Olsson et al. 2022), as pure array functions.

Metric: the last-token ``KL(p_true || p_model)``, with ``p_true = P[x_{C-1}]`` the true row of
the last token's state and ``p_model`` a prediction for the token after ``x_{C-1}``, averaged
over sequences. Baseline predictions from the sequence alone (``k`` states, tokens
``x_0..x_{C-1}``):

- uniform: ``1 / k``;
- in-context unigram (add-one counts): ``(#{t : x_t = j} + 1) / (C + k)``;
- Bayes (the posterior mean of the last state's row under the Dirichlet(1) prior):
  ``(#{t < C-1 : x_t = x_{C-1}, x_{t+1} = j} + 1) / (#{t < C-1 : x_t = x_{C-1}} + k)``.

Probes, on attention weights ``S (n, h, c, c)`` indexed ``[.., s, t]`` (key ``s``, query
``t``; each column a distribution over keys), one score per head:

- previous-token score (of layer 1): the mean over queries ``t >= 1`` of ``S[.., t-1, t]``;
- induction score (of layer 2, on ``[r_1..r_m, r_1..r_m]``): the mean over the queries ``t`` of
  the second copy of the total weight on the keys ``s >= 1`` with ``x_{s-1} = x_t``.

Every vectorized function has a ``*_loop`` reference below it (one sequence, one position at a
time) and a test that they agree.
"""

from __future__ import annotations

import numpy as np

from mlp.validation import positive

# --- inputs ------------------------------------------------------------------------------------


def _tokens(tokens: object, states: int | None = None, name: str = "tokens") -> np.ndarray:
    x = np.asarray(tokens)
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer tokens (n, C), received dtype {x.dtype}")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty array (n, C), received shape {x.shape}")
    if states is not None and (x.min() < 0 or x.max() >= states):
        bad = x[(x < 0) | (x >= states)][0]
        raise ValueError(f"{name}: expected tokens in 0..{states - 1}, received {bad}")
    return x


def _distributions(name: str, p: object, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(p)
    if a.dtype.kind != "f":
        raise TypeError(f"{name}: expected float probabilities, received dtype {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, received {a.shape}")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError(f"{name}: expected finite probabilities >= 0")
    if not np.allclose(a.sum(axis=-1), 1.0, rtol=0, atol=1e-9):
        raise ValueError(f"{name}: expected rows that sum to 1 (distributions over the states)")
    return a


def _weights(S: object, tokens: np.ndarray | None = None) -> np.ndarray:
    A = np.asarray(S)
    if A.dtype.kind != "f":
        raise TypeError(f"S: expected float attention weights, received dtype {A.dtype}")
    if A.ndim != 4 or A.shape[2] != A.shape[3] or A.shape[0] == 0 or A.shape[2] < 2:
        raise ValueError(
            f"S: expected attention weights (n, h, c, c) with c >= 2, received shape {A.shape}"
        )
    if tokens is not None and tokens.shape != (A.shape[0], A.shape[2]):
        raise ValueError(
            f"tokens: expected shape (n, c) = {(A.shape[0], A.shape[2])} as S, received "
            f"{tokens.shape}"
        )
    return A


# --- the metric --------------------------------------------------------------------------------


def true_next(transitions: object, tokens: object) -> np.ndarray:
    """``p_true (n, k)``: the row ``P[i, x_{i, C-1}]`` of each sequence's transition matrix
    ``transitions (n, k, k)`` at its last token (``tokens (n, C)``)."""
    x = _tokens(tokens)
    P = np.asarray(transitions)
    n, k = x.shape[0], (P.shape[1] if P.ndim == 3 else 0)
    P = _distributions("transitions", P, (n, k, k))
    _tokens(x, k)
    return P[np.arange(n), x[:, -1]]


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``KL(p || q) = sum_j p_j log(p_j / q_j)`` per row of ``p, q (n, k)``: ``(n,)``; terms
    with ``p_j = 0`` count 0, and ``q_j = 0 < p_j`` gives ``inf``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(q)), 0.0)
    return terms.sum(axis=-1)


def last_token_kl(transitions: object, tokens: object, predicted: object) -> float:
    """Mean over sequences of ``KL(P[x_{C-1}] || predicted)``: ``transitions (n, k, k)``,
    ``tokens (n, C)``, ``predicted (n, k)`` (a model's distribution for the token after the
    last)."""
    p = true_next(transitions, tokens)
    q = _distributions("predicted", predicted, p.shape)
    return float(np.mean(kl_divergence(p, q)))


# --- the baselines -----------------------------------------------------------------------------


def uniform_prediction(tokens: object, states: int) -> np.ndarray:
    """``(n, k)``: ``1 / k`` for every state."""
    k = positive("states", states, integer=True)
    x = _tokens(tokens, k)
    return np.full((x.shape[0], k), 1.0 / k)


def unigram_prediction(tokens: object, states: int) -> np.ndarray:
    """``(n, k)``: the in-context unigram estimate with add-one counts,
    ``(#{t : x_t = j} + 1) / (C + k)``."""
    k = positive("states", states, integer=True)
    x = _tokens(tokens, k)
    n, C = x.shape
    index = np.arange(n)[:, None] * k + x
    counts = np.bincount(index.ravel(), minlength=n * k).reshape(n, k)
    return (counts + 1.0) / (C + k)


def bayes_prediction(tokens: object, states: int) -> np.ndarray:
    """``(n, k)``: the Bayes predictor under rows ~ Dirichlet(1), the posterior mean of the last
    state's row, ``(N(x_{C-1} -> j) + 1) / (N(x_{C-1} -> *) + k)`` with ``N(a -> j)`` the
    transitions ``a -> j`` within the sequence."""
    k = positive("states", states, integer=True)
    x = _tokens(tokens, k)
    n = x.shape[0]
    after_last = x[:, :-1] == x[:, -1:]  # (n, C-1): transitions out of the last token's state
    index = np.arange(n)[:, None] * k + x[:, 1:]
    counts = np.bincount(index.ravel(), weights=after_last.ravel(), minlength=n * k)
    counts = counts.reshape(n, k)
    return (counts + 1.0) / (counts.sum(axis=1, keepdims=True) + k)


def baselines(transitions: object, tokens: object) -> dict[str, float]:
    """The last-token KL of the uniform, unigram and Bayes predictions on these sequences:
    ``{"uniform", "unigram", "bayes"}`` (``transitions (n, k, k)``, ``tokens (n, C)``)."""
    P = np.asarray(transitions)
    k = P.shape[1] if P.ndim == 3 else 0
    p = true_next(P, tokens)
    x = np.asarray(tokens)
    return {
        name: float(np.mean(kl_divergence(p, predict(x, k))))
        for name, predict in (
            ("uniform", uniform_prediction),
            ("unigram", unigram_prediction),
            ("bayes", bayes_prediction),
        )
    }


def unigram_prediction_loop(tokens: np.ndarray, states: int) -> np.ndarray:
    """Loop reference of :func:`unigram_prediction`."""
    n, C = tokens.shape
    out = np.empty((n, states))
    for i in range(n):
        for j in range(states):
            out[i, j] = (sum(1 for t in range(C) if tokens[i, t] == j) + 1) / (C + states)
    return out


def bayes_prediction_loop(tokens: np.ndarray, states: int) -> np.ndarray:
    """Loop reference of :func:`bayes_prediction`: count the bigrams that leave the last
    token's state, then add one to each."""
    n, C = tokens.shape
    out = np.empty((n, states))
    for i in range(n):
        last = tokens[i, C - 1]
        counts = [1.0] * states
        for t in range(C - 1):
            if tokens[i, t] == last:
                counts[tokens[i, t + 1]] += 1.0
        out[i] = np.array(counts) / sum(counts)
    return out


# --- the probes --------------------------------------------------------------------------------


def previous_token_score(S: object) -> np.ndarray:
    """``(h,)``: per head, the mean over prompts and queries ``t >= 1`` of the weight
    ``S[.., t-1, t]`` on the previous token; ``S (n, h, c, c)`` indexed ``[.., s, t]``."""
    A = _weights(S)
    return np.diagonal(A, offset=1, axis1=2, axis2=3).mean(axis=(0, 2))


def induction_score(S: object, tokens: object, start: int | None = None) -> np.ndarray:
    """``(h,)``: per head, the mean over prompts and queries ``t >= start`` (default ``c // 2``,
    the second copy of ``[r_1..r_m, r_1..r_m]``) of the total weight on the keys ``s >= 1`` whose
    previous token is the query's token (``x_{s-1} = x_t``); ``S (n, h, c, c)`` indexed
    ``[.., s, t]``, ``tokens (n, c)``."""
    x = _tokens(tokens)
    A = _weights(S, x)
    c = A.shape[2]
    start = c // 2 if start is None else start
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start < c:
        raise ValueError(f"start: expected a query index in 0..{c - 1}, received {start!r}")
    match = x[:, :-1, None] == x[:, None, start:]  # (n, s = 1..c-1, t = start..c-1)
    picked = A[:, :, 1:, start:] * match[:, None]
    return picked.sum(axis=(2, 3)).mean(axis=0) / (c - start)


def previous_token_score_loop(S: np.ndarray) -> np.ndarray:
    """Loop reference of :func:`previous_token_score`."""
    n, h, c, _ = S.shape
    out = np.zeros(h)
    for head in range(h):
        total = 0.0
        for i in range(n):
            for t in range(1, c):
                total += S[i, head, t - 1, t]
        out[head] = total / (n * (c - 1))
    return out


def induction_score_loop(S: np.ndarray, tokens: np.ndarray, start: int | None = None) -> np.ndarray:
    """Loop reference of :func:`induction_score`."""
    n, h, c, _ = S.shape
    start = c // 2 if start is None else start
    out = np.zeros(h)
    for head in range(h):
        total = 0.0
        for i in range(n):
            for t in range(start, c):
                for s in range(1, c):
                    if tokens[i, s - 1] == tokens[i, t]:
                        total += S[i, head, s, t]
        out[head] = total / (n * (c - start))
    return out
