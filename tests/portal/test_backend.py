#!/usr/bin/python3
"""A stand-in for a desktop's portal backend, for tests/wayland_portal.rs.

xdg-desktop-portal (the real frontend, Debian's 1.16) talks to ticketvnc;
behind it a desktop ships the backend that shows the dialog and owns the
screen: xdg-desktop-portal-kde, -gnome or -wlr. None of those can run on a
headless machine without a GPU and a person (see docs/wayland.md), so this
backend plays that part, and only that part:

- org.freedesktop.impl.portal.ScreenCast (version 4) and, unless
  --no-remote-desktop, org.freedesktop.impl.portal.RemoteDesktop;
- the "dialog": the answer is read from the file ANSWER ("grant" or
  "cancel", default grant); every time it would be shown (no valid
  restore_data from the frontend) a line {"dialog": true} is logged,
  a restore without it logs {"restored": DATA};
- the stream is a PipeWire node the test made (--node, its size --size);
- every Notify* input call is logged as a JSON line for the test to check;
- SIGUSR1 closes every session (the customer pressing "stop sharing").

Run as: test_backend.py --log FILE --answer FILE --node ID --size WxH
"""
import argparse
import json
import os
import signal
import sys

import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

NAME = "org.freedesktop.impl.portal.desktop.ticketvnctest"
PATH = "/org/freedesktop/portal/desktop"
SC = "org.freedesktop.impl.portal.ScreenCast"
RD = "org.freedesktop.impl.portal.RemoteDesktop"
SESSION = "org.freedesktop.impl.portal.Session"
PROPS = "org.freedesktop.DBus.Properties"
RESTORE_VENDOR = "ticketvnc-test"

args = None


def log(**entry):
    with open(args.log, "a") as f:
        f.write(json.dumps(entry) + "\n")


def answer():
    try:
        with open(args.answer) as f:
            return f.read().strip() or "grant"
    except OSError:
        return "grant"


class Session(dbus.service.Object):
    def __init__(self, bus, path, kind):
        super().__init__(bus, path)
        self.kind = kind
        self.persist = 0
        self.restore = None
        self.cursor = None

    @dbus.service.method(SESSION, in_signature="", out_signature="")
    def Close(self):
        log(call="Session.Close", kind=self.kind)
        self.remove_from_connection()

    @dbus.service.signal(SESSION, signature="")
    def Closed(self):
        pass


class RemoteDesktopPart(dbus.service.Object):
    """The RemoteDesktop methods. dbus-python finds a method by its name in
    each class of the MRO and checks the interface, so the names ScreenCast
    shares (CreateSession, Start) live here, in a base class of Backend."""

    @dbus.service.method(RD, in_signature="oosa{sv}", out_signature="ua{sv}")
    def CreateSession(self, handle, session_handle, app_id, options):
        self.new_session(session_handle, "remote-desktop")
        log(call="RemoteDesktop.CreateSession")
        return (dbus.UInt32(0), dbus.Dictionary({}, signature="sv"))

    @dbus.service.method(RD, in_signature="oosa{sv}", out_signature="ua{sv}")
    def SelectDevices(self, handle, session_handle, app_id, options):
        return self.select(session_handle, options, "RemoteDesktop.SelectDevices")

    @dbus.service.method(RD, in_signature="oossa{sv}", out_signature="ua{sv}")
    def Start(self, handle, session_handle, app_id, parent_window, options):
        return self.start(session_handle, "RemoteDesktop.Start", True)

    @dbus.service.method(RD, in_signature="oa{sv}dd", out_signature="")
    def NotifyPointerMotion(self, session, options, dx, dy):
        log(call="NotifyPointerMotion", dx=float(dx), dy=float(dy))

    @dbus.service.method(RD, in_signature="oa{sv}udd", out_signature="")
    def NotifyPointerMotionAbsolute(self, session, options, stream, x, y):
        log(call="NotifyPointerMotionAbsolute", stream=int(stream), x=float(x), y=float(y))

    @dbus.service.method(RD, in_signature="oa{sv}iu", out_signature="")
    def NotifyPointerButton(self, session, options, button, state):
        log(call="NotifyPointerButton", button=int(button), state=int(state))

    @dbus.service.method(RD, in_signature="oa{sv}dd", out_signature="")
    def NotifyPointerAxis(self, session, options, dx, dy):
        log(call="NotifyPointerAxis", dx=float(dx), dy=float(dy))

    @dbus.service.method(RD, in_signature="oa{sv}ui", out_signature="")
    def NotifyPointerAxisDiscrete(self, session, options, axis, steps):
        log(call="NotifyPointerAxisDiscrete", axis=int(axis), steps=int(steps))

    @dbus.service.method(RD, in_signature="oa{sv}iu", out_signature="")
    def NotifyKeyboardKeycode(self, session, options, keycode, state):
        log(call="NotifyKeyboardKeycode", keycode=int(keycode), state=int(state))

    @dbus.service.method(RD, in_signature="oa{sv}iu", out_signature="")
    def NotifyKeyboardKeysym(self, session, options, keysym, state):
        log(call="NotifyKeyboardKeysym", keysym=int(keysym), state=int(state))


