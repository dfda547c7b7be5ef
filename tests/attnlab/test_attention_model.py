"""ContextWindowModel: all 40 configurations (5 attentions x 2 pools x 2 heads x K in {1, 3}).

Shapes are written out per configuration (never read from the model), every parameter of every
configuration is checked by central differences in float64 (relative error < 1e-6), float32 stays
float32, and each documented error is raised with its message.

Problem sizes: ``n = 4`` prompts, ``d = 3`` features, ``c = 5`` tokens, ``m = 5`` hidden units;
``rank r = 2 != d`` for kq and cross-kq, ``n_queries = 2`` for prompt, ``Z`` with ``j = 3``
for cross and cross-kq.
"""

import itertools

import numpy as np
import pytest
from gradcheck import check_gradient, rel_error

from attnlab import ContextWindowModel

N, D, C, M, R, NQ, JZ = 4, 3, 5, 5, 2, 2, 3

# the attention's parameters and the number of query columns j of S, written out
ATTENTION_SHAPES = {
    "prompt": ({"p": (3, 2)}, 2),
    "self": ({"W": (3, 3)}, 5),
    "kq": ({"WK": (3, 2), "WQ": (3, 2)}, 5),
    "cross": ({"W": (3, 3)}, 3),
    "cross-kq": ({"WK": (3, 2), "WQ": (3, 2)}, 3),
}
# the head's parameters for K = 1 and K = 3, written out
HEAD_SHAPES = {
    ("linear", 1): {"v": (3, 1)},
    ("linear", 3): {"v": (3, 3)},
    ("mlp", 1): {"W1": (3, 5), "b1": (5,), "W2": (5, 1), "b2": (1,)},
    ("mlp", 3): {"W1": (3, 5), "b1": (5,), "W2": (5, 3), "b2": (3,)},
}
ATTENTIONS = ("prompt", "self", "kq", "cross", "cross-kq")
CONFIGS = list(itertools.product(ATTENTIONS, ("mean", "last"), ("linear", "mlp"), (1, 3)))
CONFIG_IDS = ["-".join(map(str, c)) for c in CONFIGS]
assert len(CONFIGS) == 40


def _model(attention: str, pool: str, head: str, k: int, dtype: type = np.float64):
    seed = CONFIGS.index((attention, pool, head, k))
    return ContextWindowModel(
        D, attention=attention, pool=pool, head=head, n_classes=k, n_queries=NQ, rank=R,
        hidden=M, seed=seed, dtype=dtype,
    )  # fmt: skip


def _data(attention: str, k: int, seed: int = 0) -> tuple:
    """Prompts ``X (n, d, c)``, labels ``y`` and (cross variants only) queries ``Z (n, d, j)``."""
    rng = np.random.default_rng([seed, k, len(attention)])
    X = rng.standard_normal((N, D, C))
    y = rng.choice([-1, 1], size=N) if k == 1 else rng.integers(0, k, size=N)
    Z = rng.standard_normal((N, D, JZ)) if attention.startswith("cross") else None
    return X, y, Z


def _scores(model: ContextWindowModel, X: np.ndarray, Z: np.ndarray | None) -> np.ndarray:
    """``X^T Q`` of every prompt, computed here with plain numpy, per prompt."""
    P = model.params
    out = []
    for i in range(X.shape[0]):
        x = X[i]
        if model.attention == "prompt":
            Q = P["p"]
        elif model.attention == "self":
            Q = P["W"] @ x
        elif model.attention == "kq":
            Q = P["WK"] @ P["WQ"].T @ x
        elif model.attention == "cross-kq":
            Q = P["WK"] @ P["WQ"].T @ Z[i]
        else:
            Q = P["W"] @ Z[i]
        out.append(x.T @ Q)
    return np.stack(out)


