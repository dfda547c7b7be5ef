"""The context-window attention layer ``X softmax(X^T Q)`` and the models built on it.

Names other code relies on: ``attend_forward``, ``attend_backward``, ``ContextWindowModel``,
``AttentionStack`` (residual layers of heads with masks, positions and layer norm);
plus the prompt tasks (``make_task``), the attention SVM (``attention_svm``, ``prompt_svm``), the
linear form of the layer ``X (X^T Q) / N`` (``attend_linear_forward``, ``attend_linear_backward``)
and ``threads(k)``, the number of threads of the attention step inside a ``with`` block. Each
name is imported on first use, so ``import attnlab`` loads nothing heavy. Figures are in
:mod:`attnlab.plots`, the studies (training runs and reproductions) in :mod:`attnlab.studies`.
"""

from mlp._lazy import lazy_exports

_EXPORTS = {
    "attnlab.blocks.attention": (
        "AttentionCache",
        "LinearAttentionCache",
        "attend_backward",
        "attend_backward_loop",
        "attend_forward",
        "attend_forward_loop",
        "attend_linear_backward",
        "attend_linear_backward_loop",
        "attend_linear_forward",
        "attend_linear_forward_loop",
    ),
    "attnlab.blocks.queries": ("ATTENTIONS",),
    "attnlab.models.context_window": ("HEADS", "LOSSES", "POOLS", "SCORES", "ContextWindowModel"),
    "attnlab.models.stack": ("AttentionStack",),
    "attnlab.svm": (
        "SVMSolution",
        "attention_svm",
        "attention_svm_nuclear",
        "correlation",
        "prompt_svm",
    ),
    "attnlab.tasks": ("STREAM_TASKS", "TASKS", "Task", "make_task"),
    "mlp.threads": ("threads",),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
