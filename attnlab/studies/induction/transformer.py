"""The two-layer attention-only transformer of Edelman et al. (``mingpt/model_rpe.py``) on the
stack (:class:`attnlab.models.stack.AttentionStack`), at their initialization, with their
value path as two matrices.

Their layer maps the normed tokens to values with one matrix and the heads' output back to the
residual stream with another (``c_proj``); the stack has one value-output matrix per head,
``V{l}[h]``. :class:`FactoredValues` trains the two factors, ``V{l} = Vo{l} Vv{l}`` per head
(``Vo``: their output projection, ``Vv``: their value matrix): the stack computes with the
product, and the factors' gradients are ``dVo = dV Vv^T``, ``dVv = Vo^T dV``. The product
starts at about ``0.01 * 0.02 * sqrt(d)`` per entry and, under AdamW, grows from both factors
at once: more slowly at first than one matrix would (measured: the drop comes later with one
matrix; see docs/induction.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attnlab.models.stack import AttentionStack
from mlp.contract import contract

__all__ = ["FactoredValues", "decayed", "make_stack"]

#: The stack's options of the authors' model (the rest is given to :func:`make_stack`).
STACK = {"layers": 2, "heads": 1, "attention": "kq", "mask": "causal", "readout": "tokens",
         "layernorm": True}  # fmt: skip


class FactoredValues:
    """An :class:`AttentionStack` whose value-output matrices are products ``V{l} = Vo{l}
    Vv{l}`` (``(h, d, d)`` each, per head) of two trained factors.

    ``params``: the stack's keys but ``V{l}``, and ``Vo{l}``, ``Vv{l}``. Every method sets the
    stack's ``V{l}`` from the factors first, then runs the stack's: ``forward``,
    ``attention_weights``, ``metrics``, ``snapshot`` and ``loss_and_grads`` (the stack's
    gradients, ``dV`` turned into the factors'). :meth:`stack_params` gives the stack's keys
    with the products (what a run folder saves)."""

    def __init__(self, stack: AttentionStack, factors: dict[str, np.ndarray]) -> None:
        self.stack = stack
        self.values = [k for k in stack.params if k.startswith("V")]
        missing = [k for v in self.values for k in (f"Vo{v[1:]}", f"Vv{v[1:]}") if k not in factors]
        if missing:
            raise ValueError(f"factors: expected {missing} for the stack's {self.values}")
        self.params = {k: v for k, v in stack.params.items() if k not in self.values}
        for v in self.values:
            for f in (f"Vo{v[1:]}", f"Vv{v[1:]}"):
                if factors[f].shape != stack.params[v].shape:
                    raise ValueError(
                        f"factors[{f!r}]: expected shape {stack.params[v].shape}, received "
                        f"{factors[f].shape}"
                    )
                self.params[f] = factors[f]

    @property
    def config(self) -> dict[str, Any]:
        return {**self.stack.config, "values": "factored"}

    def stack_params(self) -> dict[str, np.ndarray]:
        """The stack's parameters: the trained ones and the products ``V{l}``."""
        p = self.stack.params
        for k, v in self.params.items():
            if not k.startswith(("Vo", "Vv")):
                p[k] = v
        for v in self.values:
            p[v] = contract("h e j, h j k -> h e k", self.params[f"Vo{v[1:]}"],
                            self.params[f"Vv{v[1:]}"])  # fmt: skip
        return p

    def forward(self, X: np.ndarray, **inputs: Any) -> np.ndarray:
        self.stack_params()
        return self.stack.forward(X)

    def attention_weights(self, X: np.ndarray, **inputs: Any) -> list[np.ndarray]:
        self.stack_params()
        return self.stack.attention_weights(X)

    def snapshot(self, X: np.ndarray, **inputs: Any) -> np.ndarray:
        self.stack_params()
        return self.stack.snapshot(X)

    def metrics(self, X: np.ndarray, y: np.ndarray, **inputs: Any) -> dict[str, float]:
        self.stack_params()
        return self.stack.metrics(X, y)

    def loss_and_grads(
        self, X: np.ndarray, y: np.ndarray, **inputs: Any
    ) -> tuple[float, dict[str, np.ndarray]]:
        self.stack_params()
        loss, grads = self.stack.loss_and_grads(X, y)
        for v in self.values:
            dV = grads.pop(v)
            Vo, Vv = self.params[f"Vo{v[1:]}"], self.params[f"Vv{v[1:]}"]
            grads[f"Vo{v[1:]}"] = contract("h e k, h j k -> h e j", dV, Vv)
            grads[f"Vv{v[1:]}"] = contract("h e j, h e k -> h j k", Vo, dV)
        return loss, {k: grads[k] for k in self.params}


def make_stack(
    d: int,
    states: int,
    context: int,
    positions: str,
    seed: int = 0,
    init_std: float = 0.02,
    values: str = "factored",
) -> FactoredValues | AttentionStack:
    """The two-layer attention-only transformer of Edelman et al.: one head per layer,
    ``attention="kq"`` (rank ``d``), causal, pre-layer norm and a final one, tokens embedded by
    ``E (d, states)``, logits ``U X_L`` at every token; ``positions`` ``"relative-key"`` (theirs:
    ``RK`` added to the keys, scores divided by ``sqrt(d)``) or ``"relative"`` (a bias per
    offset, ``R`` from 0). ``values``: ``"factored"`` (theirs, :class:`FactoredValues`) or
    ``"single"`` (the stack's one matrix, started at a product of the same factors).

    Their initialization, from ``default_rng([seed, 3])``: ``E``, ``U``, ``WK``, ``WQ`` and the
    value factor ``Vv`` normal of standard deviation ``init_std`` (their 0.02), the output
    factor ``Vo`` of ``init_std / 2`` (their 0.01); ``RK`` the stack's ``normal(0, 0.02)``;
    layer norms at 1 and 0."""
    if values not in ("factored", "single"):
        raise ValueError(f"values: expected 'factored' or 'single', received {values!r}")
    model = AttentionStack(d, positions=positions, context=context, vocab=states, seed=seed,
                           **STACK)  # fmt: skip
    rng = np.random.default_rng([seed, 3])
    p = model.params
    for key in ("E", "U", "WK0", "WQ0", "WK1", "WQ1"):
        p[key] = init_std * rng.standard_normal(p[key].shape)
    factors = {}
    for l in (0, 1):
        factors[f"Vo{l}"] = 0.5 * init_std * rng.standard_normal((1, d, d))
        factors[f"Vv{l}"] = init_std * rng.standard_normal((1, d, d))
        p[f"V{l}"] = factors[f"Vo{l}"] @ factors[f"Vv{l}"]
    return FactoredValues(model, factors) if values == "factored" else model


def decayed(model: FactoredValues | AttentionStack) -> list[str]:
    """The keys the authors' AdamW decays (the weights of their ``nn.Linear`` layers): ``WK``,
    ``WQ``, the value matrices (``Vo``, ``Vv``, or the stack's ``V``) and ``U``; not ``E``,
    ``RK``, ``R`` nor the layer norms."""
    return [k for k in model.params if k.startswith(("WK", "WQ", "V")) or k == "U"]
