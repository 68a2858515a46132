#!/usr/bin/env python3
"""Capture one full screen from a VNC server with vncdotool's client library.

Used by tests/vncdotool.rs. Connects, announces exactly one real encoding
(plus vncdotool's usual pseudo-encodings), optionally asks for RGB565 in
either byte order, requests one non-incremental update and writes:

  PREFIX.png        the picture (for looking at)
  PREFIX.rgb        the same picture as packed 8-bit R,G,B bytes, row-major
  PREFIX.rects      one line per rectangle received: "x y w h encoding"

With --step it then prints "READY" on stdout, waits for a line on stdin
(the test changes the screen meanwhile), requests one incremental update
and writes PREFIX-2.png, PREFIX-2.rgb and PREFIX-2.rects the same way.

Exit status 0 on success, 2 on authentication failure, 1 on anything else.
"""

import argparse
import struct
import sys
import threading
import warnings

warnings.simplefilter("ignore", FutureWarning)

from twisted.internet import reactor  # noqa: E402
from twisted.python import log as twisted_log  # noqa: E402
from vncdotool import rfb  # noqa: E402
from vncdotool.client import (  # noqa: E402
    AuthenticationError,
    VNCDoToolClient,
    VNCDoToolFactory,
)

ENCODINGS = {
    "raw": rfb.Encoding.RAW,
    "copyrect": rfb.Encoding.COPY_RECTANGLE,
    "rre": rfb.Encoding.RRE,
    "corre": rfb.Encoding.CORRE,
    "hextile": rfb.Encoding.HEXTILE,
    "zrle": rfb.Encoding.ZRLE,
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--encoding", choices=sorted(ENCODINGS), required=True)
    ap.add_argument("--rgb565", choices=["le", "be"], default=None)
    ap.add_argument("--password-file", default=None)
    ap.add_argument("--out", required=True, help="output path prefix")
    ap.add_argument("--step", action="store_true", help="then one incremental update")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()

    password = None
    if args.password_file:
        with open(args.password_file, encoding="latin-1") as f:
            password = f.readline().rstrip("\r\n")

    rects = []
    outcome = {"status": 1, "error": "timed out"}

    class Client(VNCDoToolClient):
        encoding = ENCODINGS[args.encoding]

        def _handleRectangle(self, block):
            x, y, w, h, enc = struct.unpack("!HHHHi", block)
            rects.append((x, y, w, h, enc))
            return super()._handleRectangle(block)

        def setImageMode(self):
            if args.rgb565 is None:
                return super().setImageMode()
            big = args.rgb565 == "be"
            self.setPixelFormat(rfb.PixelFormat(16, 16, big, True, 31, 63, 31, 11, 5, 0))
            # Pillow's "BGR;16" reads little-endian RGB565; big-endian pixels
            # are byte-swapped in updateRectangle below.
            self._image_mode = "BGR;16"

        def updateRectangle(self, x, y, width, height, data):
            if args.rgb565 == "be":
                b = bytearray(data)
                b[0::2], b[1::2] = data[1::2], data[0::2]
                data = bytes(b)
            return super().updateRectangle(x, y, width, height, data)

    class Factory(VNCDoToolFactory):
        protocol = Client

        def __init__(self):
            super().__init__()
            self.password = password
            # Only what the test asks for: no cursor, no QEMU key events.
            self.pseudocursor = False
            self.qemu_extended_key = False

    def save(client, prefix):
        screen = client.screen
        screen.save(prefix + ".png")
        with open(prefix + ".rgb", "wb") as f:
            f.write(screen.convert("RGB").tobytes())
        with open(prefix + ".rects", "w") as f:
            for r in rects:
                f.write("%d %d %d %d %d\n" % r)
        del rects[:]

    def done(client):
        outcome["status"] = 0
        outcome["error"] = None
        client.transport.loseConnection()
        reactor.callLater(0, reactor.stop)

    def second(client):
        d = client.refreshScreen(incremental=True)
        d.addCallback(lambda c: (save(c, args.out + "-2"), done(c)))
        d.addErrback(failed)

    def first(client):
        save(client, args.out)
        if not args.step:
            done(client)
            return
        print("READY", flush=True)

        def wait_for_go():
            sys.stdin.readline()
            reactor.callFromThread(second, client)

        threading.Thread(target=wait_for_go, daemon=True).start()

    def connected(client):
        d = client.refreshScreen(incremental=False)
        d.addCallback(first)
        d.addErrback(failed)

    def failed(reason):
        err = reason.value if hasattr(reason, "value") else reason
        outcome["status"] = 2 if isinstance(err, AuthenticationError) else 1
        outcome["error"] = repr(err)
        if reactor.running:
            reactor.callLater(0, reactor.stop)

    if "-v" in sys.argv:
        twisted_log.startLogging(sys.stderr)
    factory = Factory()
    factory.deferred.addCallbacks(connected, failed)
    reactor.connectTCP(args.host, args.port, factory)
    reactor.callLater(args.timeout, lambda: reactor.running and reactor.stop())
    reactor.run()
    if outcome["status"] != 0:
        print("vncdotool_capture: %s" % outcome["error"], file=sys.stderr)
    return outcome["status"]


if __name__ == "__main__":
    sys.exit(main())
