"""Optimizers, iterate averaging and learning-rate schedules: they know only dicts of arrays and
their own state.

Contract: ``opt.step(params, grads, lr)`` updates ``params`` in place for every key of
``grads``; ``opt.state_dict()`` / ``opt.load_state_dict(state)`` give the state as a flat dict of
arrays (for checkpoints). A schedule is a callable ``step -> lr``.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from mlp.validation import choice, positive


class ZeroGradientError(ArithmeticError):
    """Normalized GD met an exactly zero gradient: the direction ``g / ||g||`` is undefined."""


def check_step(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
    """Refuse a step that cannot be right: ``lr <= 0`` (or not finite), a gradient for a key that
    ``params`` lacks, or a gradient whose shape differs from its parameter's."""
    positive("lr", lr)
    for k, g in grads.items():
        if k not in params:
            raise ValueError(f"grads: key {k!r} is not a parameter; params has {list(params)}")
        if np.shape(g) != np.shape(params[k]):
            raise ValueError(
                f"grads[{k!r}]: expected the parameter's shape {np.shape(params[k])}, "
                f"received {np.shape(g)}"
            )


class SGD:
    """Plain (mini-batch) gradient descent: ``w <- w - lr * g``."""

    name = "sgd"

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        check_step(params, grads, lr)
        for k, g in grads.items():
            params[k] -= lr * g

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"SGD has no state, received keys {sorted(state)}")


class NormalizedGD:
    """Normalized gradient descent: ``w <- w - lr * g / ||g||_F``.

    ``||g||`` is the Frobenius norm over all updated parameters together (``per_param=False``) or
    of each parameter on its own (``per_param=True``: per-factor normalized GD). By default no
    epsilon is added to the norm (it stalls the step once gradients get tiny); ``eps > 0`` makes
    the step ``lr * g / (||g||_F + eps)``, PyTorch-style recipes' form (Tarzanagh et al.'s
    ``(K, Q)`` runs use ``eps`` = float64's machine epsilon). An exactly zero gradient raises
    :class:`ZeroGradientError` naming the parameter.
    """

    name = "ngd"

    def __init__(self, per_param: bool = False, eps: float = 0.0) -> None:
        if not isinstance(per_param, (bool, np.bool_)):
            raise TypeError(f"per_param: expected True or False, received {per_param!r}")
        if (
            isinstance(eps, bool)
            or not isinstance(eps, (int, float, np.integer, np.floating))
            or not 0.0 <= eps < math.inf
        ):
            raise ValueError(f"eps: expected a finite number >= 0, received {eps!r}")
        self.per_param = per_param
        self.eps = float(eps)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        check_step(params, grads, lr)
        groups = [[k] for k in grads] if self.per_param else [list(grads)]
        for keys in groups:
            # ||g|| as scale * ||g / scale||: no underflow when the entries are below 1e-154
            # (their squares would round to 0) and no overflow above 1e154
            scale = max(float(np.max(np.abs(grads[k]), initial=0.0)) for k in keys)
            if scale == 0.0:
                raise ZeroGradientError(
                    f"normalized GD: the gradient of {', '.join(map(repr, keys))} is exactly "
                    "zero, so g/||g|| is undefined (training has reached a stationary point)"
                )
            norm = math.sqrt(sum(float(np.vdot(grads[k] / scale, grads[k] / scale)) for k in keys))
            # g / (||g|| + eps) = (g / scale) / (||g / scale|| + eps / scale)
            norm += self.eps / scale
            for k in keys:
                params[k] -= (lr / norm) * (grads[k] / scale)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"NormalizedGD has no state, received keys {sorted(state)}")


