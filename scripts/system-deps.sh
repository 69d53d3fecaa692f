#!/usr/bin/env bash
# System packages the tests use: Debian's Chromium, which opens generated reports headless.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing chromium (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
    echo "[setup] chromium is missing and cannot be installed without root/apt-get; browser tests will be skipped" >&2
fi
