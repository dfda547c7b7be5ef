"""The one trainer for every model (the MLP and the context-window attention model).

It knows a model only through ``model.params`` (a dict of arrays), ``model.loss_and_grads(X, y,
**inputs)`` and ``model.predict(X, **inputs)``; where the data has a target token it also calls
``model.attention_on_target(X, target, **inputs)`` and, for snapshots,
``model.attention_weights(X, **inputs)``. Extra inputs (the queries ``Z`` of cross attention)
travel in :class:`Dataset`.

Batches are a pure function of ``(seed, step)``: epoch ``e`` visits the samples in the order
``default_rng([seed, e]).permutation(n)``. With the parameters and optimizer state in a
checkpoint, a run resumed at step k is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import math
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from mlp.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mlp.train.optim import ZeroGradientError
from mlp.validation import as_float_array, check_finite, check_nonempty, check_seed, positive


class Model(Protocol):
    params: dict[str, np.ndarray]

    def loss_and_grads(self, X: np.ndarray, y: np.ndarray, **inputs: Any) -> tuple[float, dict]: ...

    def predict(self, X: np.ndarray, **inputs: Any) -> np.ndarray: ...


class Optimizer(Protocol):
    def step(self, params: dict, grads: dict, lr: float) -> None: ...

    def state_dict(self) -> dict[str, np.ndarray]: ...

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...


class TrainingDiverged(FloatingPointError):
    """A non-finite loss or gradient: training stopped, the last good checkpoint kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``checkpoint`` is where the state was saved (or None)."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


