"""Table-driven shape tests: every public function of ``mlp`` against literal expected shapes.

The expected shapes are written out in the tables (never computed from the outputs), in the axis
names of ``docs/concepts.md``: ``n`` samples, ``d`` features, ``m`` hidden units, ``k`` classes.
"""

import numpy as np
import pytest

import mlp

# (n, d, m, k), then the expected shapes of W1, b1, W2, b2, H, Z
NETWORK_SHAPES = [
    ((5, 3, 7, 4), (3, 7), (7,), (7, 4), (4,), (5, 7), (5, 4)),
    ((1, 2, 10, 3), (2, 10), (10,), (10, 3), (3,), (1, 10), (1, 3)),
    ((150, 4, 10, 3), (4, 10), (10,), (10, 3), (3,), (150, 10), (150, 3)),
    ((8, 1, 1, 2), (1, 1), (1,), (1, 2), (2,), (8, 1), (8, 2)),
    ((2, 6, 3, 1), (6, 3), (3,), (3, 1), (1,), (2, 3), (2, 1)),
]
IDS = ["n5-d3-m7-k4", "n1-d2-m10-k3", "n150-d4-m10-k3", "n8-d1-m1-k2", "n2-d6-m3-k1"]


def _problem(n: int, d: int, m: int, k: int) -> tuple[np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(n * 1000 + d * 100 + m * 10 + k)
    X = rng.standard_normal((n, d))
    y = rng.integers(0, k, size=n)
    return X, y, mlp.init_params(d, m, k, seed=1)


@pytest.mark.parametrize(("dims", "W1", "b1", "W2", "b2", "H", "Z"), NETWORK_SHAPES, ids=IDS)
def test_network_shapes(
    dims: tuple, W1: tuple, b1: tuple, W2: tuple, b2: tuple, H: tuple, Z: tuple
) -> None:
    n, d, m, k = dims
    X, y, theta = _problem(n, d, m, k)
    param_shapes = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}

    assert list(theta) == ["W1", "b1", "W2", "b2"]
    assert {key: v.shape for key, v in theta.items()} == param_shapes
    assert mlp.MLP(d, m, k).params["W2"].shape == W2

    for fwd in (mlp.forward, mlp.forward_nonvectorized):
        Hs, Zs = fwd(X, theta)
        assert (Hs.shape, Zs.shape) == (H, Z), fwd.__name__

    for lg in (mlp.loss_and_grads, mlp.loss_and_grads_nonvectorized):
        loss, grads = lg(X, y, theta)
        assert isinstance(loss, float), lg.__name__
        assert {key: g.shape for key, g in grads.items()} == param_shapes, lg.__name__

    Hs, Zs = mlp.forward(X, theta)
    G = mlp.cross_entropy(Zs, y)[1]
    grads, dX = mlp.backward(X, Hs, G, theta)
    assert {key: g.shape for key, g in grads.items()} == param_shapes
    assert dX.shape == (n, d)

    assert mlp.predict(X, theta).shape == (n,)
    assert mlp.predict_proba(X, theta).shape == Z
    assert isinstance(mlp.accuracy(X, y, theta), float)
    assert mlp.MLP(d, m, k).forward(X).shape == Z
    assert mlp.MLP(d, m, k).predict(X).shape == (n,)


# (function, input shape, keyword arguments, expected output shape)
ELEMENTWISE_AND_REDUCTIONS = [
    (mlp.relu, (4, 5), {}, (4, 5)),
    (mlp.relu, (7,), {}, (7,)),
    (mlp.relu_grad, (2, 3, 4), {}, (2, 3, 4)),
    (mlp.softmax, (4, 3), {}, (4, 3)),
    (mlp.softmax, (2, 3, 4), {"axis": 1}, (2, 3, 4)),
    (mlp.log_softmax, (2, 3, 4), {"axis": 0}, (2, 3, 4)),
    (mlp.log_softmax, (6,), {}, (6,)),
    (mlp.logsumexp, (4, 3), {}, (4,)),
    (mlp.logsumexp, (2, 3, 4), {"axis": 1}, (2, 4)),
    (mlp.logsumexp, (2, 3, 4), {"axis": 0, "keepdims": True}, (1, 3, 4)),
    (mlp.logsumexp, (2, 3, 4), {"axis": -1, "keepdims": True}, (2, 3, 1)),
    (mlp.logsumexp, (5,), {}, ()),
]


