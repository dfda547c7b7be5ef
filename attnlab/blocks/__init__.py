"""The blocks models are built from: the attention primitive ``X softmax(X^T Q)`` and its linear
form (:mod:`.attention`), the registry of query variants (:mod:`.queries`), the attention layer
that passes gradients on to its inputs (:mod:`.layer`), the stack's multi-head layer with masks
and positions (:mod:`.heads`) and its layer norm (:mod:`.layernorm`), and a step's memory check
(:mod:`.memory`). Nothing here validates its inputs again: models check them at their public
entry points.
"""
