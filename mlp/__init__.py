"""The lecture's one-hidden-layer MLP on iris, with vectorized backprop, and the shared core.

Names other code relies on (SPEC.md section 2): ``init_params``, ``forward``, ``loss_and_grads``,
``forward_nonvectorized``, ``loss_and_grads_nonvectorized``; plus the stable numerics, the
optimizers and the one trainer used by every model.
"""

from mlp.contract import contract
from mlp.data import CLASS_NAMES, IrisSplit, load_iris_split
from mlp.network import (
    MLP,
    accuracy,
    backward,
    forward,
    forward_nonvectorized,
    init_params,
    loss_and_grads,
    loss_and_grads_nonvectorized,
    predict,
    predict_proba,
)
from mlp.numerics import (
    cross_entropy,
    log_softmax,
    logistic_loss,
    logsumexp,
    relu,
    relu_grad,
    softmax,
    softmax_backward,
    softmax_with_argmax,
)
from mlp.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mlp.train.optim import (
    SGD,
    Adam,
    NormalizedGD,
    ZeroGradientError,
    make_optimizer,
    make_schedule,
)
from mlp.train.trainer import Dataset, History, Trainer, TrainingDiverged, TrainingInterrupted

__all__ = [
    "CLASS_NAMES",
    "MLP",
    "SGD",
    "Adam",
    "CheckpointError",
    "Dataset",
    "History",
    "IrisSplit",
    "NormalizedGD",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "ZeroGradientError",
    "accuracy",
    "backward",
    "contract",
    "cross_entropy",
    "forward",
    "forward_nonvectorized",
    "init_params",
    "load_checkpoint",
    "load_iris_split",
    "log_softmax",
    "logistic_loss",
    "logsumexp",
    "loss_and_grads",
    "loss_and_grads_nonvectorized",
    "make_optimizer",
    "make_schedule",
    "predict",
    "predict_proba",
    "relu",
    "relu_grad",
    "save_checkpoint",
    "softmax",
    "softmax_backward",
    "softmax_with_argmax",
]
