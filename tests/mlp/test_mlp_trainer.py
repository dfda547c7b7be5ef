"""The one trainer on the iris MLP: determinism, batching, restricted updates, errors, accuracy."""

import math

import numpy as np
import pytest

import mlp


def _setup(features: int = 2, seed: int = 0, hidden: int = 10) -> tuple:
    split = mlp.load_iris_split(features=features, seed=seed)
    model = mlp.MLP(features, hidden, 3, seed=seed)
    train = mlp.Dataset(split.X_train, split.y_train)
    test = mlp.Dataset(split.X_test, split.y_test)
    return model, train, test


def _train(
    features: int = 2,
    seed: int = 0,
    epochs: int = 200,
    batch_size: int = 16,
    lr: float = 0.1,
    **kwargs: object,
) -> tuple:
    """The script's default recipe: SGD, inverse decay with decay_steps = total steps / 10."""
    model, train, test = _setup(features, seed)
    steps = epochs * math.ceil(len(train) / batch_size)
    trainer = mlp.Trainer(
        model,
        mlp.SGD(),
        train,
        steps=steps,
        lr=mlp.make_schedule("inverse", lr, decay_steps=steps / 10),
        batch_size=batch_size,
        test=test,
        seed=seed,
        progress=False,
        **kwargs,
    )
    return model, trainer, trainer.run()


def test_same_seed_gives_bit_identical_parameters_and_history() -> None:
    m1, _, h1 = _train(epochs=10)
    m2, _, h2 = _train(epochs=10)
    init = mlp.init_params(2, 10, 3, seed=0)
    for key in m1.params:
        assert np.array_equal(m1.params[key], m2.params[key]), key
        assert not np.array_equal(m1.params[key], init[key]), key  # training did something
    assert h1.rows == h2.rows
    m3, _, _ = _train(epochs=10, seed=1)
    assert not np.array_equal(m1.params["W1"], m3.params["W1"])


@pytest.mark.parametrize("batch_size", [1, 7, 16, 120])
def test_batches_cover_each_sample_once_per_epoch(batch_size: int) -> None:
    model, train, _ = _setup()
    trainer = mlp.Trainer(model, mlp.SGD(), train, steps=1000, lr=0.1, batch_size=batch_size)
    per_epoch = {1: 120, 7: 18, 16: 8, 120: 1}[batch_size]
    assert trainer.steps_per_epoch == per_epoch
    orders = []
    for epoch in range(3):
        steps = range(epoch * per_epoch, (epoch + 1) * per_epoch)
        batches = [trainer.batch_indices(s).copy() for s in steps]
        assert all(len(b) <= batch_size for b in batches)
        order = np.concatenate(batches)
        assert np.array_equal(np.sort(order), np.arange(120)), f"epoch {epoch}"
        orders.append(order)
    if batch_size < 120:  # reshuffled every epoch, and a pure function of (seed, step)
        assert not np.array_equal(orders[0], orders[1])
        assert np.array_equal(trainer.batch_indices(0), orders[0][:batch_size])


@pytest.mark.parametrize("batch_size", [1, 120])
def test_single_sample_and_full_batch_train(batch_size: int) -> None:
    epochs = 5 if batch_size == 1 else 100
    _, trainer, history = _train(epochs=epochs, batch_size=batch_size, lr=0.05)
    assert trainer.step == epochs * (120 // batch_size)
    assert len(history.rows) == epochs + 1  # one row per epoch, plus the initial one
    np.testing.assert_array_equal(history.column("epoch"), np.arange(epochs + 1))
    loss = history.column("train_loss")
    assert np.all(np.isfinite(loss)) and loss[-1] < 0.5 * loss[0]
    assert history.last["train_accuracy"] > 0.7


def test_trainable_restricts_updates() -> None:
    model, train, _ = _setup()
    init = {k: v.copy() for k, v in model.params.items()}
    trainer = mlp.Trainer(
        model, mlp.SGD(), train, steps=20, lr=0.1, batch_size=16, trainable=["W2", "b2"]
    )
    trainer.run()
    assert np.array_equal(model.params["W1"], init["W1"])
    assert np.array_equal(model.params["b1"], init["b1"])
    assert not np.array_equal(model.params["W2"], init["W2"])
    assert not np.array_equal(model.params["b2"], init["b2"])


def test_history_records_the_documented_columns(tmp_path) -> None:
    _, _, history = _train(epochs=3)
    expected = {"step", "epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    assert expected <= set(history.rows[0])
    assert "batch_loss" in history.rows[1]
    path = history.to_csv(tmp_path / "h.csv")
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 4 and lines[0].split(",")[:3] == ["step", "epoch", "lr"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 121}, r"batch_size: expected at most .*\(120\), received 121"),
        ({"batch_size": 0}, "batch_size: expected a positive integer, received 0"),
        ({"lr": 0.0}, "lr: expected a positive finite number, received 0.0"),
        ({"lr": -0.1}, "lr: expected a positive finite number, received -0.1"),
        ({"steps": 0}, "steps: expected a positive integer, received 0"),
        ({"trainable": ["W3"]}, r"trainable: unknown parameter\(s\) \['W3'\]"),
    ],
)
def test_trainer_errors(kwargs: dict, match: str) -> None:
    model, train, _ = _setup()
    options = {"steps": 10, "lr": 0.1, "batch_size": 16, **kwargs}
    with pytest.raises(ValueError, match=match):
        mlp.Trainer(model, mlp.SGD(), train, **options)


def test_divergence_is_reported() -> None:
    model, train, _ = _setup()
    model.params["W2"] *= 1e300
    trainer = mlp.Trainer(model, mlp.SGD(), train, steps=5, lr=1e300, batch_size=120)
    with np.errstate(all="ignore"), pytest.raises(mlp.TrainingDiverged, match="diverged"):
        trainer.run()
    assert trainer.step < 5


@pytest.mark.parametrize(("features", "target"), [(4, 0.93), (2, 0.72)])
def test_training_on_iris_reaches_accuracy(features: int, target: float) -> None:
    """Five seeds (split and initialization) with the script's defaults; the full 20-seed
    evaluation is ``scripts/sweep.py mlp --seeds 0-19``."""
    accs = [_train(features=features, seed=s)[2].last["test_accuracy"] for s in range(5)]
    assert np.mean(accs) >= target, accs


def test_finite_parameters_whose_sum_overflows_train_on() -> None:
    """The update's check sums every trained entry; a finite sum past float64's range is looked
    at parameter by parameter, and finite parameters pass."""

    class Quadratic:  # loss (w - 1)^2 / 2; `far` is trained, with a zero gradient
        def __init__(self) -> None:
            self.params = {"w": np.zeros(1), "far": np.array([1.5e308, 1.5e308])}

        def loss_and_grads(self, X: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
            r = self.params["w"] - 1.0
            return float(r @ r) / 2, {"w": r.copy(), "far": np.zeros(2)}

    model = Quadratic()
    data = mlp.Dataset(np.zeros((4, 1)), np.zeros(4))
    trainer = mlp.Trainer(model, mlp.SGD(), data, steps=3, lr=0.5, progress=False)
    trainer.run()
    assert trainer.step == 3 and model.params["w"][0] == 0.875
    assert np.array_equal(model.params["far"], [1.5e308, 1.5e308])
