"""`pistop-mdns demo`: the whole chain on a simulated LAN on this machine.

Builds three hosts in network namespaces (a music server and two room
boards), runs the real `server`, `client` and `browse` commands in them and
narrates what happens, with timings: the server appears, each client plans
its bring-up, `browse` lists the server, the server stops, each client plans
its tear-down. Everything it made is removed at the end (or, with --keep,
when the user presses Ctrl-C).

The clients run with --dry-run: they decide and log every step, but mount
nothing and start no mpd, so the demo needs no NFS server and changes
nothing on this machine.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from pistop_mdns import lan as lanmod

SERVER = "musicpi"
CLIENTS = ("kitchen", "bedroom")
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)


class Narrator:
    """Prints lines from every host with the time since the demo began."""

    def __init__(self, out: TextIO):
        self.out = out
        self.start = time.monotonic()
        self.lock = threading.Lock()

    def say(self, text: str, who: str = "demo") -> None:
        with self.lock:
            self.out.write(f"[{time.monotonic() - self.start:6.2f}s] {who:<8} {text}\n")
            self.out.flush()

    def follow(self, proc: subprocess.Popen, who: str) -> threading.Thread:
        def read() -> None:
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    line = line.rstrip()
                    if line:
                        self.say(line.removeprefix(f"{who}: "), who)
            except (ValueError, OSError):
                pass  # closed by the clean-up

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pistop_mdns", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("JOURNAL_STREAM", None)
    return env


def _wait_for(seen: list[tuple[float, str]], needle: str, timeout: float) -> float | None:
    """When a line containing `needle` was printed (waiting at most `timeout` for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stamp, line in list(seen):
            if needle in line:
                return stamp
        time.sleep(0.05)
    return None


def run(*, keep: bool, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if os.geteuid() != 0:
        out.write("pistop-mdns demo needs root: it builds network namespaces. Run: sudo pistop-mdns demo\n")
        return 2
    narrator = Narrator(out)
    seen: list[tuple[float, str]] = []
    original_say = narrator.say

    def say(text: str, who: str = "demo") -> None:
        seen.append((time.monotonic(), f"{who} {text}"))
        original_say(text, who)

    narrator.say = say  # type: ignore[method-assign]
    env = _env()
    hosts = [SERVER, *CLIENTS]
    try:
        with lanmod.Lan(hosts) as lan:
            say(f"built a LAN of {len(hosts)} hosts on a private bridge (namespaces {lan.prefix}-*), "
                f"no traffic leaves this machine")
            for h in lan.hosts.values():
                role = "music server" if h.name == SERVER else "room board (client, --dry-run)"
                say(f"{h.address:<13} {role}", h.name)
            lan.wait_for_multicast()
            for name in CLIENTS:
                proc = lan[name].spawn(_argv("client", "--dry-run", "--mount-mode", "direct",
                                             "--mountpoint", "/var/lib/mpd/MDrive"), env=env)
                narrator.follow(proc, name)
            time.sleep(1.0)
            say("starting `pistop-mdns server` on musicpi (export /srv/music, music in Music, mpd on 6600)")
            began = time.monotonic()
            server = lan[SERVER].spawn(_argv("server", "--export", "/srv/music", "--music", "Music",
                                             "--mpd-port", "6600"), env=env)
            narrator.follow(server, SERVER)
            for name in CLIENTS:
                stamp = _wait_for(seen, f"{name} up with {SERVER}", 30)
                if stamp is not None:
                    say(f"{name} planned and ran its bring-up {stamp - began:.2f} s after the server started")
            say("what `pistop-mdns browse` shows from kitchen:")
            browse = lan["kitchen"].run(_argv("browse", "--timeout", "2"), env=env, timeout=30)
            for line in browse.stdout.splitlines():
                say("  " + line, "kitchen")
            if keep:
                _keep(lan, out, say)
            say("stopping the server (SIGTERM, as `systemctl stop` does)")
            stopped = time.monotonic()
            server.send_signal(signal.SIGTERM)
            server.wait(15)
            say(f"server exited with status {server.returncode} after {time.monotonic() - stopped:.2f} s")
            for name in CLIENTS:
                stamp = _wait_for(seen, f"{name} plan 2 step", 30)
                if stamp is not None:
                    say(f"{name} started its tear-down {stamp - stopped:.2f} s after the stop")
            time.sleep(1.0)
            say("cleaning up: stopping the clients, deleting the namespaces")
    except lanmod.LanError as e:
        out.write(f"pistop-mdns demo: {e}\n")
        return 1
    except KeyboardInterrupt:
        out.write("\ninterrupted; everything the demo made has been removed\n")
        return 0
    say("done: nothing is left behind")
    return 0


def _keep(lan: lanmod.Lan, out: TextIO, say) -> None:
    say("--keep: the LAN stays up until you press Ctrl-C. A shell in a host:")
    for h in lan.hosts.values():
        out.write(f"    sudo nsenter -t {h.pid} -n -u -m     # {h.name} ({h.address})\n")
    out.write("  and in there, this checkout's pistop-mdns:\n")
    out.write(f"    PYTHONPATH={shlex.quote(PACKAGE_ROOT)} {shlex.quote(sys.executable)} -m pistop_mdns browse"
              f"   # or status\n")
    out.flush()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(1):
        pass
