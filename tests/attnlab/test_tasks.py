"""The prompt tasks (the tasks of ``docs/concepts.md``): shapes, labels, markers, no train/test
leakage, and a short training run of the demo that learns.

Expected values are computed independently: shapes are written out, the iris table comes from
scikit-learn directly, and the split from ``mlp.data.load_iris_split`` (its own tests check it).
"""

import numpy as np
import pytest
from sklearn.datasets import load_iris

from attnlab.studies.attention import prepare
from attnlab.tasks import iris_in_context, make_task, max_margin, prompt_norm
from mlp.data import load_iris_split

IRIS = load_iris()


# --- shapes, written out -------------------------------------------------------------------

SHAPES = [
    # (task, options, X train, X test, Z)
    ("iris-in-context", {"n_train": 60, "n_test": 30, "context": 5, "features": 4},
     (60, 6, 5), (30, 6, 5), None),
    ("iris-in-context", {"n_train": 9, "n_test": 3, "context": 16, "features": 2},
     (9, 4, 16), (3, 4, 16), None),
    ("max-margin", {}, (6, 10, 8), (6, 10, 8), (6, 10, 1)),
    ("max-margin", {"n": 4, "context": 3, "d": 5}, (4, 5, 3), (4, 5, 3), (4, 5, 1)),
    ("prompt-norm", {}, (3, 3, 7), (3, 3, 7), None),
]  # fmt: skip


@pytest.mark.parametrize(("name", "options", "x_train", "x_test", "z"), SHAPES)
def test_shapes(name: str, options: dict, x_train: tuple, x_test: tuple, z: tuple | None) -> None:
    task = make_task(name, **options)
    assert task.train.X.shape == x_train and task.test.X.shape == x_test
    assert task.train.y.shape == (x_train[0],) and task.test.y.shape == (x_test[0],)
    assert task.train.target.shape == (x_train[0],)
    assert task.d == x_train[1]
    if z is None:
        assert "Z" not in task.train.inputs
    else:
        assert task.train.Z.shape == z


def test_unknown_task_and_option_are_refused() -> None:
    with pytest.raises(ValueError, match=r"task: expected one of .*received 'iris'"):
        make_task("iris")
    with pytest.raises(ValueError, match="features: expected 2 or 4, received 3"):
        iris_in_context(features=3)
    with pytest.raises(ValueError, match="context: expected a positive integer, received 0"):
        iris_in_context(context=0)


# --- labels --------------------------------------------------------------------------------


def test_iris_in_context_labels_are_balanced() -> None:
    task = iris_in_context(n_train=300, n_test=90, context=4)
    assert np.bincount(task.train.y, minlength=3).tolist() == [100, 100, 100]
    assert np.bincount(task.test.y, minlength=3).tolist() == [30, 30, 30]


def test_max_margin_labels_are_signs_balanced_over_seeds() -> None:
    ys = np.concatenate([max_margin(seed=s).train.y for s in range(100)])
    assert set(np.unique(ys)) == {-1.0, 1.0}
    assert 0.42 < np.mean(ys > 0) < 0.58  # 600 fair coin flips: 0.5 +- 0.02 (std)


def test_prompt_norm_labels_and_optimal_token() -> None:
    task = prompt_norm()
    assert task.train.y.tolist() == [1.0, 1.0, 1.0]
    assert task.train.target.tolist() == [0, 0, 0]
    # the head v = e3 reads the score coordinate: token 0 scores 1, every other token 0.5
    scores = task.train.X[:, 2, :]
    assert np.all(scores[:, 0] == 1.0) and np.all(scores[:, 1:] == 0.5)


def test_max_margin_tokens_and_queries_are_unit_vectors() -> None:
    task = max_margin(seed=3)
    np.testing.assert_allclose(np.linalg.norm(task.train.X, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(task.train.Z, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(task.info["v"]), 1.0, rtol=1e-12)


# --- markers and tokens of iris-in-context -------------------------------------------------


@pytest.mark.parametrize("features", [2, 4])
def test_exactly_one_marker_per_prompt_at_the_target(features: int) -> None:
    task = iris_in_context(n_train=200, n_test=50, context=7, features=features, seed=2)
    for data in (task.train, task.test):
        marker = data.X[:, features, :]
        assert set(np.unique(marker)) == {0.0, 1.0}
        assert marker.sum(axis=1).tolist() == [1.0] * len(data)
        assert np.array_equal(np.argmax(marker, axis=1), data.target)
        assert np.all(data.X[:, features + 1, :] == 1.0)  # the constant coordinate
    # the marked position is spread over the whole window
    assert set(task.train.target.tolist()) == set(range(7))


def test_tokens_are_standardized_flowers_and_the_label_is_the_marked_flowers_class() -> None:
    features = 4
    task = iris_in_context(n_train=120, n_test=40, context=6, features=features, seed=1)
    split = load_iris_split(features=features, seed=1)
    raw_train = IRIS.data[split.train_index, :features]
    mean, std = raw_train.mean(axis=0), raw_train.std(axis=0)
    for data, rows in (
        (task.train, task.info["train_flowers"]),
        (task.test, task.info["test_flowers"]),
    ):
        assert rows.shape == (len(data), 6)
        expected = (IRIS.data[rows, :features] - mean) / std  # (n, c, features)
        np.testing.assert_allclose(data.X[:, :features, :], expected.transpose(0, 2, 1), atol=1e-12)
        marked = rows[np.arange(len(data)), data.target]
        assert np.array_equal(IRIS.target[marked], data.y)


def test_no_train_test_leakage_and_flowers_match_the_split() -> None:
    task = iris_in_context(seed=4)  # the demo's sizes: 2000 / 500 prompts of 16 flowers
    split = load_iris_split(features=4, seed=4)
    train_rows = set(task.info["train_flowers"].ravel().tolist())
    test_rows = set(task.info["test_flowers"].ravel().tolist())
    assert train_rows.isdisjoint(test_rows)
    # 32,000 and 8,000 draws: every flower of each side of the split appears
    assert train_rows == set(split.train_index.tolist())
    assert test_rows == set(split.test_index.tolist())
    assert len(train_rows) == 120 and len(test_rows) == 30


def test_same_seed_same_prompts_other_seed_other_prompts() -> None:
    a, b = (
        iris_in_context(n_train=30, n_test=9, seed=5),
        iris_in_context(n_train=30, n_test=9, seed=5),
    )
    c = iris_in_context(n_train=30, n_test=9, seed=6)
    assert np.array_equal(a.train.X, b.train.X) and np.array_equal(a.test.y, b.test.y)
    assert not np.array_equal(a.train.X, c.train.X)


# --- a short training run learns -----------------------------------------------------------


def test_short_training_run_learns_the_marked_flower() -> None:
    """Self attention, 8 tokens, 300 SGD steps (about 0.2 s): from chance to well above it."""
    run = prepare(
        {"attention": "self", "context": 8, "steps": 300, "eval_every": 100, "seed": 0},
        progress=False,
    )
    history = run.trainer.run()
    first, last = history.rows[0], history.rows[-1]
    assert first["step"] == 0 and last["step"] == 300
    # before training: about chance (3 balanced classes; 8 tokens)
    assert first["test_accuracy"] < 0.5
    assert first["test_attention_on_target"] < 0.3
    # after: accuracy and attention on the marked token well above chance
    assert last["test_accuracy"] > 0.8
    assert last["test_attention_on_target"] > 0.5
    assert last["train_loss"] < 0.5 * first["train_loss"]
