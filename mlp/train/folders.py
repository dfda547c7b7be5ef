"""Run folders: the files a training script writes, and reading them back.

A run folder holds ``config.json`` (every option and the model's constructor arguments under
``"model"``, so the run can be rebuilt), ``metrics.json``, ``params.npz`` (the trained
parameters) and whatever else the script adds. These helpers are shared by every script::

    out = default_run_dir("attention")             # runs/attention-20250101-120000
    write_json(out / "config.json", {"lr": 0.1, "model": model.config})
    save_arrays(out / "params.npz", model.params)
    model, config = load_model(out, lambda cfg: MLP(**cfg))

Arrays are stored with ``np.savez`` and read with ``allow_pickle=False``; JSON is written with
numpy scalars and arrays converted to plain numbers and lists. A missing or unreadable file is a
:class:`RunFolderError` (a ``ValueError``) naming the file.
"""

from __future__ import annotations

import json
import math
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlp.train.checkpoint import match_params


class RunFolderError(ValueError):
    """A run folder's file is missing, garbled, or does not fit the model it describes."""


class HasParams(Protocol):
    """Any model with a ``params`` dict of arrays (the MLP, the context-window model)."""

    params: dict[str, np.ndarray]


def default_run_dir(prefix: str, root: str | Path = "runs") -> Path:
    """``root/<prefix>-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``, ... appended if it exists.

    The folder is not created (the caller does, once its options are known to be valid).
    """
    if not isinstance(prefix, str) or not prefix or "/" in prefix:
        raise ValueError(f"prefix: expected a non-empty name without '/', received {prefix!r}")
    base = Path(root) / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays, tuples and paths turned into JSON types.

    Non-finite floats become ``None`` (JSON has no NaN); dict keys become strings.
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, type):  # a dtype class such as np.float64
        return np.dtype(obj).name
    raise TypeError(f"to_jsonable: cannot store a {type(obj).__name__} in JSON: {obj!r}")


def write_json(path: str | Path, obj: Mapping[str, Any]) -> Path:
    """Write ``obj`` (see :func:`to_jsonable`) as indented JSON; returns the path."""
    path = Path(path)
    path.write_text(json.dumps(to_jsonable(obj), indent=2) + "\n")
    return path


def read_json(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``; :class:`RunFolderError` if missing or not a JSON object."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"run folder: no file {path}")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunFolderError(f"run folder: {path} is not valid JSON ({err})") from err
    if not isinstance(obj, dict):
        raise RunFolderError(
            f"run folder: {path}: expected a JSON object, received {type(obj).__name__}"
        )
    return obj


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write named arrays to an ``.npz`` file; returns the path."""
    path = Path(path)
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, read without pickle; :class:`RunFolderError` if the file
    is missing or not an ``.npz`` of plain arrays."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"run folder: no file {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as err:
        raise RunFolderError(
            f"run folder: {path} is truncated or not an .npz of arrays ({type(err).__name__})"
        ) from err


def read_options(run_dir: str | Path, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The options a run folder was made with: the keys of ``defaults`` in its ``config.json``
    (every one must be there), for resuming it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"resume: no run folder at {run_dir}")
    config = read_json(run_dir / "config.json")
    missing = sorted(set(defaults) - set(config))
    if missing:
        raise RunFolderError(f"resume: {run_dir / 'config.json'} lacks the options {missing}")
    return {k: config[k] for k in defaults}


def resume_from(
    run_dir: str | Path,
    defaults: Mapping[str, Any],
    prepare: Callable[..., Any],
    changes: Mapping[str, Any],
    progress: bool | None = None,
) -> Any:
    """An experiment rebuilt from its run folder and its last checkpoint: ``prepare(options,
    checkpoint=..., progress=...)`` with the folder's own options (:func:`read_options`) updated
    by the ``changes`` that are not None, then its trainer resumed from ``checkpoint.npz``."""
    options = read_options(run_dir, defaults)
    options.update({k: v for k, v in changes.items() if v is not None})
    checkpoint = Path(run_dir) / "checkpoint.npz"
    experiment = prepare(options, checkpoint=checkpoint, progress=progress)
    experiment.trainer.resume(checkpoint)
    return experiment


def load_model(
    run_dir: str | Path,
    build: Callable[[dict[str, Any]], HasParams],
    config_key: str = "model",
) -> tuple[HasParams, dict[str, Any]]:
    """Rebuild a run's model: ``build(config[config_key])``, then the parameters of
    ``params.npz``. Returns ``(model, config)``.

    The saved parameters must have exactly the keys, shapes and dtypes of the rebuilt model's
    (a :class:`RunFolderError` says which one differs).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"run folder: {run_dir} is not a directory")
    config = read_json(run_dir / "config.json")
    if not isinstance(config.get(config_key), dict):
        raise RunFolderError(
            f"run folder: {run_dir / 'config.json'} has no {config_key!r} object (the model's "
            "constructor arguments)"
        )
    model = build(config[config_key])
    params = load_arrays(run_dir / "params.npz")
    match_params(params, model.params, f"run folder: {run_dir / 'params.npz'}", RunFolderError)
    model.params.update(params)
    return model, config