@dataclass
class Dataset:
    """Samples for training or evaluation.

    ``X`` (MLP: ``(n, d)``; prompts: ``(n, d, c)``), labels ``y (n,)``, optional queries
    ``Z (n, d, j)`` for cross attention, optional ``target (n,)``: index of the token the task
    wants attention on.
    """

    X: np.ndarray
    y: np.ndarray
    Z: np.ndarray | None = None
    target: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.X = as_float_array("Dataset.X", self.X, ndim=(2, 3))
        self.y = np.asarray(self.y)
        if self.y.ndim != 1:
            raise ValueError(f"Dataset.y: expected shape (n,), received {self.y.shape}")
        if self.y.dtype.kind not in "biuf":
            raise TypeError(f"Dataset.y: expected numeric labels, received dtype {self.y.dtype}")
        if self.Z is not None:
            self.Z = as_float_array("Dataset.Z", self.Z, ndim=3)
        if self.target is not None:
            self.target = np.asarray(self.target)
            c = self.X.shape[-1] if self.X.ndim == 3 else None
            if (
                self.target.ndim != 1
                or self.target.dtype.kind not in "iu"
                or (self.target.size and (self.target.min() < 0 or self.target.max() >= (c or 0)))
            ):
                raise ValueError(
                    f"Dataset.target: expected integer token indices in 0..c-1 (c={c}) of shape "
                    f"(n,), received {self.target.dtype} {self.target.shape}"
                )
        n = len(self.X)
        for name in ("y", "Z", "target"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(f"Dataset.{name}: expected {n} rows (as X), received {len(v)}")

    def __len__(self) -> int:
        return len(self.X)

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        """Keyword inputs besides ``X`` that the model takes (``Z`` for cross attention)."""
        return {} if self.Z is None else {"Z": self.Z}

    def subset(self, idx: np.ndarray) -> Dataset:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return Dataset(self.X[idx], self.y[idx], pick(self.Z), pick(self.target))


@dataclass
class History:
    """Rows recorded at each evaluation, and attention snapshots at the same steps."""

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
        Path(path).write_text("\n".join(lines) + "\n")
        return Path(path)


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


class Trainer:
    """Mini-batch training with evaluation, history, progress bar, checkpoints and resume.

    ``steps`` is the total number of parameter updates (a resumed run continues to it);
    ``batch_size`` None or ``len(train)`` is full-batch gradient descent, 1 the single-sample
    variant. ``lr`` is a number or a schedule ``step -> lr``. Every ``eval_every`` steps (and at
    the end) one history row is recorded: step, epoch, lr, batch_loss (mean over the batches
    since the last row), train loss and accuracy on the whole training set, test loss and
    accuracy, and the attention on the target token where the data has one. ``trainable`` limits
    the updated parameters (the others stay fixed). ``checkpoint`` (a path) is written atomically
    every ``checkpoint_every`` steps and at the end. ``on_step(step, params)``, if given, is
    called after every update (``step`` counts from 1) with the live parameter dict (copy what you
    keep).
    """

    def __init__(
        self,
        model: Model,
        optimizer: Optimizer,
        train: Dataset,
        *,
        steps: int,
        lr: float | Callable[[int], float],
        batch_size: int | None = None,
        test: Dataset | None = None,
        eval_every: int | None = None,
        seed: int = 0,
        trainable: list[str] | tuple[str, ...] | None = None,
        snapshot: Dataset | None = None,
        checkpoint: str | Path | None = None,
        checkpoint_every: int | None = None,
        progress: bool | None = None,
        description: str = "training",
        on_step: Callable[[int, dict[str, np.ndarray]], None] | None = None,
    ) -> None:
        if not isinstance(getattr(model, "params", None), dict):
            raise TypeError(
                f"model: expected an object with a params dict and loss_and_grads, "
                f"received {type(model).__name__}"
            )
        if not all(hasattr(optimizer, a) for a in ("step", "state_dict", "load_state_dict")):
            raise TypeError(
                f"optimizer: expected an object with step, state_dict and load_state_dict, "
                f"received {type(optimizer).__name__}"
            )
        for name, data in (("train", train), ("test", test), ("snapshot", snapshot)):
            if data is None and name != "train":
                continue
            if not isinstance(data, Dataset):
                raise TypeError(f"{name}: expected a Dataset, received {type(data).__name__}")
            check_nonempty(f"{name}.X", data.X)
            check_finite(f"{name}.X", data.X)
        positive("steps", steps, integer=True)
        check_seed(seed)
        n = len(train)
        if batch_size is None:
            batch_size = n
        positive("batch_size", batch_size, integer=True)
        if batch_size > n:
            raise ValueError(
                f"batch_size: expected at most the number of training samples ({n}), "
                f"received {batch_size}"
            )
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
        self.model, self.optimizer = model, optimizer
        self.train, self.test, self.snapshot = train, test, snapshot
        self.steps, self.batch_size, self.seed = int(steps), int(batch_size), seed
        self.steps_per_epoch = math.ceil(n / self.batch_size)
        if eval_every is not None:
            positive("eval_every", eval_every, integer=True)
        self.eval_every = int(eval_every) if eval_every is not None else self.steps_per_epoch
        self.trainable = keys
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_every = checkpoint_every
        if checkpoint_every is not None:
            positive("checkpoint_every", checkpoint_every, integer=True)
        self.progress = progress
        self.description = description
        self.on_step = on_step
        self.step = 0
        self.history = History()
        self._perm_epoch = -1
        self._perm = np.arange(n)
        self._batch_losses: list[float] = []
        self.stop_reason = "completed"

    # --- batches -------------------------------------------------------------------------

    def batch_indices(self, step: int) -> np.ndarray:
        """The sample indices of update ``step`` (0-based): a function of ``(seed, step)`` only."""
        n = len(self.train)
        if self.batch_size == n:
            return self._perm  # full batch: every sample, in order
        epoch, b = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            self._perm_epoch = epoch
        return self._perm[b * self.batch_size : (b + 1) * self.batch_size]

    # --- evaluation ----------------------------------------------------------------------

    def evaluate(self, data: Dataset, prefix: str) -> dict[str, float]:
        """Loss, accuracy (and attention on the target token) of the model on ``data``."""
        loss, _ = self.model.loss_and_grads(data.X, data.y, **data.inputs)
        pred = self.model.predict(data.X, **data.inputs)
        row = {f"{prefix}_loss": float(loss), f"{prefix}_accuracy": float(np.mean(pred == data.y))}
        if data.target is not None and hasattr(self.model, "attention_on_target"):
            row[f"{prefix}_attention_on_target"] = float(
                self.model.attention_on_target(data.X, data.target, **data.inputs)
            )
        return row

    def _record(self) -> None:
        row: dict[str, float] = {
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "lr": self.schedule(max(self.step - 1, 0)),
        }
        if self._batch_losses:
            row["batch_loss"] = float(np.mean(self._batch_losses))
        self._batch_losses = []
        row.update(self.evaluate(self.train, "train"))
        if self.test is not None:
            row.update(self.evaluate(self.test, "test"))
        self.history.rows.append(row)
        if self.snapshot is not None and hasattr(self.model, "attention_weights"):
            S = self.model.attention_weights(self.snapshot.X, **self.snapshot.inputs)
            self.history.snapshots.append(np.array(S))
            self.history.snapshot_steps.append(self.step)

    # --- checkpoints ---------------------------------------------------------------------

    def save(self, path: str | Path | None = None) -> Path:
        """Write the full training state atomically (default: the ``checkpoint`` path)."""
        target = Path(path) if path is not None else self.checkpoint
        if target is None:
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
        return save_checkpoint(target, self.model.params, self.optimizer.state_dict(), meta, arrays)

    def resume(self, path: str | Path) -> None:
        """Load parameters, optimizer state, step and history from a checkpoint."""
        params, opt_state, meta, arrays = load_checkpoint(path, self.model.params)
        step, rows = meta.get("step"), meta.get("rows")
        if not isinstance(step, int) or step < 0 or not isinstance(rows, list):
            raise CheckpointError(
                f"checkpoint {path}: expected meta with an integer 'step' >= 0 and a list "
                f"'rows', received step={step!r}"
            )
        if step > self.steps:
            raise ValueError(
                f"steps: expected at least the checkpoint's step {step} (steps is the total "
                f"number of updates), received {self.steps}"
            )
        name = getattr(self.optimizer, "name", type(self.optimizer).__name__)
        if meta.get("optimizer", name) != name:
            raise ValueError(
                f"optimizer: checkpoint {path} was written by {meta.get('optimizer')!r}, "
                f"this trainer has {name!r}"
            )
        if meta.get("seed") != self.seed or meta.get("batch_size") != self.batch_size:
            raise ValueError(
                f"resume: checkpoint {path} was written with seed={meta.get('seed')}, "
                f"batch_size={meta.get('batch_size')}; this trainer has seed={self.seed}, "
                f"batch_size={self.batch_size}"
            )
        for k, v in params.items():
            self.model.params[k] = v
        self.optimizer.load_state_dict(opt_state)
        self.step = step
        self._batch_losses = [float(v) for v in meta.get("batch_losses", [])]
        self.history = History(
            rows=list(rows),
            snapshots=list(arrays.get("snapshots", [])),
            snapshot_steps=list(meta.get("snapshot_steps", [])),
        )

    # --- the loop ------------------------------------------------------------------------

    def _check_finite(self, loss: float, grads: dict[str, np.ndarray], lr: float) -> None:
        bad = None
        if not np.isfinite(loss):
            bad = f"the loss is {loss}"
        else:
            for k in self.trainable:
                if not np.isfinite(grads[k]).all():
                    bad = f"the gradient of parameter {k!r} is not finite"
                    break
        if bad is not None:
            kept = (
                f"; the last good checkpoint is {self.checkpoint}"
                if self.checkpoint is not None and self.checkpoint.exists()
                else ""
            )
            raise TrainingDiverged(
                f"training diverged at step {self.step + 1} with learning rate {lr:g}: {bad}"
                f"{kept}. Try a smaller --lr."
            )

    def _check_params(self, lr: float) -> None:
        """After an update: a parameter that overflowed stops training before it is saved."""
        for k in self.trainable:
            if not np.isfinite(self.model.params[k]).all():
                raise TrainingDiverged(
                    f"training diverged at step {self.step + 1} with learning rate {lr:g}: "
                    f"the update made parameter {k!r} non-finite"
                    + (
                        f"; the last good checkpoint is {self.checkpoint}"
                        if self.checkpoint is not None and self.checkpoint.exists()
                        else ""
                    )
                )

    def run(self) -> History:
        """Train from the current step to ``steps``; returns the history."""
        interrupted = False

        def on_sigint(signum: int, frame: object) -> None:
            nonlocal interrupted
            interrupted = True

        try:
            old_handler = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread: Ctrl-C arrives as KeyboardInterrupt instead
            old_handler = None
        bar = tqdm(
            total=self.steps,
            initial=self.step,
            desc=self.description,
            disable=None if self.progress is None else not self.progress,  # None: only on a tty
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )
        try:
            if self.step == 0 and not self.history.rows:
                self._record()
            while self.step < self.steps:
                full = self.batch_size == len(self.train)  # no copy of the whole data set
                batch = self.train if full else self.train.subset(self.batch_indices(self.step))
                lr = self.schedule(self.step)
                loss, grads = self.model.loss_and_grads(batch.X, batch.y, **batch.inputs)
                self._check_finite(loss, grads, lr)
                try:
                    self.optimizer.step(
                        self.model.params, {k: grads[k] for k in self.trainable}, lr
                    )
                except ZeroGradientError as err:
                    self.stop_reason = f"stopped at step {self.step + 1}: {err}"
                    break
                self._check_params(lr)
                self.step += 1
                if self.on_step is not None:
                    self.on_step(self.step, self.model.params)
                self._batch_losses.append(float(loss))
                bar.update(1)
                if self.step % self.eval_every == 0 or self.step == self.steps:
                    self._record()
                    last = self.history.last
                    bar.set_postfix(
                        loss=f"{last['train_loss']:.4f}", acc=f"{last['train_accuracy']:.3f}"
                    )
                if (
                    self.checkpoint is not None
                    and self.checkpoint_every
                    and self.step % self.checkpoint_every == 0
                ):
                    self.save()
                if interrupted:
                    raise KeyboardInterrupt
            if self.history.rows and self.history.last.get("step") != self.step:
                self._record()
            if self.checkpoint is not None:
                self.save()
        except KeyboardInterrupt:
            where = self.save() if self.checkpoint is not None else None
            msg = f"interrupted at step {self.step}"
            msg += f"; checkpoint saved to {where}" if where else ""
            raise TrainingInterrupted(msg, where) from None
        finally:
            bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        return self.history