@pytest.mark.parametrize(("attention", "pool", "head", "k"), CONFIGS, ids=CONFIG_IDS)
def test_shapes(attention: str, pool: str, head: str, k: int) -> None:
    model = _model(attention, pool, head, k)
    X, y, Z = _data(attention, k)
    attn_shapes, j = ATTENTION_SHAPES[attention]
    expected = {**attn_shapes, **HEAD_SHAPES[(head, k)]}

    assert list(model.params) == list(expected)
    assert {key: v.shape for key, v in model.params.items()} == expected
    assert model.forward(X, Z).shape == (4, k)
    assert model.attention_weights(X, Z).shape == (4, 5, j)
    assert model.predict(X, Z).shape == (4,)
    loss, grads = model.loss_and_grads(X, y, Z)
    assert isinstance(loss, float) and np.isfinite(loss)
    assert list(grads) == list(expected)
    assert {key: g.shape for key, g in grads.items()} == expected
    assert all(g.dtype == np.float64 for g in grads.values())


@pytest.mark.parametrize(("attention", "pool", "head", "k"), CONFIGS, ids=CONFIG_IDS)
def test_every_parameter_matches_finite_differences(attention, pool, head, k) -> None:
    model = _model(attention, pool, head, k)
    X, y, Z = _data(attention, k, seed=1)
    scores = _scores(model, X, Z)
    assert (
        0.3 < np.std(scores) < 5
    )  # scores of order one: the softmax is neither flat nor saturated
    _, grads = model.loss_and_grads(X, y, Z)

    def loss(_: np.ndarray) -> float:
        return model.loss_and_grads(X, y, Z)[0]

    for key, g in grads.items():
        assert np.abs(g).max() > 1e-6, key  # an informative gradient
        check_gradient(loss, model.params[key], g, name=key)
    # fresh arrays on every call, never accumulated
    _, again = model.loss_and_grads(X, y, Z)
    for key in grads:
        assert again[key] is not grads[key]
        np.testing.assert_array_equal(again[key], grads[key])


@pytest.mark.parametrize(("attention", "pool", "head", "k"), CONFIGS, ids=CONFIG_IDS)
def test_forward_matches_the_formulas_written_out(attention, pool, head, k) -> None:
    """Logits and weights against a per-prompt numpy computation of the model's formulas
    (``docs/concepts.md``, the context-window model)."""
    model = _model(attention, pool, head, k)
    X, _, Z = _data(attention, k, seed=2)
    scores = _scores(model, X, Z)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    S = e / e.sum(axis=1, keepdims=True)
    out = np.stack([X[i] @ S[i] for i in range(N)])
    u = out.mean(axis=2) if pool == "mean" else out[:, :, -1]
    P = model.params
    if head == "linear":
        z = u @ P["v"]
    else:
        z = np.maximum(u @ P["W1"] + P["b1"], 0) @ P["W2"] + P["b2"]
    assert rel_error(model.attention_weights(X, Z), S) < 1e-13
    assert rel_error(model.forward(X, Z), z) < 1e-13


