"""One colour and marker per criterion, the same in every figure of a report.

Colours are assigned from a fixed qualitative palette in the order of the
sorted criterion names, so a criterion's colour depends only on which criteria
the results hold, never on the order in which rows or figures happen to list them.
"""
from __future__ import annotations

from collections.abc import Iterable

# Tableau 10 followed by darker/lighter companions: distinguishable on white, print-safe.
COLOURS = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1f3b73",
    "#a0522d",
    "#2e7d32",
    "#6a1b9a",
    "#00838f",
    "#c2185b",
)
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star")


def criterion_colours(criteria: Iterable[str]) -> dict[str, str]:
    """``criterion → colour``, assigned by sorted name; colours repeat after ``len(COLOURS)``."""
    return {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(sorted(set(criteria)))}


def criterion_symbols(criteria: Iterable[str]) -> dict[str, str]:
    """``criterion → marker symbol``; changes every ``len(COLOURS)`` names so repeated colours differ in shape."""
    return {name: SYMBOLS[(i // len(COLOURS)) % len(SYMBOLS)] for i, name in enumerate(sorted(set(criteria)))}
