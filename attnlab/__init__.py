"""The context-window attention layer ``X softmax(X^T Q)`` and the model built on it.

Names other code relies on (SPEC.md sections 3-4): ``attend_forward``, ``attend_backward``,
``ContextWindowModel``; plus the prompt tasks (``make_task``) and the attention SVM
(``attention_svm``, ``prompt_svm``). Plots (``attnlab.plots``), training runs
(``attnlab.experiment``) and the max-margin experiments (``attnlab.max_margin``) are imported from
their modules, so importing the package does not load matplotlib.
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
from attnlab.svm import (
    SVMSolution,
    attention_svm,
    attention_svm_nuclear,
    correlation,
    prompt_svm,
)
from attnlab.tasks import TASKS, Task, make_task

__all__ = [
    "ATTENTIONS",
    "HEADS",
    "POOLS",
    "TASKS",
    "AttentionCache",
    "ContextWindowModel",
    "SVMSolution",
    "Task",
    "attend_backward",
    "attend_backward_loop",
    "attend_forward",
    "attend_forward_loop",
    "attention_svm",
    "attention_svm_nuclear",
    "correlation",
    "make_task",
    "prompt_svm",
]
