"""In-context Markov chains and repeated tokens (attnlab.sequences), the last-token KL, the
uniform/unigram/Bayes baselines and the two attention probes (attnlab.induction): by hand,
against the loop references, by sampling statistics, and the published baseline values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attnlab import induction as ind
from attnlab import sequences as seq
from attnlab.tasks import make_task

# --- sequences ---------------------------------------------------------------------------------


def test_dirichlet_rows_are_uniform_on_the_simplex() -> None:
    """Dirichlet(1) in 2 states: each entry ~ U(0, 1) (mean 1/2, variance 1/12); in 3 states an
    entry ~ Beta(1, 2) (mean 1/3, variance 1/18). 20,000 matrices: 4 standard errors."""
    rng = np.random.default_rng(0)
    for k, mean, var in ((2, 1 / 2, 1 / 12), (3, 1 / 3, 1 / 18)):
        P = seq.dirichlet_transitions(20_000, k, rng)
        assert P.shape == (20_000, k, k) and (P > 0).all()
        np.testing.assert_allclose(P.sum(axis=2), 1.0, rtol=0, atol=1e-15)
        a = P[:, :, 0].ravel()
        assert abs(a.mean() - mean) < 4 * math.sqrt(var / a.size)
        assert a.var() == pytest.approx(var, rel=0.05)


def test_stationary_distributions_by_hand_and_by_definition() -> None:
    P = np.array([[[0.9, 0.1], [0.3, 0.7]]])  # k = 2: pi = (P10, P01) / (P01 + P10)
    pi = seq.stationary_distributions(P)
    assert pi.shape == (1, 2)
    np.testing.assert_allclose(pi, [[0.75, 0.25]], rtol=1e-15)
    P = seq.dirichlet_transitions(50, 4, np.random.default_rng(1))
    pi = seq.stationary_distributions(P)
    np.testing.assert_allclose(np.einsum("nj,njk->nk", pi, P), pi, rtol=0, atol=1e-13)
    np.testing.assert_allclose(pi.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    assert (pi > 0).all()


@pytest.mark.parametrize("k", [2, 3, 5])
def test_chains_from_uniforms_agree_with_the_loop(k: int) -> None:
    rng = np.random.default_rng(k)
    P = seq.dirichlet_transitions(40, k, rng)
    first = seq.stationary_distributions(P)
    U = rng.random((40, 25))
    tokens = seq.chains_from_uniforms(P, first, U)
    assert tokens.dtype == np.int64 and tokens.shape == (40, 25)
    assert np.array_equal(tokens, seq.chains_from_uniforms_loop(P, first, U))
    assert tokens.min() >= 0 and tokens.max() < k


def test_chain_statistics_follow_the_matrix_and_start_at_the_stationary_distribution() -> None:
    """One fixed 3-state matrix for 20,000 sequences: the first state's frequencies are pi
    and the transition frequencies are P's rows (4 standard errors)."""
    P0 = np.array([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6]])
    n = 20_000
    P = np.broadcast_to(P0, (n, 3, 3)).copy()
    pi = seq.stationary_distributions(P)
    rng = np.random.default_rng(3)
    tokens = seq.chains_from_uniforms(P, pi, rng.random((n, 30)))
    freq = np.bincount(tokens[:, 0], minlength=3) / n
    assert np.all(np.abs(freq - pi[0]) < 4 * np.sqrt(pi[0] * (1 - pi[0]) / n))
    a, b = tokens[:, :-1].ravel(), tokens[:, 1:].ravel()
    for i in range(3):
        m = a == i
        row = np.bincount(b[m], minlength=3) / m.sum()
        assert np.all(np.abs(row - P0[i]) < 4 * np.sqrt(P0[i] * (1 - P0[i]) / m.sum())), i