class Adam:
    """Adam (Kingma and Ba): bias-corrected first and second moment estimates.

    ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``,
    ``w <- w - lr * m_hat / (sqrt(v_hat) + eps)``.
    """

    name = "adam"

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        for nm, b in (("beta1", beta1), ("beta2", beta2)):
            if (
                isinstance(b, bool)
                or not isinstance(b, (int, float, np.integer, np.floating))
                or not 0.0 <= b < 1.0
            ):
                raise ValueError(f"{nm}: expected a value in [0, 1), received {b!r}")
        positive("eps", eps)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        check_step(params, grads, lr)
        self.t += 1
        c1 = 1.0 - self.beta1**self.t
        c2 = 1.0 - self.beta2**self.t
        for k, g in grads.items():
            m = self.m.setdefault(k, np.zeros_like(g))
            v = self.v.setdefault(k, np.zeros_like(g))
            if m.shape != g.shape or v.shape != g.shape:
                raise ValueError(
                    f"Adam state for {k!r}: expected moments of the gradient's shape {g.shape}, "
                    f"received m {m.shape} and v {v.shape}"
                )
            m *= self.beta1
            m += (1.0 - self.beta1) * g
            v *= self.beta2
            v += (1.0 - self.beta2) * (g * g)
            params[k] -= lr * (m / c1) / (np.sqrt(v / c2) + self.eps)

    def state_dict(self) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = {"t": np.array(self.t, dtype=np.int64)}
        state.update({f"m/{k}": a for k, a in self.m.items()})
        state.update({f"v/{k}": a for k, a in self.v.items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if "t" not in state:
            raise ValueError(f"Adam state: expected key 't', received keys {sorted(state)}")
        t = np.asarray(state["t"])
        if t.shape != () or t.dtype.kind not in "iu" or int(t) < 0:
            raise ValueError(
                f"Adam state 't': expected a non-negative integer, received {t.dtype} {t.shape}"
            )
        m = {k[2:]: np.array(a) for k, a in state.items() if k.startswith("m/")}
        v = {k[2:]: np.array(a) for k, a in state.items() if k.startswith("v/")}
        unknown = sorted(k for k in state if k != "t" and not k.startswith(("m/", "v/")))
        if unknown or set(m) != set(v):
            raise ValueError(
                f"Adam state: expected 't' and matching 'm/<key>', 'v/<key>' entries, "
                f"received keys {sorted(state)}"
            )
        for k in m:
            if m[k].dtype.kind != "f" or m[k].shape != v[k].shape or v[k].dtype != m[k].dtype:
                raise ValueError(
                    f"Adam state for {k!r}: expected float moments of one shape, received "
                    f"m {m[k].dtype} {m[k].shape} and v {v[k].dtype} {v[k].shape}"
                )
        self.t, self.m, self.v = int(t), m, v


class Averaged:
    """Iterate averaging over the last part of a run (Polyak-Ruppert): any optimizer, plus the
    running mean of the parameters it updates, from update ``start`` (0-based) on.

    ``step`` runs the wrapped optimizer, then folds the new parameters into the mean
    (``avg += (w - avg) / k`` at the ``k``-th averaged iterate); the live parameters follow the
    wrapped optimizer unchanged. :meth:`averaged` returns the parameters with the mean in place
    of the averaged ones (before update ``start``: the parameters as they are). The state
    (the wrapped optimizer's, the update count and the mean) goes into checkpoints, so a
    resumed run averages the same iterates.
    """

    def __init__(self, inner: SGD | NormalizedGD | Adam, start: int) -> None:
        if not all(hasattr(inner, a) for a in ("step", "state_dict", "load_state_dict")):
            raise TypeError(
                f"inner: expected an optimizer with step, state_dict and load_state_dict, "
                f"received {type(inner).__name__}"
            )
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
            raise ValueError(f"start: expected an integer >= 0, received {start!r}")
        self.inner, self.start = inner, int(start)
        self.name = f"averaged-{getattr(inner, 'name', type(inner).__name__)}"
        self.t = 0
        self.mean: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        self.inner.step(params, grads, lr)
        if self.t >= self.start:
            k = self.t - self.start + 1
            for key in grads:
                if k == 1:
                    self.mean[key] = np.array(params[key], copy=True)
                else:
                    self.mean[key] += (params[key] - self.mean[key]) / k
        self.t += 1

    def averaged(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A new dict: ``params`` with the running mean in place of each averaged entry."""
        return {k: self.mean.get(k, v).copy() for k, v in params.items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = {"t": np.array(self.t, dtype=np.int64)}
        state.update({f"inner/{k}": a for k, a in self.inner.state_dict().items()})
        state.update({f"mean/{k}": a for k, a in self.mean.items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        t = np.asarray(state.get("t", -1))
        unknown = sorted(k for k in state if k != "t" and not k.startswith(("inner/", "mean/")))
        if t.shape != () or t.dtype.kind not in "iu" or int(t) < 0 or unknown:
            raise ValueError(
                f"Averaged state: expected an integer 't' >= 0 and 'inner/<key>', 'mean/<key>' "
                f"entries, received keys {sorted(state)}"
            )
        self.inner.load_state_dict(
            {k[len("inner/") :]: v for k, v in state.items() if k.startswith("inner/")}
        )
        self.t = int(t)
        self.mean = {
            k[len("mean/") :]: np.array(v) for k, v in state.items() if k.startswith("mean/")
        }


OPTIMIZERS = ("sgd", "ngd", "adam")


def make_optimizer(name: str, **kwargs: object) -> SGD | NormalizedGD | Adam:
    """``'sgd'``, ``'ngd'`` (normalized GD) or ``'adam'``."""
    choice("optimizer", name, OPTIMIZERS)
    cls = {"sgd": SGD, "ngd": NormalizedGD, "adam": Adam}[name]
    allowed = list(inspect.signature(cls).parameters)
    unknown = sorted(k for k in kwargs if k not in allowed)
    if unknown:
        raise ValueError(
            f"optimizer {name!r}: unknown option(s) {unknown}; expected options {allowed}"
        )
    return cls(**kwargs)  # type: ignore[arg-type]


SCHEDULES = ("constant", "inverse", "step")


def make_schedule(
    kind: str,
    lr: float,
    decay_steps: float = 100.0,
    *,
    steps: int | None = None,
    milestones: Sequence[float] = (0.5, 0.8),
    factor: float = 0.1,
) -> Callable[[int], float]:
    """Learning rate ``eta_t`` at step ``t`` (0-based).

    ``'constant'``: ``eta_t = lr``; ``'inverse'``: ``eta_t = lr / (1 + t / decay_steps)`` (the
    decaying schedule of the lecture: sum eta_t diverges, sum eta_t^2 grows slowly);
    ``'step'``: ``eta_t = lr * factor^k`` with ``k`` the number of ``milestones`` (fractions of
    the run's ``steps`` updates, increasing, in (0, 1)) that ``t`` has reached, i.e.
    ``t >= floor(fraction * steps)``: with the defaults, ``lr`` for the first half, ``lr / 10``
    up to 80% and ``lr / 100`` after. ``steps`` is needed by ``'step'`` only.
    """
    choice("schedule", kind, SCHEDULES)
    positive("lr", lr)
    if kind == "constant":
        return lambda t: float(lr)
    if kind == "inverse":
        positive("decay_steps", decay_steps)
        return lambda t: float(lr) / (1.0 + t / decay_steps)
    if steps is None:
        raise ValueError(
            "steps: the 'step' schedule needs the run's number of updates, received None"
        )
    steps = positive("steps", steps, integer=True)
    positive("factor", factor)
    fractions = [float(m) for m in milestones] if isinstance(milestones, Sequence) else None
    if (
        not fractions
        or not all(0.0 < m < 1.0 for m in fractions)
        or any(a >= b for a, b in itertools.pairwise(fractions))
    ):
        raise ValueError(
            f"milestones: expected increasing fractions of the run in (0, 1), received "
            f"{milestones!r}"
        )
    at = [math.floor(m * steps) for m in fractions]
    return lambda t: float(lr) * float(factor) ** sum(t >= a for a in at)
