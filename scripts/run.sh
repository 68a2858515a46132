#!/usr/bin/env bash
# Quick start: serve a private virtual desktop (Xvfb with an xterm in it) on
# 127.0.0.1:5900 without a password, for trying ticketvnc with any viewer:
#   scripts/run.sh            then: vncviewer 127.0.0.1::5900
# Extra arguments go to `ticketvnc serve` (e.g. --listen 127.0.0.1:5901).
# Installs xvfb and xterm (and the build's system libraries) first if they
# are missing (as root, or with sudo); where that is impossible it serves the
# built-in test pattern instead, built without the features that need them.
set -euo pipefail

cd "$(dirname "$0")/.."

# The libraries two default features link (libjpeg-turbo for Tight JPEG,
# PipeWire and libclang for --source gnome).
build_libs_present() {
    command -v pkg-config >/dev/null 2>&1 &&
        pkg-config --exists libturbojpeg libpipewire-0.3 &&
        { ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || ls /usr/lib/*/libclang*.so >/dev/null 2>&1; }
}

want=()
command -v Xvfb >/dev/null 2>&1 || want+=(xvfb)
command -v xterm >/dev/null 2>&1 || want+=(xterm)
build_libs_present || want+=(pkg-config libturbojpeg0-dev libpipewire-0.3-dev libclang-dev)
if [ "${#want[@]}" -gt 0 ]; then
    SUDO=()
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    fi
    if [ "$(id -u)" = 0 ] || [ "${#SUDO[@]}" -gt 0 ]; then
        echo "scripts/run.sh: installing ${want[*]}" >&2
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
    fi
fi

features=()
if ! build_libs_present; then
    # Pure Rust only: Tight JPEG through jpeg-encoder, no --source gnome.
    echo "scripts/run.sh: libturbojpeg/libpipewire/libclang missing (needs root or sudo); building without the turbojpeg and gnome features" >&2
    features=(--no-default-features)
fi

if command -v Xvfb >/dev/null 2>&1 && command -v xterm >/dev/null 2>&1; then
    exec cargo run --release "${features[@]}" -- serve --virtual 1280x800 --session xterm --no-auth "$@"
else
    echo "scripts/run.sh: no Xvfb/xterm (needs root or sudo to install); serving the test pattern" >&2
    exec cargo run --release "${features[@]}" -- serve --source test-pattern --no-auth "$@"
fi
