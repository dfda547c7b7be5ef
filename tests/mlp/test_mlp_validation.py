"""Every documented input error: the right exception, with a message naming the argument."""

import numpy as np
import pytest

import mlp

THETA = mlp.init_params(2, 5, 3, seed=0)
X_OK = np.array([[0.1, 0.2], [0.3, -0.4], [1.0, 0.0], [-1.0, 2.0]])
Y_OK = np.array([0, 1, 2, 0])

# (case, X, y, exception, message)
BAD_INPUTS = [
    ("X 1-d", np.ones(4), Y_OK, ValueError, r"X: expected a 2-d array, received shape \(4,\)"),
    ("X 3-d", np.ones((4, 2, 1)), Y_OK, ValueError, r"X: expected a 2-d array.*\(3-d\)"),
    ("wrong d", np.ones((4, 3)), Y_OK, ValueError, r"X: expected d=2 features.*received 3"),
    ("NaN in X", np.where(X_OK > 0.5, np.nan, X_OK), Y_OK, ValueError, "X: expected finite"),
    ("inf in X", np.where(X_OK > 0.5, np.inf, X_OK), Y_OK, ValueError, "X: expected finite"),
    ("complex X", X_OK.astype(complex), Y_OK, TypeError, "X: expected a real numeric array"),
    ("string X", X_OK.astype(str), Y_OK, TypeError, "X: expected a real numeric array"),
    ("ragged X", [[1.0, 2.0], [3.0]], Y_OK, TypeError, "X: expected a numeric array"),
    ("empty X", np.ones((0, 2)), np.array([], dtype=int), ValueError, "X: expected at least one"),
    ("label 3", X_OK, np.array([0, 1, 3, 0]), ValueError, r"y: expected class labels in 0\.\.2"),
    ("label -1", X_OK, np.array([0, -1, 2, 0]), ValueError, "y: expected class labels in 0..2"),
    ("label 1.5", X_OK, np.array([0, 1.5, 2, 0]), ValueError, "y: expected integer class labels"),
    ("label NaN", X_OK, np.array([0, np.nan, 2, 0]), ValueError, "y: expected integer class"),
    ("string y", X_OK, np.array(list("abca")), TypeError, "y: expected integer class labels"),
    ("short y", X_OK, np.array([0, 1]), ValueError, r"y: expected shape \(n=4,\)"),
    ("2-d y", X_OK, Y_OK[:, None], ValueError, r"y: expected shape \(n=4,\), received \(4, 1\)"),
]
LOSS_FUNCTIONS = [mlp.loss_and_grads, mlp.loss_and_grads_nonvectorized, mlp.accuracy]
FORWARD_FUNCTIONS = [mlp.forward, mlp.forward_nonvectorized, mlp.predict, mlp.predict_proba]


@pytest.mark.parametrize("fn", LOSS_FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("X", "y", "exc", "match"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_loss_functions_reject_bad_inputs(fn, X, y, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        fn(X, y, THETA)


@pytest.mark.parametrize("fn", FORWARD_FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("X", "exc", "match"),
    [c[1:2] + c[3:] for c in BAD_INPUTS if c[1] is not X_OK],
    ids=[c[0] for c in BAD_INPUTS if c[1] is not X_OK],
)
def test_forward_functions_reject_bad_X(fn, X, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        fn(X, THETA)


def test_good_inputs_pass() -> None:
    """The inputs above differ from good ones only in the one thing named."""
    for fn in LOSS_FUNCTIONS:
        fn(X_OK, Y_OK, THETA)
        fn(X_OK.tolist(), Y_OK.tolist(), THETA)  # lists are fine
        fn(X_OK.astype(np.int64), Y_OK.astype(np.float64), THETA)  # integer X, integral floats
    for fn in FORWARD_FUNCTIONS:
        fn(X_OK, THETA)


@pytest.mark.parametrize(
    ("theta", "exc", "match"),
    [
        ([1, 2], TypeError, "theta: expected a dict"),
        ({"W1": THETA["W1"], "b1": THETA["b1"]}, ValueError, r"theta: expected keys.*'W2'"),
        ({**THETA, "W1": np.ones(5)}, ValueError, r"theta\['W1'\]: expected shape \(d, m\)"),
        ({**THETA, "b1": np.ones(4)}, ValueError, r"theta\['b1'\]: expected shape \(m=5,\)"),
        ({**THETA, "W2": np.ones((4, 3))}, ValueError, r"theta\['W2'\]: expected shape \(m=5, k\)"),
        ({**THETA, "b2": np.ones(2)}, ValueError, r"theta\['b2'\]: expected shape \(k=3,\)"),
    ],
)
def test_bad_parameters(theta: object, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        mlp.forward(X_OK, theta)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 5, 3), "input_dim: expected a positive integer, received 0"),
        ((2, -1, 3), "hidden_dim: expected a positive integer, received -1"),
        ((2, 5, 2.0), "output_dim: expected a positive integer, received 2.0"),
        ((True, 5, 3), "input_dim"),
    ],
)
def test_init_params_errors(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mlp.init_params(*args)


def test_init_params_is_seeded_and_scaled() -> None:
    a, b = mlp.init_params(3, 4, 2, seed=5), mlp.init_params(3, 4, 2, seed=5)
    c = mlp.init_params(3, 4, 2, seed=6)
    s = mlp.init_params(3, 4, 2, seed=5, scale=0.1)
    for key in a:
        assert np.array_equal(a[key], b[key]) and not np.array_equal(a[key], c[key])
        np.testing.assert_allclose(s[key], 0.1 * a[key], rtol=1e-15)
    assert mlp.init_params(3, 4, 2, dtype=np.float32)["W1"].dtype == np.float32


def test_check_finite_accepts_finite_values_whose_sum_overflows():
    from mlp.validation import check_finite

    check_finite("X", np.array([1e308, 1e308, -1e308, -1e308, 1e308]))  # sum is inf or nan
    with pytest.raises(ValueError, match=r"X: expected finite values, received 1 NaN"):
        check_finite("X", np.array([1e308, 1e308, np.nan]))


def test_known_options_names_unknown_keys_and_refuses_non_mappings() -> None:
    from mlp.validation import known_options

    defaults = {"seed": 0, "lr": 0.1}
    config = {"lr": 1.0}
    assert known_options(config, defaults) is config
    with pytest.raises(
        ValueError, match=r"options: unknown \['bogus'\]; expected some of \['lr', 'seed'\]"
    ):
        known_options({"bogus": 1, "lr": 1.0}, defaults)
    with pytest.raises(TypeError, match="config: expected a mapping of options, received list"):
        known_options(["lr"], defaults)
