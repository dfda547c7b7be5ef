"""The trainer: mini-batch training of any model that keeps the engine's contract.

A model is anything with ``params`` (a dict of arrays) and ``loss_and_grads(X, y, **inputs) ->
(loss, grads)``. It may add two hooks:

- ``metrics(X, y, **inputs) -> dict[str, float]``: means over the samples (``"loss"`` among
  them), recorded as ``train_<key>`` and ``test_<key>`` at each evaluation. Without it the
  trainer records the loss of ``loss_and_grads``.
- ``snapshot(X, **inputs) -> ndarray``: an array the model wants kept during training (for
  example its internal weights on a few fixed samples), recorded at each evaluation.

Data is a :class:`~mlp.train.data.Dataset` (``X``, ``y`` and named extra inputs, passed to the
model as keyword arguments) or a :class:`~mlp.train.data.Stream` of fresh batches. From a fixed
data set, batches are a pure function of ``(seed, step)``: epoch ``e`` visits the samples in the
order ``default_rng([seed, e]).permutation(n)``. Evaluation runs in chunks of at most the
training batch, so memory grows with the batch and not with the data set. With the parameters
and optimizer state in a checkpoint, a run resumed at step k is bit-identical to one never
interrupted.
"""

from __future__ import annotations

import math
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from mlp.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mlp.train.data import Dataset, Stream
from mlp.train.errors import TrainingDiverged, TrainingInterrupted
from mlp.train.folders import replacing
from mlp.train.optim import ZeroGradientError
from mlp.validation import check_finite, check_nonempty, check_seed, positive

_add_reduce = np.add.reduce  # the sum without np.sum's wrapper (the update's check)


class Model(Protocol):
    params: dict[str, np.ndarray]

    def loss_and_grads(self, X: np.ndarray, y: np.ndarray, **inputs: Any) -> tuple[float, dict]: ...


class Optimizer(Protocol):
    def step(self, params: dict, grads: dict, lr: float) -> None: ...

    def state_dict(self) -> dict[str, np.ndarray]: ...

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...


