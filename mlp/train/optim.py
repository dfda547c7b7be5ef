"""Optimizers, iterate averaging and learning-rate schedules: they know only dicts of arrays and
their own state.

Contract: ``opt.step(params, grads, lr)`` updates ``params`` in place for every key of
``grads``; ``opt.state_dict()`` / ``opt.load_state_dict(state)`` give the state as a flat dict of
arrays (for checkpoints). A schedule is a callable ``step -> lr``.

Every optimizer takes ``lr_factors`` (a dict ``key -> f``: parameter ``key`` moves with the rate
``f * lr``, as a PyTorch parameter group with its own ``lr``); SGD, Adam and AdamW also take
``clip_norm`` (global gradient-norm clipping before the update, see :func:`clip_grad_norm`).
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import numpy as np

from mlp.validation import choice, positive


class ZeroGradientError(ArithmeticError):
    """Normalized GD met an exactly zero gradient: the direction ``g / ||g||`` is undefined."""


def check_step(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
    """Refuse a step that cannot be right: ``lr <= 0`` (or not finite), a gradient for a key that
    ``params`` lacks, or a gradient whose shape differs from its parameter's."""
    positive("lr", lr)
    for k, g in grads.items():
        p = params.get(k)
        if p is None:
            raise ValueError(f"grads: key {k!r} is not a parameter; params has {list(params)}")
        if type(g) is np.ndarray and type(p) is np.ndarray and g.shape == p.shape:
            continue  # the common case, without np.shape's calls
        if np.shape(g) != np.shape(p):
            raise ValueError(
                f"grads[{k!r}]: expected the parameter's shape {np.shape(params[k])}, "
                f"received {np.shape(g)}"
            )


def global_norm(grads: Mapping[str, np.ndarray]) -> float:
    """``||g|| = sqrt(sum_k ||g_k||_F^2)``, the norm of all gradients together, computed as
    ``s * ||g / s||`` with ``s`` the largest entry in absolute value: no underflow when the
    entries are below 1e-154 (their squares would round to 0) and no overflow above 1e154."""
    scale = max((float(np.max(np.abs(g), initial=0.0)) for g in grads.values()), default=0.0)
    if scale == 0.0:
        return 0.0
    return scale * math.sqrt(sum(float(np.vdot(g / scale, g / scale)) for g in grads.values()))


def clip_grad_norm(
    grads: Mapping[str, np.ndarray], max_norm: float
) -> tuple[dict[str, np.ndarray], float]:
    """Global gradient-norm clipping, as ``torch.nn.utils.clip_grad_norm_``:
    ``g_k <- c g_k`` for every key with ``c = min(1, max_norm / (||g|| + 1e-6))`` and ``||g||``
    the :func:`global_norm` of all of ``grads``.

    Returns ``(clipped, ||g||)``: a new dict (the arrays of ``grads`` are not modified; when
    ``c = 1`` they are returned as they are) and the norm before clipping.
    """
    positive("max_norm", max_norm)
    norm = global_norm(grads)
    c = min(1.0, float(max_norm) / (norm + 1e-6))
    if c == 1.0:
        return dict(grads), norm
    return {k: g * c for k, g in grads.items()}, norm


class _Rule:
    """What every update rule shares: the checks of a step, the per-parameter rate factors and
    (where the rule has it) gradient clipping. The class defaults (no factors, no clipping) hold
    for a subclass that does not call ``__init__``."""

    lr_factors: Mapping[str, float] = MappingProxyType({})
    clip_norm: float | None = None

    def _options(self, lr_factors: Mapping[str, float] | None, clip_norm: float | None) -> None:
        if lr_factors is None:
            lr_factors = {}
        if not isinstance(lr_factors, Mapping):
            raise TypeError(
                f"lr_factors: expected a dict parameter name -> factor, received "
                f"{type(lr_factors).__name__}"
            )
        for k, f in lr_factors.items():
            if not isinstance(k, str):
                raise TypeError(f"lr_factors: expected parameter names as keys, received {k!r}")
            positive(f"lr_factors[{k!r}]", f)
        self.lr_factors = {k: float(f) for k, f in lr_factors.items()}
        if clip_norm is not None:
            positive("clip_norm", clip_norm)
        self.clip_norm = None if clip_norm is None else float(clip_norm)

    def _prepare(
        self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float
    ) -> dict[str, np.ndarray]:
        """Check the step and return the gradients to use (clipped if ``clip_norm`` is set)."""
        check_step(params, grads, lr)
        unknown = [k for k in self.lr_factors if k not in params]
        if unknown:
            raise ValueError(
                f"lr_factors: unknown parameter(s) {unknown}; params has {list(params)}"
            )
        if self.clip_norm is None:
            return grads
        return clip_grad_norm(grads, self.clip_norm)[0]

    def _rate(self, key: str, lr: float) -> float:
        """The rate of parameter ``key``: ``lr * lr_factors[key]`` (``lr`` without a factor)."""
        f = self.lr_factors.get(key)
        return lr if f is None else lr * f


