#!/usr/bin/env python3
"""Bring-up and tear-down of a room board on the simulated LAN, against doing it by hand.

musicpi runs a real mpd over three generated songs the whole time; kitchen runs
`pistop-mdns client` in direct mode (a read-only bind mount of musicpi's music
directory stands in for NFS: this kernel has no NFS client) and its own mpd
under daemontools' supervise, started and stopped by the client. Each round:

  bring-up:  `pistop-mdns server` started in musicpi -> kitchen's mpd lists
             musicpi's whole library (`mpc listall`, polled every 20 ms)
  discovery: the same start -> the client's "appeared ->" line (its mDNS part)
  tear-down: SIGTERM to the server -> the share is gone from the client's mount
             namespace (/proc/PID/mountinfo, polled every 5 ms)

and then the baseline, by hand, in the same round: `mount -t none -o bind,ro` +
`svc -u` -> `mpc listall` complete (bring-up), and `svc -d` until svstat says
down + `umount -f` -> mount gone (tear-down). Ratios are pistop-mdns / by hand
(the price of discovery and of the checks), and bring-up / discovery.

Usage: sudo python3 bench/bringup.py [ROUNDS]   (default 20; needs root,
mpd, mpc, sox, daemontools)
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ENV, HEADER, Lines, pm, row, stacks

from pistop_mdns.lan import Lan
from tests.components.music import (
    Supervised,
    client_mpd_conf_text,
    make_songs,
    mpc,
    mpd_run_script,
    start_server_mpd,
)

LIBRARY_POLL = 0.02
MOUNT_POLL = 0.005
LIMIT = 60.0  # seconds any one measurement may take before the run is abandoned


def until(condition, what: str, poll: float) -> float:
    """Monotonic time at which `condition()` first held."""
    deadline = time.monotonic() + LIMIT
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"gave up waiting {LIMIT:g} s for {what}")
        time.sleep(poll)
    return time.monotonic()


def mounted_in(pid: int, target: str) -> bool:
    with open(f"/proc/{pid}/mountinfo") as f:
        return any(line.split(" ")[4] == target for line in f)


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    bring_up, discovery, tear_down, by_hand_up, by_hand_down = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp, Lan(["musicpi", "kitchen"]) as lan:
        tmp = Path(tmp)
        lan.wait_for_multicast()
        musicpi, kitchen = lan["musicpi"], lan["kitchen"]
        music = tmp / "music"
        songs = make_songs(music)
        start_server_mpd(musicpi, tmp / "server-mpd", music, songs)
        mountpoint = tmp / "kitchen" / "MDrive"
        mountpoint.mkdir(parents=True)
        (tmp / "kitchen" / "playlists").mkdir()
        conf = tmp / "kitchen" / "mpd.conf"
        conf.write_text(client_mpd_conf_text(tmp / "kitchen", str(mountpoint), musicpi.address))
        mpd = Supervised(kitchen, tmp / "kitchen" / "service" / "mpd", mpd_run_script(conf), down=True)

        def library() -> bool:
            return mpc(kitchen, "listall", timeout=5).stdout.split() == songs

        with mpd.running():
            client_proc = kitchen.spawn(pm(
                "client", "--mount-mode", "direct", "--mount-fstype", "none", "--mount-options", "bind,ro",
                "--mount-source", "{export}", "--mountpoint", str(mountpoint), "--service-manager", "daemontools",
                "--service-dir", str(tmp / "kitchen" / "service"), "--mpd-conf", str(conf),
                "--state-dir", str(tmp / "kitchen" / "state"), "--hooks-dirs", str(tmp / "kitchen" / "hooks"),
                "--flap-settle", "0"), env=ENV)
            client = Lines(client_proc)
            time.sleep(2)
            for i in range(rounds):
                # pistop-mdns
                c0 = client.mark()
                started = time.monotonic()
                server = musicpi.spawn(pm("server", "--export", str(music), "--mpd-port", "6600", "--music", "",
                                          "--state-dir", str(tmp / "server-state")), env=ENV)
                served = until(library, "kitchen's mpd to serve the library", LIBRARY_POLL)
                appeared = client.wait(r"appeared ->", c0, LIMIT)
                if appeared is None or client.wait(r"up with musicpi", c0, LIMIT) is None:
                    sys.exit(f"round {i}: the client did not come up:\n" + "\n".join(l for _, l in client.lines))
                bring_up.append(served - started)
                discovery.append(appeared - started)
                time.sleep(1.0)  # let the registration's announcements finish
                c1 = client.mark()
                stopped = time.monotonic()
                server.send_signal(signal.SIGTERM)
                gone = until(lambda: not mounted_in(client_proc.pid, str(mountpoint)), "the share to go",
                             MOUNT_POLL)
                tear_down.append(gone - stopped)
                if client.wait(r"this board is down", c1, LIMIT) is None:
                    sys.exit(f"round {i}: the tear-down did not finish")
                server.wait(15)
                lan.processes.remove(server)

                # by hand, the address known
                started = time.monotonic()
                kitchen.run(["mount", "-t", "none", "-o", "bind,ro", str(music), str(mountpoint)], check=True)
                subprocess.run(["svc", "-u", str(mpd.directory)], check=True, timeout=10)
                by_hand_up.append(until(library, "kitchen's mpd to serve the library", LIBRARY_POLL) - started)
                time.sleep(1.0)  # as long as mpd ran before the tear-down above
                started = time.monotonic()
                subprocess.run(["svc", "-d", str(mpd.directory)], check=True, timeout=10)
                until(mpd.down, "mpd to stop", MOUNT_POLL)
                kitchen.run(["umount", "-f", str(mountpoint)], check=True)
                by_hand_down.append(until(lambda: not mounted_in(client_proc.pid, str(mountpoint)),
                                          "the share to go", MOUNT_POLL) - started)
                time.sleep(0.5)
    print(f"## Bring-up ({stacks()}, {rounds} rounds)\n")
    print(HEADER)
    print(row("bring-up by hand: mount + svc -u -> library served (baseline)", by_hand_up))
    print(row("bring-up: server start -> kitchen's mpd serves the library", bring_up, by_hand_up))
    print(row("discovery: server start -> client has the record (baseline 2)", discovery))
    print(row("bring-up / discovery", bring_up, discovery))
    print(row("tear-down by hand: svc -d + umount -f -> mount gone (baseline)", by_hand_down))
    print(row("tear-down: SIGTERM -> share unmounted on kitchen", tear_down, by_hand_down))
    return 0


if __name__ == "__main__":
    sys.exit(main())
