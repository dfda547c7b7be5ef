"""Files, written atomically and read back without links or surprises: the layer under every run
folder (:mod:`mlp.train.folders`), checkpoint and report.

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
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np


class RunFolderError(ValueError):
    """A run folder's file is missing, garbled, a link, or does not fit the model it describes;
    or a folder given for a new run already holds one."""


MAX_JSON_BYTES = 64 * 2**20
# deflate never compresses more than about 1032:1; a member claiming more is lying
_MAX_DEFLATE_RATIO = 1032


# --- writing: a temporary file renamed over the target ----------------------------------------


def named_os_error(err: OSError, path: Path) -> OSError:
    """``err`` again (same errno, so the same subclass), naming ``path`` instead of a temp file."""
    return OSError(err.errno, err.strerror or str(err), str(path))


def new_temp_file(path: Path) -> Path:
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
        tmp = new_temp_file(path)
    except OSError as err:
        raise named_os_error(err, path) from err
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
            raise named_os_error(err, path) from err
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
        raise named_os_error(err, path) from err
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
