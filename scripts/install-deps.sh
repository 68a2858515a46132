#!/usr/bin/env bash
# Install what the test suite needs besides Rust, on Debian/Ubuntu:
# system packages (needs root) and vncdotool in the repository's .venv.
#   scripts/install-deps.sh            # both
#   scripts/install-deps.sh --system   # only the Debian packages
#   scripts/install-deps.sh --venv     # only the Python venv
#   scripts/install-deps.sh --node     # only playwright-core (tests/clients/node_modules)
set -euo pipefail

cd "$(dirname "$0")/.."

# Every Debian package a test uses (keep .ci/run and README in step with this list).
PACKAGES=(
    xvfb            # private X servers for the viewer tests
    tigervnc-viewer # vncviewer, a real client
    xdotool         # find the viewer window
    x11-utils       # xdpyinfo (is Xvfb up?), xwininfo, xev (input reaches X)
    x11-xserver-utils # xsetroot, xrandr (the X desktop tests)
    xclip           # the X clipboard, both ways
    x11-apps        # xwd and friends, for debugging screenshots
    imagemagick     # import: screenshot a window as raw RGB
    xterm           # something recognisable on an X screen
    x11-xkb-utils   # setxkbmap: keyboard layouts of the served and viewer displays (tests/keyboard_layouts.rs)
    xfonts-base     # the "fixed" font Xvfb and xterm need (only recommended by xserver-common)
    python3         # vncdotool, a real client
    python3-venv
    ca-certificates # pip over HTTPS
    sqlite3         # inspecting the ticket journal
    procps          # kill(1), used to stop Xvfb cleanly
    x11vnc          # the peer that proves the test repeater faithful (tests/repeater.rs)
    tigervnc-scraping-server # x0vncserver (X0tigervnc): the peer over the slow link (tests/flow.rs) and in `ticketvnc bench`
    dbus-daemon     # a private session bus for the tray test (tests/tray.rs)
    chromium        # the technician's browser (tests/browser.rs)
    postgresql      # the team journal (tests/journal_pg.rs: a private cluster per test)
    gcc-mingw-w64-x86-64 # the Windows build's C parts (sqlite, ring) and tests/windows/*.c
    wine            # runs the Windows build (tests/windows_wine.rs)
    wine64
    mutter          # GNOME's compositor, run headless (tests/wayland_gnome.rs)
    pipewire        # the screen-cast stream Mutter offers (tests/wayland_gnome.rs)
    wireplumber     # PipeWire's session manager
    gdb             # backtraces of a crashed server from its core in CI (.ci/run)
    libglib2.0-bin  # gdbus: is mutter on its session bus yet? (tests/wayland_gnome.rs)
    libpipewire-0.3-dev # the pipewire crate links libpipewire (--source gnome)
    libclang-dev    # bindgen, for pipewire-sys and libspa-sys
    pkg-config      # finds libpipewire for the build
    sway            # a headless wlroots compositor for the Wayland tests (tests/wayland_sway.rs)
    swaybg          # a known picture on the sway output
    grim            # the compositor's own screenshot, compared with the viewers'
    foot            # a Wayland terminal that typing and the pointer reach
    wayvnc          # the Wayland peer, side by side (docs/benchmarks.md)
    wl-clipboard    # wl-copy / wl-paste: the Wayland clipboard's own clients (wayland_sway and desktop_security clipboard tests)
    xdg-desktop-portal # the portal frontend --source portal talks to (tests/wayland_portal.rs)
    python3-dbus    # tests/portal/test_backend.py: the test's portal backend on the session bus
    python3-gi      # its GLib main loop
    passwd          # useradd: the compositors run as the unprivileged user ticketvnc-test
    util-linux      # runuser; taskset (ticketvnc bench --cpus)
    gcc             # builds tests/clients/ard_client.c
    libvncserver-dev # libvncclient: a second Apple DH (type 30) implementation (tests/apple_dh.rs)
    libturbojpeg0-dev # libjpeg-turbo's TurboJPEG API: Tight JPEG links it (the turbojpeg crate)
)
# Node.js and npm drive that browser through Playwright. They are installed
# only when missing: a NodeSource nodejs (common on CI images) already
# brings npm and conflicts with Debian's npm package. Debian 12's own
# nodejs is 18, so playwright-core is pinned to a release that supports
# Node >= 18 (tests/clients/package.json).
NODE_PACKAGES=(nodejs npm)
# vncdotool version the tests were written against.
VNCDOTOOL=vncdotool==1.4.2
# asyncvnc: a second, independent Zlib (encoding 6) decoder for the
# cross-checks in tests/crosscheck.rs (Python's zlib, one stream per connection).
ASYNCVNC=asyncvnc==1.3.0

want_system=1
want_venv=1
want_node=1
case "${1:-}" in
    --system) want_venv=0; want_node=0 ;;
    --venv) want_system=0; want_node=0 ;;
    --node) want_system=0; want_venv=0 ;;
    "") ;;
    *) echo "usage: $0 [--system|--venv|--node]" >&2; exit 2 ;;
esac

if [ "$want_system" = 1 ]; then
    SUDO=()
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            echo "Installing system packages needs root. Run as root:" >&2
            echo "  apt-get update && apt-get install -y --no-install-recommends ${PACKAGES[*]} ${NODE_PACKAGES[*]}" >&2
            exit 1
        fi
    fi
    # The tests start their own PostgreSQL clusters (initdb in a temporary
    # directory, loopback only); Debian's default cluster and its service
    # are not needed, so none is created when the package is installed.
    if [ ! -d /usr/lib/postgresql ]; then
        "${SUDO[@]}" mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" |
            "${SUDO[@]}" tee /etc/postgresql-common/createcluster.d/ticketvnc-tests.conf >/dev/null
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    missing_node=()
    command -v node >/dev/null 2>&1 || missing_node+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing_node+=(npm)
    if [ "${#missing_node[@]}" -gt 0 ]; then
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing_node[@]}" >/dev/null
    fi
fi

if [ "$want_venv" = 1 ]; then
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    if ! .venv/bin/python -c 'import vncdotool.client' 2>/dev/null; then
        .venv/bin/pip install --quiet --disable-pip-version-check "$VNCDOTOOL"
    fi
    if ! .venv/bin/python -c 'import asyncvnc' 2>/dev/null; then
        .venv/bin/pip install --quiet --disable-pip-version-check "$ASYNCVNC"
    fi
fi

if [ "$want_node" = 1 ]; then
    # playwright-core at the version pinned in tests/clients/package-lock.json;
    # it drives Debian's chromium, so no browser is downloaded.
    if [ ! -d tests/clients/node_modules/playwright-core ]; then
        (cd tests/clients && npm ci --no-audit --no-fund --silent)
    fi
fi
