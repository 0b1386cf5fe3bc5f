"""The files deepkern writes and reads: one atomic saver and one guarded ``.npz`` reader.

Saving (checkpoints, Keras models): the bytes go to a temporary file beside the target, are
flushed and fsync'ed, and the temporary is renamed over the target in one step (then the
directory is fsync'ed, so the rename itself survives a power cut). A reader therefore sees the
old file or the new one, never half of one. A process killed mid-save (kill -9) cannot clean
up, so temporaries are named ``.<target>.<pid>.<random>.dk-tmp``: the next save to the same
target removes those whose process is gone.

Reading: every way a damaged or crafted archive can fail (truncation, bad CRC, an unsupported
zip version, a member declaring a huge array it does not hold, object arrays) becomes a
``ValueError`` that names the file, and no array is allocated larger than the bytes the file
really holds.
"""
from __future__ import annotations

import contextlib
import math
import os
import struct
import uuid
import zipfile
import zlib
from typing import IO, Any, Callable, Dict, Iterable, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["atomic_write", "save_npz", "read_npz", "stale_temporaries", "remove_stale_temporaries",
           "check_float32_values", "TEMP_SUFFIX"]

TEMP_SUFFIX = ".dk-tmp"

# everything np.load / zipfile / the .npy header parser raise on damaged input
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, NotImplementedError,
                RuntimeError, OverflowError, MemoryError, SyntaxError, UnicodeDecodeError, struct.error,
                zipfile.BadZipFile, zlib.error)


# ---------------------------------------------------------------------------- writing
def _temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # our own save in another thread, still running
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or we cannot tell: leave its file alone
    return True


def stale_temporaries(path: PathLike) -> list:
    """Temporary files of earlier saves to ``path`` whose process no longer exists."""
    path = os.path.abspath(os.fspath(path))
    directory, prefix = os.path.dirname(path), _temp_prefix(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    stale = []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
            continue
        pid_text = name[len(prefix):-len(TEMP_SUFFIX)].split(".", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            stale.append(os.path.join(directory, name))
    return stale


def remove_stale_temporaries(path: PathLike) -> int:
    """Delete what :func:`stale_temporaries` finds; returns how many were removed."""
    removed = 0
    for name in stale_temporaries(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
            removed += 1
    return removed


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> str:
    """Write ``path`` all at once: ``write(file)`` fills a fsync'ed temporary that is renamed over
    ``path``. Stale temporaries of killed saves to ``path`` are removed first. Returns ``path``."""
    path = os.fspath(path)
    full = os.path.abspath(path)
    directory = os.path.dirname(full)
    remove_stale_temporaries(full)
    tmp = os.path.join(directory, f"{_temp_prefix(full)}{os.getpid()}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, full)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)
    return path


def save_npz(path: PathLike, arrays: Dict[str, np.ndarray]) -> str:
    """``numpy.savez`` through :func:`atomic_write` (plain arrays; loads with ``allow_pickle=False``)."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


# ---------------------------------------------------------------------------- reading
def _check_members(path: str, archive: zipfile.ZipFile) -> None:
    """Each member's .npy header against the bytes the member holds, before NumPy allocates."""
    for info in archive.infolist():
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            elif version in ((2, 0), (3, 0)):
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f"entry {info.filename!r} has .npy format version {version}")
            if dtype.hasobject:
                raise ValueError(f"entry {info.filename!r} holds Python objects, not numbers")
            declared = math.prod(shape) * dtype.itemsize
            held = info.file_size - member.tell()
            if declared != held:
                raise ValueError(f"entry {info.filename!r} declares shape {shape} of {dtype} "
                                 f"({declared} bytes) but holds {held} bytes")


def read_npz(path: PathLike, what: str) -> Dict[str, np.ndarray]:
    """Every entry of the ``.npz`` at ``path``; ValueError naming the file and ``what`` it should
    be for anything unreadable (FileNotFoundError when there is no file)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (expected a {what})")
    try:
        is_zip = zipfile.is_zipfile(path)
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the {what}: {exc}") from exc
    if not is_zip:
        if head.startswith(b"PK"):
            raise ValueError(f"{path}: not a readable {what}: a truncated or corrupt zip archive "
                             f"(no central directory)")
        kind = "a single .npy array" if head == b"\x93NUMPY" else "another format"
        raise ValueError(f"{path}: not a {what} ({kind}, not an .npz archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            _check_members(path, archive)
        with np.load(path, allow_pickle=False) as loaded:
            return {key: loaded[key] for key in loaded.files}
    except _READ_ERRORS as exc:
        raise ValueError(f"{path}: not a readable {what} (truncated, corrupt or another format): "
                         f"{type(exc).__name__}: {exc}") from exc


def check_float32_values(path: str, entries: Iterable[Any]) -> None:
    """Refuse weights that are NaN or infinite, or float64 values outside float32's range
    (they would load as inf): ``entries`` are (name, array) pairs."""
    limit = float(np.finfo(np.float32).max)
    for name, value in entries:
        if value.dtype.kind != "f" or value.size == 0:
            continue
        if not np.isfinite(value).all():
            raise ValueError(f"{path}: entry {name!r} holds NaN or infinite values")
        if value.dtype.itemsize > 4 and float(np.abs(value).max()) > limit:
            raise ValueError(f"{path}: entry {name!r} holds values beyond float32's range (+-{limit:.3g})")