def test_markov_sequences_are_next_token_pairs() -> None:
    data, P = seq.markov_sequences(30, 3, 12, np.random.default_rng(4))
    assert data.X.shape == data.y.shape == (30, 12) and P.shape == (30, 3, 3)
    assert data.X.dtype == data.y.dtype == np.int64
    assert np.array_equal(data.y[:, :-1], data.X[:, 1:])  # y_t = x_{t+1}
    assert data.X.max() < 3 and data.y.max() < 3
    again, P2 = seq.markov_sequences(30, 3, 12, np.random.default_rng(4))
    assert np.array_equal(again.X, data.X) and np.array_equal(P2, P)


def test_repeated_token_sequences() -> None:
    data = seq.repeated_token_sequences(20, 7, 10, np.random.default_rng(5))
    X, y = data.X, data.y
    assert X.shape == y.shape == (20, 10) and X.dtype == np.int64
    assert np.array_equal(X[:, :5], X[:, 5:]) and X.min() >= 0 and X.max() < 7
    assert np.array_equal(y[:, :-1], X[:, 1:]) and np.array_equal(y[:, -1], X[:, 0])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: seq.repeated_token_sequences(2, 5, 7, np.random.default_rng(0)),
         r"context: expected an even number of tokens >= 2 \(two copies\), received 7"),
        (lambda: seq.markov_sequences(2, 1, 5, np.random.default_rng(0)),
         r"states: expected at least 2 states, received 1"),
        (lambda: seq.markov_sequences(0, 2, 5, np.random.default_rng(0)),
         r"n: expected a positive integer, received 0"),
        (lambda: seq.markov_sequences(2, 2, 0, np.random.default_rng(0)),
         r"context: expected a positive integer, received 0"),
    ],
)  # fmt: skip
def test_sequence_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# --- the metric and the baselines --------------------------------------------------------------


def test_kl_by_hand() -> None:
    p = np.array([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5]])
    q = np.array([[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]])
    kl = ind.kl_divergence(p, q)
    assert kl[0] == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel=1e-15)
    assert kl[1] == pytest.approx(math.log(2), rel=1e-15)  # the p = 0 term counts 0
    assert kl[2] == math.inf


def test_predictions_by_hand() -> None:
    """x = 0 1 0 0 1 0: 4 zeros and 2 ones; out of state 0 (the last) before the end: 0->1,
    0->0, 0->1."""
    x = np.array([[0, 1, 0, 0, 1, 0]])
    np.testing.assert_allclose(ind.uniform_prediction(x, 2), [[0.5, 0.5]])
    np.testing.assert_allclose(ind.unigram_prediction(x, 2), [[5 / 8, 3 / 8]], rtol=1e-15)
    np.testing.assert_allclose(ind.bayes_prediction(x, 2), [[2 / 5, 3 / 5]], rtol=1e-15)
    fresh = np.array([[1, 1, 2, 0]])  # state 0 never left before: the prior mean
    np.testing.assert_allclose(ind.bayes_prediction(fresh, 3), [[1 / 3, 1 / 3, 1 / 3]])


@pytest.mark.parametrize("k", [2, 4])
def test_predictions_agree_with_the_loops(k: int) -> None:
    x = np.random.default_rng(k).integers(0, k, size=(60, 15))
    np.testing.assert_allclose(
        ind.unigram_prediction(x, k), ind.unigram_prediction_loop(x, k), rtol=1e-15
    )
    np.testing.assert_allclose(
        ind.bayes_prediction(x, k), ind.bayes_prediction_loop(x, k), rtol=1e-15
    )


def test_last_token_kl_picks_the_last_tokens_row() -> None:
    data, P = seq.markov_sequences(100, 3, 20, np.random.default_rng(6))
    rows = P[np.arange(100), data.X[:, -1]]
    np.testing.assert_array_equal(ind.true_next(P, data.X), rows)
    assert ind.last_token_kl(P, data.X, rows) == 0.0
    q = ind.bayes_prediction(data.X, 3)
    want = np.mean([np.sum(rows[i] * np.log(rows[i] / q[i])) for i in range(100)])
    assert ind.last_token_kl(P, data.X, q) == pytest.approx(want, rel=1e-13)
    assert ind.baselines(P, data.X)["bayes"] == pytest.approx(want, rel=1e-13)


