"""Data for the trainer: a fixed :class:`Dataset`, or a :class:`Stream` of fresh batches.

The engine knows data only as ``X``, ``y`` and named extra inputs: whatever arrays a model's
``loss_and_grads(X, y, **inputs)`` takes besides ``X`` and ``y`` (one row per sample). It never
looks inside them; the model checks what it consumes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from mlp.validation import as_float_array


class Dataset:
    """Samples ``X`` (``(n, ...)``), targets ``y`` (``(n,)``) and named extra inputs, each with
    ``n`` rows: ``Dataset(X, y, Z=Z, target=target)``.

    Real ``X`` (floats or booleans) becomes float32/float64
    (:func:`mlp.validation.as_float_array`; complex, object and string data are refused).
    Integer ``X`` is a batch of token sequences ``(n, C)``, kept as it is (its integer dtype
    unchanged; a model that wants reals converts it); its targets may be one per sample ``(n,)``
    or one per token, integers of ``X``'s shape ``(n, C)`` (for next-token prediction).
    ``inputs`` is the dict of the extra inputs, passed to the model as keyword arguments; each is
    also an attribute (``data.Z``).
    """

    def __init__(self, X: object, y: object, **inputs: object) -> None:
        kind = X.dtype.kind if isinstance(X, np.ndarray) else None
        if kind is None:
            try:
                kind = np.asarray(X).dtype.kind
            except (ValueError, TypeError):  # ragged lists and the like: as_float_array says so
                pass
        # integer X: token sequences, kept as they are; anything else as a real array
        self.X = np.asarray(X) if kind in ("i", "u") else as_float_array("Dataset.X", X)
        if self.X.ndim < 1:
            raise ValueError(f"Dataset.X: expected one row per sample, received a scalar {X!r}")
        n = len(self.X)
        self.y = np.asarray(y)
        if self.y.dtype.kind not in "biuf":
            raise TypeError(f"Dataset.y: expected numeric targets, received dtype {self.y.dtype}")
        tokens = self.X.dtype.kind in "iu"
        if tokens and self.y.ndim == 2:
            if self.y.shape != self.X.shape or self.y.dtype.kind not in "iu":
                raise ValueError(
                    f"Dataset.y: expected integer targets of X's shape {self.X.shape} (one per "
                    f"token) or shape (n,), received {self.y.dtype} {self.y.shape}"
                )
        elif self.y.ndim != 1:
            want = "(n,) or X's shape (n, C)" if tokens else "(n,)"
            raise ValueError(f"Dataset.y: expected shape {want}, received {self.y.shape}")
        self.inputs: dict[str, np.ndarray] = {}
        for name, value in inputs.items():
            if value is None:
                continue
            arr = np.asarray(value)
            if arr.dtype.kind not in "biuf":
                raise TypeError(
                    f"Dataset.{name}: expected a numeric array, received dtype {arr.dtype}"
                )
            self.inputs[name] = arr
        for name, v in (("y", self.y), *self.inputs.items()):
            if v.ndim == 0 or len(v) != n:
                raise ValueError(
                    f"Dataset.{name}: expected {n} rows (as X), received shape {v.shape}"
                )

    def __getattr__(self, name: str) -> np.ndarray:
        """An extra input by name: ``data.Z`` is ``data.inputs["Z"]``."""
        inputs = self.__dict__.get("inputs", {})
        if name in inputs:
            return inputs[name]
        raise AttributeError(f"Dataset has no input {name!r}; it has {sorted(inputs)}")

    def __len__(self) -> int:
        return len(self.X)

    def subset(self, idx: np.ndarray | slice) -> Dataset:
        """The samples ``idx`` (an index array or a slice), with their extra inputs: rows of
        arrays this data set checked already, so they are not checked again."""
        part = object.__new__(Dataset)
        part.X, part.y = self.X[idx], self.y[idx]
        part.inputs = {k: v[idx] for k, v in self.inputs.items()}
        return part

    def chunks(self, size: int) -> Iterator[Dataset]:
        """Consecutive pieces of at most ``size`` samples (views, no copies), in order."""
        n = len(self)
        if size >= n:
            yield self
            return
        for i in range(0, n, size):
            yield self.subset(slice(i, min(i + size, n)))


class Stream:
    """Training data that is a pure function of the update counter: ``batch(step)`` is the
    :class:`Dataset` of update ``step`` (0-based), fresh at every step.

    A run resumed at step ``k`` sees the same batches as one never interrupted, since the
    batches depend on ``(seed, step)`` only (the function closes over its seed).
    """

    def __init__(self, batch: Callable[[int], Dataset], description: str = "stream") -> None:
        if not callable(batch):
            raise TypeError(
                f"batch: expected a function step -> Dataset, received {type(batch).__name__}"
            )
        self._batch = batch
        self.description = description

    def batch(self, step: int) -> Dataset:
        data = self._batch(step)
        if not isinstance(data, Dataset):
            raise TypeError(
                f"{self.description}: batch({step}) returned a {type(data).__name__}, "
                "expected a Dataset"
            )
        return data
