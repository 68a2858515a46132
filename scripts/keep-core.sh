#!/bin/sh
# Kernel core_pattern pipe for CI (.ci/run): keeps the core of a crashed
# ticketvnc (or test binary) in /tmp/ticketvnc-cores and drops every other
# program's (a crashing browser or Wine program must not fill the disk).
# Arguments: %E (the executable's path, '/' written as '!') and %p.
exe=$(printf '%s' "$1" | tr '!' '/')
case "$(basename "$exe")" in
ticketvnc | ticketvnc-* | wayland_gnome-* | x11_desktop-*)
    mkdir -p /tmp/ticketvnc-cores
    # At most four cores (two files each): one tells where.
    [ "$(ls /tmp/ticketvnc-cores | wc -l)" -ge 8 ] && exec cat >/dev/null
    printf '%s\n' "$exe" >"/tmp/ticketvnc-cores/core.$2.exe"
    exec cat >"/tmp/ticketvnc-cores/core.$2"
    ;;
*) exec cat >/dev/null ;;
esac
