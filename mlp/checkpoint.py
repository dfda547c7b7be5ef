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
from pathlib import Path
from typing import Any

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, garbled or does not fit the model."""


def save_checkpoint(
    path: str | os.PathLike[str],
    params: dict[str, np.ndarray],
    opt_state: dict[str, np.ndarray],
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write ``params``, ``opt_state``, JSON ``meta`` and ``arrays`` atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, np.ndarray] = {f"param/{k}": np.asarray(v) for k, v in params.items()}
    payload.update({f"opt/{k}": np.asarray(v) for k, v in opt_state.items()})
    payload.update({f"extra/{k}": np.asarray(v) for k, v in (arrays or {}).items()})
    payload["meta"] = np.array(json.dumps(meta))
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
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint: no file at {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path}: truncated, garbled or not a checkpoint "
            f"({type(err).__name__}: {err})"
        ) from err
    if "meta" not in data:
        raise CheckpointError(
            f"checkpoint {path}: no 'meta' entry (not a checkpoint of this library)"
        )
    try:
        meta = json.loads(str(data.pop("meta")))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint {path}: garbled metadata ({err})") from err
    params = {k[6:]: v for k, v in data.items() if k.startswith("param/")}
    opt = {k[4:]: v for k, v in data.items() if k.startswith("opt/")}
    arrays = {k[6:]: v for k, v in data.items() if k.startswith("extra/")}
    if expected_params is not None:
        if set(params) != set(expected_params):
            raise CheckpointError(
                f"checkpoint {path}: parameter keys {sorted(params)} do not match the model's "
                f"{sorted(expected_params)}"
            )
        for k, ref in expected_params.items():
            got = params[k]
            if got.shape != ref.shape or got.dtype != ref.dtype:
                raise CheckpointError(
                    f"checkpoint {path}: parameter {k!r} has shape {got.shape} {got.dtype}, "
                    f"the model expects {ref.shape} {ref.dtype}"
                )
    return params, opt, meta, arrays
