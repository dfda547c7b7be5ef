"""The engine: optimizers and schedules, data sets and streams, the trainer, checkpoints and run
folders. It knows a model only by its contract (``params``, ``loss_and_grads(X, y, **inputs)``
and the optional ``metrics`` and ``snapshot`` hooks) and never imports a model's package. Each
name is imported on first use (importing ``mlp.train.cli`` loads nothing heavy).
"""

from mlp._lazy import lazy_exports

_EXPORTS = {
    "mlp.train.checkpoint": ("CheckpointError", "load_checkpoint", "save_checkpoint"),
    "mlp.train.data": ("Dataset", "Stream"),
    "mlp.train.optim": (
        "OPTIMIZERS",
        "SGD",
        "Adam",
        "AdamW",
        "Averaged",
        "NormalizedGD",
        "ZeroGradientError",
        "clip_grad_norm",
        "make_optimizer",
        "make_schedule",
    ),
    "mlp.train.trainer": ("History", "Trainer", "TrainingDiverged", "TrainingInterrupted"),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
