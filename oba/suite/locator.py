"""Where a suite error is: the file, the line of a ``[table]`` or ``key =``, and one message.

Tables are named by their dotted path as TOML nests them (``grid.resnet32.prune``;
quotes around a part are dropped). A table that has no header of its own is
looked up as an inline table in its parent (``prune = { ... }`` inside
``[grid.resnet32]``), and a key inside it then points at that line.
"""
from __future__ import annotations

import re


class SuiteError(ValueError):
    """A suite file that cannot run, with the place and the reason."""


_HEADER = re.compile(r"^\[\s*([^\]]+?)\s*\]")


def _table_name(header: str) -> str:
    """``grid."resnet-32" . prune`` → ``grid.resnet-32.prune``."""
    return ".".join(part.strip().strip('"') for part in header.split("."))


class Locator:
    """Finds the line of ``[section]`` / ``key =`` in the suite text for error messages."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line(self, section: str, key: str | None = None) -> int | None:
        """The 1-based line of ``key`` in table ``section`` (of the table's header when ``key`` is None), else None."""
        current = None
        header_line = None
        for number, raw in enumerate(self.lines, 1):
            stripped = raw.strip()
            header = _HEADER.match(stripped)
            if header:
                current = _table_name(header.group(1))
                if current == section:
                    if key is None:
                        return number
                    header_line = number
                continue
            if key is not None and current == section and re.match(rf'^"?{re.escape(key)}"?\s*=', stripped):
                return number
        if header_line is None and "." in section:
            parent, _, name = section.rpartition(".")
            return self.line(parent, name)
        return None

    def error(self, section: str, key: str | None, message: str) -> SuiteError:
        """``path:line: [section] key: message`` (no line when neither the key nor its table is found)."""
        number = self.line(section, key)
        where = f"{self.path}:{number}" if number else self.path
        name = f"[{section}]" + (f" {key}" if key else "")
        return SuiteError(f"{where}: {name}: {message}")
