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
- **No writes through links.** Every file is written to a new temporary file in its folder and
  renamed over the target (:func:`replacing`): a crash leaves the old file or the new one, and a
  link at the target is replaced, never written through.
- **No reads through links, bounded and typed.** Files are opened without following links (a
  link is refused). JSON is size-bounded and must be an object (no NaN, no runaway nesting). The
  header (shape and dtype) of every ``.npz`` member is read before its data, must describe
  exactly the bytes the member holds (a header that claims 10^12 elements is refused, not
  allocated) and may be checked against what the reader expects (:func:`read_npz`).

Errors with a file are :class:`RunFolderError` (a ``ValueError``) naming it; file-system
failures are ``OSError`` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import stat
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from mlp.train.errors import TrainingInterrupted


class RunFolderError(ValueError):
    """A run folder's file is missing, garbled, a link, or does not fit the model it describes;
    or a folder given for a new run already holds one."""


class HasParams(Protocol):
    """Any model with a ``params`` dict of arrays (the MLP, the context-window model)."""

    params: dict[str, np.ndarray]


#: Files that every run folder has: a folder holding any of them holds a run.
RUN_FILES = ("config.json", "metrics.json", "checkpoint.npz", "history.csv", "params.npz")
#: Why a run ended, as ``metrics.json`` says in ``stop_reason``.
STOP_REASONS = ("completed", "stopped_early", "diverged", "interrupted", "incomplete")
MAX_JSON_BYTES = 64 * 2**20
# deflate never compresses more than about 1032:1; a member claiming more is lying
_MAX_DEFLATE_RATIO = 1032


# --- writing: a temporary file renamed over the target ----------------------------------------


def _named(err: OSError, path: Path) -> OSError:
    """``err`` again (same errno, so the same subclass), naming ``path`` instead of a temp file."""
    return OSError(err.errno, err.strerror or str(err), str(path))


def _new_temp(path: Path) -> Path:
    """A new, empty file next to ``path`` (created exclusively: never an existing file or link),
    with the permissions of any new file (0666 less the umask)."""
    for _ in range(100):
        tmp = path.with_name(f".tmp-{secrets.token_hex(4)}-{path.name}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


@contextlib.contextmanager
def replacing(path: str | Path, *, exclusive: bool = False) -> Iterator[Path]:
    """A temporary file next to ``path`` for the block to write (by name); after the block it is
    flushed to disk and renamed over ``path`` (``os.replace``, atomic).

    A link at ``path`` is replaced, never written through; a crash leaves the old file or the
    new one, never half of one. ``exclusive=True`` never replaces: ``FileExistsError`` if
    ``path`` exists (even as a link). On any error the temporary file is removed; an ``OSError``
    names ``path``.
    """
    path = Path(path)
    try:
        tmp = _new_temp(path)
    except OSError as err:
        raise _named(err, path) from err
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)  # fails if anything is at path
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise _named(err, path) from err
        raise


def write_json(path: str | Path, obj: Mapping[str, Any], *, exclusive: bool = False) -> Path:
    """Write ``obj`` (see :func:`to_jsonable`) as indented JSON (see :func:`replacing`)."""
    text = json.dumps(to_jsonable(obj), indent=2) + "\n"
    with replacing(path, exclusive=exclusive) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (a report, a table) atomically (see :func:`replacing`); returns the path."""
    with replacing(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write named arrays to an ``.npz`` file (see :func:`replacing`); returns the path."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    return Path(path)


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """``fig.savefig`` (a matplotlib figure) into ``path`` (see :func:`replacing`); the format
    is the file's extension."""
    path = Path(path)
    with replacing(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:] or "png", **kwargs)
    return path


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


# --- reading: regular files only, bounded, typed ------------------------------------------------


def open_regular(path: str | Path, what: str, error: type[ValueError]) -> IO[bytes]:
    """``path`` opened for reading in binary, if it is a regular file; a link is refused without
    being followed. ``error`` (naming ``what`` and the file) for a missing file, a link or
    anything else that is not a regular file."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise error(f"{what}: no file at {path}") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise error(
                f"{what}: {path} is a link; a run's files are read from the run folder itself, "
                "never through a link"
            ) from None
        raise _named(err, path) from err
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise error(f"{what}: {path} is not a regular file")
    return os.fdopen(fd, "rb")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json_object(data: bytes | str, source: str, error: type[ValueError]) -> dict[str, Any]:
    """The JSON object in ``data``; ``error`` naming ``source`` if it is not valid JSON (NaN and
    Infinity included), nested too deeply, or not an object."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        obj = json.loads(text, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise error(f"{source} is not valid JSON ({err})") from err
    except RecursionError:
        raise error(f"{source} is nested too deeply") from None
    if not isinstance(obj, dict):
        raise error(f"{source}: expected a JSON object, received {type(obj).__name__}")
    return obj


