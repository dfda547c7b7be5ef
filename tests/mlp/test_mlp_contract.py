"""``mlp.contract`` agrees with ``einops.einsum`` on every pattern the library uses, and names the
axis, operand or layout that does not fit."""

import re
import sys
from pathlib import Path

import einops
import numpy as np
import pytest

import mlp

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"n": 3, "d": 4, "e": 6, "c": 5, "j": 2, "m": 7, "k": 4, "r": 3, "s": 2, "a": 2, "b": 3}
SIZES |= {"h": 2, "o": 5, "t": 4, "v": 6}

# every pattern the library passes to contract, directly or through mlp.threads.
# contract_by_prompts (test_the_table_is_the_librarys_patterns keeps
# this list equal to the source), with what it computes
LIBRARY = [
    ("n d c, n d j -> n c j", "scores X^T Q per prompt"),
    ("n d c, d j -> n c j", "scores X^T p with a shared query"),
    ("n d c, n c j -> n d j", "out = X S"),
    ("n d c, n c j -> d j", "dQ of a shared query: summed over the prompts"),
    ("n d j, n c j -> n d c", "dX = dOut S^T"),
    ("d j, n c j -> n d c", "dX = Q dScores^T with a shared Q"),
    ("e d, n d c -> n e c", "Q = W X"),
    ("e d, n e c -> n d c", "dX = W^T dQ"),
    ("d r, n r c -> n d c", "dX = WQ dT"),
    ("e d, n e j -> n d j", "dZ = W^T dQ"),
    ("n e c, n d c -> e d", "dW = sum dQ X^T"),
    ("d r, n d c -> n r c", "T = WQ^T X"),
    ("e r, n r c -> n e c", "Q = WK T"),
    ("e r, n e c -> n r c", "dT = WK^T dQ"),
    ("n e c, n r c -> e r", "dWK = sum dQ T^T"),
    ("n d c, n r c -> d r", "dWQ = sum X dT^T"),
    ("e d, n d j -> n e j", "Q = W Z"),
    ("n e j, n d j -> e d", "dW = sum dQ Z^T"),
    ("e r, d r -> e d", "W = WK WQ^T"),
    ("e d, d r -> e r", "dWK = dW WQ"),
    ("e d, e r -> d r", "dWQ = dW^T WK"),
    ("n d, d k -> n k", "linear head z = u v"),
    ("n d, n k -> d k", "dv = u^T dz"),
    ("n k, d k -> n d", "du = dz v^T"),
    ("n d, d m -> n m", "MLP hidden layer X W1"),
    ("n m, m k -> n k", "MLP logits H W2"),
    ("n d, n m -> d m", "dW1 = X^T D"),
    ("n m, n k -> m k", "dW2 = H^T G"),
    ("n k, m k -> n m", "G W2^T"),
    ("n m, d m -> n d", "D W1^T"),
    ("n d c, d -> n c", "v^T x of every token"),
    ("n d c, s d j -> s n c j", "scores of a trajectory of prompt queries"),
    ("s e d, n d j -> s n e j", "W_s Z along a trajectory"),
    ("n e c, s n e j -> s n c j", "scores along a trajectory"),
    ("m d, m k -> m d k", "outer products: SVM constraint rows"),
    ("m e, e d -> m d", "(x_a - x_t)^T W per constraint"),
    ("m d, m d -> m", "row-wise dot products"),
    ("m e, m d -> e d", "sum_m lambda_m (x_a - x_t) z^T"),
    ("n d c, n c -> n d", "in-context regression: sum_i y_i x_i per prompt"),
    ("n e, d e -> n d", "A h or W e_q per prompt"),
    ("n d, d e -> n e", "(S v)^T W per prompt"),
    ("n d, n d -> n", "x_q^T h per prompt"),
    ("n d c, n d -> n c", "in-context regression with depth: the examples' predictions X w"),
    ("n d c, n e c -> d e", "in-context regression with depth: the second moment of the x"),
    # the attention stack (k: a merged axis of heads and features)
    ("k d, n d t -> n k t", "every head's queries A' Y (or WQ^T Y) as one matrix"),
    ("e k, n k t -> n e t", "out = V' P: the heads' outputs summed"),
    ("n e t, n k t -> e k", "dV' = sum dOut P^T"),
    ("e k, n e t -> n k t", "dP = V'^T dOut"),
    ("n k t, n d t -> k d", "dA' = sum dQ Y^T"),
    ("k d, n k t -> n d t", "dY = A'^T dQ"),
    ("n d t, n k t -> d k", "dWQ = sum Y dQr^T (relative-key)"),
    ("h e r, h d r -> h e d", "A_h = WK_h WQ_h^T per head"),
    ("h e d, h d r -> h e r", "dWK_h = dA_h WQ_h"),
    ("h e d, h e r -> h d r", "dWQ_h = dA_h^T WK_h"),
    ("h o r, n h r t -> n h o t", "RK . Qr: the relative-key scores by offset"),
    ("n h o t, n h r t -> h o r", "dRK = sum dB Qr^T"),
    ("h o r, n h o t -> n h r t", "dQr = RK^T dB"),
    ("h e j, h j k -> h e k", "V_h = Vo_h Vv_h: a value path in two factors"),
    ("h e k, h j k -> h e j", "dVo_h = dV_h Vv_h^T"),
    ("h e j, h e k -> h j k", "dVv_h = Vo_h^T dV_h"),
    ("n d c, v d -> n c v", "token logits U X per position"),
    ("n c v, n d c -> v d", "dU = sum dZ^T X"),
    ("v d, n c v -> n d c", "dX = U^T dZ"),
    ("n d, e d -> n e", "W z of one query per prompt"),
    ("n e c, n e -> n c", "scores x_t^T (W z) of one query per prompt"),
    ("n e, n d -> e d", "sum_i (X_i a_i) z_i^T: a cross-attention gradient"),
    ("n d, s e d -> s n e", "W_s z_i along a trajectory"),
    ("s n e, n e c -> n s c", "scores along a trajectory"),
    ("s n d, s e d -> s n e", "W_s z_si: independent problems side by side"),
    ("s n e c, s n e -> s n c", "scores of independent problems"),
    ("s n e c, s n c -> s n e", "X_si a_si of independent problems"),
    ("s n e, s e d -> s n d", "V_s^T h_si of independent problems"),
    ("s n e, s n d -> s e d", "sum_i q_si z_si^T of independent problems"),
]
# shapes a matrix product allows beyond those: each still one matmul, no transpose
GENERAL = [
    ("a b c, a b d -> c d", "two contracted axes"),
    ("n d c, n d c -> n", "two contracted axes, batch kept"),
    ("m k, k m -> ", "trace of a product: everything contracted"),
    ("n, m -> n m", "outer product, nothing contracted"),
    ("n d, n d -> n d", "elementwise product"),
    ("d, d ->", "dot product"),
]
PATTERNS = LIBRARY + GENERAL


