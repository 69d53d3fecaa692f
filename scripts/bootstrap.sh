#!/usr/bin/env bash
# Create or refresh .venv in the repository root with the project; `bootstrap.sh test` adds the
# test extras (the test command's set-up; the main job needs none of them).
# torch/torchvision are pinned to the builds this machine serves from local files
# (see DESIGN.md section 5); everything else comes from the package index. Packages are
# installed without byte-compiling every module (--no-compile); the modules a run imports are
# compiled once at the end, a small part of torch.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
TORCH_PINS=("torch==2.14.1" "torchvision==0.29.1")
EXTRAS="${1:-}"
TARGET="$ROOT"
if [ -n "$EXTRAS" ]; then
    TARGET="$ROOT[$EXTRAS]"
fi

if [ ! -x "$VENV/bin/python" ]; then
    # The project reads suites with tomllib (Python 3.11+), as pyproject.toml's requires-python says.
    if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "[setup] error: Python 3.11 or newer is needed; $PY is $("$PY" -V 2>&1 || echo missing). Set PYTHON to a newer interpreter." >&2
        exit 1
    fi
    echo "[setup] creating $VENV"
    "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.oba-installed"
BASE="$(sha256sum < "$ROOT/pyproject.toml" | cut -d' ' -f1) ${TORCH_PINS[*]}"
if [ -f "$STAMP" ]; then
    read -r -a HAVE < "$STAMP"
    # The stamp is the pyproject hash, the torch pins, then the extras installed ("-" for none).
    if [ "${HAVE[*]:0:3}" = "$BASE" ] && { [ -z "$EXTRAS" ] || [ "${HAVE[3]:-}" = "$EXTRAS" ]; }; then
        echo "[setup] .venv is up to date"
        exit 0
    fi
fi
echo "[setup] installing torch and the project${EXTRAS:+ with its $EXTRAS extras} (first run takes a few minutes)"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# uv installs the wheels in parallel (measured cold: 18 s against pip's 64 s for the same set, benchmarks/README.md),
# reading from the sources pip is configured with (scripts/pip_sources.py). Where uv cannot be had, pip does it.
install_with_uv() {
    [ -x "$VENV/bin/uv" ] || "$VENV/bin/python" -m pip install --quiet "uv>=0.9" >/dev/null 2>&1 || return 1
    local listing sources
    listing="$("$VENV/bin/python" "$ROOT/scripts/pip_sources.py")" || return 1
    mapfile -t sources <<< "$listing"
    "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" "${sources[@]}" "$@"
}
if ! install_with_uv "${TORCH_PINS[@]}" -e "$TARGET"; then
    echo "[setup] uv is not available or failed; installing with pip"
    "$VENV/bin/python" -m pip install --quiet --no-compile "${TORCH_PINS[@]}"
    "$VENV/bin/python" -m pip install --quiet --no-compile -e "$TARGET"
fi
# Compile what runs import, once, and keep the bytecode: every later process (the driver, each Ray worker
# and Ray's own agents, the report) then reads it instead of compiling torch, Ray and pandas again
# (measured: 15 s -> 6.5 s to import torch, Ray Tune and the cell pipeline). Two processes share the work: one
# imports the torch side and the project, the other compiles all of Ray (whose agents import more of it than a run
# does) and imports the table and plotting side (measured: 11 s against 22 s in one process).
# PYTHONDONTWRITEBYTECODE, when the environment sets it, is lifted for these commands only; it never
# stops Python from reading bytecode.
warm() { env -u PYTHONDONTWRITEBYTECODE "$VENV/bin/python" -c "$1"; }
warm "import torch, torchvision, timm, torch_pruning, oba.criteria as c, oba.suite.cell, oba.suite.runner, oba.report, oba._commands.run, oba._commands.results
[c.get(name) for name in c.names()]" &
TORCH_SIDE=$!
warm "
import compileall, os, ray
compileall.compile_dir(os.path.dirname(ray.__file__), quiet=2)
import ray.tune, ray.train.torch, pandas, pyarrow.parquet, plotly.graph_objects, scipy.stats
"
wait "$TORCH_SIDE"
echo "$BASE ${EXTRAS:--}" > "$STAMP"
echo "[setup] done"