def test_baselines_match_the_published_values() -> None:
    """k = 2, T = 100: 0.213, 0.087, 0.0093 (measured on 200,000 sequences). At 20,000
    sequences the standard errors are about 0.7%, 1.2% and 1.3% of these: 5% is above 3.8
    standard errors for each."""
    data, P = seq.markov_sequences(20_000, 2, 100, np.random.default_rng(2024))
    got = ind.baselines(P, data.X)
    assert got["uniform"] == pytest.approx(0.213, rel=0.05)
    assert got["unigram"] == pytest.approx(0.087, rel=0.05)
    assert got["bayes"] == pytest.approx(0.0093, rel=0.05)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ind.unigram_prediction(np.zeros((2, 3)), 2), TypeError,
         r"tokens: expected integer tokens \(n, C\), received dtype float64"),
        (lambda: ind.bayes_prediction(np.array([[0, 2]]), 2), ValueError,
         r"tokens: expected tokens in 0..1, received 2"),
        (lambda: ind.unigram_prediction(np.zeros(3, np.int64), 2), ValueError,
         r"tokens: expected a non-empty array \(n, C\), received shape \(3,\)"),
        (lambda: ind.last_token_kl(np.full((1, 2, 2), 0.5), [[0, 1]], np.array([[0.7, 0.7]])),
         ValueError, r"predicted: expected rows that sum to 1"),
        (lambda: ind.last_token_kl(np.full((1, 2, 2), 0.5), [[0, 1]], np.ones((2, 2)) / 2),
         ValueError, r"predicted: expected shape \(1, 2\), received \(2, 2\)"),
        (lambda: ind.true_next(np.full((2, 2, 2), 0.5), [[0, 1]]), ValueError,
         r"transitions: expected shape \(1, 2, 2\), received \(2, 2, 2\)"),
    ],
)  # fmt: skip
def test_metric_errors(call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()


# --- the probes --------------------------------------------------------------------------------


def _causal_weights(n: int, h: int, c: int, seed: int) -> np.ndarray:
    """Random causal attention ``(n, h, c, c)`` ``[.., s, t]``: each column a distribution over
    the keys ``s <= t``."""
    scores = 3 * np.random.default_rng(seed).standard_normal((n, h, c, c))
    scores[..., np.tril(np.ones((c, c), bool), -1)] = -np.inf  # s > t masked
    S = np.exp(scores - scores.max(axis=2, keepdims=True))
    return S / S.sum(axis=2, keepdims=True)


def _uniform_causal(n: int, c: int) -> np.ndarray:
    S = np.triu(np.ones((c, c))) / np.arange(1, c + 1)  # column t: 1/(t+1) on s <= t
    return np.broadcast_to(S, (n, 1, c, c)).copy()


def test_previous_token_score_by_hand_and_against_the_loop() -> None:
    c = 6
    exact = np.zeros((2, 1, c, c))
    exact[:, 0, 0, 0] = 1.0
    exact[:, 0, np.arange(c - 1), np.arange(1, c)] = 1.0
    assert ind.previous_token_score(exact).tolist() == [1.0]
    want = np.mean([1 / (t + 1) for t in range(1, c)])
    assert ind.previous_token_score(_uniform_causal(3, c))[0] == pytest.approx(want, rel=1e-15)
    S = _causal_weights(5, 3, 9, seed=0)
    got = ind.previous_token_score(S)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, ind.previous_token_score_loop(S), rtol=1e-13)