class SGD(_Rule):
    """Plain (mini-batch) gradient descent: ``w_k <- w_k - f_k lr g_k`` (``f_k`` the key's
    factor in ``lr_factors``, 1 without one; ``g`` clipped first if ``clip_norm`` is set)."""

    name = "sgd"

    def __init__(
        self, lr_factors: Mapping[str, float] | None = None, clip_norm: float | None = None
    ) -> None:
        self._options(lr_factors, clip_norm)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        grads = self._prepare(params, grads, lr)
        for k, g in grads.items():
            params[k] -= self._rate(k, lr) * g

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"SGD has no state, received keys {sorted(state)}")


class NormalizedGD(_Rule):
    """Normalized gradient descent: ``w_k <- w_k - f_k lr g_k / ||g||_F`` (``f_k`` the key's
    factor in ``lr_factors``, 1 without one).

    ``||g||`` is the Frobenius norm over all updated parameters together (``per_param=False``) or
    of each parameter on its own (``per_param=True``: per-factor normalized GD). By default no
    epsilon is added to the norm (it stalls the step once gradients get tiny); ``eps > 0`` makes
    the step ``f_k lr g_k / (||g||_F + eps)``, PyTorch-style recipes' form (Tarzanagh et al.'s
    ``(K, Q)`` runs use ``eps`` = float64's machine epsilon). An exactly zero gradient raises
    :class:`ZeroGradientError` naming the parameter.
    """

    name = "ngd"

    def __init__(
        self,
        per_param: bool = False,
        lr_factors: Mapping[str, float] | None = None,
        eps: float = 0.0,
    ) -> None:
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
        self._options(lr_factors, None)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        self._prepare(params, grads, lr)
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
                params[k] -= (self._rate(k, lr) / norm) * (grads[k] / scale)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"NormalizedGD has no state, received keys {sorted(state)}")


