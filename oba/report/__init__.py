"""Reports, leaderboard and regression gate over a results table.

Public API (the CLI is a thin layer over these):

* :func:`write_report` — self-contained Plotly HTML report (and optional PNGs);
* :func:`write_leaderboard` — ``index.html`` and ``leaderboard.md`` with tie-aware ranks;
* :func:`check` — compare results with a baseline; :class:`CheckResult` carries the exit code;
* :func:`load_results` — read any results source into the store's schema;
  :func:`read_results` — the same, skipping (and naming) unreadable parts.
"""
from oba.report.check import CheckResult, check
from oba.report.leaderboard_files import write_leaderboard
from oba.report.load import LoadedResults, ResultsUnreadable, load_results, read_results
from oba.report.suite_page import StaticExportError, write_report

__all__ = [
    "CheckResult",
    "LoadedResults",
    "ResultsUnreadable",
    "StaticExportError",
    "check",
    "load_results",
    "read_results",
    "write_leaderboard",
    "write_report",
]