@pytest.mark.parametrize(("attention", "pool", "head", "k"), CONFIGS, ids=CONFIG_IDS)
def test_float32_stays_float32(attention, pool, head, k) -> None:
    model = _model(attention, pool, head, k, dtype=np.float32)
    assert all(v.dtype == np.float32 for v in model.params.values())
    X, y, Z = _data(attention, k, seed=3)
    X32 = X.astype(np.float32)
    Z32 = None if Z is None else Z.astype(np.float32)
    assert model.forward(X32, Z32).dtype == np.float32
    assert model.attention_weights(X32, Z32).dtype == np.float32
    loss, grads = model.loss_and_grads(X32, y, Z32)
    assert np.isfinite(loss)
    for key, g in grads.items():
        assert g.dtype == np.float32, key
        assert g.shape == model.params[key].shape, key

    # the same computation in float64 agrees to float32 accuracy
    model64 = _model(attention, pool, head, k)
    model64.params = {key: v.astype(np.float64) for key, v in model.params.items()}
    Z64 = None if Z32 is None else Z32.astype(np.float64)
    _, grads64 = model64.loss_and_grads(X32.astype(np.float64), y, Z64)
    for key in grads:
        assert rel_error(grads[key], grads64[key]) < 1e-3, key


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_scores_around_1e4_give_finite_outputs_and_gradients(attention: str, head: str) -> None:
    model = _model(attention, "mean", head, 3)
    X, y, Z = _data(attention, 3, seed=4)
    for key in ("p", "W", "WK", "WQ"):
        if key in model.params:
            model.params[key] = model.params[key] * (1e4 if key != "WQ" else 1.0)
    scores = _scores(model, X, Z)
    assert np.abs(scores).max() > 5e3
    S = model.attention_weights(X, Z)
    assert np.all((S >= 0) & (S <= 1))
    np.testing.assert_allclose(S.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.isfinite(model.forward(X, Z)).all()
    loss, grads = model.loss_and_grads(X, y, Z)
    assert np.isfinite(loss)
    for key, g in grads.items():
        assert np.isfinite(g).all(), key


def test_replacing_a_parameter_takes_effect_in_forward() -> None:
    model = _model("prompt", "mean", "linear", 1)
    X, _, _ = _data("prompt", 1, seed=5)
    before = model.forward(X)
    # p = 0: every weight is 1/c, out = the mean token; v picks feature 0
    model.params["p"] = np.zeros((3, 2))
    model.params["v"] = np.array([[1.0], [0.0], [0.0]])
    after = model.forward(X)
    np.testing.assert_allclose(after[:, 0], X[:, 0, :].mean(axis=1), rtol=1e-14)
    assert rel_error(before, after) > 1e-3
    np.testing.assert_allclose(model.attention_weights(X), np.full((4, 5, 2), 0.2), rtol=1e-15)

    mlp_model = _model("self", "last", "mlp", 3)
    mlp_model.params["W1"] = np.zeros((3, 5))
    mlp_model.params["b2"] = np.array([1.0, 2.0, 3.0])
    # hidden units: relu(b1), the same for every prompt: logits = relu(b1) W2 + b2
    expected = np.maximum(mlp_model.params["b1"], 0) @ mlp_model.params["W2"] + [1.0, 2.0, 3.0]
    np.testing.assert_allclose(mlp_model.forward(X), np.tile(expected, (4, 1)), rtol=1e-14)


# --- errors: each names the argument, the expected and the received value or shape ----------


def test_wrong_ndim_of_X() -> None:
    model = _model("self", "mean", "linear", 1)
    with pytest.raises(ValueError, match=r"X: expected a 3-d array, received shape \(3, 5\)"):
        model.forward(np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"X: expected a 3-d array, received shape \(1, 4, 3, 5\)"):
        model.loss_and_grads(np.ones((1, 4, 3, 5)), np.ones(1))


def test_d_of_X_not_matching_the_model() -> None:
    model = _model("kq", "mean", "mlp", 3)
    match = r"X: expected d=3 features per token \(the model's d\), received shape \(4, 2, 5\)"
    for call in (model.forward, model.attention_weights, model.predict):
        with pytest.raises(ValueError, match=match):
            call(np.ones((4, 2, 5)))
    with pytest.raises(ValueError, match=match):
        model.loss_and_grads(np.ones((4, 2, 5)), np.zeros(4, dtype=int))


def test_Z_missing_for_cross_and_given_for_others() -> None:
    X, y, Z = _data("cross", 1)
    cross = _model("cross", "mean", "linear", 1)
    with pytest.raises(ValueError, match=r"Z: cross attention needs the queries Z of shape"):
        cross.forward(X)
    with pytest.raises(ValueError, match=r"Z: cross-kq attention needs the queries Z of shape"):
        _model("cross-kq", "mean", "linear", 1).forward(X)
    with pytest.raises(ValueError, match=r"Z: cross attention needs the queries Z"):
        cross.loss_and_grads(X, y)
    with pytest.raises(
        ValueError, match=r"Z: expected shape \(n=4, d=3, j\) to match X, received \(4, 2, 3\)"
    ):
        cross.forward(X, Z[:, :2])
    Zbad = Z.copy()
    Zbad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"Z: expected finite values"):
        cross.forward(X, Zbad)
    for attention in ("prompt", "self", "kq"):
        model = _model(attention, "mean", "linear", 1)
        with pytest.raises(
            ValueError, match=rf"Z: only cross attention takes queries Z.*'{attention}'"
        ):
            model.forward(X, Z)