@dataclass
class History:
    """Rows recorded at each evaluation, and the model's snapshots at the same steps."""

    rows: list[dict[str, float]] = field(default_factory=list)
    snapshots: list[np.ndarray] = field(default_factory=list)
    snapshot_steps: list[int] = field(default_factory=list)

    def column(self, key: str) -> np.ndarray:
        return np.array([r.get(key, np.nan) for r in self.rows], dtype=np.float64)

    @property
    def last(self) -> dict[str, float]:
        return self.rows[-1] if self.rows else {}

    def to_csv(self, path: str | Path) -> Path:
        keys: list[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        lines = [",".join(keys)]
        lines += [",".join(_fmt(r.get(k)) for k in keys) for r in self.rows]
        with replacing(path) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
        return Path(path)


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def evaluate(model: Model, data: Dataset, chunk: int) -> dict[str, float]:
    """The model's metrics on ``data`` (its ``metrics`` hook, else the loss), computed on
    pieces of at most ``chunk`` samples and averaged with the pieces' sizes as weights."""
    hook = getattr(model, "metrics", None)
    totals: dict[str, float] = {}
    for part in data.chunks(chunk):
        if hook is not None:
            values = hook(part.X, part.y, **part.inputs)
        else:
            values = {"loss": model.loss_and_grads(part.X, part.y, **part.inputs)[0]}
        for k, v in values.items():
            totals[k] = totals.get(k, 0.0) + float(v) * len(part)
    return {k: v / len(data) for k, v in totals.items()}


def snapshot(model: Model, data: Dataset, chunk: int) -> np.ndarray:
    """The model's ``snapshot`` hook on ``data``, computed in pieces of at most ``chunk``."""
    parts = [model.snapshot(p.X, **p.inputs) for p in data.chunks(chunk)]  # type: ignore[attr-defined]
    return np.concatenate(parts) if len(parts) > 1 else np.array(parts[0])


@contextmanager
def sigint_flag() -> Iterator[Callable[[], bool]]:
    """Within the block, Ctrl-C only sets a flag (read by calling the yielded function), so an
    update is never cut in half; outside the main thread Ctrl-C stays a KeyboardInterrupt."""
    hit = False

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal hit
        hit = True

    try:
        old = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread
        old = None
    try:
        yield lambda: hit
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


def progress_bar(total: int, initial: int, description: str, show: bool | None) -> tqdm:
    """A tqdm bar on stderr; ``show=None``: only on a terminal."""
    return tqdm(
        total=total,
        initial=initial,
        desc=description,
        disable=None if show is None else not show,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: The checkpoint metadata the trainer writes: each key, its test and what it must be.
META: dict[str, tuple[Callable[[Any], bool], str]] = {
    "step": (_count, "an integer >= 0"),
    "seed": (_count, "an integer >= 0"),
    "batch_size": (_count, "an integer >= 0"),
    "optimizer": (lambda v: isinstance(v, str), "a name"),
    "rows": (
        lambda v: (
            isinstance(v, list)
            and all(isinstance(r, dict) and all(_number(x) for x in r.values()) for r in v)
        ),
        "a list of objects of finite numbers",
    ),
    "batch_losses": (
        lambda v: isinstance(v, list) and all(_number(x) for x in v),
        "a list of finite numbers",
    ),
    "snapshot_steps": (
        lambda v: isinstance(v, list) and all(_count(x) for x in v),
        "a list of integers >= 0",
    ),
}


def check_meta(meta: dict[str, Any], path: str | Path) -> None:
    """``CheckpointError`` unless ``meta`` has every key of :data:`META`, each of its type
    (booleans are not numbers)."""
    for key, (ok, what) in META.items():
        if key not in meta:
            raise CheckpointError(f"checkpoint {path}: metadata lacks {key!r} ({what})")
        if not ok(meta[key]):
            got = repr(meta[key])
            got = got if len(got) <= 60 else got[:57] + "..."
            raise CheckpointError(
                f"checkpoint {path}: metadata {key!r}: expected {what}, received {got}"
            )


class Trainer:
    """Mini-batch training with evaluation, history, progress bar, checkpoints and resume.

    ``steps`` is the total number of parameter updates (a resumed run continues to it). From a
    :class:`Dataset`, ``batch_size`` None or ``len(train)`` is full-batch gradient descent, 1 the
    single-sample variant; from a :class:`Stream`, the stream decides the batch (``batch_size``
    stays None). ``lr`` is a number or a schedule ``step -> lr``. Every ``eval_every`` steps (and
    at the end) one history row is recorded: step, epoch (fixed data only), lr, batch_loss (mean
    over the batches since the last row), the metrics on the whole training set (fixed data only)
    and on ``test``. ``eval_batch_size`` (default: the training batch, or 1024 for a stream)
    bounds the samples evaluated at once. ``snapshot`` (a Dataset) is passed to the model's
    ``snapshot`` hook at each evaluation. ``trainable`` limits the updated parameters (the others
    stay fixed). ``checkpoint`` (a path) is written atomically every ``checkpoint_every`` steps and
    at the end. ``on_step(step, params)``, if given, is called after every update (``step``
    counts from 1) with the live parameter dict (copy what you keep).
    """

    def __init__(
        self,
        model: Model,
        optimizer: Optimizer,
        train: Dataset | Stream,
        *,
        steps: int,
        lr: float | Callable[[int], float],
        batch_size: int | None = None,
        test: Dataset | None = None,
        eval_every: int | None = None,
        eval_batch_size: int | None = None,
        seed: int = 0,
        trainable: list[str] | tuple[str, ...] | None = None,
        snapshot: Dataset | None = None,
        checkpoint: str | Path | None = None,
        checkpoint_every: int | None = None,
        progress: bool | None = None,
        description: str = "training",
        on_step: Callable[[int, dict[str, np.ndarray]], None] | None = None,
    ) -> None:
        if not isinstance(getattr(model, "params", None), dict) or not callable(
            getattr(model, "loss_and_grads", None)
        ):
            raise TypeError(
                f"model: expected an object with a params dict and loss_and_grads, "
                f"received {type(model).__name__}"
            )
        if not all(hasattr(optimizer, a) for a in ("step", "state_dict", "load_state_dict")):
            raise TypeError(
                f"optimizer: expected an object with step, state_dict and load_state_dict, "
                f"received {type(optimizer).__name__}"
            )
        if not isinstance(train, (Dataset, Stream)):
            raise TypeError(
                f"train: expected a Dataset or a Stream, received {type(train).__name__}"
            )
        for name, data in (("train", train), ("test", test), ("snapshot", snapshot)):
            if isinstance(data, Stream) or (data is None and name != "train"):
                continue
            if not isinstance(data, Dataset):
                raise TypeError(f"{name}: expected a Dataset, received {type(data).__name__}")
            check_nonempty(f"{name}.X", data.X)
            check_finite(f"{name}.X", data.X)
        if snapshot is not None and not callable(getattr(model, "snapshot", None)):
            raise TypeError(
                f"snapshot: the model ({type(model).__name__}) has no snapshot(X, **inputs) hook"
            )
        positive("steps", steps, integer=True)
        check_seed(seed)
        self.stream = isinstance(train, Stream)
        if self.stream:
            if batch_size is not None:
                raise ValueError(
                    f"batch_size: a Stream makes its own batches, expected None, "
                    f"received {batch_size}"
                )
            self.batch_size = 0
            self.steps_per_epoch = 0
        else:
            n = len(train)
            batch_size = n if batch_size is None else batch_size
            positive("batch_size", batch_size, integer=True)
            if batch_size > n:
                raise ValueError(
                    f"batch_size: expected at most the number of training samples ({n}), "
                    f"received {batch_size}"
                )
            self.batch_size = int(batch_size)
            self.steps_per_epoch = math.ceil(n / self.batch_size)
        if eval_batch_size is not None:
            positive("eval_batch_size", eval_batch_size, integer=True)
        self.eval_batch_size = int(eval_batch_size or self.batch_size or 1024)
        if callable(lr):
            self.schedule = lr
        else:
            positive("lr", lr)
            self.schedule = lambda t, _lr=float(lr): _lr
        if isinstance(trainable, str):
            raise TypeError(
                f"trainable: expected a list of parameter names, received the str {trainable!r}"
            )
        keys = list(model.params) if trainable is None else list(trainable)
        if not keys:
            raise ValueError("trainable: expected at least one parameter name, received none")
        unknown = [k for k in keys if k not in model.params]
        if unknown:
            raise ValueError(
                f"trainable: unknown parameter(s) {unknown}; the model has {list(model.params)}"
            )
        for name, every in (("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
            if every is not None:
                positive(name, every, integer=True)
        self.model, self.optimizer = model, optimizer
        self.train, self.test, self.snapshot = train, test, snapshot
        self.steps, self.seed = int(steps), seed
        self.eval_every = int(eval_every or self.steps_per_epoch or max(1, self.steps // 30))
        self.trainable = keys
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.description = description
        self.on_step = on_step
        self.step = 0
        self.history = History()
        self._perm_epoch = -1
        self._perm = np.arange(0 if self.stream else len(train))
        self._batch_losses: list[float] = []
        self.stop_reason = "completed"

    # --- batches -------------------------------------------------------------------------

    def batch_indices(self, step: int) -> np.ndarray:
        """The sample indices of update ``step`` (0-based): a function of ``(seed, step)`` only."""
        n = len(self._perm)
        if self.batch_size == n:
            return self._perm  # full batch: every sample, in order
        epoch, b = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            self._perm_epoch = epoch
        return self._perm[b * self.batch_size : (b + 1) * self.batch_size]

    def batch(self, step: int) -> Dataset:
        """The data of update ``step`` (0-based)."""
        if isinstance(self.train, Stream):
            return self.train.batch(step)
        if self.batch_size == len(self.train):
            return self.train  # no copy of the whole data set
        return self.train.subset(self.batch_indices(step))

    # --- evaluation ----------------------------------------------------------------------

    def evaluate(self, data: Dataset, prefix: str) -> dict[str, float]:
        """The model's metrics on ``data``, keyed ``<prefix>_<metric>``."""
        return {
            f"{prefix}_{k}": v for k, v in evaluate(self.model, data, self.eval_batch_size).items()
        }

    def _record(self) -> None:
        row: dict[str, float] = {"step": self.step}
        if not self.stream:
            row["epoch"] = self.step / self.steps_per_epoch
        row["lr"] = self.schedule(max(self.step - 1, 0))
        if self._batch_losses:
            row["batch_loss"] = float(np.mean(self._batch_losses))
        self._batch_losses = []
        try:
            if isinstance(self.train, Dataset):
                row.update(self.evaluate(self.train, "train"))
            if self.test is not None:
                row.update(self.evaluate(self.test, "test"))
            bad = [k for k, v in row.items() if not math.isfinite(v)]
            if bad:
                raise FloatingPointError(f"the evaluation gave non-finite {', '.join(bad)}")
            if self.snapshot is not None:
                snap = snapshot(self.model, self.snapshot, self.eval_batch_size)
        except FloatingPointError as err:  # non-finite metrics, or the model's own overflow check
            raise TrainingDiverged(
                f"training diverged by step {self.step}: {err}{self._kept()}"
            ) from None
        self.history.rows.append(row)
        if self.snapshot is not None:
            self.history.snapshots.append(snap)
            self.history.snapshot_steps.append(self.step)

    # --- checkpoints ---------------------------------------------------------------------

    def save(self, path: str | Path | None = None) -> Path:
        """Write the full training state atomically (default: the ``checkpoint`` path)."""
        file = Path(path) if path is not None else self.checkpoint
        if file is None:
            raise ValueError("save: no checkpoint path given and none configured")
        meta = {
            "step": self.step,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "rows": self.history.rows,
            "batch_losses": self._batch_losses,
            "snapshot_steps": self.history.snapshot_steps,
            "optimizer": getattr(self.optimizer, "name", type(self.optimizer).__name__),
            "rng": {"kind": "default_rng([seed, epoch])", "epoch": self._perm_epoch},
        }
        arrays = {}
        if self.history.snapshots:
            arrays["snapshots"] = np.stack(self.history.snapshots)
        return save_checkpoint(file, self.model.params, self.optimizer.state_dict(), meta, arrays)

    def resume(self, path: str | Path) -> None:
        """Load parameters, optimizer state, step and history from a checkpoint."""
        params, opt_state, meta, arrays = load_checkpoint(path, self.model.params)
        check_meta(meta, path)
        step = meta["step"]
        count, snaps = len(meta["snapshot_steps"]), arrays.get("snapshots")
        if count or snaps is not None:
            want = None
            if self.snapshot is not None:
                probe = snapshot(self.model, self.snapshot, self.eval_batch_size)
                want = f"{(count, *probe.shape)} {probe.dtype}"
            got = None if snaps is None else f"{snaps.shape} {snaps.dtype}"
            if snaps is None or got != want:
                raise CheckpointError(
                    f"checkpoint {path}: snapshots {got} at {count} steps do not fit this "
                    f"trainer's ({want})"
                )
        if step > self.steps:
            raise ValueError(
                f"steps: expected at least the checkpoint's step {step} (steps is the total "
                f"number of updates), received {self.steps}"
            )
        name = getattr(self.optimizer, "name", type(self.optimizer).__name__)
        if meta["optimizer"] != name:
            raise ValueError(
                f"optimizer: checkpoint {path} was written by {meta.get('optimizer')!r}, "
                f"this trainer has {name!r}"
            )
        if meta["seed"] != self.seed or meta["batch_size"] != self.batch_size:
            raise ValueError(
                f"resume: checkpoint {path} was written with seed={meta.get('seed')}, "
                f"batch_size={meta.get('batch_size')}; this trainer has seed={self.seed}, "
                f"batch_size={self.batch_size}"
            )
        for k, v in params.items():
            self.model.params[k] = v
        self.optimizer.load_state_dict(opt_state)
        self.step = step
        self._batch_losses = [float(v) for v in meta["batch_losses"]]
        self.history = History(
            rows=list(meta["rows"]),
            snapshots=[] if snaps is None else list(snaps),
            snapshot_steps=list(meta["snapshot_steps"]),
        )

    # --- the loop ------------------------------------------------------------------------

    def _kept(self) -> str:
        if self.checkpoint is not None and self.checkpoint.exists():
            return f"; the last good checkpoint is {self.checkpoint}"
        return ""

    def _diverged(self, lr: float, what: str) -> TrainingDiverged:
        return TrainingDiverged(
            f"training diverged at step {self.step + 1} with learning rate {lr:g}: {what}"
            f"{self._kept()}"
        )

    def _update(self, batch: Dataset, lr: float) -> float | None:
        """One update on ``batch``; its loss, or None when the optimizer meets a stationary
        point (then ``stop_reason`` says why)."""
        try:
            loss, grads = self.model.loss_and_grads(batch.X, batch.y, **batch.inputs)
        except FloatingPointError as err:  # the model's own overflow check
            raise self._diverged(lr, str(err)) from None
        if not math.isfinite(loss):
            raise self._diverged(lr, f"the loss is {loss}")
        trained = {k: grads[k] for k in self.trainable}
        try:
            self.optimizer.step(self.model.params, trained, lr)
        except ZeroGradientError as err:
            self.stop_reason = f"stopped at step {self.step + 1}: {err}"
            return None
        # the outputs are checked once, after the update: a non-finite gradient makes its
        # parameter non-finite too (or stops a normalized step), and is then named. One sum
        # over every trained entry is finite when they all are (or, rarely, overflows: then
        # each parameter is looked at and a finite one passes)
        params = self.model.params
        if math.isfinite(sum(float(_add_reduce(params[k], None)) for k in self.trainable)):
            return float(loss)
        for k in self.trainable:
            if not np.isfinite(params[k]).all():
                bad = [g for g in trained if not np.isfinite(trained[g]).all()]
                what = f"the gradient of parameter {bad[0]!r} is not finite" if bad else ""
                raise self._diverged(lr, what or f"the update made parameter {k!r} non-finite")
        return float(loss)

    def run(self) -> History:
        """Train from the current step to ``steps``; returns the history."""
        bar = progress_bar(self.steps, self.step, self.description, self.progress)
        try:
            # an overflow ends as one TrainingDiverged (every loss, gradient, update and
            # evaluation is checked), not as a stream of numpy RuntimeWarnings before it
            with sigint_flag() as interrupted, np.errstate(over="ignore", invalid="ignore"):
                if self.step == 0 and not self.history.rows:
                    self._record()
                while self.step < self.steps:
                    loss = self._update(self.batch(self.step), self.schedule(self.step))
                    if loss is None:
                        break
                    self.step += 1
                    if self.on_step is not None:
                        self.on_step(self.step, self.model.params)
                    self._batch_losses.append(loss)
                    bar.update(1)
                    if self.step % self.eval_every == 0 or self.step == self.steps:
                        self._record()
                        bar.set_postfix(
                            {k: f"{v:.4g}" for k, v in self.history.last.items() if "loss" in k}
                        )
                    if self.checkpoint_every and self.step % self.checkpoint_every == 0:
                        self._save_if_configured()
                    if interrupted():
                        raise KeyboardInterrupt
                if self.history.rows and self.history.last.get("step") != self.step:
                    self._record()
                self._save_if_configured()
        except KeyboardInterrupt:
            where = self.save() if self.checkpoint is not None else None
            msg = f"interrupted at step {self.step}"
            msg += f"; checkpoint saved to {where}" if where else ""
            raise TrainingInterrupted(msg, where) from None
        finally:
            bar.close()
        return self.history

    def _save_if_configured(self) -> None:
        if self.checkpoint is not None:
            self.save()
