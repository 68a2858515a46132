#!/usr/bin/env bash
# The one-hour soak (issue 10): not a CI step, run by hand and reported in
# docs/testing.md.
#
#   scripts/soak.sh [SECONDS]        default 3600
#
# Set-up, all on loopback and private X displays this script starts:
# - a served Xvfb whose screen changes all the time (an xterm listing files
#   and the root window recoloured five times a second), resized with
#   `xrandr --fb` every 30 s (1920x1080 <-> 1600x900);
# - ticketvnc (target/release/ticketvnc, or $TICKETVNC_BIN) serving it
#   with its own journal;
# - two TigerVNC vncviewers (shared) on a second Xvfb, connected all along;
# - a vncdotool viewer that connects every 10 s, presses a key, takes a
#   screenshot and disconnects;
# - clipboard traffic both ways every 7 s (xclip on the served display and
#   on the viewers' display);
# - every 30 s: the server's RSS, CPU time, threads and open files.
#
# At the end: the server is stopped with SIGTERM, and the script checks that
# it exited 0, that no key is held on the served display, that every viewer
# connection is a session in the journal with an end, that
# `sessions verify` passes, and how RSS moved after the warm-up (5 min).
# The summary goes to stdout and to $WORK/summary.txt.
set -euo pipefail

cd "$(dirname "$0")/.."
DUR=${1:-3600}
BIN=${TICKETVNC_BIN:-target/release/ticketvnc}
[ -x "$BIN" ] || { echo "soak: build first: cargo build --release (or set TICKETVNC_BIN)" >&2; exit 2; }
VNCDO=${VNCDO:-.venv/bin/vncdo}
[ -x "$VNCDO" ] || { echo "soak: needs vncdotool in .venv (scripts/install-deps.sh --venv)" >&2; exit 2; }
for cmd in Xvfb vncviewer xterm xsetroot xrandr xclip xdpyinfo python3; do
    command -v "$cmd" >/dev/null || { echo "soak: needs $cmd (scripts/install-deps.sh --system)" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/ticketvnc-soak.XXXXXX)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

free_display() {
    local n=$1
    while [ -e "/tmp/.X$n-lock" ] || [ -e "/tmp/.X11-unix/X$n" ]; do n=$((n + 1)); done
    echo "$n"
}
start_xvfb() {
    Xvfb ":$1" -screen 0 1920x1080x24 -noreset >"$WORK/xvfb-$1.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do xdpyinfo -display ":$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "soak: Xvfb :$1 did not start" >&2; exit 1
}

S=$(free_display 140); start_xvfb "$S"
V=$(free_display $((S + 1))); start_xvfb "$V"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "soak: served display :$S, viewers' display :$V, port $PORT, for ${DUR}s, in $WORK"

# The customer's busy screen.
xterm -display ":$S" -geometry 160x50+0+0 -e sh -c 'while :; do ls -lR /usr/share 2>/dev/null; done' &
PIDS+=($!)
( while :; do xsetroot -display ":$S" -solid "#$(printf '%06x' $((RANDOM * RANDOM % 16777216)))"; sleep 0.2; done ) &
PIDS+=($!)

RUST_LOG=${RUST_LOG:-info} "$BIN" serve --source x11 --display ":$S" --listen "127.0.0.1:$PORT" \
    --no-auth --db "$WORK/journal.db" >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT),1).close()" 2>/dev/null && break
    sleep 0.1
done

# Two technicians watching all along.
for i in 1 2; do
    vncviewer -display ":$V" -Shared=1 -SecurityTypes None -geometry 960x540+$(((i - 1) * 960))+0 "127.0.0.1::$PORT" \
        >"$WORK/viewer-$i.log" 2>&1 &
    PIDS+=($!)
    eval "VIEWER$i=$!"
done

# A technician who keeps reconnecting.
(
    n=0
    while :; do
        n=$((n + 1))
        if "$VNCDO" -s "127.0.0.1::$PORT" key shift capture "$WORK/vncdo.png" >>"$WORK/vncdo.log" 2>&1; then
            echo ok >>"$WORK/vncdo.count"
        else
            echo fail >>"$WORK/vncdo.count"
        fi
        sleep 10
    done
) &
PIDS+=($!)

# Clipboard both ways.
(
    n=0
    while :; do
        n=$((n + 1))
        printf 'Kunde %d: Drucker €ß Привет\n' "$n" | xclip -display ":$S" -selection clipboard
        sleep 3.5
        printf 'Techniker %d: ok\n' "$n" | xclip -display ":$V" -selection clipboard
        sleep 3.5
    done
) &
PIDS+=($!)

