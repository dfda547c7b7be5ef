"""The context-window attention layer ``X softmax(X^T Q)`` and the model built on it.

Names other code relies on: ``attend_forward``, ``attend_backward``, ``ContextWindowModel``;
plus the prompt tasks (``make_task``), the attention SVM (``attention_svm``, ``prompt_svm``), the
linear form of the layer ``X (X^T Q) / N`` (``attend_linear_forward``, ``attend_linear_backward``)
and ``threads(k)``, the number of threads of the attention step inside a ``with`` block. Plots
(``attnlab.plots``), training runs (``attnlab.experiment``), the max-margin experiments
(``attnlab.max_margin``) and in-context regression (``attnlab.icl``) are imported from their
modules, so importing the package does not load matplotlib.
"""

from attnlab.attention import (
    AttentionCache,
    LinearAttentionCache,
    attend_backward,
    attend_backward_loop,
    attend_forward,
    attend_forward_loop,
    attend_linear_backward,
    attend_linear_backward_loop,
    attend_linear_forward,
    attend_linear_forward_loop,
)
from attnlab.model import HEADS, LOSSES, POOLS, SCORES, ContextWindowModel
from attnlab.queries import ATTENTIONS
from attnlab.svm import (
    SVMSolution,
    attention_svm,
    attention_svm_nuclear,
    correlation,
    prompt_svm,
)
from attnlab.tasks import STREAM_TASKS, TASKS, Task, make_task
from attnlab.threads import threads

__all__ = [
    "ATTENTIONS",
    "HEADS",
    "LOSSES",
    "POOLS",
    "SCORES",
    "STREAM_TASKS",
    "TASKS",
    "AttentionCache",
    "ContextWindowModel",
    "LinearAttentionCache",
    "SVMSolution",
    "Task",
    "attend_backward",
    "attend_backward_loop",
    "attend_forward",
    "attend_forward_loop",
    "attend_linear_backward",
    "attend_linear_backward_loop",
    "attend_linear_forward",
    "attend_linear_forward_loop",
    "attention_svm",
    "attention_svm_nuclear",
    "correlation",
    "make_task",
    "prompt_svm",
    "threads",
]
