#!/usr/bin/env bash
# Idle CPU of ticketvnc next to x11vnc on the same idle X screen, with one
# viewer connected that always has an update request pending (as real
# viewers do). A measurement, not a test: it prints numbers and never fails
# on them.
#
#   scripts/idle-cpu.sh [SECONDS]        # default 30
#
# Environment:
#   TICKETVNC=path   the binary to measure (default target/release/ticketvnc
#                    if built, else target/debug/ticketvnc, built if missing)
#   XNUM=N           X display number to use (default: the first free one in 100-119)
#
# Needs: Xvfb, xsetroot (x11-xserver-utils), xdpyinfo (x11-utils), the
# vncdotool venv (scripts/install-deps.sh --venv), and for the comparison
# x11vnc, which no test needs and install-deps.sh does not install:
#   sudo apt-get install --no-install-recommends x11vnc
# Without x11vnc only ticketvnc is measured.
#
# CPU time is utime+stime from /proc/PID/stat (all threads), sampled after
# the viewer has its first picture, over SECONDS of an unchanging screen.
set -euo pipefail

cd "$(dirname "$0")/.."
SECS="${1:-30}"
HZ="$(getconf CLK_TCK)"
PY=.venv/bin/python
DRIVER=tests/clients/vncdotool_drive.py

if [ -z "${TICKETVNC:-}" ]; then
    if [ -x target/release/ticketvnc ]; then
        TICKETVNC=target/release/ticketvnc
    else
        [ -x target/debug/ticketvnc ] || cargo build --quiet --bin ticketvnc
        TICKETVNC=target/debug/ticketvnc
    fi
fi
[ -x "$PY" ] && "$PY" -c 'import vncdotool.client' 2>/dev/null || scripts/install-deps.sh --venv

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    sleep 0.3
    rm -rf "$TMP"
}
trap cleanup EXIT

if [ -z "${XNUM:-}" ]; then
    for n in $(seq 100 119); do
        if [ ! -e "/tmp/.X$n-lock" ] && [ ! -e "/tmp/.X11-unix/X$n" ]; then
            XNUM=$n
            break
        fi
    done
fi
[ -n "${XNUM:-}" ] || { echo "no free X display in 100-119" >&2; exit 1; }
export DISPLAY=":$XNUM"

Xvfb "$DISPLAY" -screen 0 1024x768x24 -noreset -nolisten tcp >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    xdpyinfo >/dev/null 2>&1 && break
    sleep 0.1
done
xsetroot -solid '#336699'

# utime+stime of PID in clock ticks.
cpu_ticks() {
    # Fields after "(comm)": state is 3rd, utime 14th, stime 15th overall.
    sed -e 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# Start a viewer on port $1, wait for its first picture; echoes its PID.
start_viewer() {
    local port="$1" out="$TMP/viewer-$1.out"
    mkfifo "$TMP/viewer-$1.in"
    "$PY" "$DRIVER" --port "$port" --keep-requesting <"$TMP/viewer-$1.in" >"$out" 2>"$TMP/viewer-$1.err" &
    local pid=$!
    # Hold the command pipe open; ask for one full picture.
    exec {fd}>"$TMP/viewer-$1.in"
    echo refresh >&$fd
    for _ in $(seq 200); do
        grep -q '^DONE 1' "$out" 2>/dev/null && break
        sleep 0.1
    done
    grep -q '^DONE 1' "$out" || { echo "viewer did not get a picture from port $port" >&2; cat "$TMP/viewer-$1.err" >&2; exit 1; }
    VIEWER_FD=$fd
    VIEWER_PID=$pid
}

# measure NAME PID: CPU seconds of PID over SECS.
measure() {
    local name="$1" pid="$2"
    sleep 2 # let the first picture's work finish
    local a b
    a="$(cpu_ticks "$pid")"
    sleep "$SECS"
    b="$(cpu_ticks "$pid")"
    awk -v n="$name" -v t=$((b - a)) -v hz="$HZ" -v s="$SECS" \
        'BEGIN { printf "%-10s %7.2f s CPU in %d s idle with one viewer (%.2f%% of a core)\n", n, t / hz, s, 100 * t / hz / s }'
}

# --- ticketvnc
"$TICKETVNC" --db "$TMP/journal.db" serve --source x11 --display "$DISPLAY" \
    --no-auth --listen 127.0.0.1:0 >"$TMP/ticketvnc.out" 2>"$TMP/ticketvnc.err" &
TV=$!
PIDS+=($TV)
for _ in $(seq 200); do
    grep -q '^ticketvnc listening on ' "$TMP/ticketvnc.out" && break
    sleep 0.1
done
PORT="$(sed -n 's/^ticketvnc listening on 127\.0\.0\.1://p' "$TMP/ticketvnc.out" | head -1)"
[ -n "$PORT" ] || { echo "ticketvnc did not start:" >&2; cat "$TMP/ticketvnc.err" >&2; exit 1; }
start_viewer "$PORT"
PIDS+=("$VIEWER_PID")
echo "display $DISPLAY 1024x768, ${SECS}s each; ticketvnc = $TICKETVNC"
measure ticketvnc "$TV"
kill "$VIEWER_PID" "$TV" 2>/dev/null || true
exec {VIEWER_FD}>&-
wait "$TV" 2>/dev/null || true

# --- x11vnc on the same display
if ! command -v x11vnc >/dev/null 2>&1; then
    echo "x11vnc        not installed (sudo apt-get install --no-install-recommends x11vnc)"
    exit 0
fi
XPORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
x11vnc -display "$DISPLAY" -rfbport "$XPORT" -localhost -nopw -forever -shared \
    >"$TMP/x11vnc.out" 2>"$TMP/x11vnc.err" &
XV=$!
PIDS+=($XV)
for _ in $(seq 200); do
    grep -q "PORT=$XPORT" "$TMP/x11vnc.out" "$TMP/x11vnc.err" 2>/dev/null && break
    sleep 0.1
done
start_viewer "$XPORT"
PIDS+=("$VIEWER_PID")
measure x11vnc "$XV"
