"""Writing a file whole or not at all on any pyarrow filesystem: under a temporary name beside it, then renamed.

A write that fails (a full disk, a lost connection, an interrupt) removes its temporary file and re-raises; a full
device or an exhausted quota becomes :class:`DiskFull`, one line naming the file and its folder.
"""
from __future__ import annotations

import errno
import posixpath
import uuid
from typing import Any, Callable

from pyarrow import fs as pafs

FULL = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = ("no space left on device", "disk quota exceeded", "[errno 28]", "[errno 122]")


class DiskFull(OSError):
    """No room left where a file was being written; the message names the file and its folder."""


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the device or the quota is full (pyarrow reports it in the text, not always in errno)."""
    if not isinstance(err, OSError):
        return False
    return err.errno in FULL or any(text in str(err).lower() for text in _FULL_TEXT)


def disk_full(path: str, err: OSError) -> DiskFull:
    """The :class:`DiskFull` for failing to write ``path`` with ``err``."""
    folder = posixpath.dirname(path) or "."
    return DiskFull(errno.ENOSPC, f"no space left in {folder}: could not write {posixpath.basename(path)} "
                                  f"({err.strerror or 'device full'}); free space there and run again")


def write_atomic(fs: pafs.FileSystem, path: str, write: Callable[[Any], None]) -> str:
    """Write ``path`` on ``fs`` with ``write(sink)`` under a temporary name beside it, then move it into place.

    On any failure the temporary file is removed; a full disk raises :class:`DiskFull`. Returns ``path``.
    """
    folder, name = posixpath.split(path)
    temporary = posixpath.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        with fs.open_output_stream(temporary) as sink:
            write(sink)
        fs.move(temporary, path)
    except BaseException as err:
        _remove(fs, temporary)
        if is_disk_full(err):
            raise disk_full(path, err) from None
        raise
    return path


def _remove(fs: pafs.FileSystem, path: str) -> None:
    """Delete ``path`` if it is there; a failure to delete never hides the error being handled."""
    try:
        if fs.get_file_info(path).type == pafs.FileType.File:
            fs.delete_file(path)
    except OSError:
        pass
