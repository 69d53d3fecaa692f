"""Plain text for terminals and stored rows: no terminal control codes, one-line reasons."""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def plain(text: str) -> str:
    """``text`` without terminal escape sequences (colours, cursor moves, titles) or control characters.

    Newlines and tabs are kept; carriage returns become newlines.
    """
    return _CONTROLS.sub("", _ESCAPES.sub("", text).replace("\r\n", "\n").replace("\r", "\n"))


def one_line(text: str) -> str:
    """``text`` as plain text on one line (runs of whitespace, newlines included, become one space)."""
    return " ".join(plain(text).split())


def reason(error: str) -> str:
    """The one-line reason of a stored error message: its first non-empty line, as plain text."""
    for line in plain(error).splitlines():
        if line.strip():
            return one_line(line)
    return "no message"


@contextmanager
def silenced(*names: str) -> Iterator[None]:
    """Within the block, the loggers ``names`` report nothing below CRITICAL (a caller that reports the same
    failures itself, in one line each, keeps their tracebacks off the terminal)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for each, level in zip(loggers, levels):
            each.setLevel(level)
