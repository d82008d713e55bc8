#!/usr/bin/env python3
"""Liveness on the simulated LAN: how fast a crashed server is noticed, and how often
packet loss makes a board tear down for nothing -- next to mDNS alone, in the same run.

crash: each round SIGKILLs `pistop-mdns server` (no goodbye, as a pulled plug) and
       measures the time until the dry-run client starts its tear-down (liveness
       channel, dead_time 10 s). In the same rounds `pistop-mdns browse --watch` and
       avahi-browse watch the same server: with mDNS alone the record lives until its
       TTL (4500 s for the service records) runs out; they are given a bounded wait.
loss:  20 % of the packets each host receives are dropped (nftables, both hosts) for
       MINUTES minutes, defaults everywhere; counts the client's tear-downs and the
       removals mDNS alone (browse --watch) reports, both scaled to one hour.

Usage: sudo python3 bench/liveness.py [ROUNDS] [MINUTES]   (defaults 10 and 5)
"""

from __future__ import annotations

import re
import signal
import sys
import tempfile
import time
from pathlib import Path

from common import ENV, Lines, percentile, pm, stacks

from pistop_mdns.lan import Lan

MDNS_WAIT = 30.0  # how long, after a kill, mDNS alone is given to notice
SERVICE_TTL = 4500  # python-zeroconf's default TTL for PTR/SRV/TXT (other_ttl)


def server(lan, tmp: Path):
    return lan["musicpi"].spawn(pm("server", "--export", "/srv/music", "--mpd-port", "6600",
                                   "--state-dir", str(tmp / "s")), env=ENV)


def crash_rounds(rounds: int) -> tuple[list[float], int, int]:
    detect, browse_removed, avahi_removed = [], 0, 0
    with tempfile.TemporaryDirectory() as tmp, Lan(["musicpi", "kitchen", "bedroom"]) as lan:
        tmp = Path(tmp)
        lan.wait_for_multicast()
        lan["bedroom"].start_avahi(str(tmp))
        avahi = Lines(lan["bedroom"].spawn(["avahi-browse", "-rp", "_pistop._tcp"]))
        watch = Lines(lan["bedroom"].spawn(pm("browse", "--watch", "--timeout", str(rounds * 60)), env=ENV))
        client = Lines(lan["kitchen"].spawn(pm("client", "--dry-run", "--mount-mode", "mpd",
                                               "--state-dir", str(tmp / "k")), env=ENV))
        for i in range(rounds):
            c0 = client.mark()
            srv = server(lan, tmp)
            if client.wait(r"up with musicpi", c0, 60) is None:
                sys.exit(f"round {i}: the client did not come up")
            time.sleep(3)  # steady state: heartbeats flowing
            c1, w1, a1 = client.mark(), watch.mark(), avahi.mark()
            killed = time.monotonic()
            srv.send_signal(signal.SIGKILL)
            srv.wait(10)
            lan.processes.remove(srv)
            seen = client.wait(r"silent for .* -> ask mpd to stop", c1, 60)
            if seen is None:
                sys.exit(f"round {i}: the client never noticed the crash")
            detect.append(seen - killed)
            remaining = MDNS_WAIT - (time.monotonic() - killed)
            browse_removed += watch.wait(r"^removed +musicpi", w1, max(0.0, remaining)) is not None
            avahi_removed += avahi.wait(r"^-;eth0;IPv4;musicpi;", a1, 0.1) is not None
            client.wait(r"would tell the server this board is down", c1, 30)
    return detect, browse_removed, avahi_removed


def loss_run(minutes: float) -> tuple[int, int, float]:
    with tempfile.TemporaryDirectory() as tmp, Lan(["musicpi", "kitchen"]) as lan:
        tmp = Path(tmp)
        lan.wait_for_multicast()
        server(lan, tmp)
        client = Lines(lan["kitchen"].spawn(pm("client", "--dry-run", "--mount-mode", "mpd",
                                               "--state-dir", str(tmp / "k")), env=ENV))
        watch = Lines(lan["kitchen"].spawn(pm("browse", "--watch", "--timeout", str(minutes * 60 + 60)), env=ENV))
        if client.wait(r"up with musicpi", 0, 60) is None:
            sys.exit("the client did not come up")
        for host in (lan["musicpi"], lan["kitchen"]):
            host.run(["nft", "add", "table", "inet", "loss"], check=True)
            host.run(["nft", "add", "chain", "inet", "loss", "in", "{ type filter hook input priority 0; }"],
                     check=True)
            host.run(["nft", "add", "rule", "inet", "loss", "in", "numgen", "random", "mod", "100", "<", "20",
                      "drop"], check=True)
        c0, w0 = client.mark(), watch.mark()
        began = time.monotonic()
        time.sleep(minutes * 60)
        hours = (time.monotonic() - began) / 3600
        with client.lock:
            teardowns = sum(1 for _, line in client.lines[c0:]
                            if re.search(r"-> (stop mpd|ask mpd to stop)", line))
        with watch.lock:
            removals = sum(1 for _, line in watch.lines[w0:] if line.startswith("removed"))
    return teardowns, removals, hours


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    detect, browse_removed, avahi_removed = crash_rounds(rounds)
    teardowns, removals, hours = loss_run(minutes)
    p50, p95 = percentile(detect, 50), percentile(detect, 95)
    print(f"## Liveness ({stacks()})\n")
    print(f"Crash detection, {rounds} rounds (SIGKILL, no goodbye; dead_time 10 s, heartbeat 2 s):\n")
    print("| measured | rounds | p50 | p95 |\n|---|---|---|---|")
    print(f"| SIGKILL -> client tears down (liveness channel) | {rounds} | {p50:.1f} s | {p95:.1f} s |")
    print(f"| SIGKILL -> `pistop-mdns browse --watch` drops the record (mDNS alone) | {rounds} | "
          f"not within {MDNS_WAIT:g} s in {rounds - browse_removed}/{rounds} | TTL {SERVICE_TTL} s |")
    print(f"| SIGKILL -> avahi-browse drops the record (mDNS alone) | {rounds} | "
          f"not within {MDNS_WAIT:g} s in {rounds - avahi_removed}/{rounds} | TTL {SERVICE_TTL} s |")
    print(f"\np95 detection through the channel is {SERVICE_TTL / p95:.0f}x sooner than the record's TTL.\n")
    print(f"20 % loss on both hosts for {hours * 60:.1f} min, default timings: "
          f"{teardowns} false tear-downs ({teardowns / hours:.1f} per hour); mDNS alone "
          f"(browse --watch) reported {removals} removals ({removals / hours:.1f} per hour) in the same run.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
