"""Models composed from the blocks of :mod:`attnlab.blocks`: :class:`ContextWindowModel`
(attention, pool, head, loss) and :class:`AttentionStack` (residual layers of heads). Each keeps
the engine's contract (``params``, ``loss_and_grads(X, y, **inputs)``, and the ``metrics`` and
``snapshot`` hooks) and validates its inputs once, at its public methods.
"""
