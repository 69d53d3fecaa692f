#!/usr/bin/env bash
# Set up .venv, then run the whole test suite inside a loopback-only network
# namespace, so Ray (and anything else a test starts) binds to 127.0.0.1 and no
# test traffic can leave the machine. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh" test
bash "$ROOT/scripts/system-deps.sh"
cd "$ROOT"
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
if ! unshare -n true 2>/dev/null; then
    echo "error: cannot create a network namespace (unshare -n needs root or user namespaces)." >&2
    echo "Tests that start Ray must run with loopback only; run as root or enable user namespaces." >&2
    exit 1
fi
# Two pytest-xdist workers: the model zoo's tests (compute only) on one, every other test in its file order on the
# other (tests/conftest.py), so the zoo uses the core the others leave idle. `-n 0` runs everything in one process.
exec unshare -n sh -c 'ip link set lo up && exec "$0" -m pytest -n 2 --dist loadgroup "$@"' "$ROOT/.venv/bin/python" "$@"