class Backend(RemoteDesktopPart):
    def __init__(self, bus):
        super().__init__(bus, PATH)
        self.bus = bus
        self.sessions = {}

    # ---- properties
    def props(self, iface):
        if iface == SC:
            return {
                "AvailableSourceTypes": dbus.UInt32(1),
                "AvailableCursorModes": dbus.UInt32(1 | 2),
                "version": dbus.UInt32(4),
            }
        if iface == RD and not args.no_remote_desktop:
            return {
                "AvailableDeviceTypes": dbus.UInt32(1 | 2),
                "version": dbus.UInt32(1),
            }
        return {}

    @dbus.service.method(PROPS, in_signature="ss", out_signature="v")
    def Get(self, iface, prop):
        return self.props(iface)[prop]

    @dbus.service.method(PROPS, in_signature="s", out_signature="a{sv}")
    def GetAll(self, iface):
        return dbus.Dictionary(self.props(iface), signature="sv")

    # ---- helpers
    def new_session(self, handle, kind):
        s = Session(self.bus, handle, kind)
        self.sessions[str(handle)] = s
        return s

    def select(self, handle, options, what):
        s = self.sessions.get(str(handle))
        if s is None:
            return (dbus.UInt32(2), dbus.Dictionary({}, signature="sv"))
        if "persist_mode" in options:
            s.persist = int(options["persist_mode"])
        if "cursor_mode" in options:
            s.cursor = int(options["cursor_mode"])
        rd = options.get("restore_data")
        if rd is not None and str(rd[0]) == RESTORE_VENDOR:
            s.restore = str(rd[2])
        log(call=what, persist_mode=s.persist, cursor_mode=s.cursor,
            restore_data=None if rd is None else [str(rd[0]), int(rd[1]), str(rd[2])])
        return (dbus.UInt32(0), dbus.Dictionary({}, signature="sv"))

    def start(self, handle, what, devices):
        s = self.sessions.get(str(handle))
        if s is None:
            return (dbus.UInt32(2), dbus.Dictionary({}, signature="sv"))
        if s.restore is not None:
            log(call=what, restored=s.restore)
        else:
            a = answer()
            log(call=what, dialog=True, answer=a)
            if a != "grant":
                return (dbus.UInt32(1), dbus.Dictionary({}, signature="sv"))
        w, h = (int(v) for v in args.size.split("x"))
        stream = dbus.Struct(
            (dbus.UInt32(args.node),
             dbus.Dictionary({
                 "size": dbus.Struct((dbus.Int32(w), dbus.Int32(h)), signature=None),
                 "position": dbus.Struct((dbus.Int32(0), dbus.Int32(0)), signature=None),
                 "source_type": dbus.UInt32(1),
             }, signature="sv")),
            signature=None)
        results = {"streams": dbus.Array([stream], signature="(ua{sv})")}
        if devices:
            results["devices"] = dbus.UInt32(1 | 2)
        if s.persist:
            results["persist_mode"] = dbus.UInt32(s.persist)
            results["restore_data"] = dbus.Struct(
                (RESTORE_VENDOR, dbus.UInt32(1), dbus.String("monitor-0", variant_level=1)),
                signature="suv")
        return (dbus.UInt32(0), dbus.Dictionary(results, signature="sv"))

    # ---- ScreenCast
    @dbus.service.method(SC, in_signature="oosa{sv}", out_signature="ua{sv}")
    def CreateSession(self, handle, session_handle, app_id, options):
        self.new_session(session_handle, "screencast")
        log(call="ScreenCast.CreateSession")
        return (dbus.UInt32(0), dbus.Dictionary({}, signature="sv"))

    @dbus.service.method(SC, in_signature="oosa{sv}", out_signature="ua{sv}")
    def SelectSources(self, handle, session_handle, app_id, options):
        return self.select(session_handle, options, "ScreenCast.SelectSources")

    @dbus.service.method(SC, in_signature="oossa{sv}", out_signature="ua{sv}")
    def Start(self, handle, session_handle, app_id, parent_window, options):
        return self.start(session_handle, "ScreenCast.Start", False)



def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("--log", required=True)
    p.add_argument("--answer", required=True)
    p.add_argument("--node", type=int, required=True)
    p.add_argument("--size", required=True)
    p.add_argument("--no-remote-desktop", action="store_true")
    args = p.parse_args()
    DBusGMainLoop(set_as_default=True)
    bus = dbus.SessionBus()
    backend = Backend(bus)
    name = dbus.service.BusName(NAME, bus)
    def close_all():
        # The customer stops sharing (KDE's and GNOME's "stop" in the
        # panel): every session is closed by the backend.
        for handle, s in list(backend.sessions.items()):
            if s.connection is not None:
                log(call="close-by-backend", session=handle)
                s.Closed()
        return True

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR1, close_all)
    log(ready=True, remote_desktop=not args.no_remote_desktop, pid=os.getpid())
    print("ready", flush=True)
    GLib.MainLoop().run()
    del backend, name


if __name__ == "__main__":
    sys.exit(main())
