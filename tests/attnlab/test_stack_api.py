"""``AttentionStack``'s contract: the shapes of every public method and parameter, masked keys
(weight exactly 0, gradient exactly 0), bit-identical results for every thread count, the memory
check, float32, and a clear error for every bad input."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from stack_reference import parse, problem

import attnlab
import mlp.threads as threads_module
from attnlab import AttentionStack
from attnlab.blocks import memory as mem
from attnlab.blocks.attention import attend, attend_bias_grads
from attnlab.blocks.heads import MultiHeadAttention

N, D, C, CONTEXT, V = 3, 4, 5, 6, 7

# --- shapes -------------------------------------------------------------------------------------

#: (row, the parameters' shapes with h = 3 heads, r = 2 or d)
PARAM_SHAPES = [
    (
        "L2 H3 self softmax prompts>last",
        {"W0": (3, D, D), "V0": (3, D, D), "W1": (3, D, D), "V1": (3, D, D), "v": (D, 1)},
    ),
    (
        "L1 H3 kq softmax causal relative-key ln tokens>tokens r2",
        {
            "E": (D, V),
            "WK0": (3, D, 2),
            "WQ0": (3, D, 2),
            "V0": (3, D, D),
            "RK0": (3, CONTEXT, 2),
            "g0": (D,),
            "b0": (D,),
            "gF": (D,),
            "bF": (D,),
            "U": (V, D),
        },
    ),
    (
        "L3 H3 self softmax causal relative shared tokens>last k3",
        {"E": (D, V), "W0": (3, D, D), "V0": (3, D, D), "R0": (3, CONTEXT), "v": (D, 3)},
    ),
    (
        "L1 H1 self linear absolute prompts>last squared",
        {"P": (D, CONTEXT), "W0": (1, D, D), "V0": (1, D, D), "v": (D, 1)},
    ),
]


@pytest.mark.parametrize(("row", "shapes"), PARAM_SHAPES)
def test_parameter_keys_and_shapes(row: str, shapes: dict) -> None:
    model = AttentionStack(D, context=CONTEXT, **parse(row))
    assert {k: v.shape for k, v in model.params.items()} == shapes
    assert all(v.dtype == np.float64 for v in model.params.values())


#: (row, forward's shape, snapshot's shape) for N prompts of C tokens
METHOD_SHAPES = [
    ("L2 H3 self softmax causal prompts>last", (N, 1), (N, 2, 3, C, C)),
    ("L1 H1 kq linear exclude-last prompts>last k3", (N, 3), (N, 1, 1, C, C)),
    ("L3 H3 self softmax causal relative ln tokens>tokens", (N, V, C), (N, 3, 3, C, C)),
    ("L2 H1 kq softmax causal relative-key tokens>last squared", (N, 1), (N, 2, 1, C, C)),
]


@pytest.mark.parametrize(("row", "logits", "snap"), METHOD_SHAPES)
def test_shapes_of_every_public_method(row: str, logits: tuple, snap: tuple) -> None:
    model, X, y = problem(parse(row), seed=1, n=N, d=D, c=C, context=CONTEXT)
    assert model.forward(X).shape == logits
    weights = model.attention_weights(X)
    assert isinstance(weights, list) and len(weights) == model.layers
    assert all(S.shape == (N, model.heads, C, C) for S in weights)
    assert model.snapshot(X).shape == snap
    loss, grads = model.loss_and_grads(X, y)
    assert isinstance(loss, float)
    assert {k: g.shape for k, g in grads.items()} == {k: p.shape for k, p in model.params.items()}
    keys = {"loss"} if model.loss == "squared" else {"loss", "accuracy"}
    assert set(model.metrics(X, y)) == keys
    assert model.metrics(X, y)["loss"] == pytest.approx(loss, rel=1e-12)


def test_softmax_weights_are_columns_that_sum_to_one_and_match_the_formula() -> None:
    """``S[i, h, :, t]`` is query ``t``'s distribution over the keys ``s``."""
    model, X, _ = problem(parse("L2 H3 self softmax causal prompts>last"), seed=2)
    S0 = model.attention_weights(X)[0]
    np.testing.assert_allclose(S0.sum(axis=2), 1.0, rtol=1e-12)
    x = X[1]
    scores = x.T @ model.params["W0"][2] @ x
    scores[np.tril_indices(C, -1)] = -np.inf  # s > t masked
    e = np.exp(scores - scores.max(axis=0))
    np.testing.assert_allclose(S0[1, 2], e / e.sum(axis=0), rtol=1e-12)


# --- masked keys ----------------------------------------------------------------------------


