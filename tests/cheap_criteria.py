"""Criteria with their sampling options made cheap, for tests that run every criterion on whole models."""
from __future__ import annotations

import oba
from oba.criteria.base import Criterion

CHEAP_OPTIONS = {"obd-hutchinson": {"k": 2}, "taylor2-group": {"probes": 2}}
"""Fewer Hutchinson probes and sign patterns than the defaults: what is tested is that they prune, not how well."""


def cheap(name: str) -> Criterion:
    """The registered criterion ``name`` with :data:`CHEAP_OPTIONS` applied."""
    return oba.criteria.get(name, **CHEAP_OPTIONS.get(name, {}))
