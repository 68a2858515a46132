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
for cmd in Xvfb vncviewer xdotool xdpyinfo xwininfo xev xsetroot xrandr xclip xterm setxkbmap display import sqlite3 python3 kill x11vnc x0vncserver X0tigervnc dbus-daemon node npm chromium wine wineserver x86_64-w64-mingw32-gcc mutter pipewire wireplumber dbus-run-session gdbus pkg-config sway swaybg grim foot wayvnc wl-copy wl-paste useradd runuser taskset mkfifo cc; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
# The build links libpipewire (--source gnome) through bindgen (libclang).
if ! pkg-config --exists libpipewire-0.3 2>/dev/null; then
    missing+=("libpipewire-0.3-dev")
fi
if ! ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 && ! ls /usr/lib/*/libclang*.so >/dev/null 2>&1; then
    missing+=("libclang-dev")
fi
# libjpeg-turbo's TurboJPEG library (Tight JPEG links it through pkg-config).
if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists libturbojpeg; then
    missing+=("libturbojpeg0-dev")
fi
# PostgreSQL's server programs are off PATH on Debian (tests/common/pg.rs finds them).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=("postgresql")
fi
# The portal frontend and the Python modules of the test's portal backend
# (tests/wayland_portal.rs).
if [ ! -x /usr/libexec/xdg-desktop-portal ]; then
    missing+=("xdg-desktop-portal")
fi
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import dbus, gi' 2>/dev/null; then
    missing+=("python3-dbus" "python3-gi")
fi
# libvncclient's header (tests/apple_dh.rs builds a client on it).
if [ ! -e /usr/include/rfb/rfbclient.h ]; then
    missing+=("libvncserver-dev")
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
# --workspace: the strict test decoder (crates/rfb-decode) is a crate of its own.
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets --no-fail-fast
# The journal test suite once more, on PostgreSQL (issue 15): each case
# against a private cluster of its own (tests/common/testdb.rs, pg.rs).
journal_tests=(kb_search kb_recall tickets_journal tickets_cli journal_writer journal_serve
               tickets_hooks hooks_serve tickets_viewer journal_abuse_verify)
TICKETVNC_TEST_DB=postgres cargo test --no-fail-fast $(printf -- '--test %s ' "${journal_tests[@]}")
# --all-targets skips doctests; the examples in the docs must compile and run too.
cargo test --workspace --doc
