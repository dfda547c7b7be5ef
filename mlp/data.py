"""The iris data (shipped inside scikit-learn: no download) and a seeded, stratified split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlp.validation import check_seed

FEATURE_NAMES = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
CLASS_NAMES = ("setosa", "versicolor", "virginica")


@dataclass(frozen=True)
class IrisSplit:
    """A train/test split: ``X_train (n_train, d)``, ``y_train (n_train,)`` in 0..2, and so on.

    ``train_index``/``test_index`` are the rows of the full 150-flower table (disjoint);
    ``mean`` is the training mean that was subtracted (and ``std`` the divisor, 1 unless
    standardized).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    train_index: np.ndarray
    test_index: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    feature_names: tuple[str, ...]


def load_iris_split(
    features: int = 2, test_size: float = 0.2, seed: int = 0, standardize: bool = False
) -> IrisSplit:
    """Iris, first ``features`` (2: the lecture's sepal length and width, or 4) columns.

    Stratified split with ``test_size`` of the flowers in the test set, seeded; features are
    centered by the *training* mean (and divided by the training std if ``standardize``).
    """
    is_int = isinstance(features, (int, np.integer)) and not isinstance(features, bool)
    if not is_int or features not in (2, 4):  # 4.0 would pass `in (2, 4)`, then fail to slice
        raise ValueError(f"features: expected 2 or 4, received {features!r}")
    if not (isinstance(test_size, float) and 0.0 < test_size < 1.0):
        raise ValueError(f"test_size: expected a fraction in (0, 1), received {test_size!r}")
    check_seed(seed)
    # scikit-learn takes seconds to import: only when the data is needed
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    data = load_iris()
    X = data.data[:, :features].astype(np.float64)
    y = data.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_size, stratify=y, random_state=seed)
    tr, te = np.sort(tr), np.sort(te)
    mean = X[tr].mean(axis=0)
    std = X[tr].std(axis=0) if standardize else np.ones(features)
    Xs = (X - mean) / std
    return IrisSplit(Xs[tr], y[tr], Xs[te], y[te], tr, te, mean, std, FEATURE_NAMES[:features])
