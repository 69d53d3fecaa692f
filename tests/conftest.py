import os

import pytest
import torch
from s3_server import s3_endpoint, s3_location  # noqa: F401  (fixtures: a real S3-compatible server on loopback)

torch.set_num_threads(int(os.environ.get("OBA_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