def read_json(path: str | Path, what: str = "run folder") -> dict[str, Any]:
    """The JSON object in ``path``; :class:`RunFolderError` if missing, a link, larger than
    :data:`MAX_JSON_BYTES`, not valid JSON (NaN and Infinity included), nested too deeply, or
    not a JSON object."""
    path = Path(path)
    with open_regular(path, what, RunFolderError) as f:
        data = f.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise RunFolderError(f"{what}: {path} is larger than {MAX_JSON_BYTES} bytes")
    return parse_json_object(data, f"{what}: {path}", RunFolderError)


@dataclass(frozen=True)
class Member:
    """An ``.npz`` member as its header describes it, read before its data: ``shape``, ``dtype``
    (what :func:`match_params` and the readers' checks look at)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _header(info: zipfile.ZipInfo, zf: zipfile.ZipFile) -> tuple[Member, int]:
    """The member's header and its length in bytes (``ValueError`` if garbled)."""
    with zf.open(info) as m:
        version = np.lib.format.read_magic(m)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(m)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(m)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        return Member(tuple(shape), dtype), m.tell()


def npz_members(
    f: IO[bytes], path: Path, what: str, error: type[ValueError], text: Sequence[str] = ()
) -> dict[str, Member]:
    """The headers of every member of the ``.npz`` archive ``f``, checked before any data is
    read: each is an ``.npy`` array of real numbers (``text``: the keys that may be one string
    instead) whose header describes exactly the bytes it holds."""
    members: dict[str, Member] = {}
    if f.read(6) == b"\x93NUMPY":
        raise error(f"{what} {path}: expected an .npz archive, received a single array (.npy)")
    try:
        with zipfile.ZipFile(f) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise error(f"{what} {path}: entry {info.filename!r} is not an .npy array")
                key = info.filename[:-4]
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or (
                    info.compress_type == zipfile.ZIP_DEFLATED
                    and info.file_size > _MAX_DEFLATE_RATIO * max(info.compress_size, 1)
                ):
                    raise error(f"{what} {path}: entry {key!r} is garbled (its sizes disagree)")
                member, offset = _header(info, zf)
                if member.dtype.hasobject:
                    raise error(
                        f"{what} {path}: entry {key!r} holds Python objects (reading them would "
                        "need pickle, which is refused)"
                    )
                kinds, want = ("U", "a string") if key in text else ("biuf", "a numeric array")
                if member.dtype.kind not in kinds:
                    raise error(f"{what} {path}: entry {key!r} is not {want} ({member.dtype})")
                nbytes = math.prod(member.shape) * member.dtype.itemsize
                if offset + nbytes != info.file_size:
                    raise error(
                        f"{what} {path}: entry {key!r} declares shape {member.shape} "
                        f"{member.dtype} ({nbytes} bytes) but holds {info.file_size - offset} "
                        "bytes"
                    )
                members[key] = member
    except error:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, zlib.error) as err:
        raise error(
            f"{what} {path}: truncated, garbled or not an .npz of arrays "
            f"({type(err).__name__}: {err})"
        ) from err
    return members


def read_npz(
    path: str | Path,
    *,
    check: Callable[[dict[str, Member]], None] | None = None,
    what: str = "run folder",
    error: type[ValueError] = RunFolderError,
    text: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, without pickle, after :func:`npz_members` has read every
    header and ``check(headers)`` (which raises ``error``) has accepted them: nothing is
    allocated for a member that is not what the reader expects."""
    path = Path(path)
    with open_regular(path, what, error) as f:
        members = npz_members(f, path, what, error, text)
        if check is not None:
            check(members)
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as npz:
                return {k: npz[k] for k in members}
        except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, zlib.error) as err:
            raise error(
                f"{what} {path}: truncated, garbled or not an .npz of arrays "
                f"({type(err).__name__}: {err})"
            ) from err


def load_arrays(
    path: str | Path, check: Callable[[dict[str, Member]], None] | None = None
) -> dict[str, np.ndarray]:
    """The arrays of a run folder's ``.npz`` file (see :func:`read_npz`); :class:`RunFolderError`
    if it is missing, a link, garbled, or refused by ``check``."""
    return read_npz(path, check=check)


def match_params(
    saved: Mapping[str, np.ndarray | Member],
    expected: Mapping[str, np.ndarray],
    source: str,
    error: type[ValueError],
) -> None:
    """Raise ``error`` (naming ``source``) unless ``saved`` (arrays, or their headers) has exactly
    the keys of ``expected`` and each its shape and dtype."""
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
        os.unlink(_new_temp(folder / "write-check"))
    except OSError as err:
        raise _named(err, folder) from err


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
