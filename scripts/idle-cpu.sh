#!/bin/bash
# CPU of VNC servers while the screen changes and no viewer is connected
# (issue 12: "changing screen with no viewer: 0.0% CPU").
#
#   scripts/idle-cpu.sh [SECONDS] [TICKETVNC_BINARY...]
#
# Starts its own Xvfb 1920x1080x24, changes the root window's colour 20 times
# a second (xsetroot), and runs each server in turn on it for SECONDS (default
# 10) after a 3 s settle: every ticketvnc binary given (default
# target/release/ticketvnc), x0vncserver and x11vnc. Prints the server's CPU
# (user+system from /proc/PID/stat) over the window and its peak RSS (VmHWM).
# The server command lines are those of `ticketvnc bench` (src/bench/servers.rs).
set -eu
secs=${1:-10}
shift || true
bins=("$@")
[ ${#bins[@]} -eq 0 ] && bins=(target/release/ticketvnc)
hz=$(getconf CLK_TCK)
disp=:$((200 + RANDOM % 50))
Xvfb "$disp" -screen 0 1920x1080x24 -noreset -nolisten tcp >/dev/null 2>&1 &
xpid=$!
changer=
cleanup() {
    [ -n "$changer" ] && kill "$changer" 2>/dev/null || true
    kill "$xpid" 2>/dev/null || true
}
trap cleanup EXIT
sleep 1
(
    i=0
    while :; do
        DISPLAY=$disp xsetroot -solid "#$(printf '%02x%02x%02x' $((i % 256)) $((i * 7 % 256)) $((i * 13 % 256)))"
        i=$((i + 1))
        sleep 0.05
    done
) &
changer=$!
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
measure() {
    local name=$1
    shift
    "$@" >/dev/null 2>&1 &
    local pid=$!
    sleep 3
    local t0 t1
    t0=$(ticks "$pid")
    sleep "$secs"
    t1=$(ticks "$pid")
    local hwm
    hwm=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    awk -v n="$name" -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$secs" -v m="$hwm" \
        'BEGIN { printf "| %s | %.1f%% | %s MiB |\n", n, 100 * (b - a) / hz / s, m }'
}
echo "| server (no viewer, screen changing 20x/s) | CPU | peak RSS |"
echo "|---|---:|---:|"
port=5990
for b in "${bins[@]}"; do
    db=$(mktemp -d)
    measure "ticketvnc $b" env XDG_CONFIG_HOME="$db" "$b" --db "$db/j.db" serve --source x11 \
        --display "$disp" --listen 127.0.0.1:$port --no-auth --no-web
    rm -rf "$db"
    port=$((port + 1))
done
measure x0vncserver X0tigervnc -display "$disp" -rfbport $port -interface=127.0.0.1 -SecurityTypes=None
port=$((port + 1))
measure x11vnc x11vnc -display "$disp" -rfbport $port -localhost -nopw -forever -shared -noipv6 -q