# The customer's resolution changes.
(
    big=1
    while :; do
        sleep 30
        if [ "$big" = 1 ]; then xrandr -display ":$S" --fb 1600x900 >/dev/null 2>&1 || true; big=0
        else xrandr -display ":$S" --fb 1920x1080 >/dev/null 2>&1 || true; big=1; fi
    done
) &
PIDS+=($!)

CLK=$(getconf CLK_TCK)
echo "seconds,rss_kib,cpu_s,threads,fds" >"$WORK/samples.csv"
start=$(date +%s)
while :; do
    now=$(date +%s); el=$((now - start))
    if ! kill -0 "$SERVER" 2>/dev/null; then echo "soak: the server died after ${el}s" >&2; break; fi
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status")
    thr=$(awk '/Threads/ {print $2}' "/proc/$SERVER/status")
    cpu=$(awk -v c="$CLK" '{printf "%.1f", ($14 + $15) / c}' "/proc/$SERVER/stat")
    fds=$(ls "/proc/$SERVER/fd" | wc -l)
    echo "$el,$rss,$cpu,$thr,$fds" >>"$WORK/samples.csv"
    [ "$el" -ge "$DUR" ] && break
    sleep 30
done

viewers_alive=0
for p in "$VIEWER1" "$VIEWER2"; do kill -0 "$p" 2>/dev/null && viewers_alive=$((viewers_alive + 1)); done
# Stop the traffic (not the displays) before the server.
for p in "${PIDS[@]:4}"; do kill "$p" 2>/dev/null || true; done
sleep 2
status=died
if kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER"
    if wait "$SERVER"; then status=0; else status=$?; fi
fi

held=$(python3 - "$S" <<'EOF'
import ctypes, sys
x = ctypes.cdll.LoadLibrary("libX11.so.6")
x.XOpenDisplay.restype = ctypes.c_void_p
d = x.XOpenDisplay((":" + sys.argv[1]).encode())
km = (ctypes.c_char * 32)()
x.XQueryKeymap(ctypes.c_void_p(d), km)
print(sum(bin(b).count("1") for b in bytes(km)))
EOF
)

sessions=$("$BIN" sessions --db "$WORK/journal.db" --json | python3 -c '
import json, sys
rows = json.load(sys.stdin)
ended = sum(1 for r in rows if r.get("ended_at"))
print(len(rows), ended)')
verify=$("$BIN" sessions verify --db "$WORK/journal.db" 2>&1 | tail -1) && verified=yes || verified=no
ok=$(grep -c ok "$WORK/vncdo.count" || true); fail=$(grep -c fail "$WORK/vncdo.count" || true)
rss=$(python3 - "$WORK/samples.csv" <<'EOF'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]))]
warm = [int(r["rss_kib"]) for r in rows if int(r["seconds"]) >= 300] or [int(r["rss_kib"]) for r in rows]
first, last, top = warm[0], warm[-1], max(warm)
q = max(1, len(warm) // 4)
quarters = ", ".join(f"{sum(warm[i*q:(i+1)*q])/len(warm[i*q:(i+1)*q])/1024:.1f}" for i in range(4) if warm[i*q:(i+1)*q])
print(f"after warm-up {first/1024:.1f} MiB, at the end {last/1024:.1f} MiB, highest {top/1024:.1f} MiB, "
      f"change {100*(last-first)/first:+.1f}%, mean per quarter {quarters} MiB; threads {rows[0]['threads']}->{rows[-1]['threads']}, "
      f"open files {rows[0]['fds']}->{rows[-1]['fds']}, CPU {rows[-1]['cpu_s']} s")
EOF
)
read -r total ended <<<"$sessions"
{
    echo "soak: ${DUR}s on $(date -u +%F) at commit $COMMIT (the binary: $BIN)"
    echo "server exit status: $status"
    echo "vncviewers still connected at the end: $viewers_alive of 2"
    echo "reconnecting viewer: $ok connections ok, $fail failed"
    echo "journal: $total sessions, $ended with an end; verify: $verified ($verify)"
    echo "keys held on the served display after the stop: $held"
    echo "server RSS: $rss"
    echo "resize/X errors logged: $(grep -ciE 'resync|error' "$WORK/server.log" || true); panics: $(grep -c 'panicked' "$WORK/server.log" || true)"
} | tee "$WORK/summary.txt"
[ "$status" = 0 ] && [ "$held" = 0 ] && [ "$verified" = yes ] && [ "$fail" = 0 ] && [ "$total" = "$ended" ]