@pytest.mark.parametrize(
    ("y", "received"), [([1, -1, 0, 1], "0"), ([1, 2, -1, 1], "2"), ([1.0, -1.0, 0.5, 1.0], "0.5")]
)
def test_labels_outside_plus_minus_1_for_the_logistic_loss(y: list, received: str) -> None:
    model = _model("self", "mean", "linear", 1)
    X, _, _ = _data("self", 1)
    match = r"y: expected labels in \{-1, \+1\} for the logistic loss, received " + received
    with pytest.raises(ValueError, match=match):
        model.loss_and_grads(X, np.array(y))


@pytest.mark.parametrize(("y", "received"), [([0, 1, 3, 2], "3"), ([0, -1, 1, 2], "-1")])
def test_labels_outside_0_to_K_minus_1(y: list, received: str) -> None:
    model = _model("prompt", "last", "mlp", 3)
    X, _, _ = _data("prompt", 3)
    with pytest.raises(
        ValueError, match=rf"y: expected class labels in 0\.\.2, received {received}"
    ):
        model.loss_and_grads(X, np.array(y))


def test_labels_of_the_wrong_length() -> None:
    model = _model("prompt", "last", "mlp", 3)
    X, _, _ = _data("prompt", 3)
    with pytest.raises(ValueError, match=r"y: expected shape \(n=4,\), received \(3,\)"):
        model.loss_and_grads(X, np.array([0, 1, 2]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X(bad: float) -> None:
    model = _model("self", "mean", "linear", 1)
    X, y, _ = _data("self", 1)
    X[2, 1, 3] = bad
    match = r"X: expected finite values, received 1 NaN or inf entries"
    with pytest.raises(ValueError, match=match):
        model.forward(X)
    with pytest.raises(ValueError, match=match):
        model.loss_and_grads(X, y)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attention": "softmax"}, r"attention: expected one of 'prompt', 'self', 'kq', 'cross', "
                                   r"'cross-kq', received 'softmax'"),
        ({"pool": "max"}, r"pool: expected one of 'mean', 'last', received 'max'"),
        ({"head": "conv"}, r"head: expected one of 'linear', 'mlp', received 'conv'"),
    ],
)  # fmt: skip
def test_unknown_attention_pool_head_lists_the_valid_ones(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ContextWindowModel(3, **kwargs)


def test_complex_X_is_a_type_error() -> None:
    model = _model("self", "mean", "linear", 1)
    with pytest.raises(TypeError, match=r"X: expected a real numeric array .* complex128"):
        model.forward(np.ones((4, 3, 5), dtype=complex))


def test_non_finite_parameter_is_refused_by_name() -> None:
    """A NaN assigned to ``params`` gave a NaN loss and RuntimeWarnings instead of an error."""
    model = _model("kq", "mean", "mlp", 3)
    X, y, _ = _data("kq", 3)
    model.params["WQ"] = model.params["WQ"].copy()
    model.params["WQ"][0, 0] = np.nan
    match = r"params\['WQ'\]: expected finite values, received 1 NaN or inf entries"
    with pytest.raises(ValueError, match=match):
        model.forward(X)
    with pytest.raises(ValueError, match=match):
        model.loss_and_grads(X, y)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dtype": "foo"}, TypeError, r"dtype: expected float32 or float64, received 'foo'"),
        ({"dtype": np.int32}, ValueError, r"dtype: expected float32 or float64, received int32"),
        ({"seed": -1}, ValueError, r"seed: expected a non-negative integer, received -1"),
        ({"seed": "a"}, ValueError, r"seed: expected a non-negative integer, received 'a'"),
        ({"textbook_backward": "yes"}, TypeError, r"textbook_backward: expected True or False"),
    ],
)  # fmt: skip
def test_constructor_errors_name_the_argument(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ContextWindowModel(3, **kwargs)
