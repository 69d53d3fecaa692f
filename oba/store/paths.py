"""Locations as every trial sees them, whatever its working folder: URIs as given, local paths made absolute.

Tune runs each trial in a working folder of its own, where a relative path would point nowhere, so the driver
resolves every local path before a trial starts.
"""
from __future__ import annotations

import os


def resolve_path(path: str) -> str:
    """A local path as every trial sees it: ``~`` expanded, then absolute."""
    return os.path.abspath(os.path.expanduser(path))


def resolve_results(results: str) -> str:
    """A results location as trials on any node see it: URIs as given, local paths resolved (:func:`resolve_path`)."""
    return results if "://" in results else resolve_path(results)
