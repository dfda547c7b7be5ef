"""The iris split: seeded, stratified, disjoint, centered by the training mean."""

import numpy as np
import pytest
from sklearn.datasets import load_iris

import mlp


@pytest.mark.parametrize("features", [2, 4])
def test_split_is_stratified_disjoint_and_centered(features: int) -> None:
    s = mlp.load_iris_split(features=features, seed=3)
    assert np.intersect1d(s.train_index, s.test_index).size == 0
    assert np.array_equal(np.sort(np.r_[s.train_index, s.test_index]), np.arange(150))
    assert np.array_equal(np.bincount(s.y_train), [40, 40, 40])
    assert np.array_equal(np.bincount(s.y_test), [10, 10, 10])
    np.testing.assert_allclose(s.X_train.mean(axis=0), 0.0, atol=1e-12)
    raw = load_iris().data[:, :features]
    np.testing.assert_allclose(s.mean, raw[s.train_index].mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(s.X_test, raw[s.test_index] - s.mean, rtol=1e-14, atol=1e-14)
    assert s.feature_names[:2] == ("sepal length (cm)", "sepal width (cm)")


def test_split_is_seeded() -> None:
    a, b, c = (mlp.load_iris_split(seed=s) for s in (7, 7, 8))
    assert np.array_equal(a.train_index, b.train_index)
    assert np.array_equal(a.X_train, b.X_train)
    assert not np.array_equal(a.train_index, c.train_index)


def test_standardize_divides_by_training_std() -> None:
    s = mlp.load_iris_split(features=4, seed=0, standardize=True)
    np.testing.assert_allclose(s.X_train.std(axis=0), 1.0, rtol=1e-12)


def test_class_names() -> None:
    assert mlp.CLASS_NAMES == ("setosa", "versicolor", "virginica")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": 3}, "features: expected 2 or 4, received 3"),
        ({"test_size": 0.0}, "test_size"),
        ({"test_size": 1.5}, "test_size"),
    ],
)
def test_split_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mlp.load_iris_split(**kwargs)


@pytest.mark.parametrize("features", [4.0, True, "4"])
def test_features_must_be_the_integer_2_or_4(features: object) -> None:
    """4.0 passed the ``in (2, 4)`` check and then failed to slice (a numpy TypeError)."""
    with pytest.raises(ValueError, match=r"features: expected 2 or 4, received"):
        mlp.load_iris_split(features=features)


def test_a_negative_seed_is_named() -> None:
    with pytest.raises(ValueError, match=r"seed: expected a non-negative integer, received -1"):
        mlp.load_iris_split(seed=-1)
