"""Reference implementations the library is timed against, each the same computation written
another way: the large step with plain ``np.matmul`` (:func:`plain_step`) and in PyTorch
autograd (:func:`torch_step`), and the studies' whole training updates in PyTorch
(:func:`torch_training`). The parts check every reference against the library before timing it.

PyTorch is optional (the ``bench`` extra) and imported only here, when asked for.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnlab.bench.timing import import_torch
from mlp.train.data import Dataset, Stream
from mlp.train.optim import SGD, Averaged, NormalizedGD
from mlp.train.trainer import Trainer

Result = tuple[float, dict[str, np.ndarray]]


def torch_note(use_torch: bool) -> str | None:
    """None when the torch columns can run, else the reason, as a note for the report."""
    if not use_torch:
        return "torch skipped (asked not to use it)"
    try:
        import_torch()
    except ImportError as err:
        return f"torch not installed ({err}); pip install -e '.[bench]' adds it"
    return None


def max_rel_error(a: Result, b: Result) -> float:
    """Largest relative error between two ``(loss, grads)`` results, over the loss and the
    gradients of ``b``'s keys (each relative to its largest entry)."""
    errs = [abs(a[0] - b[0]) / max(abs(b[0]), 1e-30)]
    for k, g in b[1].items():
        errs.append(float(np.max(np.abs(a[1][k] - g)) / max(np.max(np.abs(g)), 1e-30)))
    return max(errs)


# --- the large step: self attention, mean pool, linear head, logistic loss ---------------------


def plain_step(X: np.ndarray, y: np.ndarray, W: np.ndarray, v: np.ndarray) -> Result:
    """The attention step written with plain ``np.matmul``: the baseline of the step benchmark.

    ``X (n, d, c)``, labels ``y (n,)`` in {-1, +1}, ``W (d, d)``, ``v (d, 1)``. Same maths as the
    library's ``self``-attention model with mean pool, linear head and logistic loss, including
    the exact softmax backward (``dS`` shifted to 0 at the argmax before the weighted sum) and
    the same matrix products (the mean pool's gradient is one column ``(n, d, 1)``), so the
    ratio measures what the library's named axes, checks, blocks and threads change.
    Returns ``(loss, {"W": dW (d, d), "v": dv (d, 1)})``.
    """
    n, _, c = X.shape
    y = y.astype(X.dtype)
    Xt = X.transpose(0, 2, 1)  # (n, c, d)
    Q = np.matmul(W, X)  # (n, d, c)       Q = W X
    scores = np.matmul(Xt, Q)  # (n, c, j)  X^T Q
    top = np.argmax(scores, axis=1, keepdims=True)  # (n, 1, j)
    S = np.exp(scores - np.take_along_axis(scores, top, axis=1))
    S /= S.sum(axis=1, keepdims=True)  # softmax over the tokens c
    u = np.matmul(X, S).mean(axis=2)  # (n, d)   mean pool of out = X S
    z = u @ v  # (n, 1)
    margin = y * z[:, 0]
    loss = float(np.mean(np.logaddexp(0, -margin)))
    dz = (-y * np.exp(-np.logaddexp(0, margin)) / n)[:, None]  # (n, 1)
    dv = u.T @ dz  # (d, 1)
    dOut = (dz @ v.T)[:, :, None] / c  # (n, d, 1): the mean pool's gradient, same for every j
    ds = np.matmul(Xt, dOut)  # (n, c, 1)
    dS = ds - np.take_along_axis(ds, top, axis=1)  # (n, c, j): exact when S saturates
    dS -= np.sum(S * dS, axis=1, keepdims=True)
    dS *= S  # dScores
    dQ = np.matmul(X, dS)  # (n, d, j)
    dW = np.matmul(dQ, Xt).sum(axis=0)  # (d, d)
    return loss, {"W": dW, "v": dv}