@pytest.mark.parametrize("scores", ["softmax", "linear"])
@pytest.mark.parametrize("mask", ["causal", "exclude-last"])
def test_masked_keys_have_weight_and_gradient_exactly_zero(mask: str, scores: str) -> None:
    rng = np.random.default_rng(3)
    positions = "relative" if mask == "causal" else None
    layer = MultiHeadAttention(3, "self", scores, mask, positions)
    params = layer.init_params(D, CONTEXT, rng, np.dtype(np.float64))
    params = {k: v + 0.5 * rng.standard_normal(v.shape) for k, v in params.items()}
    Y = 5 * rng.standard_normal((N, D, C))  # large scores: far from uniform weights
    out, cache = layer.forward(params, Y)
    S = cache.weights  # (n, h, s, t)
    s, t = np.arange(C)[:, None], np.arange(C)[None, :]
    masked = s > t if mask == "causal" else np.broadcast_to(s == C - 1, (C, C))
    assert np.all(S[:, :, masked] == 0) and np.all(S[:, :, ~masked] != 0)
    # an upstream gradient at query 0 alone: under the causal mask only key 0 gets a gradient
    dOut = np.zeros_like(out)
    dOut[:, :, 0] = rng.standard_normal((N, D))
    _, dY = layer.backward(dOut, cache, params)
    if mask == "causal":
        assert np.all(dY[:, :, 1:] == 0) and np.all(dY[:, :, 0] != 0)
    # the gradient of every masked score is exactly 0 (the primitive's dBias)
    if scores == "softmax":
        Q = rng.standard_normal((N, D, 3 * C))
        bias = np.where(np.tile(masked, 3), -np.inf, rng.standard_normal((C, 3 * C)))
        _, pc = attend(Y, Q, bias)
        _, _, dB = attend_bias_grads(rng.standard_normal((N, D, 3 * C)), pc, bias="prompt")
        assert np.all(dB[:, np.tile(masked, 3)] == 0) and np.all(pc.S[:, np.tile(masked, 3)] == 0)


def test_relative_offsets_beyond_the_prompt_get_gradient_exactly_zero() -> None:
    for row in ("L2 H3 self softmax causal relative prompts>last", "L2 H1 kq linear causal "
                "relative-key tokens>tokens"):  # fmt: skip
        model, X, y = problem(parse(row), seed=4, c=4, context=CONTEXT)
        _, grads = model.loss_and_grads(X, y)
        key = "R" if "relative " in row + " " else "RK"
        for l in range(2):
            g = grads[f"{key}{l}"]
            assert np.all(g[:, 4:] == 0) and np.all(np.any(g[:, :4] != 0, axis=0))


# --- threads and memory ------------------------------------------------------------------------


