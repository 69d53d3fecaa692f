import os

import pytest
import torch
from s3_server import s3_endpoint, s3_location  # noqa: F401  (fixtures: a real S3-compatible server on loopback)

torch.set_num_threads(int(os.environ.get("OBA_TEST_THREADS", "1")))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Two pytest-xdist groups (``--dist loadgroup``, as the README's test command runs): the zoo's tests, which only
    compute, and all others in their file order. Each group runs on one worker, so tests that start Ray never run
    beside each other."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group("zoo" if item.get_closest_marker("zoo") else "main"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _registries_as_they_were():
    """Entries a test registers (a plugin's criterion, a test model) do not outlive it: a suite's "all" expands to
    the built-in criteria in every other test."""
    from oba.criteria.registry import CRITERIA
    from oba.data import DATASETS
    from oba.models import MODELS

    before = {registry: registry.plugins() for registry in (CRITERIA, DATASETS, MODELS)}
    yield
    for registry, names in before.items():
        for name in registry.plugins() - names:
            registry.unregister(name)
