"""``mlp.contract`` agrees with ``np.einsum`` and names the axis or operand that does not fit."""

import sys

import numpy as np
import pytest

import mlp

SIZES = {"n": 3, "d": 4, "e": 6, "c": 5, "j": 2, "m": 7, "k": 4, "a": 2, "b": 3}

# (pattern, what it exercises)
PATTERNS = [
    ("n d, d m -> n m", "plain matmul"),
    ("n d c, n d j -> n c j", "batch axis: X^T Q per prompt"),
    ("n c j, n d c -> n d j", "batch axis, operands in the other order: X S"),
    ("e d, n d c -> n e c", "shared first operand: W X"),
    ("n d c, d j -> n c j", "shared second operand: X^T p"),
    ("d m, n d -> n m", "shared operand first, output rows from the second"),
    ("a b c, a b d -> c d", "two contracted axes"),
    ("n d c, n d c -> n", "two contracted axes, batch kept"),
    ("n d, n m -> d m", "contract over the batch: X^T D"),
    ("n d c, n d j -> n j c", "output order swapped"),
    ("n d c, n e c -> n e d", "output order swapped, contracted last axis"),
    ("m k, k m -> ", "trace of a product: everything contracted"),
    ("d m, m k -> k d", "transposed output"),
    ("n d c, n d j -> j c n", "batch axis moved last"),
    ("n d, d m -> m", "an axis summed away (n only in operand 1)"),
    ("n d c, d -> n c", "a vector operand"),
    ("n d, m -> n m", "outer product, nothing contracted"),
    ("n d, n d -> n d", "elementwise product"),
    ("n d c, n e c -> n d e c", "batch axes on both sides, nothing contracted"),
    ("d, d ->", "dot product"),
]


@pytest.mark.parametrize(("pattern", "what"), PATTERNS, ids=[p for p, _ in PATTERNS])
def test_contract_agrees_with_einsum(pattern: str, what: str) -> None:
    lhs, out = pattern.split("->")
    a_axes, b_axes = (s.split() for s in lhs.split(","))
    rng = np.random.default_rng(len(pattern))
    a = rng.standard_normal([SIZES[x] for x in a_axes])
    b = rng.standard_normal([SIZES[x] for x in b_axes])
    spec = f"{''.join(a_axes)},{''.join(b_axes)}->{''.join(out.split())}"
    expected = np.einsum(spec, a, b)
    got = mlp.contract(pattern, a, b)
    assert got.shape == expected.shape, what
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
    ],
)
def test_bad_patterns(pattern: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mlp.contract(pattern, np.ones((2, 2, 2)), np.ones((2, 2)))


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
    spec = pattern.replace(" ", "")
    expected = np.einsum(spec, a, b)
    got = contract_module.contract(pattern, a, b)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