def test_the_table_is_the_librarys_patterns() -> None:
    used = set()
    for package in ("mlp", "attnlab"):
        for path in (ROOT / package).rglob("*.py"):
            used |= set(re.findall(r'contract(?:_by_prompts)?\(\s*"([^"]*)"', path.read_text()))
    assert used == {p for p, _ in LIBRARY}


@pytest.mark.parametrize(("pattern", "what"), PATTERNS, ids=[p for p, _ in PATTERNS])
def test_contract_agrees_with_einops_einsum(pattern: str, what: str) -> None:
    lhs, _ = pattern.split("->")
    a_axes, b_axes = (s.split() for s in lhs.split(","))
    rng = np.random.default_rng(len(pattern))
    a = rng.standard_normal([SIZES[x] for x in a_axes])
    b = rng.standard_normal([SIZES[x] for x in b_axes])
    expected = einops.einsum(a, b, pattern)
    got = mlp.contract(pattern, a, b)
    assert got.shape == expected.shape, what
    assert got.flags.c_contiguous, what
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=what)


def test_contract_keeps_float32() -> None:
    a = np.ones((2, 3), dtype=np.float32)
    b = np.ones((3, 4), dtype=np.float32)
    assert mlp.contract("n d, d m -> n m", a, b).dtype == np.float32


