"""Where Ray Tune keeps a run's experiment folder (its state, ``tuner.pkl``, trial results): ``[run] tune_storage``.

Empty (the default): a temporary folder on the driver, deleted when the run
ends. A local path: that folder (``~`` expanded, made absolute on the driver),
kept. A pyarrow filesystem URI of one of :data:`SCHEMES`
(``s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http``): Tune is given
the filesystem that :func:`oba.store.results.filesystem` builds from it and the path
inside it (no scheme, no query), as its ``storage_filesystem`` and
``storage_path``.

Only the driver touches this storage (read in Ray 2.60): Tune writes and checks
its marker file, experiment state and trial results from the driver's staging
folder, and writes trial errors there; a trial writes to the storage only when
it saves a checkpoint (this runner's trials never do) or syncs artifacts (off
by default). So a path on the driver's own disk is fine on a cluster of
several nodes, and is not refused as a node-local results location is.
"""
from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs

from oba._messages import one_line
from oba.store.paths import resolve_path
from oba.store.results import filesystem

SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs", "file")
"""URI schemes accepted for ``tune_storage``: the filesystems pyarrow builds from a URI (``mock`` left out)."""
ACCEPTED = (f"a local folder, or a URI of scheme {', '.join(SCHEMES)} that pyarrow can open, "
            "e.g. s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http; empty: a temporary folder")


@dataclass(frozen=True)
class TuneStorage:
    """Tune's ``storage_path`` and ``storage_filesystem`` (None: a local path, Tune's default filesystem)."""

    path: str
    filesystem: pafs.FileSystem | None


def location_problem(location: str) -> str | None:
    """None when ``location`` is empty, a local path, or a URI of an accepted scheme that pyarrow parses (an S3
    URI without ``region`` or ``endpoint_override`` asks AWS for its bucket's region); else why not, in one line."""
    if "://" not in location:
        return None
    scheme = location.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        return f"{location!r}: unsupported scheme {scheme!r}; accepted: {ACCEPTED}"
    try:
        pafs.FileSystem.from_uri(location)
    except (OSError, ValueError, pa.ArrowException) as err:
        return f"{location!r}: pyarrow cannot open it ({one_line(str(err))}); accepted: {ACCEPTED}"
    return None


@contextlib.contextmanager
def tune_storage(location: str) -> Iterator[TuneStorage]:
    """Tune's storage for ``location`` (checked by :func:`location_problem`) while the block runs; an empty
    ``location`` is a temporary folder, deleted when the block ends."""
    if not location:
        with tempfile.TemporaryDirectory(prefix="oba-tune-", ignore_cleanup_errors=True) as folder:
            yield TuneStorage(folder, None)
    elif "://" in location:
        fs, root = filesystem(location)
        yield TuneStorage(root, fs)
    else:
        yield TuneStorage(resolve_path(location), None)