@pytest.mark.parametrize(("fn", "shape", "kwargs", "expected"), ELEMENTWISE_AND_REDUCTIONS)
def test_numerics_shapes(fn, shape: tuple, kwargs: dict, expected: tuple) -> None:
    z = np.random.default_rng(0).standard_normal(shape)
    assert np.shape(fn(z, **kwargs)) == expected


# (shape of the logits, expected shape of the gradient)
CROSS_ENTROPY_SHAPES = [((5, 3), (5, 3)), ((1, 4), (1, 4)), ((10, 1), (10, 1))]


@pytest.mark.parametrize(("zshape", "expected"), CROSS_ENTROPY_SHAPES)
def test_cross_entropy_shapes(zshape: tuple, expected: tuple) -> None:
    Z = np.random.default_rng(0).standard_normal(zshape)
    y = np.zeros(zshape[0], dtype=np.int64)
    loss, dZ = mlp.cross_entropy(Z, y)
    assert isinstance(loss, float) and dZ.shape == expected


# (shape of the logits, expected shape of the gradient): dz keeps z's shape
LOGISTIC_SHAPES = [((6,), (6,)), ((6, 1), (6, 1)), ((1,), (1,)), ((1, 1), (1, 1))]


@pytest.mark.parametrize(("zshape", "expected"), LOGISTIC_SHAPES)
def test_logistic_loss_shapes(zshape: tuple, expected: tuple) -> None:
    z = np.random.default_rng(0).standard_normal(zshape)
    y = np.where(np.arange(zshape[0]) % 2 == 0, 1.0, -1.0)
    loss, dz = mlp.logistic_loss(z, y)
    assert isinstance(loss, float) and dz.shape == expected


# (pattern, operand shapes, expected output shape)
CONTRACT_SHAPES = [
    ("n d, d m -> n m", (5, 3), (3, 7), (5, 7)),
    ("n d c, n d j -> n c j", (2, 3, 4), (2, 3, 5), (2, 4, 5)),
    ("e d, n d c -> n e c", (6, 3), (2, 3, 4), (2, 6, 4)),
    ("n d c, n c j -> n d j", (2, 3, 4), (2, 4, 5), (2, 3, 5)),
    ("n d, n m -> d m", (5, 3), (5, 7), (3, 7)),
    ("n d, n m -> n d m", (5, 3), (5, 7), (5, 3, 7)),
    ("n d c, n d c -> n", (2, 3, 4), (2, 3, 4), (2,)),
    ("d, d ->", (3,), (3,), ()),
]


@pytest.mark.parametrize(("pattern", "ashape", "bshape", "expected"), CONTRACT_SHAPES)
def test_contract_shapes(pattern: str, ashape: tuple, bshape: tuple, expected: tuple) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(ashape), rng.standard_normal(bshape)
    assert mlp.contract(pattern, a, b).shape == expected


# (features, test_size, X_train, y_train, X_test, y_test, mean)
IRIS_SHAPES = [
    (2, 0.2, (120, 2), (120,), (30, 2), (30,), (2,)),
    (4, 0.2, (120, 4), (120,), (30, 4), (30,), (4,)),
    (2, 0.3, (105, 2), (105,), (45, 2), (45,), (2,)),
]


@pytest.mark.parametrize(("features", "test_size", "Xtr", "ytr", "Xte", "yte", "mean"), IRIS_SHAPES)
def test_load_iris_split_shapes(
    features: int, test_size: float, Xtr: tuple, ytr: tuple, Xte: tuple, yte: tuple, mean: tuple
) -> None:
    s = mlp.load_iris_split(features=features, test_size=test_size, seed=0)
    assert (s.X_train.shape, s.y_train.shape) == (Xtr, ytr)
    assert (s.X_test.shape, s.y_test.shape) == (Xte, yte)
    assert s.train_index.shape == ytr and s.test_index.shape == yte
    assert s.mean.shape == mean and s.std.shape == mean
    assert len(s.feature_names) == features


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_parameters_are_refused_by_name(bad: float) -> None:
    """A NaN weight gave NaN logits and RuntimeWarnings instead of an error."""
    X, y, theta = _problem(5, 3, 7, 4)
    theta["W2"][1, 2] = bad
    match = r"theta\['W2'\]: expected finite values, received 1 NaN or inf entries"
    with pytest.raises(ValueError, match=match):
        mlp.forward(X, theta)
    with pytest.raises(ValueError, match=match):
        mlp.loss_and_grads(X, y, theta)
