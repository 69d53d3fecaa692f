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
"$VENV/bin/python" -m pip install --quiet --no-compile "${TORCH_PINS[@]}"
"$VENV/bin/python" -m pip install --quiet --no-compile -e "$TARGET"
# Compile what runs import, once, and keep the bytecode: every later process (the driver, each Ray worker
# and Ray's own agents, the report) then reads it instead of compiling torch, Ray and pandas again
# (measured: 15 s -> 6.5 s to import torch, Ray Tune and the cell pipeline). The modules a run imports
# are compiled by importing them, and all of Ray (whose agents import more of it) by compileall.
# PYTHONDONTWRITEBYTECODE, when the environment sets it, is lifted for this one command only; it never
# stops Python from reading bytecode.
env -u PYTHONDONTWRITEBYTECODE "$VENV/bin/python" -c "
import compileall, os
import oba.suite.runner, oba.suite.cell, oba.criteria, baselines, oba.report.html, oba.report.leaderboard, oba.cli
import ray, ray.tune, ray.train.torch
compileall.compile_dir(os.path.dirname(ray.__file__), quiet=2, workers=2)
"
echo "$BASE ${EXTRAS:--}" > "$STAMP"
echo "[setup] done"
