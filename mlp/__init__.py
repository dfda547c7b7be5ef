"""The lecture's one-hidden-layer MLP on iris, with vectorized backprop, and the shared core.

Names other code relies on: ``init_params``, ``forward``, ``loss_and_grads``,
``forward_nonvectorized``, ``loss_and_grads_nonvectorized``; plus the stable numerics, the
optimizers and the one trainer used by every model. Each name is imported on first use
(``import mlp`` itself loads nothing heavy).
"""

from mlp._lazy import lazy_exports

_EXPORTS = {
    "mlp.contract": ("contract",),
    "mlp.data": ("CLASS_NAMES", "IrisSplit", "load_iris_split"),
    "mlp.network": (
        "MLP",
        "accuracy",
        "backward",
        "forward",
        "forward_nonvectorized",
        "init_params",
        "loss_and_grads",
        "loss_and_grads_nonvectorized",
        "predict",
        "predict_proba",
    ),
    "mlp.numerics": (
        "cross_entropy",
        "log_softmax",
        "logistic_loss",
        "logsumexp",
        "relu",
        "relu_grad",
        "softmax",
        "softmax_backward",
        "softmax_with_argmax",
        "squared_loss",
    ),
    "mlp.train": (
        "SGD",
        "Adam",
        "AdamW",
        "CheckpointError",
        "Dataset",
        "History",
        "NormalizedGD",
        "Stream",
        "Trainer",
        "TrainingDiverged",
        "TrainingInterrupted",
        "ZeroGradientError",
        "load_checkpoint",
        "make_optimizer",
        "make_schedule",
        "save_checkpoint",
    ),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
