"""One colour and one marker shape per criterion, the same in every figure of a report.

Colours come from colour-blind-safe qualitative palettes: Paul Tol's "muted"
scheme (nine colours designed to stay distinct under the common colour-vision
deficiencies and in grey-scale print), then the Okabe–Ito orange, blue and black.
Every criterion also gets its own marker shape, so two criteria stay apart even
where colours cannot (more criteria than colours, or a monochrome print).
Both are assigned in the order of the sorted criterion names, so a criterion's
look depends only on which criteria the results hold, never on row order.
"""
from __future__ import annotations

from collections.abc import Iterable

COLOURS = (
    "#332288",  # indigo
    "#88ccee",  # cyan
    "#44aa99",  # teal
    "#117733",  # green
    "#999933",  # olive
    "#ddcc77",  # sand
    "#cc6677",  # rose
    "#882255",  # wine
    "#aa4499",  # purple
    "#e69f00",  # orange (Okabe–Ito)
    "#0072b2",  # blue (Okabe–Ito)
    "#000000",  # black
)
SYMBOLS = (
    "circle",
    "square",
    "diamond",
    "triangle-up",
    "triangle-down",
    "x",
    "cross",
    "star",
    "pentagon",
    "hexagon",
    "triangle-left",
    "star-diamond",
    "hourglass",
    "triangle-right",
    "bowtie",
    "diamond-wide",
)


def criterion_colours(criteria: Iterable[str]) -> dict[str, str]:
    """``criterion → colour``, assigned by sorted name; colours repeat after ``len(COLOURS)``."""
    return {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(sorted(set(criteria)))}


def criterion_symbols(criteria: Iterable[str]) -> dict[str, str]:
    """``criterion → marker symbol``, one shape per name (shapes repeat only after ``len(SYMBOLS)`` names)."""
    return {name: SYMBOLS[i % len(SYMBOLS)] for i, name in enumerate(sorted(set(criteria)))}
