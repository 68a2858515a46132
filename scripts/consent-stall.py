#!/usr/bin/env python3
"""Does a pending consent question stall the viewers already connected?

Side by side: connect viewer A (security None, Raw) to HOST:PORT and keep
requesting incremental updates of a screen that changes all the time; after
2 s connect viewer B, whose consent question takes 4 s to be answered (the
server's accept/consent command sleeps); report the longest gap between A's
updates while B waits, and A's update rate before and during.

Used against ticketvnc (--consent cmd:...) and x11vnc (-accept ...) on the
same Xvfb; see docs/security.md. Standard library only.

    scripts/consent-stall.py 127.0.0.1 5900
"""
import socket
import struct
import sys
import threading
import time


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("server closed")
        b += c
    return b


def login(host, port, timeout=30):
    s = socket.create_connection((host, port), timeout=timeout)
    recv_exact(s, 12)
    s.sendall(b"RFB 003.008\n")
    n = recv_exact(s, 1)[0]
    types = recv_exact(s, n)
    if 1 not in types:
        raise RuntimeError(f"security None not offered: {list(types)}")
    s.sendall(b"\x01")
    result = struct.unpack(">I", recv_exact(s, 4))[0]  # waits for consent
    if result != 0:
        raise RuntimeError("refused")
    s.sendall(b"\x01")  # shared
    w, h = struct.unpack(">HH", recv_exact(s, 4))
    recv_exact(s, 16)
    name_len = struct.unpack(">I", recv_exact(s, 4))[0]
    recv_exact(s, name_len)
    # 32-bit little-endian true colour, Raw only.
    pf = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
    s.sendall(b"\x00\x00\x00\x00" + pf)
    s.sendall(struct.pack(">BxHi", 2, 1, 0))
    return s, w, h


def read_update(s):
    t = recv_exact(s, 1)[0]
    if t != 0:
        raise RuntimeError(f"unexpected message {t}")
    (n,) = struct.unpack(">xH", recv_exact(s, 3))
    for _ in range(n):
        x, y, w, h, e = struct.unpack(">HHHHi", recv_exact(s, 12))
        if e == 0:
            recv_exact(s, w * h * 4)
        elif e in (-223, -308):
            pass
        else:
            raise RuntimeError(f"encoding {e}")


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    a, w, h = login(host, port)
    times = []
    b_state = {}

    def viewer_b():
        b_state["start"] = time.monotonic()
        try:
            login(host, port)
            b_state["in"] = time.monotonic()
        except Exception as e:  # noqa: BLE001
            b_state["error"] = str(e)
            b_state["in"] = time.monotonic()

    start = time.monotonic()
    b = None
    incremental = 0
    while time.monotonic() - start < 9:
        a.sendall(struct.pack(">BBHHHH", 3, incremental, 0, 0, w, h))
        incremental = 1
        read_update(a)
        times.append(time.monotonic())
        if b is None and time.monotonic() - start > 2:
            b = threading.Thread(target=viewer_b, daemon=True)
            b.start()
    b.join(30)
    b0, b1 = b_state["start"], b_state.get("in", time.monotonic())
    during = [t for t in times if b0 <= t <= b1]
    before = [t for t in times if t < b0]
    gaps = [y - x for x, y in zip(times, times[1:]) if y >= b0 and x <= b1]
    print(
        f"B waited {b1 - b0:.1f} s for consent{' (' + b_state['error'] + ')' if 'error' in b_state else ''}; "
        f"A: {len(before) / max(b0 - start, 1e-9):.1f} updates/s before, "
        f"{len(during) / max(b1 - b0, 1e-9):.1f} updates/s while B waited, "
        f"longest gap {max(gaps) if gaps else float('nan'):.2f} s"
    )


if __name__ == "__main__":
    main()