class Adam(_Rule):
    """Adam (Kingma and Ba): bias-corrected first and second moment estimates.

    At update ``t`` (from 1): ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``,
    ``w <- w - f lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1^t)``,
    ``v_hat = v / (1 - b2^t)``, ``f`` the key's factor in ``lr_factors`` (1 without one), and
    ``g`` clipped first if ``clip_norm`` is set.
    """

    name = "adam"

    def __init__(
        self,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        lr_factors: Mapping[str, float] | None = None,
        clip_norm: float | None = None,
    ) -> None:
        for nm, b in (("beta1", beta1), ("beta2", beta2)):
            if (
                isinstance(b, bool)
                or not isinstance(b, (int, float, np.integer, np.floating))
                or not 0.0 <= b < 1.0
            ):
                raise ValueError(f"{nm}: expected a value in [0, 1), received {b!r}")
        positive("eps", eps)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self._options(lr_factors, clip_norm)
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def _decay(self, params: dict[str, np.ndarray], key: str, rate: float) -> None:
        """AdamW's decoupled weight decay; plain Adam has none."""

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        grads = self._prepare(params, grads, lr)
        self.t += 1
        c1 = 1.0 - self.beta1**self.t
        c2 = 1.0 - self.beta2**self.t
        what = type(self).__name__
        for k, g in grads.items():
            m = self.m.setdefault(k, np.zeros_like(g))
            v = self.v.setdefault(k, np.zeros_like(g))
            if m.shape != g.shape or v.shape != g.shape:
                raise ValueError(
                    f"{what} state for {k!r}: expected moments of the gradient's shape "
                    f"{g.shape}, received m {m.shape} and v {v.shape}"
                )
            rate = self._rate(k, lr)
            self._decay(params, k, rate)
            m *= self.beta1
            m += (1.0 - self.beta1) * g
            v *= self.beta2
            v += (1.0 - self.beta2) * (g * g)
            params[k] -= rate * (m / c1) / (np.sqrt(v / c2) + self.eps)

    def state_dict(self) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = {"t": np.array(self.t, dtype=np.int64)}
        state.update({f"m/{k}": a for k, a in self.m.items()})
        state.update({f"v/{k}": a for k, a in self.v.items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        what = type(self).__name__
        if "t" not in state:
            raise ValueError(f"{what} state: expected key 't', received keys {sorted(state)}")
        t = np.asarray(state["t"])
        if t.shape != () or t.dtype.kind not in "iu" or int(t) < 0:
            raise ValueError(
                f"{what} state 't': expected a non-negative integer, received {t.dtype} {t.shape}"
            )
        m = {k[2:]: np.array(a) for k, a in state.items() if k.startswith("m/")}
        v = {k[2:]: np.array(a) for k, a in state.items() if k.startswith("v/")}
        unknown = sorted(k for k in state if k != "t" and not k.startswith(("m/", "v/")))
        if unknown or set(m) != set(v):
            raise ValueError(
                f"{what} state: expected 't' and matching 'm/<key>', 'v/<key>' entries, "
                f"received keys {sorted(state)}"
            )
        for k in m:
            if m[k].dtype.kind != "f" or m[k].shape != v[k].shape or v[k].dtype != m[k].dtype:
                raise ValueError(
                    f"{what} state for {k!r}: expected float moments of one shape, received "
                    f"m {m[k].dtype} {m[k].shape} and v {v[k].dtype} {v[k].shape}"
                )
        self.t, self.m, self.v = int(t), m, v


class AdamW(Adam):
    """AdamW (Loshchilov and Hutter), as ``torch.optim.AdamW``: decoupled weight decay, then
    the Adam step.

    At update ``t``, for each key with rate ``r = f lr`` (``f`` its factor in ``lr_factors``):
    ``w <- w - r * weight_decay * w`` (only for the keys in ``decay``; every key when ``decay``
    is None), then ``m``, ``v`` and ``w`` as in :class:`Adam` with the rate ``r``. The decay does
    not pass through the moments (unlike an L2 term added to ``g``). ``decay`` names the keys
    that decay, as a PyTorch parameter group with ``weight_decay=0`` holds the others (for
    example biases, layer-norm gains and embeddings). The state is Adam's (``t``, ``m``,
    ``v``).
    """

    name = "adamw"

    def __init__(
        self,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        decay: Sequence[str] | None = None,
        lr_factors: Mapping[str, float] | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(beta1, beta2, eps, lr_factors, clip_norm)
        if (
            isinstance(weight_decay, bool)
            or not isinstance(weight_decay, (int, float, np.integer, np.floating))
            or not (np.isfinite(weight_decay) and weight_decay >= 0)
        ):
            raise ValueError(
                f"weight_decay: expected a finite number >= 0, received {weight_decay!r}"
            )
        if isinstance(decay, str) or not (
            decay is None
            or (
                isinstance(decay, Sequence | set | frozenset)
                and all(isinstance(k, str) for k in decay)
            )
        ):
            raise TypeError(
                f"decay: expected a list of parameter names or None, received {decay!r}"
            )
        self.weight_decay = float(weight_decay)
        self.decay = None if decay is None else frozenset(decay)

    def _decay(self, params: dict[str, np.ndarray], key: str, rate: float) -> None:
        if self.weight_decay and (self.decay is None or key in self.decay):
            params[key] -= (rate * self.weight_decay) * params[key]

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        unknown = [] if self.decay is None else sorted(k for k in self.decay if k not in params)
        if unknown:
            raise ValueError(f"decay: unknown parameter(s) {unknown}; params has {list(params)}")
        super().step(params, grads, lr)


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

    def __init__(self, inner: SGD | NormalizedGD | Adam | AdamW, start: int) -> None:
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


OPTIMIZERS = ("sgd", "ngd", "adam", "adamw")


def make_optimizer(name: str, **kwargs: object) -> SGD | NormalizedGD | Adam | AdamW:
    """``'sgd'``, ``'ngd'`` (normalized GD), ``'adam'`` or ``'adamw'``, with the class's options
    (for example ``make_optimizer("adamw", beta2=0.95, weight_decay=0.1, clip_norm=1.0)``)."""
    choice("optimizer", name, OPTIMIZERS)
    cls = {"sgd": SGD, "ngd": NormalizedGD, "adam": Adam, "adamw": AdamW}[name]
    allowed = list(inspect.signature(cls).parameters)
    unknown = sorted(k for k in kwargs if k not in allowed)
    if unknown:
        raise ValueError(
            f"optimizer {name!r}: unknown option(s) {unknown}; expected options {allowed}"
        )
    return cls(**kwargs)  # type: ignore[arg-type]


SCHEDULES = ("constant", "inverse", "step", "cosine")


def make_schedule(
    kind: str,
    lr: float,
    decay_steps: float = 100.0,
    *,
    steps: int | None = None,
    milestones: Sequence[float] = (0.5, 0.8),
    factor: float = 0.1,
    warmup: int = 0,
    floor: float = 0.0,
) -> Callable[[int], float]:
    """Learning rate ``eta_t`` at step ``t`` (0-based).

    Linear warm-up over the first ``warmup`` updates: ``eta_t = lr (t + 1) / warmup`` for
    ``t < warmup`` (never 0; ``lr`` at ``t = warmup - 1``). Then, with ``u = t - warmup`` and
    ``N = steps - warmup`` the updates left after the warm-up:

    - ``'constant'``: ``eta_t = lr``;
    - ``'inverse'``: ``eta_t = lr / (1 + u / decay_steps)`` (the decaying schedule of the
      lecture: sum eta_t diverges, sum eta_t^2 grows slowly);
    - ``'step'``: ``eta_t = lr * factor^k`` with ``k`` the number of ``milestones`` (fractions
      of the ``N`` updates, increasing, in (0, 1)) that ``u`` has reached, i.e.
      ``u >= floor(fraction * N)``: with the defaults, ``lr`` for the first half, ``lr / 10`` up
      to 80% and ``lr / 100`` after;
    - ``'cosine'``: ``eta_t = lr (floor + (1 - floor) (1 + cos(pi min(u, N) / N)) / 2)``: from
      ``lr`` down to ``floor * lr`` (``floor`` a fraction of ``lr`` in [0, 1)), reached after
      the last update.

    ``steps`` (the run's number of updates) is needed by ``'step'`` and ``'cosine'``, and must
    exceed ``warmup`` where it is given.
    """
    choice("schedule", kind, SCHEDULES)
    positive("lr", lr)
    lr = float(lr)
    if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
        raise ValueError(f"warmup: expected an integer >= 0, received {warmup!r}")
    warmup = int(warmup)
    if steps is None and kind in ("step", "cosine"):
        raise ValueError(
            f"steps: the {kind!r} schedule needs the run's number of updates, received None"
        )
    if steps is not None:
        steps = positive("steps", steps, integer=True)
        if steps <= warmup:
            raise ValueError(
                f"warmup: expected fewer updates than the run's steps={steps}, received {warmup}"
            )
    if kind == "constant":
        after: Callable[[int], float] = lambda u: lr  # noqa: E731
    elif kind == "inverse":
        positive("decay_steps", decay_steps)
        after = lambda u: lr / (1.0 + u / decay_steps)  # noqa: E731
    elif kind == "step":
        after = _steps(lr, steps - warmup, milestones, factor)  # type: ignore[operator]
    else:
        after = _cosine(lr, steps - warmup, floor)  # type: ignore[operator]
    if warmup == 0:
        return after
    return lambda t: lr * (t + 1) / warmup if t < warmup else after(t - warmup)


def _steps(lr: float, n: int, milestones: Sequence[float], factor: float) -> Callable[[int], float]:
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
    at = [math.floor(m * n) for m in fractions]
    return lambda u: lr * float(factor) ** sum(u >= a for a in at)


def _cosine(lr: float, n: int, floor: float) -> Callable[[int], float]:
    if (
        isinstance(floor, bool)
        or not isinstance(floor, (int, float, np.integer, np.floating))
        or not 0.0 <= floor < 1.0
    ):
        raise ValueError(f"floor: expected a fraction of lr in [0, 1), received {floor!r}")
    f = float(floor)
    return lambda u: lr * (f + (1.0 - f) * (1.0 + math.cos(math.pi * min(u, n) / n)) / 2.0)
