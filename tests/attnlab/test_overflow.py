"""Overflow is never a result: scores beyond the dtype's range raise ``FloatingPointError``
instead of NaN weights, ``predict`` never makes up a class for non-finite logits, and in training
both end as a divergence."""

from __future__ import annotations

import numpy as np
import pytest

import mlp
from attnlab.blocks.attention import attend_forward
from attnlab.models.context_window import ContextWindowModel
from attnlab.tasks import make_task
from mlp.numerics import softmax_with_argmax


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_softmax_with_argmax_refuses_non_finite_scores(bad: float) -> None:
    z = np.zeros((2, 3, 4))
    z[1, 2, 3] = bad
    if bad == -np.inf:  # exp(-inf) = 0 is exact: a token with no weight, not an overflow
        S, _ = softmax_with_argmax(z, axis=1)
        assert np.isfinite(S).all() and S[1, 2, 3] == 0.0
        return
    with pytest.raises(FloatingPointError, match=r"scores of 1 of 8 softmaxes hold NaN or inf"):
        softmax_with_argmax(z, axis=1)


def test_attention_on_scores_that_overflow_raises_instead_of_nan_weights() -> None:
    rng = np.random.default_rng(0)
    X, Q = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 1))
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(FloatingPointError, match=r"softmax: the scores .* NaN or inf"):
            attend_forward(X * 1e155, Q * 1e155)
    out, cache = attend_forward(X * 1e150, Q)  # large and finite: exact weights
    assert np.isfinite(cache.S).all() and np.isfinite(out).all()


def test_predict_never_returns_a_class_for_non_finite_logits() -> None:
    X = np.random.default_rng(0).standard_normal((5, 3, 4))
    model = ContextWindowModel(3, attention="prompt", n_classes=3)
    model.params["v"][:] = 1e308
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(FloatingPointError, match=r"predict: the outputs of 5 of 5 prompts"):
            model.predict(X * 10)
    model.params["v"][:] = 1.0
    assert model.predict(X).shape == (5,)


def test_an_overflow_in_training_is_a_divergence() -> None:
    task = make_task("iris-in-context", seed=0)
    model = ContextWindowModel(task.d, attention="self", head="mlp", n_classes=3)
    trainer = mlp.Trainer(model, mlp.SGD(), task.train, steps=3, lr=1e200, batch_size=64,
                          test=task.test, progress=False)  # fmt: skip
    with pytest.raises(mlp.TrainingDiverged, match="training diverged"):
        trainer.run()
    assert all(np.isfinite(r["train_loss"]) for r in trainer.history.rows)


class _Overflowing:
    """A model whose loss (``in_loss``) or evaluation overflows: it raises FloatingPointError,
    as the attention's softmax does."""

    def __init__(self, in_loss: bool) -> None:
        self.params = {"w": np.zeros(2)}
        self.in_loss = in_loss

    def loss_and_grads(self, X: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
        if self.in_loss:
            raise FloatingPointError("softmax: the scores overflow")
        return 1.0, {"w": np.ones(2)}

    def metrics(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        if not self.in_loss:
            raise FloatingPointError("softmax: the scores overflow")
        return {"loss": 1.0}


@pytest.mark.parametrize(
    ("in_loss", "match"),
    [
        (True, r"diverged at step 1 with learning rate 0\.1: softmax: the scores overflow"),
        (False, r"diverged by step 0: softmax: the scores overflow"),
    ],
)
def test_a_model_that_raises_floating_point_error_diverges(in_loss: bool, match: str) -> None:
    data = mlp.Dataset(np.zeros((4, 2)), np.zeros(4, dtype=np.int64))
    trainer = mlp.Trainer(_Overflowing(in_loss), mlp.SGD(), data, steps=2, lr=0.1, progress=False)
    with pytest.raises(mlp.TrainingDiverged, match=match):
        trainer.run()
