#!/usr/bin/env bash
# Create or refresh .venv in the repository root with the project and its test extras.
# torch/torchvision are pinned to the builds this machine serves from local files
# (see DESIGN.md section 5); everything else comes from the package index.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
TORCH_PINS=("torch==2.14.1" "torchvision==0.29.1")

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.oba-installed"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1) ${TORCH_PINS[*]}"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    echo "[setup] .venv is up to date"
    exit 0
fi
echo "[setup] installing torch and the project (first run takes a few minutes)"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "${TORCH_PINS[@]}"
"$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]"
echo "$WANT" > "$STAMP"
echo "[setup] done"