def torch_step(X: np.ndarray, y: np.ndarray, W: np.ndarray, v: np.ndarray) -> Callable[[], Result]:
    """The same step in PyTorch CPU autograd (textbook softmax backward); raises ImportError.

    Returns a function computing ``(loss, {"W": dW, "v": dv})`` for the fixed inputs.
    """
    torch = import_torch()
    Xt = torch.from_numpy(X)
    yt = torch.from_numpy(y.astype(X.dtype))
    Wt = torch.from_numpy(W.copy()).requires_grad_()
    vt = torch.from_numpy(v.copy()).requires_grad_()
    zero = torch.zeros(X.shape[0], dtype=Xt.dtype)

    def step() -> Result:
        Wt.grad = None
        vt.grad = None
        S = torch.softmax(Xt.transpose(1, 2) @ (Wt @ Xt), dim=1)
        z = (Xt @ S).mean(dim=2) @ vt
        loss = torch.logaddexp(zero, -yt * z[:, 0]).mean()
        loss.backward()
        return float(loss.detach()), {"W": Wt.grad.numpy(), "v": vt.grad.numpy()}

    return step


# --- the studies' models, written in PyTorch ---------------------------------------------------
# Each takes the parameters P (tensors: the trained ones require grad), a batch X (n, d, c),
# its labels y (n,) and the queries Z (n, d, j) where the model has them, and returns the mean
# loss as a 0-d tensor. Prompts hold tokens as columns, as in the library.


def demo_loss(P: dict[str, Any], X: Any, y: Any, Z: Any = None) -> Any:
    """The demo (iris in context): self attention ``X softmax(X^T W x_q)`` (softmax over the
    tokens) for the last token ``x_q`` (the only column the last pool reads, as the library
    computes it), the MLP head ``relu(u W1 + b1) W2 + b2``, cross-entropy."""
    torch = import_torch()
    S = torch.softmax(X.transpose(1, 2) @ (P["W"] @ X[:, :, -1:]), dim=1)  # (n, c, 1)
    u = (X @ S)[:, :, 0]  # (n, d)
    H = torch.relu(u @ P["W1"] + P["b1"])  # (n, m)
    return torch.nn.functional.cross_entropy(H @ P["W2"] + P["b2"], y)


def max_margin_loss(P: dict[str, Any], X: Any, y: Any, Z: Any = None) -> Any:
    """Max-margin token selection: cross attention ``X softmax(X^T W Z)`` with one query per
    prompt, the mean pool (one column), the fixed linear head ``v``, the logistic loss
    ``log(1 + exp(-y z))``."""
    torch = import_torch()
    S = torch.softmax(X.transpose(1, 2) @ (P["W"] @ Z), dim=1)  # (n, c, j)
    z = (X @ S).mean(dim=2) @ P["v"]  # (n, 1)
    return torch.logaddexp(torch.zeros_like(y), -y * z[:, 0]).mean()


def icl_loss(P: dict[str, Any], X: Any, y: Any, Z: Any = None) -> Any:
    """In-context regression: the linear form ``X (X^T W x_q) / (c - 1)`` for the last token
    ``x_q`` (the only column the last pool reads), the linear head ``v``, the squared loss
    ``(z - y)^2 / 2``."""
    q = P["W"] @ X[:, :, -1:]  # (n, d, 1)
    z = ((X @ (X.transpose(1, 2) @ q))[:, :, 0] / (X.shape[2] - 1)) @ P["v"]  # (n, 1)
    return ((z[:, 0] - y) ** 2).mean() / 2


def _update_rule(optimizer: object) -> tuple[str, int | None]:
    """``("sgd" | "ngd", start of the averaging or None)`` for the library's optimizer."""
    start = None
    if isinstance(optimizer, Averaged):
        optimizer, start = optimizer.inner, optimizer.start
    if type(optimizer) is SGD:
        return "sgd", start
    if type(optimizer) is NormalizedGD and not optimizer.per_param:
        return "ngd", start
    raise ValueError(
        f"optimizer: expected SGD, NormalizedGD(per_param=False) or Averaged of them, received "
        f"{type(optimizer).__name__}"
    )


