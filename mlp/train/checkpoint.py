"""Atomic checkpoints: parameters, optimizer state, step, RNG seed and history in one ``.npz``.

Written to a temporary file in the same folder, flushed, then renamed over the old one
(``os.replace`` is atomic), so a crash or SIGKILL leaves either the previous checkpoint or the new
one, never half a file. Loaded with ``allow_pickle=False``; keys, shapes and dtypes are checked
against the model, and a truncated or garbled file is reported as a :class:`CheckpointError`.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, garbled or does not fit the model."""


def match_params(
    saved: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    source: str,
    error: type[ValueError],
) -> None:
    """Raise ``error`` (naming ``source``) unless ``saved`` has exactly the keys of ``expected``
    and each array its shape and dtype."""
    if set(saved) != set(expected):
        raise error(
            f"{source}: parameter keys {sorted(saved)} do not match the model's {sorted(expected)}"
        )
    for k, ref in expected.items():
        got = saved[k]
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise error(
                f"{source}: parameter {k!r} has shape {got.shape} {got.dtype}, the model expects "
                f"{ref.shape} {ref.dtype}"
            )


def save_checkpoint(
    path: str | os.PathLike[str],
    params: dict[str, np.ndarray],
    opt_state: dict[str, np.ndarray],
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write ``params``, ``opt_state``, JSON ``meta`` and ``arrays`` atomically to ``path``."""
    path = Path(path)
    payload: dict[str, np.ndarray] = {f"param/{k}": np.asarray(v) for k, v in params.items()}
    payload.update({f"opt/{k}": np.asarray(v) for k, v in opt_state.items()})
    payload.update({f"extra/{k}": np.asarray(v) for k, v in (arrays or {}).items()})
    for k, v in payload.items():
        if v.dtype.kind not in "biuf":
            raise TypeError(
                f"save_checkpoint: {k!r}: expected a real numeric array, received dtype {v.dtype} "
                "(object arrays would need pickle, which the loader refuses)"
            )
    payload["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike[str], expected_params: dict[str, np.ndarray] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
    """Read a checkpoint: ``(params, opt_state, meta, arrays)``.

    With ``expected_params`` (the model's current parameters) the keys, shapes and dtypes must
    match exactly. Never unpickles (``allow_pickle=False``): a file that needs pickle is refused.
    Every problem (no file, truncated or garbled bytes, a bare ``.npy``, non-numeric entries,
    metadata that is not a JSON object, non-finite parameters, a mismatch with
    ``expected_params``) raises :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint: no file at {path}")
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):  # a bare .npy array
            raise CheckpointError(
                f"checkpoint {path}: expected an .npz archive, received a single array"
            )
        with f:
            data = {k: f[k] for k in f.files}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, zlib.error) as err:
        raise CheckpointError(
            f"checkpoint {path}: truncated, garbled or not a checkpoint "
            f"({type(err).__name__}: {err})"
        ) from err
    for k, v in data.items():
        allowed = "U" if k == "meta" else "biuf"  # the metadata is one JSON string
        if not isinstance(v, np.ndarray) or v.dtype.kind not in allowed:
            what = v.dtype if isinstance(v, np.ndarray) else type(v).__name__
            raise CheckpointError(f"checkpoint {path}: entry {k!r} is not a numeric array ({what})")
    if "meta" not in data:
        raise CheckpointError(
            f"checkpoint {path}: no 'meta' entry (not a checkpoint of this library)"
        )
    raw = data.pop("meta")
    try:
        meta = json.loads(str(raw)) if raw.dtype.kind == "U" and raw.shape == () else None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint {path}: garbled metadata ({err})") from err
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"checkpoint {path}: expected 'meta' to be a JSON object, received {raw.dtype} "
            f"{raw.shape}"
        )
    params = {k[6:]: v for k, v in data.items() if k.startswith("param/")}
    opt = {k[4:]: v for k, v in data.items() if k.startswith("opt/")}
    arrays = {k[6:]: v for k, v in data.items() if k.startswith("extra/")}
    if expected_params is not None:
        match_params(params, expected_params, f"checkpoint {path}", CheckpointError)
    for k, v in params.items():
        if not np.isfinite(v).all():
            raise CheckpointError(f"checkpoint {path}: parameter {k!r} holds NaN or inf")
    return params, opt, meta, arrays
