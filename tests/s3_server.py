"""A real S3-compatible server (moto's server mode) on loopback, for tests of object storage.

``s3_location`` yields a fresh ``s3://…`` results URI on its own bucket, with the
endpoint given as query parameters that pyarrow's ``FileSystem.from_uri``
understands, and the credentials the server accepts in ``AWS_*`` variables.
"""
from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pyarrow.fs as pafs
import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a moto S3 server running for the whole session."""
    from moto.server import ThreadedMotoServer

    for name, value in CREDENTIALS.items():
        os.environ.setdefault(name, value)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


def objects(location: str) -> list[str]:
    """Every object under ``location`` (a URI or a path), named below the location's root, sorted."""
    from oba.store.results import filesystem

    fs, root = filesystem(location)
    return sorted(i.path[len(root) + 1:] for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                  if i.type == pafs.FileType.File)


def s3_uri(endpoint: str, bucket: str, prefix: str) -> str:
    """The URI of ``bucket/prefix`` on the server at ``endpoint`` (plain HTTP)."""
    return f"s3://{bucket}/{prefix}?endpoint_override={endpoint}&scheme=http&region=us-east-1"


@pytest.fixture
def s3_location(s3_endpoint: str) -> str:
    """A results URI under a new, empty bucket."""
    bucket = f"oba-{uuid.uuid4().hex[:12]}"
    fs, _ = pafs.FileSystem.from_uri(s3_uri(s3_endpoint, bucket, "x") + "&allow_bucket_creation=true")
    fs.create_dir(bucket)
    return s3_uri(s3_endpoint, bucket, "results")
