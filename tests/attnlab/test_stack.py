"""``AttentionStack``: every configuration of a table crossing layers {1, 2, 3}, heads {1, 3},
self/kq, softmax/linear, each mask, each positions option, layer norm on/off, shared on/off,
real prompts and tokens, and both readouts, against PyTorch autograd in float64 (loss and every
gradient to a relative 1e-9; skipped without torch) and against central differences (always).

A row reads ``L<layers> H<heads> <attention> <scores> [mask] [positions] [ln] [shared]
<input>><readout> [k<classes> | squared] [r<rank>]``. Rows left out are the invalid
combinations (relative positions without the causal mask, relative-key without kq, the tokens
readout without tokens): ``test_invalid_combinations_are_refused`` shows that each is refused.
"""

from __future__ import annotations

import numpy as np
import pytest
from stack_reference import finite_difference_errors, parse, problem, torch_loss_and_grads

from attnlab import AttentionStack

TABLE = [
    # one layer, one head: the plain layer under each mask and score form
    "L1 H1 self softmax prompts>last",
    "L1 H1 self softmax causal prompts>last",
    "L1 H1 self softmax exclude-last prompts>last",
    "L1 H1 self linear prompts>last squared",
    "L1 H1 self linear exclude-last prompts>last squared",
    "L1 H1 kq linear causal prompts>last r2",
    "L1 H1 kq softmax causal relative-key tokens>tokens r3",
    "L1 H3 self softmax causal relative tokens>tokens",
    "L1 H3 kq softmax exclude-last absolute prompts>last k3",
    "L1 H3 self linear causal relative ln prompts>last",
    # two layers
    "L2 H1 self softmax causal relative tokens>tokens",
    "L2 H1 self softmax causal relative ln tokens>tokens",
    "L2 H1 kq softmax causal relative-key ln tokens>tokens",
    "L2 H1 kq linear causal relative-key prompts>last",
    "L2 H1 self linear exclude-last shared prompts>last squared",
    "L2 H1 kq softmax absolute ln shared tokens>last k3",
    "L2 H3 self softmax prompts>last",
    "L2 H3 self softmax causal ln prompts>last",
    "L2 H3 kq softmax causal relative-key shared tokens>tokens r2",
    "L2 H3 self softmax exclude-last absolute ln tokens>last",
    "L2 H3 kq linear absolute prompts>last squared r3",
    "L2 H3 self linear causal relative shared prompts>last",
    "L2 H3 kq softmax causal absolute ln tokens>tokens",
    "L2 H3 self softmax causal relative ln shared tokens>tokens",
    "L2 H1 self linear ln prompts>last k3",
    "L2 H3 kq linear exclude-last ln shared prompts>last",
    # three layers
    "L3 H1 self softmax causal ln tokens>tokens",
    "L3 H1 kq softmax exclude-last prompts>last",
    "L3 H1 self linear causal absolute prompts>last squared",
    "L3 H1 kq softmax causal relative-key tokens>last",
    "L3 H1 self softmax shared prompts>last k3",
    "L3 H3 self softmax causal relative tokens>tokens",
    "L3 H3 kq softmax causal relative ln shared prompts>last",
    "L3 H3 self linear exclude-last ln prompts>last squared",
    "L3 H3 kq linear causal relative-key ln tokens>tokens",
    "L3 H3 self softmax absolute shared tokens>tokens",
    "L3 H3 kq softmax causal ln tokens>last r2",
    "L3 H1 kq linear ln shared prompts>last",
    "L3 H3 self softmax exclude-last absolute ln prompts>last k3",
    "L3 H3 kq softmax causal relative-key ln shared tokens>tokens",
]
DEFAULTS = {
    "layers": 1,
    "heads": 1,
    "attention": "self",
    "scores": "softmax",
    "mask": None,
    "positions": None,
    "layernorm": False,
    "shared": False,
    "vocab": None,
    "readout": "last",
    "loss": None,
    "n_classes": 1,
}
#: The invalid combinations: keyword arguments and the start of their error.
INVALID = [
    ({"positions": "relative"}, r"positions: 'relative' needs mask='causal'"),
    ({"positions": "relative", "mask": "exclude-last"}, r"positions: 'relative' needs mask="),
    ({"positions": "relative-key", "attention": "kq"}, r"positions: 'relative-key' needs mask="),
    ({"positions": "relative-key", "mask": "causal"}, r"positions: 'relative-key' adds a vector"),
    ({"readout": "tokens"}, r"readout: 'tokens' predicts a token at every position, so it needs"),
    ({"readout": "tokens", "vocab": 7, "n_classes": 3}, r"n_classes: readout='tokens' predicts"),
    ({"readout": "tokens", "vocab": 7, "loss": "squared"}, r"loss: readout='tokens' uses the"),
    ({"loss": "squared", "n_classes": 3}, r"loss: 'squared' needs n_classes=1"),
    ({"loss": "cross_entropy"}, r"loss: 'cross_entropy' needs n_classes >= 2"),
    ({"rank": 2}, r"rank: only attention='kq' has a rank"),
]


def test_the_table_covers_every_option() -> None:
    rows = [DEFAULTS | parse(row) for row in TABLE]
    assert len(rows) == 40
    for key, values in {
        "layers": {1, 2, 3},
        "heads": {1, 3},
        "attention": {"self", "kq"},
        "scores": {"softmax", "linear"},
        "mask": {None, "causal", "exclude-last"},
        "positions": {None, "absolute", "relative", "relative-key"},
        "layernorm": {False, True},
        "shared": {False, True},
        "vocab": {None, 7},
        "readout": {"last", "tokens"},
        "loss": {None, "squared"},
        "n_classes": {1, 3},
    }.items():
        assert {r[key] for r in rows} == values, key
    # each score form meets each mask, and each positions option both layer norm settings
    assert {(r["scores"], r["mask"]) for r in rows} == {
        (s, m) for s in ("softmax", "linear") for m in (None, "causal", "exclude-last")
    }
    assert {(r["positions"], r["layernorm"]) for r in rows} == {
        (p, ln) for p in (None, "absolute", "relative", "relative-key") for ln in (False, True)
    }


@pytest.mark.parametrize("row", TABLE)
def test_gradients_match_central_differences(row: str) -> None:
    model, X, y = problem(parse(row), seed=TABLE.index(row))
    _, grads = model.loss_and_grads(X, y)
    errors = finite_difference_errors(model, X, y, grads)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("row", TABLE)
def test_loss_and_gradients_match_pytorch_autograd(row: str) -> None:
    pytest.importorskip("torch")
    model, X, y = problem(parse(row), seed=TABLE.index(row))
    loss, grads = model.loss_and_grads(X, y)
    ref_loss, ref = torch_loss_and_grads(model, X, y)
    assert abs(loss - ref_loss) <= 1e-9 * abs(ref_loss)
    assert set(grads) == set(ref) == set(model.params)
    for k, g in ref.items():
        assert grads[k].shape == g.shape and grads[k].dtype == np.float64
        scale = max(float(np.max(np.abs(g))), 1e-300)
        error = float(np.max(np.abs(grads[k] - g))) / scale
        assert error <= 1e-9, (k, error)


@pytest.mark.parametrize(("kwargs", "message"), INVALID)
def test_invalid_combinations_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AttentionStack(4, context=6, **kwargs)


def test_positions_need_a_context() -> None:
    for positions in ("absolute", "relative", "relative-key"):
        with pytest.raises(ValueError, match=rf"context: positions='{positions}' needs the"):
            AttentionStack(4, positions=positions, mask="causal", attention="kq")
