#!/bin/bash
# Records the real frames the criterion benches load (benches/encoders.rs,
# benches/diff.rs) into benches/frames/. Run once from the repository root;
# the PNGs are committed, so the benches never need X, xterm or chromium.
#
#   scripts/record-bench-frames.sh
#
# Frames (1920x1080 unless noted, PNG, RGB, each < 1 MiB):
#   terminal.png          xterm (DejaVu Sans Mono 11) full of text under Xvfb: the
#                         output of `cat docs/architecture.md` and a prompt
#   terminal-typed.png    the same after typing a command at the prompt
#                         (xdotool, no Enter): one line changes
#   terminal-scrolled.png the same after Enter: the command's output scrolls the
#                         whole screen up by three lines
#   web.png               benches/frames/page.html (a helpdesk ticket page with text,
#                         a table, buttons, a photo-like canvas and a chart) rendered
#                         by chromium --headless --screenshot
#   photo-960x540.png     a photo-like image: ImageMagick's plasma fractal (seed 13).
#                         A 1080p photo does not fit in 1 MiB as PNG, so it is stored
#                         at half size; the benches scale it up 2x (bilinear) and add
#                         seeded noise of -4..+3 per channel (camera noise) on load.
# Needs: Xvfb, xterm, xdotool, ImageMagick (import, convert), chromium, fonts-dejavu.
set -eu
out=benches/frames
[ -f "$out/page.html" ] || { echo "run from the repository root" >&2; exit 1; }
for c in Xvfb xterm xdotool import convert chromium; do
    command -v "$c" >/dev/null || { echo "missing: $c" >&2; exit 1; }
done
n=150
while [ -e "/tmp/.X$n-lock" ] || [ -e "/tmp/.X11-unix/X$n" ]; do n=$((n + 1)); done
disp=:$n
Xvfb "$disp" -screen 0 1920x1080x24 -noreset -nolisten tcp >/dev/null 2>&1 &
xpid=$!
term=
cleanup() {
    [ -n "$term" ] && kill "$term" 2>/dev/null || true
    kill "$xpid" 2>/dev/null || true
}
trap cleanup EXIT
export DISPLAY=$disp
for _ in $(seq 50); do xdpyinfo >/dev/null 2>&1 && break; sleep 0.2; done

# PNG, 8-bit RGB, no time stamps or other chunks that change between runs.
save() { convert "$1" -alpha off -depth 8 -strip -define png:exclude-chunks=date,time "PNG24:$out/$2"; }

# The terminal: no window manager, so the keyboard follows the pointer.
xterm -geometry 213x56+0+0 -fa "DejaVu Sans Mono" -fs 11 -bg black -fg "#d0d0d0" \
    -xrm "XTerm*cursorBlink: false" \
    -e env -i HOME=/tmp TERM=xterm PS1='helpdesk@laptop:~$ ' bash --norc --noprofile &
term=$!
sleep 3
xdotool mousemove 960 540
xdotool type --delay 5 "cat docs/architecture.md"
xdotool key Return
sleep 2
xdotool mousemove 1919 1079   # the pointer out of the way (import takes no cursor anyway)
import -window root /tmp/record-terminal.png
save /tmp/record-terminal.png terminal.png
xdotool mousemove 960 540
xdotool type --delay 20 "printf 'checked\\nprinter queue\\n'"
sleep 1
import -window root /tmp/record-terminal.png
save /tmp/record-terminal.png terminal-typed.png
xdotool key Return
sleep 1
import -window root /tmp/record-terminal.png
save /tmp/record-terminal.png terminal-scrolled.png
rm -f /tmp/record-terminal.png

# The web page, rendered without a display.
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
    --window-size=1920,1080 --screenshot=/tmp/record-web.png "file://$PWD/$out/page.html" >/dev/null 2>&1
save /tmp/record-web.png web.png
rm -f /tmp/record-web.png

convert -seed 13 -size 960x540 plasma:fractal /tmp/record-photo.png
save /tmp/record-photo.png photo-960x540.png
rm -f /tmp/record-photo.png

ls -l "$out"/*.png
for f in "$out"/*.png; do
    [ "$(stat -c %s "$f")" -lt 1048576 ] || { echo "$f is 1 MiB or more" >&2; exit 1; }
done
