#!/usr/bin/env bash
# Quick start: serve a private virtual desktop (Xvfb with an xterm in it) on
# 127.0.0.1:5900 without a password, for trying ticketvnc with any viewer:
#   scripts/run.sh            then: vncviewer 127.0.0.1::5900
# Extra arguments go to `ticketvnc serve` (e.g. --listen 127.0.0.1:5901).
# Installs xvfb and xterm first if they are missing (as root, or with sudo);
# where that is impossible it serves the built-in test pattern instead.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v Xvfb >/dev/null 2>&1 || ! command -v xterm >/dev/null 2>&1; then
    SUDO=()
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    fi
    if [ "$(id -u)" = 0 ] || [ "${#SUDO[@]}" -gt 0 ]; then
        echo "scripts/run.sh: installing xvfb and xterm" >&2
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends xvfb xterm >/dev/null
    fi
fi

if command -v Xvfb >/dev/null 2>&1 && command -v xterm >/dev/null 2>&1; then
    exec cargo run --release -- serve --virtual 1280x800 --session xterm --no-auth "$@"
else
    echo "scripts/run.sh: no Xvfb/xterm (needs root or sudo to install); serving the test pattern" >&2
    exec cargo run --release -- serve --source test-pattern --no-auth "$@"
fi
