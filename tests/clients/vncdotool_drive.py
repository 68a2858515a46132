#!/usr/bin/env python3
"""Drive a VNC server with vncdotool's client library, one command per line.

Used by tests/x11_desktop.rs (input and clipboard on a real X display) and
by scripts/idle-cpu.sh (a viewer that keeps asking for updates).

Connects (security None, or VNC authentication with the password in
$VNCDO_PASSWORD when set), then reads commands from stdin, one per line,
runs each in order and prints "DONE <n>" on stdout after the n-th command
has been written to the socket. Whitespace separates arguments; the last
argument of `key`, `type` and `paste` is the rest of the line (UTF-8).

  move X Y          pointer to X,Y (buttons as they are)
  click B           press and release button B (1-8) where the pointer is
  down B / up B     press / release button B
  drag X Y STEP     move to X,Y in steps of STEP pixels with button state kept
  key NAME          vncdotool key name: a single character ("ä", "€") or
                    a name such as "enter", "shift-a"
  keydown NAME      press (and hold) a vncdotool key name
  keyup NAME        release it
  keysym HEX        press and release a raw keysym, e.g. 0x010020ac
  type TEXT         key presses for each character of TEXT
  paste TEXT        ClientCutText with TEXT (encoded as Latin-1)
  refresh           one full framebuffer update request, wait for the update
  sleep SECONDS     pause (the commands after it wait)
  quit              disconnect and exit 0

Every ServerCutText is printed as "CUT <hex of the Latin-1 bytes>".
With --keep-requesting the client asks for an incremental update again as
soon as each one arrives (an always-waiting viewer, as real viewers are).

Exit status 0 after quit, 1 on connection failure or lost connection.
"""

import argparse
import os
import sys
import threading
import warnings

warnings.simplefilter("ignore", FutureWarning)

from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import inlineCallbacks  # noqa: E402
from twisted.internet.error import ReactorNotRunning  # noqa: E402
from vncdotool.client import VNCDoToolClient, VNCDoToolFactory  # noqa: E402


def stop() -> None:
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--keep-requesting", action="store_true")
    ap.add_argument("--timeout", type=float, default=0.0, help="exit 1 after this long (0: never)")
    args = ap.parse_args()

    state = {"status": 1, "quitting": False}

    class Client(VNCDoToolClient):
        def copy_text(self, text: str) -> None:
            say("CUT " + text.encode("iso-8859-1").hex())

    class Factory(VNCDoToolFactory):
        protocol = Client

        def __init__(self):
            super().__init__()
            self.password = os.environ.get("VNCDO_PASSWORD")
            self.pseudocursor = False
            self.qemu_extended_key = False

        def clientConnectionLost(self, connector, reason):
            if not state["quitting"]:
                say("LOST %s" % reason.getErrorMessage())
            stop()

        def clientConnectionFailed(self, connector, reason):
            say("FAILED %s" % reason.getErrorMessage())
            stop()

    def keep_requesting(client):
        d = client.refreshScreen(incremental=True)
        d.addCallback(lambda c: reactor.callLater(0, keep_requesting, c))

    @inlineCallbacks
    def run(client, n, line):
        words = line.split(None, 1)
        if not words:
            say("DONE %d" % n)
            return
        cmd = words[0]
        rest = words[1] if len(words) > 1 else ""
        a = rest.split()
        if cmd == "move":
            client.mouseMove(int(a[0]), int(a[1]))
        elif cmd == "click":
            client.mousePress(int(a[0]))
        elif cmd == "down":
            client.mouseDown(int(a[0]))
        elif cmd == "up":
            client.mouseUp(int(a[0]))
        elif cmd == "drag":
            yield client.mouseDrag(int(a[0]), int(a[1]), int(a[2]))
        elif cmd == "key":
            client.keyPress(rest)
        elif cmd == "keydown":
            client.keyDown(rest)
        elif cmd == "keyup":
            client.keyUp(rest)
        elif cmd == "keysym":
            k = int(a[0], 16)
            client.keyEvent(k, down=True)
            client.keyEvent(k, down=False)
        elif cmd == "type":
            for ch in rest:
                client.keyPress(ch)
        elif cmd == "paste":
            client.paste(rest)
        elif cmd == "refresh":
            yield client.refreshScreen(incremental=False)
        elif cmd == "sleep":
            yield client.pause(float(a[0]))
        elif cmd == "quit":
            state["quitting"] = True
            state["status"] = 0
            say("DONE %d" % n)
            client.transport.loseConnection()
            reactor.callLater(0.2, stop)
            return
        else:
            say("ERROR unknown command %r" % cmd)
            return
        say("DONE %d" % n)

    queue = []
    busy = {"on": False}

    def pump(client):
        # Run commands strictly one after another (drag and refresh take time).
        if busy["on"] or not queue:
            return
        busy["on"] = True
        n, line = queue.pop(0)
        d = run(client, n, line)

        def next_one(_):
            busy["on"] = False
            pump(client)

        d.addBoth(next_one)

    def connected(client):
        say("CONNECTED %dx%d" % (client.width, client.height))
        if args.keep_requesting:
            keep_requesting(client)

        def read_stdin():
            n = 0
            for line in sys.stdin:
                n += 1
                item = (n, line.rstrip("\r\n"))
                reactor.callFromThread(lambda it=item: (queue.append(it), pump(client)))
            # stdin closed: keep running (idle viewer) until killed or quit.

        threading.Thread(target=read_stdin, daemon=True).start()

    def failed(reason):
        say("FAILED %s" % reason.getErrorMessage())
        stop()

    factory = Factory()
    factory.deferred.addCallbacks(connected, failed)
    reactor.connectTCP(args.host, args.port, factory)
    if args.timeout > 0:
        reactor.callLater(args.timeout, stop)
    reactor.run()
    return state["status"]


if __name__ == "__main__":
    sys.exit(main())
