"""Plain text for terminals and stored rows: no terminal control codes, one-line reasons."""
from __future__ import annotations

import re

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
