"""The engine trains any model that keeps its contract: here a linear regression with a squared
loss, defined only in this file, trained from a fixed data set and from a stream, with its own
metrics and snapshots, checkpoints and an exact resume."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import mlp.train.trainer as trainer_module
from mlp.train import SGD, Adam, Dataset, Stream, Trainer


class LinearRegression:
    """``yhat = X w + b``, loss ``mean (yhat - y)^2 / 2``; ``weights`` is an extra input (one
    weight per sample) to show that named inputs reach every hook."""

    def __init__(self, d: int) -> None:
        self.params = {"w": np.zeros(d), "b": np.zeros(())}

    def loss_and_grads(
        self, X: np.ndarray, y: np.ndarray, weights: np.ndarray
    ) -> tuple[float, dict[str, np.ndarray]]:
        r = X @ self.params["w"] + self.params["b"] - y
        n = len(y)
        loss = float(np.sum(weights * r * r) / (2 * n))
        g = weights * r / n
        return loss, {"w": X.T @ g, "b": np.asarray(g.sum())}

    def metrics(self, X: np.ndarray, y: np.ndarray, weights: np.ndarray) -> dict[str, float]:
        r = X @ self.params["w"] + self.params["b"] - y
        return {
            "loss": float(np.mean(weights * r * r) / 2),
            "abs_error": float(np.mean(np.abs(r))),
        }

    def snapshot(self, X: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return X @ self.params["w"] + self.params["b"]


W_TRUE = np.array([1.5, -2.0, 0.5])


def _data(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    y = X @ W_TRUE + 0.25
    return Dataset(X, y, weights=np.ones(n))


def test_the_trainer_module_names_no_model_vocabulary() -> None:
    code = "\n".join(
        line
        for line in inspect.getsource(trainer_module).splitlines()
        if not line.lstrip().startswith(("#", '"', "``", "-"))
    )
    code = re.sub(r'"""[\s\S]*?"""', "", code)  # docstrings may explain
    for word in ("attention", "target", "Z"):
        assert not re.search(rf"\b{word}\b", code), word


def test_a_model_defined_here_trains_with_its_metrics_and_snapshots(tmp_path: Path) -> None:
    model = LinearRegression(3)
    train, test = _data(200, 0), _data(50, 1)
    trainer = Trainer(
        model,
        SGD(),
        train,
        steps=400,
        lr=0.1,
        batch_size=20,
        test=test,
        eval_every=100,
        eval_batch_size=7,
        snapshot=test.subset(np.arange(4)),
        checkpoint=tmp_path / "checkpoint.npz",
        checkpoint_every=100,
        progress=False,
    )
    history = trainer.run()
    np.testing.assert_allclose(model.params["w"], W_TRUE, atol=1e-6)
    np.testing.assert_allclose(model.params["b"], 0.25, atol=1e-6)
    assert [r["step"] for r in history.rows] == [0, 100, 200, 300, 400]
    assert set(history.last) >= {"train_loss", "train_abs_error", "test_loss", "test_abs_error"}
    assert history.last["test_abs_error"] < 1e-6 < history.rows[0]["test_abs_error"]
    # chunks of 7 samples, averaged by size: the same as the metric on the whole set
    whole = model.metrics(test.X, test.y, test.inputs["weights"])
    assert history.last["test_loss"] == pytest.approx(whole["loss"], rel=1e-12, abs=1e-30)
    assert len(history.snapshots) == 5 and history.snapshots[-1].shape == (4,)
    assert (tmp_path / "checkpoint.npz").is_file()


@pytest.mark.parametrize("optimizer", [SGD, Adam])
def test_resume_from_a_checkpoint_is_bit_identical(tmp_path: Path, optimizer: type) -> None:
    def make(checkpoint: Path | None, steps: int) -> Trainer:
        return Trainer(
            LinearRegression(3),
            optimizer(),
            _data(100, 0),
            steps=steps,
            lr=0.05,
            batch_size=16,
            test=_data(30, 1),
            eval_every=10,
            checkpoint=checkpoint,
            checkpoint_every=10,
            seed=3,
            progress=False,
        )

    whole = make(None, 70)
    whole.run()
    first = make(tmp_path / "checkpoint.npz", 30)
    first.run()
    rest = make(tmp_path / "checkpoint.npz", 70)
    rest.resume(tmp_path / "checkpoint.npz")
    assert rest.step == 30
    rest.run()
    for k in whole.model.params:
        assert np.array_equal(whole.model.params[k], rest.model.params[k]), k
    assert rest.history.rows == whole.history.rows


def test_a_stream_gives_a_fresh_batch_each_step_and_resumes_exactly(tmp_path: Path) -> None:
    seen: list[int] = []

    def batch(step: int) -> Dataset:
        seen.append(step)
        return _data(16, 1000 + step)

    def make(steps: int, checkpoint: Path | None) -> Trainer:
        return Trainer(
            LinearRegression(3),
            SGD(),
            Stream(batch),
            steps=steps,
            lr=0.1,
            test=_data(40, 1),
            eval_every=25,
            checkpoint=checkpoint,
            checkpoint_every=25,
            progress=False,
        )

    whole = make(100, None)
    history = whole.run()
    assert seen == list(range(100))
    assert "train_loss" not in history.last and "epoch" not in history.last
    assert history.last["test_abs_error"] < 1e-3
    make(50, tmp_path / "c.npz").run()
    seen.clear()
    rest = make(100, tmp_path / "c.npz")
    rest.resume(tmp_path / "c.npz")
    rest.run()
    assert seen == list(range(50, 100))
    for k in whole.model.params:
        assert np.array_equal(whole.model.params[k], rest.model.params[k]), k


def test_a_stream_refuses_a_batch_size_and_a_bad_batch() -> None:
    with pytest.raises(ValueError, match="batch_size: a Stream makes its own batches"):
        Trainer(LinearRegression(3), SGD(), Stream(lambda s: _data(4, s)), steps=1, lr=0.1,
                batch_size=4)  # fmt: skip
    trainer = Trainer(LinearRegression(3), SGD(), Stream(lambda s: (1, 2)), steps=1, lr=0.1,
                      progress=False)  # fmt: skip
    with pytest.raises(TypeError, match=r"batch\(0\) returned a tuple, expected a Dataset"):
        trainer.run()


def test_snapshot_data_needs_the_hook() -> None:
    class NoHooks:
        def __init__(self) -> None:
            self.params = {"w": np.zeros(3)}

        def loss_and_grads(self, X: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
            return 0.0, {"w": np.zeros(3)}

    data = Dataset(np.ones((4, 3)), np.ones(4))
    with pytest.raises(TypeError, match=r"snapshot: the model \(NoHooks\) has no snapshot"):
        Trainer(NoHooks(), SGD(), data, steps=1, lr=0.1, snapshot=data)
    # without a metrics hook the trainer records the loss of loss_and_grads
    history = Trainer(NoHooks(), SGD(), data, steps=1, lr=0.1, test=data, progress=False).run()
    assert history.last["test_loss"] == 0.0 and "test_accuracy" not in history.last
