"""Run folders: one run per folder, written atomically, read back without links or surprises.

A run folder holds ``config.json`` (every option and the model's constructor arguments under
``"model"``, so the run can be rebuilt), ``checkpoint.npz``, ``history.csv``, ``params.npz``
(the trained parameters), whatever else the experiment adds (figures), and ``metrics.json``,
written last::

    out = create_run_dir(None, "attention", config=config)  # runs/attention-20250101-120000-3f9a
    metrics = finish_run(out, trainer, write_files, experiment.metrics, FILES)
    model, config = load_model(out, lambda cfg: MLP(**cfg))

- **One run per folder.** :func:`create_run_dir` refuses a folder that already holds a run
  file, creates default folders exclusively (a random suffix: runs started in the same second,
  even in parallel, get different folders) and claims the folder by creating ``config.json``
  exclusively.
- **Complete or not at all.** :func:`finish_run` checks that the folder is writable before
  training, writes ``metrics.json`` after every other file, and says there why the run ended
  (``stop_reason``): ``completed``, ``stopped_early`` (a stationary point), ``diverged``,
  ``interrupted`` or ``incomplete`` (a file is missing). No ``metrics.json``: the run is under
  way or was killed.
- **No writes through links; no reads through links, bounded and typed.** Every file goes
  through :mod:`mlp.train.files` (atomic writes by renaming a temporary file; bounded,
  link-free, header-checked reads), whose names this module re-exports.

Errors with a file are :class:`RunFolderError` (a ``ValueError``) naming it; file-system
failures are ``OSError`` naming the file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlp.train.errors import TrainingInterrupted
from mlp.train.files import (
    MAX_JSON_BYTES,
    Member,
    RunFolderError,
    load_arrays,
    match_params,
    named_os_error,
    new_temp_file,
    npz_members,
    open_regular,
    parse_json_object,
    read_json,
    read_npz,
    replacing,
    save_arrays,
    save_figure,
    to_jsonable,
    write_json,
    write_text,
)

#: The file layer's names, with the run folders' own (one import for a study).
__all__ = [
    "MAX_JSON_BYTES",
    "RUN_FILES",
    "STOP_REASONS",
    "HasParams",
    "Member",
    "RunFolderError",
    "check_writable",
    "create_run_dir",
    "finish_run",
    "load_arrays",
    "load_model",
    "match_params",
    "npz_members",
    "open_regular",
    "parse_json_object",
    "read_json",
    "read_npz",
    "read_options",
    "replacing",
    "resume_from",
    "save_arrays",
    "save_figure",
    "to_jsonable",
    "write_json",
    "write_text",
]


class HasParams(Protocol):
    """Any model with a ``params`` dict of arrays (the MLP, the context-window model)."""

    params: dict[str, np.ndarray]


#: Files that every run folder has: a folder holding any of them holds a run.
RUN_FILES = ("config.json", "metrics.json", "checkpoint.npz", "history.csv", "params.npz")
#: Why a run ended, as ``metrics.json`` says in ``stop_reason``.
STOP_REASONS = ("completed", "stopped_early", "diverged", "interrupted", "incomplete")
# --- one run per folder -------------------------------------------------------------------------


def _suffix() -> str:
    return secrets.token_hex(2)


def _holds_run(folder: Path, files: Iterable[str]) -> list[str]:
    """The run files in ``folder``, those of :data:`RUN_FILES` first."""
    names = [*RUN_FILES, *sorted(set(files) - set(RUN_FILES))]
    return [n for n in names if os.path.lexists(folder / n)]


def create_run_dir(
    path: str | os.PathLike[str] | None,
    prefix: str,
    *,
    config: Mapping[str, Any] | None = None,
    files: Iterable[str] = (),
    root: str | Path = "runs",
) -> Path:
    """The folder of a new run, created, holding no run file; with ``config``, claimed by writing
    it as ``config.json`` exclusively. Returns the folder.

    ``path`` None: a new folder ``root/<prefix>-<YYYYmmdd-HHMMSS>-<4 hex digits>``, created
    exclusively (runs started in the same second, in parallel too, never share one). A given
    ``path`` is created if missing; if it exists it must be a folder holding none of the run
    files (:data:`RUN_FILES` and ``files``): a run folder holds one run, so a folder with a run
    in it is refused (:class:`RunFolderError`: resume it, or choose another folder). A folder
    created here is removed again if ``config.json`` cannot be written.
    """
    if not isinstance(prefix, str) or not prefix or "/" in prefix:
        raise ValueError(f"prefix: expected a non-empty name without '/', received {prefix!r}")
    files = tuple(files)
    if path is None:
        base = Path(root)
        base.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for _ in range(100):
            out = base / f"{prefix}-{stamp}-{_suffix()}"
            try:
                out.mkdir()
            except FileExistsError:
                continue
            break
        else:
            raise RunFolderError(f"run folder: no free name for {base / prefix}-{stamp}-*")
        created = True
    else:
        if not str(path).strip():
            raise ValueError("run folder: expected a folder path, received an empty one")
        out = Path(path)
        created = not os.path.lexists(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise RunFolderError(f"run folder: {out} exists and is not a folder") from None
        except NotADirectoryError:
            raise RunFolderError(f"run folder: {out}: a part of this path is a file") from None
        found = _holds_run(out, files)
        if found:
            raise RunFolderError(
                f"run folder: {out} already holds a run ({', '.join(found[:3])}"
                f"{', ...' if len(found) > 3 else ''}); resume it, or choose another folder"
            )
    if config is not None:
        try:
            write_json(out / "config.json", config, exclusive=True)
        except FileExistsError:
            raise RunFolderError(
                f"run folder: {out} already holds a run (another run claimed it); resume it, "
                "or choose another folder"
            ) from None
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    out.rmdir()
            raise
    return out


def check_writable(folder: str | Path) -> None:
    """``OSError`` naming ``folder`` unless a file can be created in it (checked before a long
    training, not at its first save)."""
    folder = Path(folder)
    try:
        os.unlink(new_temp_file(folder / "write-check"))
    except OSError as err:
        raise named_os_error(err, folder) from err


class _Trainer(Protocol):
    step: int
    stop_reason: str
    checkpoint: Path | None

    def run(self) -> Any: ...


def finish_run(
    run_dir: str | Path,
    trainer: _Trainer,
    write_files: Callable[[], Any],
    metrics: Callable[[], Mapping[str, Any]],
    files: Sequence[str],
) -> dict[str, Any]:
    """Train to the end and complete the run folder: ``trainer.run()``, ``write_files()`` (every
    file but ``metrics.json``), then ``metrics.json``, last. Returns what ``metrics.json``
    holds, and ``run_dir``.

    The folder must be writable (checked before training) and an earlier ``metrics.json`` is
    removed first (its absence says: under way, or killed). ``metrics.json`` holds ``metrics()``
    and ``stop_reason``: ``completed``; ``stopped_early`` (the trainer met a stationary point;
    ``message`` says where); ``incomplete`` (a file of ``files`` is missing: ``message`` lists
    them). A divergence or a Ctrl-C during training writes ``diverged`` or ``interrupted`` (and
    the error's ``message``) and goes on; a Ctrl-C after training, while the files are written,
    writes ``interrupted`` and raises :class:`~mlp.train.trainer.TrainingInterrupted` with the
    checkpoint (resuming finishes the run).
    """
    run_dir = Path(run_dir)
    check_writable(run_dir)
    (run_dir / "metrics.json").unlink(missing_ok=True)
    trained = False
    try:
        trainer.run()
        trained = True
        write_files()
    except FloatingPointError as err:  # TrainingDiverged
        if not trained:
            _end(run_dir, metrics(), "diverged", str(err))
        raise
    except KeyboardInterrupt as err:  # TrainingInterrupted: the checkpoint is saved
        if not trained:
            _end(run_dir, metrics(), "interrupted", str(err) or "interrupted")
            raise
        message = f"interrupted after training (step {trainer.step}), while writing {run_dir}"
        _end(run_dir, metrics(), "interrupted", message)
        raise TrainingInterrupted(message, trainer.checkpoint) from None
    missing = [n for n in files if n != "metrics.json" and not _is_regular(run_dir / n)]
    if missing:
        ending = _end(run_dir, metrics(), "incomplete", f"missing {', '.join(missing)}")
    elif trainer.stop_reason != "completed":
        ending = _end(run_dir, metrics(), "stopped_early", trainer.stop_reason)
    else:
        ending = _end(run_dir, metrics(), "completed", "")
    return {**ending, "run_dir": run_dir}


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _end(run_dir: Path, metrics: Mapping[str, Any], reason: str, message: str) -> dict[str, Any]:
    ending = {**metrics, "stop_reason": reason, **({"message": message} if message else {})}
    write_json(run_dir / "metrics.json", ending)
    return ending


# --- reading a run back -------------------------------------------------------------------------


def read_options(
    run_dir: str | Path,
    defaults: Mapping[str, Any],
    check: Callable[[dict[str, Any]], Any] | None = None,
) -> dict[str, Any]:
    """The options a run folder was made with: the keys of ``defaults`` in its ``config.json``
    (every one must be there, and ``check(options)`` must accept them), for resuming it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"resume: no run folder at {run_dir}")
    path = run_dir / "config.json"
    config = read_json(path, "resume")
    missing = sorted(set(defaults) - set(config))
    if missing:
        raise RunFolderError(f"resume: {path} lacks the options {missing}")
    options = {k: config[k] for k in defaults}
    if check is not None:
        try:
            check(options)
        except (ValueError, TypeError) as err:
            raise RunFolderError(f"resume: {path}: {err}") from None
    return options