@pytest.mark.parametrize(
    ("pattern", "ashape", "bshape", "match"),
    [
        ("n d, d m -> n m", (5, 3), (4, 7), "axis 'd' has size 3 in operand 1 and 4 in operand 2"),
        ("n d c, n d j -> n c j", (2, 3, 4), (5, 3, 2), "axis 'n' has size 2 in operand 1 and 5"),
        ("e d, n d c -> n e c", (6, 3), (2, 4, 5), "axis 'd'"),
    ],
)
def test_size_mismatch_names_the_axis(pattern: str, ashape: tuple, bshape: tuple, match: str):
    with pytest.raises(ValueError, match=match):
        mlp.contract(pattern, np.ones(ashape), np.ones(bshape))


@pytest.mark.parametrize(
    ("ashape", "bshape", "match"),
    [
        ((2, 3), (2, 3, 4), r"operand 1 needs 3 axes \(n d c\), received shape \(2, 3\)"),
        ((2, 3, 4), (2, 3, 4, 1), r"operand 2 needs 3 axes \(n d j\), received shape"),
    ],
)
def test_wrong_number_of_axes_names_the_operand(ashape: tuple, bshape: tuple, match: str):
    with pytest.raises(ValueError, match=match):
        mlp.contract("n d c, n d j -> n c j", np.ones(ashape), np.ones(bshape))


@pytest.mark.parametrize(
    ("pattern", "match"),
    [
        ("n d d, d m -> n m", "repeated axis"),
        ("n d, d m -> n x", "output axis 'x' is in no operand"),
        ("n d d m -> n m", "expected a pattern"),
        ("n d, d m, m k -> n k", "expected a pattern"),
        ("n d, d m -> m", "axis 'n' of operand 1 is in neither the other operand nor the output"),
        ("d, n d m -> d", "axis 'n' of operand 2 is in neither"),
        # layouts that need a transpose of the product: the message gives the order to write
        ("n c j, n d c -> n d j", "the output of .* must be 'n j d'"),
        ("d m, m k -> k d", "must be 'd k'"),
        ("n d c, n d j -> j c n", "must be 'n c j'"),
        ("n d c, n e c -> n d e c", "must be 'n c d e'"),
    ],
)
def test_bad_patterns(pattern: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mlp.contract(pattern, np.ones((2, 2, 2)), np.ones((2, 2)))


def test_pattern_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="contract: pattern: expected a str"):
        mlp.contract(["n d, d m -> n m"], np.ones((2, 2)), np.ones((2, 2)))  # type: ignore[arg-type]


# batch-summed contractions are formed in chunks of axis 0 (cache-sized)
@pytest.mark.parametrize("chunk_bytes", [64, 2**21])  # 64: one prompt per chunk
@pytest.mark.parametrize(
    ("pattern", "a_shape", "b_shape"),
    [
        ("n e c, n d c -> e d", (7, 3, 5), (7, 4, 5)),  # dW of self attention
        ("n m e c, n m d c -> e d", (5, 2, 3, 4), (5, 2, 2, 4)),  # two summed axes
        ("n d c, n c j -> d j", (6, 3, 4), (6, 4, 2)),  # dQ of a shared query
    ],
)
def test_summed_contraction_in_chunks_equals_einsum(
    monkeypatch: pytest.MonkeyPatch, chunk_bytes: int, pattern: str, a_shape: tuple, b_shape: tuple
) -> None:
    contract_module = sys.modules["mlp.contract"]
    monkeypatch.setattr(contract_module, "_CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    expected = einops.einsum(a, b, pattern)
    got = contract_module.contract(pattern, a, b)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
