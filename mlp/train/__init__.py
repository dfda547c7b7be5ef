"""The engine: optimizers and schedules, data sets and streams, the trainer, checkpoints and run
folders. It knows a model only by its contract (``params``, ``loss_and_grads(X, y, **inputs)``
and the optional ``metrics`` and ``snapshot`` hooks) and never imports a model's package.
"""
