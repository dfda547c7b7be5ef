"""Integer tokens in the engine: a Dataset keeps token sequences ``X (n, C)`` and next-token
targets ``y (n, C)`` as they are, batches and evaluation chunks keep them, and a token model
defined only here trains from a Stream of token batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlp.train import SGD, Dataset, Stream, Trainer
from mlp.train.trainer import evaluate


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_tokens_and_per_token_targets_are_kept_as_they_are(dtype: type) -> None:
    X = np.arange(12, dtype=dtype).reshape(3, 4) % 5
    y = np.roll(X, -1, axis=1)
    data = Dataset(X, y)
    assert data.X.dtype == dtype and data.y.dtype == dtype
    assert np.array_equal(data.X, X) and np.array_equal(data.y, y)
    part = data.subset(np.array([2, 0]))
    assert part.X.dtype == dtype and part.X.tolist() == [X[2].tolist(), X[0].tolist()]
    assert part.y.shape == (2, 4)
    chunks = list(data.chunks(2))
    assert [c.X.shape for c in chunks] == [(2, 4), (1, 4)]
    assert all(c.X.dtype == dtype and c.y.dtype == dtype for c in chunks)
    assert Dataset(X, np.zeros(3)).y.shape == (3,)  # one target per sequence also works


def test_real_data_is_still_converted_and_checked() -> None:
    assert Dataset(np.ones((2, 3), dtype=np.float32), np.zeros(2)).X.dtype == np.float32
    assert Dataset(np.ones((2, 3), dtype=bool), np.zeros(2)).X.dtype == np.float64
    assert Dataset([[1, 2], [3, 4]], [0, 1]).X.dtype.kind == "i"  # an integer list: tokens
    assert Dataset([[1.0, 2.0], [3.0, 4.0]], [0, 1]).X.dtype == np.float64


@pytest.mark.parametrize(
    ("X", "y", "error", "match"),
    [
        (np.zeros((3, 4), np.int64), np.zeros((3, 4)), ValueError,
         r"Dataset.y: expected integer targets of X's shape \(3, 4\) \(one per token\) or shape "
         r"\(n,\), received float64 \(3, 4\)"),
        (np.zeros((3, 4), np.int64), np.zeros((3, 5), np.int64), ValueError,
         r"Dataset.y: expected integer targets of X's shape \(3, 4\)"),
        (np.zeros((3, 4), np.int64), np.zeros((3, 4, 1), np.int64), ValueError,
         r"Dataset.y: expected shape \(n,\) or X's shape \(n, C\), received \(3, 4, 1\)"),
        (np.zeros((3, 4)), np.zeros((3, 4), np.int64), ValueError,
         r"Dataset.y: expected shape \(n,\), received \(3, 4\)"),
        (np.zeros((3, 4), np.complex128), np.zeros(3), TypeError,
         r"Dataset.X: expected a real numeric array .*received dtype complex128"),
        (np.array([["a", "b"]]), np.zeros(1), TypeError, r"Dataset.X: expected a real numeric"),
        ([[1, 2], [3]], np.zeros(2), TypeError, r"Dataset.X: expected a numeric array, could not"),
        (np.zeros((3, 4), np.int64), np.array(["a"] * 3), TypeError,
         r"Dataset.y: expected numeric targets, received dtype <U1"),
    ],
)  # fmt: skip
def test_bad_token_data_is_refused(X: object, y: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Dataset(X, y)


def test_the_trainer_refuses_non_finite_real_data_still() -> None:
    bad = Dataset(np.array([[0.0, np.nan]]), np.zeros(1))
    with pytest.raises(ValueError, match=r"train.X: expected finite values"):
        Trainer(Bigram(2), SGD(), bad, steps=1, lr=0.1)


class Bigram:
    """Next-token logits from the current token only: ``logits_t = B[:, x_t]``, ``B (V, V)``;
    mean cross-entropy over sequences and positions against ``y (n, C)``."""

    def __init__(self, V: int) -> None:
        self.params = {"B": np.zeros((V, V))}

    def _probs(self, X: np.ndarray) -> np.ndarray:
        Z = self.params["B"][:, X]  # (V, n, C)
        P = np.exp(Z - Z.max(axis=0))
        return P / P.sum(axis=0)

    def loss_and_grads(self, X: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
        assert X.dtype.kind == "i" and y.dtype.kind == "i" and y.shape == X.shape
        P = self._probs(X)
        n, C = X.shape
        picked = np.take_along_axis(P, y[None], axis=0)[0]
        G = P.copy()
        np.put_along_axis(G, y[None], picked[None] - 1.0, axis=0)
        dB = np.zeros_like(self.params["B"])
        np.add.at(dB.T, X.ravel(), G.reshape(len(dB), -1).T / (n * C))
        return float(-np.mean(np.log(picked))), {"B": dB}

    def metrics(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        picked = np.take_along_axis(self._probs(X), y[None], axis=0)[0]
        return {"loss": float(-np.mean(np.log(picked)))}


def _chains(n: int, rng: np.random.Generator) -> Dataset:
    """Sequences of a fixed 3-state chain that mostly steps ``x -> x + 1 mod 3``."""
    X = np.empty((n, 9), dtype=np.int64)
    X[:, 0] = rng.integers(0, 3, n)
    for t in range(1, 9):
        X[:, t] = (X[:, t - 1] + (rng.random(n) < 0.9)) % 3
    return Dataset(X[:, :-1], X[:, 1:])


def test_bigram_gradient_by_central_differences() -> None:
    model, data = Bigram(3), _chains(5, np.random.default_rng(0))
    model.params["B"] = np.random.default_rng(1).standard_normal((3, 3))
    _, grads = model.loss_and_grads(data.X, data.y)
    for i, j in np.ndindex(3, 3):
        B = model.params["B"]
        B[i, j] += 1e-6
        up = model.loss_and_grads(data.X, data.y)[0]
        B[i, j] -= 2e-6
        down = model.loss_and_grads(data.X, data.y)[0]
        B[i, j] += 1e-6
        assert grads["B"][i, j] == pytest.approx((up - down) / 2e-6, abs=1e-8)


def test_a_token_model_trains_from_a_stream_and_evaluates_in_chunks(tmp_path: Path) -> None:
    def make(steps: int, path: Path | None) -> Trainer:
        return Trainer(
            Bigram(3), SGD(), Stream(lambda s: _chains(16, np.random.default_rng([5, s]))),
            steps=steps, lr=2.0, test=_chains(50, np.random.default_rng(9)), eval_every=20,
            eval_batch_size=7, checkpoint=path, checkpoint_every=20, progress=False,
        )  # fmt: skip

    whole = make(80, None)
    history = whole.run()
    test = whole.test
    assert history.last["test_loss"] == pytest.approx(whole.model.metrics(test.X, test.y)["loss"])
    assert evaluate(whole.model, test, 7) == pytest.approx(evaluate(whole.model, test, 50))
    # the chain's entropy is 0.325 nats; the uniform start is log 3 = 1.099
    assert history.rows[0]["test_loss"] == pytest.approx(np.log(3))
    assert history.last["test_loss"] < 0.45
    make(40, tmp_path / "c.npz").run()
    rest = make(80, tmp_path / "c.npz")
    rest.resume(tmp_path / "c.npz")
    rest.run()
    assert np.array_equal(rest.model.params["B"], whole.model.params["B"])
    assert rest.history.rows == whole.history.rows
