"""Atomic checkpoints: parameters, optimizer state, step, RNG seed and history in one ``.npz``.

Written to a temporary file in the same folder, flushed, then renamed over the old one
(:func:`mlp.train.folders.replacing`: ``os.replace`` is atomic and replaces a link instead of
writing through it), so a crash or SIGKILL leaves either the previous checkpoint or the new one,
never half a file. Loaded with ``allow_pickle=False`` and without following a link; every
entry's header (shape, dtype) is read and checked before its data, the parameters' against the
model, and a truncated or garbled file is reported as a :class:`CheckpointError`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mlp.train.folders import match_params, parse_json_object, read_npz, replacing

__all__ = ["CheckpointError", "load_checkpoint", "match_params", "save_checkpoint"]


_PREFIXES = ("param/", "opt/", "extra/")


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
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **payload)
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
    source = f"checkpoint {path}"

    def check(members: dict) -> None:
        meta = members.get("meta")
        if meta is None:
            raise CheckpointError(f"{source}: no 'meta' entry (not a checkpoint of this library)")
        if meta.shape != ():
            raise CheckpointError(
                f"{source}: expected 'meta' to be one JSON string, received {meta.dtype} "
                f"{meta.shape}"
            )
        other = [k for k in members if k != "meta" and not k.startswith(_PREFIXES)]
        if other:
            raise CheckpointError(f"{source}: unknown entries {sorted(other)}")
        if expected_params is not None:
            saved = {k[6:]: m for k, m in members.items() if k.startswith("param/")}
            match_params(saved, expected_params, source, CheckpointError)

    data = read_npz(path, check=check, what="checkpoint", error=CheckpointError, text=("meta",))
    raw = data.pop("meta")
    meta = parse_json_object(str(raw), f"checkpoint {path}: the metadata", CheckpointError)
    params = {k[6:]: v for k, v in data.items() if k.startswith("param/")}
    opt = {k[4:]: v for k, v in data.items() if k.startswith("opt/")}
    arrays = {k[6:]: v for k, v in data.items() if k.startswith("extra/")}
    for k, v in params.items():
        if not np.isfinite(v).all():
            raise CheckpointError(f"checkpoint {path}: parameter {k!r} holds NaN or inf")
    return params, opt, meta, arrays