def resume_from(
    run_dir: str | Path,
    defaults: Mapping[str, Any],
    prepare: Callable[..., Any],
    changes: Mapping[str, Any],
    progress: bool | None = None,
    check: Callable[[dict[str, Any]], Any] | None = None,
) -> Any:
    """An experiment rebuilt from its run folder and its last checkpoint: ``prepare(options,
    checkpoint=..., progress=...)`` with the folder's own options (:func:`read_options`, checked
    by ``check``) updated by the ``changes`` that are not None, then its trainer resumed from
    ``checkpoint.npz``."""
    options = read_options(run_dir, defaults, check)
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

    The saved parameters must have exactly the keys, shapes and dtypes of the rebuilt model's,
    checked on the file's headers before any data is read (a :class:`RunFolderError` says
    which one differs); constructor arguments the model refuses are a :class:`RunFolderError`.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"run folder: {run_dir} is not a directory")
    path = run_dir / "config.json"
    config = read_json(path)
    if not isinstance(config.get(config_key), dict):
        raise RunFolderError(
            f"run folder: {path} has no {config_key!r} object (the model's constructor arguments)"
        )
    try:
        model = build(config[config_key])
    except (TypeError, ValueError) as err:
        raise RunFolderError(f"run folder: {path}: {config_key!r}: {err}") from None
    source = f"run folder: {run_dir / 'params.npz'}"
    params = load_arrays(
        run_dir / "params.npz",
        check=lambda members: match_params(members, model.params, source, RunFolderError),
    )
    for k, v in params.items():
        if not np.isfinite(v).all():
            raise RunFolderError(f"{source}: parameter {k!r} holds NaN or inf")
    model.params.update(params)
    return model, config
