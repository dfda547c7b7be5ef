"""Input checks shared by every public entry point.

Each check raises a ``ValueError`` (or ``TypeError`` for a wrong kind of object) whose message
names the argument, what was expected and what was received, so a user never meets a deep numpy
traceback or a silent NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(name: str, x: object, ndim: int | Sequence[int] | None = None) -> np.ndarray:
    """Return ``x`` as a float32/float64 array, refusing what cannot be a real tensor.

    Integers and booleans are converted to float64; float32 and float64 are kept as they are
    (float16 is widened to float32); complex, object and string data raise ``TypeError``.
    ``ndim`` (an int or a tuple of allowed ints) is checked with a message naming ``name``.
    """
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as err:  # ragged lists and the like
            raise TypeError(f"{name}: expected a numeric array, could not convert: {err}") from err
    kind = arr.dtype.kind
    if kind in "biu":
        arr = arr.astype(np.float64)
    elif kind == "f":
        if arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        elif arr.dtype not in FLOAT_DTYPES:  # longdouble
            arr = arr.astype(np.float64)
    else:
        raise TypeError(
            f"{name}: expected a real numeric array (float32 or float64), "
            f"received dtype {arr.dtype}"
        )
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(
                f"{name}: expected a {want}-d array, received shape {arr.shape} ({arr.ndim}-d)"
            )
    return arr


def check_finite(name: str, x: np.ndarray) -> None:
    """Raise ``ValueError`` naming ``name`` if ``x`` holds NaN or infinity.

    A finite sum proves every entry finite (NaN and inf propagate through it) in one pass with
    no temporary array; only when the sum is not finite (bad entries, or overflow) are the
    entries checked one by one.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(x)):
            return
    if not np.isfinite(x).all():
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{name}: expected finite values, received {bad} NaN or inf entries")


def check_nonempty(name: str, x: np.ndarray) -> None:
    """Raise ``ValueError`` if ``x`` has no rows (an empty batch)."""
    if x.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample, received an empty batch {x.shape}")


def class_labels(name: str, y: object, n: int, n_classes: int) -> np.ndarray:
    """Integer labels in ``0..n_classes-1`` as an int64 array of shape ``(n,)``."""
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name}: expected shape (n={n},), received {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name}: expected integer class labels, received non-integer values")
    elif arr.dtype.kind not in "biu":
        raise TypeError(f"{name}: expected integer class labels, received dtype {arr.dtype}")
    out = (arr < 0) | (arr >= n_classes)  # before the cast: 1e300 would wrap around
    if out.any():
        bad = arr[out][0].item()
        raise ValueError(f"{name}: expected class labels in 0..{n_classes - 1}, received {bad}")
    return arr.astype(np.int64, copy=False)


def sign_labels(name: str, y: object, n: int) -> np.ndarray:
    """Binary labels in ``{-1, +1}`` as a float array of shape ``(n,)``."""
    arr = _one_per_sample(name, y, n, "")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected labels -1 or +1, received dtype {arr.dtype}")
    ok = (arr == 1) | (arr == -1)
    if not ok.all():
        raise ValueError(
            f"{name}: expected labels in {{-1, +1}} for the logistic loss, received {arr[~ok][0]}"
        )
    return arr.astype(np.float64)


def real_targets(name: str, t: object, n: int) -> np.ndarray:
    """Finite real targets as a float array of shape ``(n,)`` (``(n, 1)`` is accepted too)."""
    arr = _one_per_sample(name, t, n, "real targets of ")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected real targets, received dtype {arr.dtype}")
    arr = arr if arr.dtype.kind == "f" else arr.astype(np.float64)
    check_finite(name, arr)
    return arr


def _one_per_sample(name: str, y: object, n: int, what: str) -> np.ndarray:
    """``y`` as an array of shape ``(n,)`` (``(n, 1)`` is flattened); ``ValueError`` naming
    ``name`` and ``what`` it should hold otherwise."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1:] == (1,):
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name}: expected {what}shape (n={n},), received {arr.shape}")
    return arr


def float_dtype(name: str, dtype: object) -> np.dtype:
    """``dtype`` as ``np.dtype``; ``ValueError``/``TypeError`` naming ``name`` unless float32/64."""
    try:
        dt = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError as err:
        raise TypeError(f"{name}: expected float32 or float64, received {dtype!r}") from err
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected float32 or float64, received {dt}")
    return dt


def check_seed(seed: object, name: str = "seed") -> int:
    """``seed`` as an int; ``ValueError`` naming ``name`` unless it is an integer >= 0."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name}: expected a non-negative integer, received {seed!r}")
    return int(seed)


def positive(name: str, value: float, *, integer: bool = False) -> Any:
    """``value`` if it is a finite number > 0 (an int if ``integer``: then returned as ``int``);
    else ``ValueError`` naming ``name``."""
    if integer:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name}: expected a positive integer, received {value!r}")
        return int(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not np.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name}: expected a positive finite number, received {value!r}")
    return value


def choice(name: str, value: object, valid: Sequence[str]) -> str:
    """Raise ``ValueError`` listing the valid names unless ``value`` is one of them."""
    if value not in valid:
        raise ValueError(
            f"{name}: expected one of {', '.join(map(repr, valid))}, received {value!r}"
        )
    return value  # type: ignore[return-value]


def known_options(config: object, defaults: Mapping[str, Any]) -> Mapping[str, Any]:
    """``config``, an experiment's options, once it is a mapping whose keys are all keys of
    ``defaults``: ``TypeError`` for anything else than a mapping, ``ValueError`` naming the
    unknown keys and the known ones (what every study's ``resolve`` checks first)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected a mapping of options, received {type(config).__name__}")
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"options: unknown {unknown}; expected some of {sorted(defaults)}")
    return config
