#!/usr/bin/env bash
# Run every test: formatting, lints, unit tests and the integration tests
# with real VNC clients (vnc-rs, vncdotool, TigerVNC vncviewer under Xvfb).
#
# Needs Rust plus a few Debian packages and a Python venv with vncdotool.
# The venv (.venv) is created here. Missing Debian packages are installed
# as root (as in CI) or with sudo; otherwise the exact apt-get command is printed.
set -euo pipefail

cd "$(dirname "$0")/.."

missing=()
for cmd in Xvfb vncviewer xdotool xdpyinfo xwininfo xev xsetroot xrandr xclip xterm setxkbmap display import sqlite3 python3 kill x11vnc x0vncserver X0tigervnc dbus-daemon node npm chromium wine wineserver x86_64-w64-mingw32-gcc; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
# libjpeg-turbo's TurboJPEG library (Tight JPEG links it through pkg-config).
if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists libturbojpeg; then
    missing+=("libturbojpeg0-dev")
fi
# PostgreSQL's server programs are off PATH on Debian (tests/common/pg.rs finds them).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=("postgresql")
fi
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    missing+=("python3-venv")
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "scripts/test.sh: missing ${missing[*]}; installing system packages" >&2
    scripts/install-deps.sh --system
fi
scripts/install-deps.sh --venv
scripts/install-deps.sh --node

cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets --no-fail-fast
# --all-targets skips doctests; the examples in the docs must compile and run too.
cargo test --doc
