#!/usr/bin/env python3
"""Discovery latency on the simulated LAN, raced against avahi in the same run.

Each round starts `pistop-mdns server` in host musicpi and measures:
  appear: server process started -> `pistop-mdns client` (dry-run, in kitchen) has the
          resolved, validated record (its "appeared ->" log line), and -> avahi-browse -rp
          (in bedroom, with its own avahi-daemon) prints the resolved record ("=" line);
  leave:  SIGTERM to the server -> the client starts its tear-down (the liveness channel
          carries the reason before the record goes), -> `pistop-mdns browse --watch` in
          kitchen prints the removal (the mDNS goodbye alone), and -> avahi-browse prints
          the removal ("-" line).
avahi is the protocol floor: an independent, mature mDNS stack watching the same server
on the same LAN at the same moment. Ratios are ours / avahi's.

Usage: sudo python3 bench/discovery.py [ROUNDS]   (default 20; needs root)
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from pathlib import Path

from common import ENV, HEADER, Lines, pm, row, stacks

from pistop_mdns.lan import Lan

def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    appear_ours, appear_avahi, leave_ours, leave_avahi, exits = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp, Lan(["musicpi", "kitchen", "bedroom"]) as lan:
        tmp = Path(tmp)
        lan.wait_for_multicast()
        lan["bedroom"].start_avahi(str(tmp))
        avahi = Lines(lan["bedroom"].spawn(["avahi-browse", "-rp", "_pistop._tcp"]))
        client = Lines(lan["kitchen"].spawn(pm("client", "--dry-run", "--mount-mode", "mpd",
                                               "--gone-hold", "0", "--flap-window", "0",
                                               "--state-dir", str(tmp / "k")), env=ENV))
        watch = Lines(lan["kitchen"].spawn(pm("browse", "--watch", "--timeout", str(rounds * 20)), env=ENV))
        time.sleep(2)
        leave_browse = []
        for i in range(rounds):
            c0, a0 = client.mark(), avahi.mark()
            started = time.monotonic()
            server = lan["musicpi"].spawn(pm("server", "--export", "/srv/music", "--mpd-port", "6600",
                                             "--state-dir", str(tmp / "s")), env=ENV)
            ours = client.wait(r"appeared ->", c0, 30)
            theirs = avahi.wait(r"^=;eth0;IPv4;musicpi;", a0, 30)
            if ours is None or theirs is None:
                sys.exit(f"round {i}: the record was not seen (ours {ours}, avahi {theirs})")
            appear_ours.append(ours - started)
            appear_avahi.append(theirs - started)
            client.wait(r"up with musicpi", c0, 30)
            time.sleep(2.5)  # a running server: its registration's announcements are over
            c1, a1, w1 = client.mark(), avahi.mark(), watch.mark()
            stopped = time.monotonic()
            server.send_signal(signal.SIGTERM)
            server.wait(15)
            exits.append(time.monotonic() - stopped)
            # the readers stamped every line as it came: waiting now loses nothing
            ours = client.wait(r"is stopping -> |withdrew its record -> ", c1, 30)
            theirs = avahi.wait(r"^-;eth0;IPv4;musicpi;", a1, 30)
            browsed = watch.wait(r"^removed +musicpi", w1, 30)
            if ours is None or theirs is None:
                sys.exit(f"round {i}: the removal was not seen (ours {ours}, avahi {theirs})")
            leave_ours.append(ours - stopped)
            leave_avahi.append(theirs - stopped)
            if browsed is None:
                sys.exit(f"round {i}: browse --watch did not see the removal")
            leave_browse.append(browsed - stopped)
            client.wait(r"plan \d+ step \d+/\d+: would tell the server this board is down", c1, 30)
            lan.processes.remove(server)
            time.sleep(1.0)
    print(f"## Discovery ({stacks()}, {rounds} rounds)\n")
    print(HEADER)
    print(row("appear: server start -> avahi-browse resolved (baseline)", appear_avahi))
    print(row("appear: server start -> pistop-mdns client has the record", appear_ours, appear_avahi))
    print(row("leave: SIGTERM -> avahi-browse removal (baseline)", leave_avahi))
    print(row("leave: SIGTERM -> pistop-mdns browse --watch sees the goodbye", leave_browse, leave_avahi))
    print(row("leave: SIGTERM -> pistop-mdns client starts its tear-down", leave_ours, leave_avahi))
    print(row("SIGTERM -> server process exited", exits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
