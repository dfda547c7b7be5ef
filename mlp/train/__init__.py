"""The engine: optimizers and schedules, data sets and streams, the trainer, checkpoints and run
folders. It knows a model only by its contract (``params``, ``loss_and_grads(X, y, **inputs)``
and the optional ``metrics`` and ``snapshot`` hooks) and never imports a model's package.
"""

from mlp.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mlp.train.data import Dataset, Stream
from mlp.train.optim import (
    OPTIMIZERS,
    SGD,
    Adam,
    Averaged,
    NormalizedGD,
    ZeroGradientError,
    make_optimizer,
    make_schedule,
)
from mlp.train.trainer import History, Trainer, TrainingDiverged, TrainingInterrupted

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "Averaged",
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
]
