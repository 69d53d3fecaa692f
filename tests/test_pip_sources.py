"""scripts/pip_sources.py: the uv arguments that read packages from where pip is configured to, against listings
written by hand and against this machine's own ``pip config list``."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pip_sources.py"
spec = importlib.util.spec_from_file_location("pip_sources", SCRIPT)
pip_sources = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pip_sources)


def test_an_environment_variable_wins_over_a_file_and_install_over_global() -> None:
    listing = "\n".join([
        ":env:.find-links='/opt/env-wheels'",
        "global.find-links='/opt/file-wheels'",
        "global.index-url='https://mirror.example/simple'",
        "install.index-url='https://install.example/simple'",
        "global.extra-index-url='file:///a/simple file:///b/simple'",
        "global.cert='/etc/ssl/certs/ca.crt'",
        "global.constraint='/etc/pip/constraints.txt'",
    ])
    settings = pip_sources.pip_settings(listing)
    assert settings["find-links"] == "/opt/env-wheels"
    assert settings["index-url"] == "https://install.example/simple"
    assert pip_sources.uv_arguments(settings) == [
        "--index-strategy", "unsafe-best-match",
        "--index-url", "https://install.example/simple",
        "--extra-index-url", "file:///a/simple", "--extra-index-url", "file:///b/simple",
        "--find-links", "/opt/env-wheels",
        "--constraint", "/etc/pip/constraints.txt",
    ]


def test_no_index_and_an_empty_configuration() -> None:
    assert pip_sources.uv_arguments(pip_sources.pip_settings("")) == ["--index-strategy", "unsafe-best-match"]
    settings = pip_sources.pip_settings("global.no-index='true'\nnot a setting line\n")
    assert pip_sources.uv_arguments(settings)[-1] == "--no-index"


def test_the_script_prints_one_argument_per_line_for_this_machines_pip() -> None:
    printed = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=True).stdout
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=True).stdout
    assert printed.splitlines() == pip_sources.uv_arguments(pip_sources.pip_settings(listing))
