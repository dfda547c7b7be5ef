"""Helpers of the stack's tests: a small PyTorch autograd reference of ``AttentionStack``
written from the formulas (not from the library's code), random problems, and central
differences.

The reference computes, per layer, ``scores_h = Y^T A_h Y`` as one three-operand einsum over
``(n, h, s, t)``, adds the relative bias by indexing ``R[:, t - s]`` (and for relative-key the
vectors ``RK[:, t - s]``), masks by ``masked_fill`` (softmax) or a product (linear), and layer
norm is ``torch.nn.functional.layer_norm``: nothing is shared with the library's layout of the
heads as columns of one matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gradcheck import sample_indices

from attnlab import AttentionStack


def parse(row: str) -> dict[str, Any]:
    """A table row like ``"L2 H3 kq linear causal relative-key ln shared tokens>tokens"`` as
    the constructor's keyword arguments (``>last``/``>tokens``: the readout; ``k3``: three
    classes; ``squared``: the squared loss; ``r2``: rank 2)."""
    kw: dict[str, Any] = {}
    seen = 0
    for word in row.split():
        if word[0] == "L" and word[1:].isdigit():
            kw["layers"] = int(word[1:])
        elif word[0] == "H" and word[1:].isdigit():
            kw["heads"] = int(word[1:])
        elif word in ("self", "kq"):
            kw["attention"] = word
        elif word in ("softmax", "linear"):
            kw["scores"] = word
        elif word in ("causal", "exclude-last"):
            kw["mask"] = word
        elif word in ("absolute", "relative", "relative-key"):
            kw["positions"] = word
        elif word == "ln":
            kw["layernorm"] = True
        elif word == "shared":
            kw["shared"] = True
        elif word.startswith(("prompts>", "tokens>")):
            source, readout = word.split(">")
            kw["readout"] = readout
            if source == "tokens":
                kw["vocab"] = 7
        elif word[0] == "k" and word[1:].isdigit():
            kw["n_classes"] = int(word[1:])
        elif word == "squared":
            kw["loss"] = "squared"
        elif word[0] == "r" and word[1:].isdigit():
            kw["rank"] = int(word[1:])
        else:
            raise ValueError(f"unknown word {word!r} in row {row!r}")
        if len(kw) == seen:
            raise ValueError(f"row {row!r} sets an option twice ({word!r})")
        seen = len(kw)
    return kw


def problem(
    kw: dict[str, Any], seed: int, n: int = 3, d: int = 4, c: int = 5, context: int = 6
) -> tuple[AttentionStack, np.ndarray, np.ndarray]:
    """A model of ``kw`` with random parameters of order one (gains near 1, a nonzero relative
    bias), and random inputs and labels: ``(model, X, y)``."""
    model = AttentionStack(d, context=context, seed=seed, **kw)
    rng = np.random.default_rng([seed, 5])
    for k, p in model.params.items():
        noise = rng.standard_normal(p.shape)
        if k[0] in "gb":  # gains and biases of the layer norms
            model.params[k] = (1.0 if k[0] == "g" else 0.0) + 0.3 * noise
        elif k[0] in "WV":
            model.params[k] = 0.6 * noise
        else:
            model.params[k] = 0.5 * noise
    if model.vocab is not None:
        X = rng.integers(0, model.vocab, size=(n, c))
    else:
        X = rng.standard_normal((n, d, c))
    if model.readout == "tokens":
        y = rng.integers(0, model.vocab, size=(n, c))
    elif model.loss == "squared":
        y = rng.standard_normal(n)
    elif model.n_classes == 1:
        y = rng.choice([-1.0, 1.0], size=n)
    else:
        y = rng.integers(0, model.n_classes, size=n)
    return model, X, y


def torch_loss_and_grads(
    model: AttentionStack, X: np.ndarray, y: np.ndarray
) -> tuple[float, dict[str, np.ndarray]]:
    """The loss and gradients of ``model`` at ``(X, y)`` by PyTorch autograd in float64."""
    import torch
    import torch.nn.functional as F

    p = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in model.params.items()
    }
    d = model.d
    if model.vocab is not None:
        T = torch.as_tensor(X, dtype=torch.long)
        x = p["E"][:, T].permute(1, 0, 2)  # (n, d, c)
    else:
        x = torch.as_tensor(X, dtype=torch.float64)
    c = x.shape[2]
    if model.positions == "absolute":
        x = x + p["P"][:, :c]
    s, t = torch.arange(c)[:, None], torch.arange(c)[None, :]
    allowed = {
        None: torch.ones(c, c, dtype=torch.bool),
        "causal": s <= t,
        "exclude-last": (s != c - 1).expand(c, c),
    }[model.mask]
    offset = (t - s).clamp(min=0)  # masked entries read offset 0: masked out below
    for l in range(model.layers):
        k = 0 if model.shared else l
        Y = x
        if model.layernorm:
            Y = F.layer_norm(x.transpose(1, 2), (d,), p[f"g{k}"], p[f"b{k}"], eps=1e-5)
            Y = Y.transpose(1, 2)
        if model.attention == "self":
            A = p[f"W{k}"]
        else:
            A = p[f"WK{k}"] @ p[f"WQ{k}"].transpose(1, 2)
        scale = 1.0
        if model.positions == "relative-key":
            scale = 1.0 / np.sqrt(p[f"WQ{k}"].shape[2])
        scores = torch.einsum("nes,hed,ndt->nhst", Y, A, Y) * scale
        if model.positions == "relative":
            scores = scores + p[f"R{k}"][:, offset]
        if model.positions == "relative-key":
            Qr = torch.einsum("hdr,ndt->nhrt", p[f"WQ{k}"], Y)
            rel = p[f"RK{k}"][:, offset]  # (h, s, t, r)
            scores = scores + torch.einsum("hstr,nhrt->nhst", rel, Qr) * scale
        if model.scores == "softmax":
            S = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=2)
        else:
            S = scores * allowed / (c - 1)
        x = x + torch.einsum("hed,nds,nhst->net", p[f"V{k}"], Y, S)
    if model.readout == "last":
        u = x[:, :, -1]
        if model.layernorm:
            u = F.layer_norm(u, (d,), p["gF"], p["bF"], eps=1e-5)
        z = u @ p["v"]
        yt = torch.as_tensor(y)
        if model.loss == "logistic":
            loss = torch.logaddexp(torch.zeros(()), -yt * z[:, 0]).mean()
        elif model.loss == "squared":
            loss = ((z[:, 0] - yt) ** 2 / 2).mean()
        else:
            loss = F.cross_entropy(z, yt.long())
    else:
        top = x.transpose(1, 2)  # (n, c, d)
        if model.layernorm:
            top = F.layer_norm(top, (d,), p["gF"], p["bF"], eps=1e-5)
        logits = top @ p["U"].T  # (n, c, V)
        loss = F.cross_entropy(logits.reshape(-1, model.vocab), torch.as_tensor(y).reshape(-1))
    loss.backward()
    return float(loss.detach()), {k: v.grad.numpy() for k, v in p.items()}


def relative_to_scale(a: np.ndarray, b: np.ndarray, scale: float, floor: float = 1e-8) -> float:
    """``max|a - b| / max(scale, floor)``: an error relative to a whole gradient's size."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0)) / max(scale, floor)


def finite_difference_errors(
    model: AttentionStack,
    X: np.ndarray,
    y: np.ndarray,
    grads: dict[str, np.ndarray],
    per_key: int = 4,
    eps: float = 1e-6,
    seed: int = 0,
) -> dict[str, float]:
    """Central differences of the loss (``metrics``' forward only) at ``per_key`` sampled
    entries of each parameter; the error of ``grads`` there relative to the largest entry of
    the key's whole gradient."""
    errors = {}
    for key, param in model.params.items():
        flat = param.reshape(-1)
        idx = sample_indices(flat.size, per_key, seed)
        numeric = np.empty(idx.size)
        for j, i in enumerate(idx):
            old = flat[i]
            flat[i] = old + eps
            plus = model.metrics(X, y)["loss"]
            flat[i] = old - eps
            minus = model.metrics(X, y)["loss"]
            flat[i] = old
            numeric[j] = (plus - minus) / (2 * eps)
        scale = float(np.max(np.abs(grads[key])))
        errors[key] = relative_to_scale(grads[key].reshape(-1)[idx], numeric, scale)
    return errors