@pytest.fixture
def pool_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pool threads each parallel region asked for (empty: no region ran in a pool)."""
    calls: list[int] = []
    real = threads_module._executor

    def spy(workers: int):
        calls.append(workers)
        return real(workers)

    monkeypatch.setattr(threads_module, "_executor", spy)
    return calls


@pytest.mark.parametrize(
    "row",
    [
        "L2 H2 self softmax causal relative ln tokens>tokens",
        "L2 H2 kq softmax causal relative-key prompts>last",
        "L2 H2 self linear exclude-last absolute shared prompts>last squared",
    ],
)
def test_results_are_bit_identical_for_every_thread_count(row: str, pool_calls: list) -> None:
    # S of one layer: 160 prompts x 32 x 64 float64 = 2.6 MB, in 3 blocks: the pool runs
    model, X, y = problem(parse(row), seed=5, n=160, d=8, c=32, context=32)
    results = []
    for k in (1, 2, 3):
        with attnlab.threads(k):
            loss, grads = model.loss_and_grads(X, y)
            weights = model.attention_weights(X)
        results.append((loss, grads, weights))
    if "softmax" in row:  # three threads: two from the pool (the linear form is BLAS's alone)
        assert 2 in pool_calls
    for loss, grads, weights in results[1:]:
        assert loss == results[0][0]
        assert all(np.array_equal(grads[k], results[0][1][k]) for k in grads)
        assert all(np.array_equal(a, b) for a, b in zip(weights, results[0][2], strict=True))


def test_memory_counts_the_weights_of_every_layer_and_head() -> None:
    sizes = mem.stack_activation_bytes(10, 8, 16, 3, 4)
    assert (
        sizes["the attention weights S of the 3 layers (n, l, h, c, c)"] == 10 * 3 * 4 * 16 * 16 * 8
    )
    training = sum(sizes.values())
    assert sum(mem.stack_activation_bytes(10, 8, 16, 3, 4, training=False).values()) < training
    assert sum(mem.stack_activation_bytes(20, 8, 16, 3, 4).values()) > training  # grows with n
    with pytest.raises(ValueError, match="heads: expected a positive integer, received 0"):
        mem.stack_activation_bytes(10, 8, 16, 3, 0)


MEMORY_CASES = [
    # row, n, d, c
    ("L2 H4 self softmax causal prompts>last", 64, 16, 64),
    ("L3 H2 self softmax causal relative ln tokens>tokens", 32, 16, 64),
    ("L2 H2 kq softmax causal relative-key prompts>last r8", 32, 16, 64),
    ("L2 H1 self linear exclude-last prompts>last squared", 64, 16, 64),
    ("L2 H2 self softmax ln shared prompts>last", 2, 8, 512),  # blocks of one prompt
]


@pytest.mark.parametrize(("row", "n", "d", "c"), MEMORY_CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_the_estimate_bounds_the_measured_peak(row: str, n: int, d: int, c: int, threads: int):
    model, X, y = problem(parse(row), seed=9, n=n, d=d, c=c, context=c)
    options = {
        "threads": threads,
        "rank": model.rank or d if model.positions == "relative-key" else 0,
        "layernorm": model.layernorm,
        "linear": model.scores == "linear",
        "vocab": model.vocab if model.readout == "tokens" else 0,
    }
    L, h = model.layers, model.heads
    with attnlab.threads(threads):
        for call, estimate in (
            (lambda: model.loss_and_grads(X, y), mem.stack_activation_bytes(
                n, d, c, L, h, last_query=model.readout == "last", **options)),
            (lambda: model.attention_weights(X), mem.stack_activation_bytes(
                n, d, c, L, h, training=False, **options)),
        ):  # fmt: skip
            call()  # warm-up: the pool's threads exist
            tracemalloc.start()
            call()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert peak <= sum(estimate.values()) <= 2 * peak


def test_a_step_that_cannot_fit_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    model = AttentionStack(8, layers=3, heads=4, mask="causal")
    monkeypatch.setattr(mem, "available_bytes", lambda: 10**9)
    X = np.zeros((1, 8, 4))  # the check runs before anything is allocated
    with pytest.raises(MemoryError) as err:
        model.check_fits(64, 100_000)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(
        "a training step of the attention stack on a batch of 64 prompts of c=100000 tokens "
        "(L=3 layers of h=4 heads, d=8, float64) needs"
    )
    assert "of it for the attention weights S of the 3 layers (n, l, h, c, c)" in text
    assert text.endswith("1.0 GB are available")
    model.forward(X)  # small: fits


@pytest.mark.parametrize(
    "row",
    ["L2 H3 self softmax causal relative ln prompts>last", "L2 H2 kq linear causal relative-key "
     "ln shared tokens>tokens"],
)  # fmt: skip
def test_float32_stays_float32(row: str) -> None:
    """A float32 model computes in float32, from float32 or float64 prompts."""
    kwargs = parse(row)
    model = AttentionStack(D, context=CONTEXT, dtype=np.float32, **kwargs)
    _, X, y = problem(kwargs, seed=6)
    for given in (X, X.astype(np.float32)) if model.vocab is None else (X,):
        _, grads = model.loss_and_grads(given, y)
        assert model.forward(given).dtype == np.float32
        assert {k: g.dtype for k, g in grads.items()} == {k: np.float32 for k in model.params}
        assert model.attention_weights(given)[1].dtype == np.float32


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"d": 0}, ValueError, r"d: expected a positive integer, received 0"),
        ({"layers": 0}, ValueError, r"layers: expected a positive integer, received 0"),
        ({"heads": 1.5}, ValueError, r"heads: expected a positive integer, received 1.5"),
        ({"attention": "cross"}, ValueError, r"attention: expected one of 'self', 'kq', rec"),
        ({"scores": "relu"}, ValueError, r"scores: expected one of 'softmax', 'linear', rec"),
        ({"mask": "future"}, ValueError, r"mask: expected one of None, 'causal', 'exclude-l"),
        ({"positions": "rotary"}, ValueError, r"positions: expected one of None, 'absolute'"),
        ({"readout": "mean"}, ValueError, r"readout: expected one of 'last', 'tokens', rec"),
        ({"context": 0}, ValueError, r"context: expected a positive integer, received 0"),
        ({"vocab": -3}, ValueError, r"vocab: expected a positive integer, received -3"),
        ({"layernorm": 1}, TypeError, r"layernorm: expected True or False, received 1"),
        ({"shared": "yes"}, TypeError, r"shared: expected True or False, received 'yes'"),
        ({"dtype": np.int64}, ValueError, r"dtype: expected float32 or float64, received int64"),
        ({"seed": -1}, ValueError, r"seed: expected a non-negative integer, received -1"),
        ({"loss": "hinge"}, ValueError, r"loss: expected one of 'logistic', 'cross_entropy'"),
    ],
)
def test_bad_options_are_refused(kwargs: dict, error: type, message: str) -> None:
    args = {"d": D} | kwargs
    with pytest.raises(error, match=message):
        AttentionStack(**args)


PROMPTS = AttentionStack(D, layers=2, heads=2, context=CONTEXT, mask="causal")
TOKENS = AttentionStack(D, layers=2, vocab=V, readout="tokens", context=CONTEXT)
LINEAR = AttentionStack(D, scores="linear", loss="squared")
GOOD_X = np.zeros((N, D, C))
GOOD_T = np.zeros((N, C), dtype=int)


@pytest.mark.parametrize(
    ("model", "X", "y", "message"),
    [
        (
            PROMPTS,
            np.zeros((N, D)),
            np.ones(N),
            r"X: expected a 3-d array, received shape \(3, 4\)",
        ),
        (
            PROMPTS,
            np.zeros((N, 5, C)),
            np.ones(N),
            r"X: expected prompts of shape \(n >= 1, d=4, c",
        ),
        (PROMPTS, np.zeros((0, D, C)), np.ones(0), r"X: expected prompts of shape \(n >= 1, d=4"),
        (PROMPTS, np.zeros((N, D, 7)), np.ones(N), r"X: expected at most context=6 tokens per pro"),
        (PROMPTS, GOOD_X.astype(complex), np.ones(N), r"X: expected a real numeric array"),
        (PROMPTS, GOOD_X, np.ones(N + 1), r"y: expected shape \(n=3,\), received \(4,\)"),
        (PROMPTS, GOOD_X, np.zeros(N), r"y: expected labels in \{-1, \+1\} for the logistic"),
        (LINEAR, np.zeros((N, D, 1)), np.ones(N), r"X: expected c >= 2 tokens \(scores='linear'"),
        (LINEAR, GOOD_X, np.array([1.0, np.nan, 0]), r"y: expected finite values, received 1 NaN"),
        (TOKENS, GOOD_X, GOOD_T, r"X: expected integer tokens of shape \(n >= 1, c >= 1\) for v"),
        (TOKENS, GOOD_T + 7, GOOD_T, r"X: expected tokens in 0..6 \(vocab=7\), received 7"),
        (TOKENS, GOOD_T - 1, GOOD_T, r"X: expected tokens in 0..6 \(vocab=7\), received -1"),
        (TOKENS, GOOD_T + 0.5, GOOD_T, r"X: expected integer tokens, received non-integer"),
        (TOKENS, GOOD_T, np.zeros(N), r"y: expected integer targets of shape \(n=3, c=5\), one "),
        (TOKENS, GOOD_T, GOOD_T + 7, r"y: expected class labels in 0..6, received 7"),
    ],
)
def test_bad_inputs_are_refused_naming_them(model, X, y, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        model.loss_and_grads(X, y)


def test_tokens_given_as_whole_floats_are_accepted() -> None:
    """Tokens given as whole floats (say, read back from a float array) count as tokens."""
    T = np.random.default_rng(7).integers(0, V, size=(N, C))
    y = np.roll(T, -1, axis=1)
    assert TOKENS.loss_and_grads(T.astype(float), y)[0] == TOKENS.loss_and_grads(T, y)[0]


def test_nan_and_bad_parameters_are_named() -> None:
    model = AttentionStack(D, layers=2, heads=2, mask="causal")
    X = np.random.default_rng(8).standard_normal((N, D, C))
    y = np.ones(N)
    bad = X.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"X: expected finite values, received 1 NaN or inf"):
        model.loss_and_grads(bad, y)
    model.params["V1"] = model.params["V1"].copy()
    model.params["V1"][0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"params\['V1'\]: expected finite values"):
        model.forward(X)
    model.params["V1"] = np.zeros((2, D, D + 1))
    with pytest.raises(ValueError, match=r"params\['V1'\]: expected a float array of shape \(2, 4"):
        model.forward(X)
    del model.params["V1"]
    with pytest.raises(ValueError, match=r"params\['V1'\]: expected .* received missing"):
        model.metrics(X, y)
