"""The context-window attention layer ``X softmax(X^T Q)`` and the model built on it.

Names other code relies on (SPEC.md sections 3-4): ``attend_forward``, ``attend_backward``,
``ContextWindowModel``.
"""

from attnlab.attention import (
    AttentionCache,
    attend_backward,
    attend_backward_loop,
    attend_forward,
    attend_forward_loop,
)
from attnlab.model import HEADS, POOLS, ContextWindowModel
from attnlab.queries import ATTENTIONS

__all__ = [
    "ATTENTIONS",
    "HEADS",
    "POOLS",
    "AttentionCache",
    "ContextWindowModel",
    "attend_backward",
    "attend_backward_loop",
    "attend_forward",
    "attend_forward_loop",
]
