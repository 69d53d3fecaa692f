"""A folder of cache files on a local disk or on object storage, with atomic writes and an exclusive maker.

:func:`cache_folder` picks the kind from the location: a path is a
:class:`LocalFolder` (``fcntl`` lock files, rename into place after ``fsync``); a
pyarrow filesystem URI (``s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http``)
is an :class:`ObjectFolder` (write under a temporary name then move; the maker's
exclusivity is a :class:`~oba.store.lease.Lease` on ``<key>.lease``, so two makers of
one entry wait for each other as long as the lease rules hold).
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow.fs as pafs

from oba.store.atomic_write import disk_full, is_disk_full, write_atomic
from oba.store.lease import Lease, LeaseHeld
from oba.store.results import filesystem


class LocalFolder:
    """Cache files in a local folder (created on first use)."""

    def __init__(self, location: str | os.PathLike[str]) -> None:
        self.folder = Path(location)
        self.folder.mkdir(parents=True, exist_ok=True)

    def where(self, name: str) -> Path:
        """The path of entry ``name``."""
        return self.folder / name

    def exists(self, name: str) -> bool:
        """Whether entry ``name`` is there."""
        return self.where(name).exists()

    def read_bytes(self, name: str) -> bytes:
        """The bytes of entry ``name``."""
        return self.where(name).read_bytes()

    def write_atomic(self, name: str, write: Callable[[BinaryIO], None]) -> None:
        """Write entry ``name`` (which may name a subfolder) with ``write`` under a temporary name, ``fsync`` it,
        then rename it into place."""
        path = self.where(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as handle:
            try:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
                os.replace(handle.name, path)
            except BaseException as err:
                Path(handle.name).unlink(missing_ok=True)
                if is_disk_full(err):
                    raise disk_full(str(path), err) from None
                raise

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Hold an exclusive ``fcntl`` lock on ``<key>.lock`` (never deleted) while the block runs."""
        with open(self.where(f"{key}.lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


class ObjectFolder:
    """Cache files under a pyarrow filesystem URI (object storage)."""

    def __init__(self, location: str, poll_seconds: float = 2.0) -> None:
        self.location, self.poll_seconds = location, poll_seconds
        self.fs, self.root = filesystem(location)
        self.fs.create_dir(self.root, recursive=True)

    def where(self, name: str) -> str:
        """The path of entry ``name`` inside the filesystem."""
        return f"{self.root}/{name}"

    def exists(self, name: str) -> bool:
        """Whether entry ``name`` is there."""
        return self.fs.get_file_info(self.where(name)).type == pafs.FileType.File

    def read_bytes(self, name: str) -> bytes:
        """The bytes of entry ``name``."""
        with self.fs.open_input_stream(self.where(name)) as source:
            return source.read()

    def write_atomic(self, name: str, write: Callable[[BinaryIO], None]) -> None:
        """Write entry ``name`` with ``write`` under a temporary name, then move it into place."""
        buffer = io.BytesIO()
        write(buffer)
        write_atomic(self.fs, self.where(name), lambda sink: sink.write(buffer.getvalue()))

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Hold the lease ``<key>.lease`` while the block runs, waiting while another maker holds it."""
        while True:
            lease = Lease(self.location, f"making {key}", name=f"{key}.lease")
            try:
                lease.acquire()
                break
            except LeaseHeld:
                time.sleep(self.poll_seconds)
        try:
            yield
        finally:
            lease.release()


def cache_folder(location: str | os.PathLike[str]) -> LocalFolder | ObjectFolder:
    """An :class:`ObjectFolder` for a URI (``scheme://…``), else a :class:`LocalFolder`."""
    text = os.fspath(location)
    return ObjectFolder(text) if "://" in text else LocalFolder(text)