def test_induction_score_by_hand_and_against_the_loop() -> None:
    """Distinct tokens r (m = 4): the only key s with x_{s-1} = x_t for a query t of the second
    copy is s = t - m + 1."""
    m, c = 4, 8
    x = np.tile(np.array([3, 1, 4, 0, 3, 1, 4, 0]), (2, 1))
    ideal = np.zeros((2, 1, c, c))
    ideal[:, 0, np.arange(m) + 1, np.arange(m, c)] = 1.0  # query t -> key t - m + 1
    ideal[:, 0, 0, :m] = 1.0
    assert ind.induction_score(ideal, x).tolist() == [1.0]
    want = np.mean([1 / (t + 1) for t in range(m, c)])
    assert ind.induction_score(_uniform_causal(2, c), x)[0] == pytest.approx(want, rel=1e-15)
    S = _causal_weights(6, 2, 10, seed=1)
    tokens = np.random.default_rng(2).integers(0, 3, size=(6, 10))  # many repeats
    for start in (None, 0, 7):
        got = ind.induction_score(S, tokens, start)
        assert got.shape == (2,)
        np.testing.assert_allclose(got, ind.induction_score_loop(S, tokens, start), rtol=1e-13)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ind.previous_token_score(np.ones((2, 3, 3))),
         r"S: expected attention weights \(n, h, c, c\) with c >= 2, received shape \(2, 3, 3\)"),
        (lambda: ind.induction_score(np.ones((2, 1, 4, 4)), np.zeros((2, 5), np.int64)),
         r"tokens: expected shape \(n, c\) = \(2, 4\) as S, received \(2, 5\)"),
        (lambda: ind.induction_score(np.ones((2, 1, 4, 4)), np.zeros((2, 4), np.int64), 4),
         r"start: expected a query index in 0..3, received 4"),
    ],
)  # fmt: skip
def test_probe_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# --- the tasks ---------------------------------------------------------------------------------


def test_markov_in_context_task() -> None:
    task = make_task("markov-in-context", states=3, context=20, seed=7, batch_size=8, n_test=50)
    assert task.n_classes == 3 and task.info["vocab"] == 3
    assert task.test.X.shape == task.test.y.shape == (50, 20)
    assert task.info["transitions"].shape == (50, 3, 3)
    b = task.train.batch(4)
    assert b.X.shape == b.y.shape == (8, 20) and b.X.dtype == np.int64
    assert np.array_equal(b.y[:, :-1], b.X[:, 1:])
    again = make_task("markov-in-context", states=3, context=20, seed=7, batch_size=8, n_test=50)
    assert np.array_equal(again.train.batch(4).X, b.X)  # a pure function of (seed, step)
    assert not np.array_equal(task.train.batch(5).X, b.X)
    assert np.array_equal(again.test.X, task.test.X)
    assert not np.array_equal(task.train.batch(0).X, task.test.X[:8])  # a stream of its own
    other = make_task("markov-in-context", states=3, context=20, seed=8, batch_size=8, n_test=50)
    assert not np.array_equal(other.test.X, task.test.X)
    # the kept matrices are the test sequences' own: Bayes beats uniform on them
    base = ind.baselines(task.info["transitions"], task.test.X)
    assert base["bayes"] < base["uniform"]
    with pytest.raises(ValueError, match=r"holds integer tokens, not feature vectors"):
        _ = task.d


def test_repeated_tokens_task() -> None:
    task = make_task("repeated-tokens", vocab=5, context=12, seed=1, batch_size=4, n_test=9)
    assert task.n_classes == 5 and task.info["vocab"] == 5
    X = task.test.X
    assert X.shape == (9, 12) and np.array_equal(X[:, :6], X[:, 6:])
    b = task.train.batch(2)
    assert b.X.shape == (4, 12) and np.array_equal(b.y[:, -1], b.X[:, 0])
    assert np.array_equal(make_task("repeated-tokens", vocab=5, context=12, seed=1,
                                    batch_size=4).train.batch(2).X, b.X)  # fmt: skip
