"""Print, one per line, the uv arguments that make `uv pip install` read packages from where pip is configured to.

uv does not read pip's configuration files or PIP_* variables. This translates what `pip config list` reports
(its files already merged, lines ``section.key='value'``; PIP_* variables as ``:env:.key``) for the keys that
choose sources: index-url, extra-index-url, find-links, no-index and constraint. As in pip, a variable wins over a
file and an ``[install]`` key over a ``[global]`` one.
Like pip, every index is searched for the best version (`--index-strategy unsafe-best-match`).
Run with the interpreter whose pip is meant: `.venv/bin/python scripts/pip_sources.py`.
"""
from __future__ import annotations

import subprocess
import sys

FLAGS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
         "constraint": "--constraint"}


def pip_settings(listing: str) -> dict[str, str]:
    """The effective value of each key in ``pip config list`` output."""
    ranked: dict[str, tuple[tuple[bool, bool], str]] = {}
    for line in listing.splitlines():
        name, sep, value = line.partition("=")
        if not sep or "." not in name:
            continue
        section, _, key = name.rpartition(".")
        rank = (section == ":env:", section == "install")
        if key not in ranked or rank >= ranked[key][0]:
            ranked[key] = (rank, value.strip().strip("'\""))
    return {key: value for key, (_, value) in ranked.items()}


def uv_arguments(settings: dict[str, str]) -> list[str]:
    """uv flags for the source-choosing keys of ``settings``; list values are whitespace-separated, as in pip."""
    args = ["--index-strategy", "unsafe-best-match"]
    for key, flag in FLAGS.items():
        for value in settings.get(key, "").split():
            args += [flag, value]
    if settings.get("no-index", "").lower() in {"1", "true", "yes", "on"}:
        args.append("--no-index")
    return args


def main() -> None:
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=True).stdout
    print("\n".join(uv_arguments(pip_settings(listing))))


if __name__ == "__main__":
    main()
