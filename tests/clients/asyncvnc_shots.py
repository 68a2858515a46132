"""Screenshots through asyncvnc, a VNC client nobody here wrote, for
tests/crosscheck.rs. asyncvnc asks for Zlib (encoding 6) only and decodes it
with Python's zlib, one inflater for the whole connection: an independent
check of ticketvnc's Zlib stream across many updates.

Usage: asyncvnc_shots.py PORT OUT_FILE
Commands on stdin, one per line; each answers one line on stdout:
  full  a non-incremental update until the picture is complete -> "shot W H"
  inc   one incremental request and one update (5 s at most)    -> "shot W H" or "timeout"
  quit
The picture is written to OUT_FILE as RGB bytes, row by row.
"""

import asyncio
import sys

import asyncvnc


def write_rgb(client, path):
    rgba = client.video.as_rgba()
    with open(path, "wb") as f:
        f.write(rgba[:, :, :3].tobytes())
    return rgba.shape[1], rgba.shape[0]


async def main(port, out):
    async with asyncvnc.connect("127.0.0.1", port) as client:
        loop = asyncio.get_running_loop()
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line in ("", "quit"):
                return
            if line == "full":
                await client.screenshot()
            elif line == "inc":
                client.video.refresh()
                try:
                    await asyncio.wait_for(client.read(), 5)
                except asyncio.TimeoutError:
                    print("timeout", flush=True)
                    continue
            else:
                raise SystemExit(f"unknown command {line!r}")
            w, h = write_rgb(client, out)
            print(f"shot {w} {h}", flush=True)


asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