@dataclass
class TorchTraining:
    """A trainer's update in PyTorch: ``step(s)`` takes batch ``s`` (the trainer's), the
    learning rate ``schedule(s)``, one autograd pass and the update, and returns the loss;
    ``loss_and_grads(batch)`` the loss and gradients at the current parameters; ``reset()``
    brings back the initial parameters and optimizer state; ``params`` the live tensors;
    ``mean`` the running mean of the trained ones (when the trainer averages its iterates)."""

    step: Callable[[int], float]
    loss_and_grads: Callable[[Dataset], Result]
    reset: Callable[[], None]
    params: dict[str, Any]
    mean: dict[str, Any]


def torch_training(trainer: Trainer, loss: Callable[..., Any]) -> TorchTraining:
    """The update of ``trainer`` (its model's parameters now, its trained keys, data, batch
    order, learning rate schedule and optimizer: SGD, normalized GD or their iterate average) in
    PyTorch autograd with the model ``loss`` (:func:`demo_loss`, ...); raises ImportError.

    As a PyTorch training loop would: the data set lives in tensors and a mini-batch is indexed
    from them (in the trainer's order: a copy of the trainer gives the indices, with its own
    permutation cache); a stream's batches are the stream's (numpy, shared with the tensors).
    The update is written out (``p -= lr * g``, or ``lr * g / ||g||`` over all trained
    parameters), as in a hand-written loop; divergence is not checked.
    """
    rule, start = _update_rule(trainer.optimizer)
    torch = import_torch()
    params = trainer.model.params
    trained = list(trainer.trainable)
    init = {k: torch.from_numpy(v.copy()) for k, v in params.items()}
    P = {k: v.clone().requires_grad_(k in trained) for k, v in init.items()}
    live = [P[k] for k in trained]
    mean: dict[str, Any] = {}
    count = [0]  # updates since the reset (the averaging starts at `start`)

    def tensors(data: Dataset) -> tuple[Any, Any, Any]:
        Z = data.inputs.get("Z")
        return (
            torch.from_numpy(data.X),
            torch.from_numpy(data.y),
            None if Z is None else torch.from_numpy(Z),
        )

    if isinstance(trainer.train, Stream):
        stream = trainer.train

        def batch(s: int) -> tuple[Any, Any, Any]:
            return tensors(stream.batch(s))

    elif trainer.batch_size == len(trainer.train):
        whole = tensors(trainer.train)

        def batch(s: int) -> tuple[Any, Any, Any]:
            return whole

    else:
        X_all, y_all, Z_all = tensors(trainer.train)
        order = copy.copy(trainer)  # batch_indices caches the epoch's permutation on its object

        def batch(s: int) -> tuple[Any, Any, Any]:
            idx = torch.from_numpy(order.batch_indices(s))
            return X_all[idx], y_all[idx], None if Z_all is None else Z_all[idx]

    def step(s: int) -> float:
        X, y, Z = batch(s)
        value = loss(P, X, y, Z)
        for p in live:
            p.grad = None
        value.backward()
        lr = trainer.schedule(s)
        with torch.no_grad():
            if rule == "ngd":
                norm = torch.sqrt(sum(torch.sum(p.grad * p.grad) for p in live))
                for p in live:
                    p -= (lr / norm) * p.grad
            else:
                for p in live:
                    p -= lr * p.grad
            if start is not None and count[0] >= start:
                k = count[0] - start + 1
                for key in trained:
                    if k == 1:
                        mean[key] = P[key].detach().clone()
                    else:
                        mean[key] += (P[key] - mean[key]) / k
        count[0] += 1
        return value.item()

    def loss_and_grads(data: Dataset) -> Result:
        for p in live:
            p.grad = None
        value = loss(P, *tensors(data))
        value.backward()
        return value.item(), {k: P[k].grad.numpy().copy() for k in trained}

    def reset() -> None:
        with torch.no_grad():
            for k, p in P.items():
                p.copy_(init[k])
        mean.clear()
        count[0] = 0

    return TorchTraining(step, loss_and_grads, reset, P, mean)
