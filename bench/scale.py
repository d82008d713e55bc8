#!/usr/bin/env python3
"""Many boards and several servers on one simulated LAN: time until all boards are up
and down again, the mDNS traffic on the switch, and what a server with many channels
costs -- next to the same boards with mDNS only and to a single board, in the same run.

One LAN of SERVERS + BOARDS hosts (default 3 + 50: music1..music3, board01..board50),
four scenarios one after another, each from scratch (the boards are started, settle,
then the servers are started together; afterwards everything is stopped):

  one board:  board01 only, a dry-run `pistop-mdns client --server music1`; the per-board cost;
  mDNS only:  every board host runs `pistop-mdns browse --watch` (the same browser,
              no liveness channel, no core): "up" is having all the servers' records,
              "down" having seen all their goodbyes;
  pinned:     every board runs a dry-run client pinned (`--server`) to one of the
              servers in turn, so each server has BOARDS / SERVERS channels;
  one server: every board runs a dry-run client with the default configuration (follow
              the first server seen) and only music1 is started: BOARDS channels on it.

Measured:
  up:     servers started -> each board's "up with" line (p50, p95, and the last board);
  down:   SIGTERM to every server -> each board's tear-down done (its last step, "would
          tell the server this board is down");
  mDNS:   UDP packets from or to port 5353 as they enter the switch (an nftables counter
          on the bridge's prerouting hook: every frame once, unicast included), per
          period: boards starting (spawned -> servers started, SETTLE included),
          bring-up (-> all up + SETTLE), steady (the CPU window), tear-down (SIGTERM ->
          all down and every server exited + TAIL); tcpdump on br0 (multicast only),
          bounded by timeout, cross-checks the count;
  CPU:    ticks (user + system, from /proc/PID/stat) and resident memory of every
          server and board over a steady window of MINUTES once all are up.

Usage: sudo python3 bench/scale.py [BOARDS] [SERVERS] [MINUTES]   (defaults 50, 3, 1)
"""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CLOCK_TICKS, ENV, Lines, Usage, Window, mdns_bound, percentile, pm, stacks

from pistop_mdns.lan import Lan

START_LIMIT = 300.0  # 50 Python processes starting on two busy cores take a while
LIMIT = 120.0  # any one bring-up or tear-down
SETTLE = 10.0  # after the boards started, and after all are up: announcements and queries over
TAIL = 3.0  # after the last server exited: the last goodbyes and queries
DOWN_LINE = r"would tell the server this board is down"
CHANNEL_PORT = 5555  # the server's default
CONNECTED = r"^client \S+ \(.*\) connected"


class Switch:
    """Traffic through the LAN's bridge: nftables counters on the bridge's prerouting
    hook (each frame once, as it enters) for mDNS and for the liveness channel, and
    tcpdump on br0 for mDNS."""

    TABLE = "mdnscount"
    RULES = (("mdns", "udp sport 5353"), ("mdns", "udp dport 5353 udp sport != 5353"),
             ("channel", f"tcp sport {CHANNEL_PORT}"), ("channel", f"tcp dport {CHANNEL_PORT}"))

    def __init__(self, lan: Lan, tmp: Path, lifetime: float):
        self.ns = lan.bridge
        self._nft("add", "table", "bridge", self.TABLE)
        self._nft("add", "chain", "bridge", self.TABLE, "pre", "{ type filter hook prerouting priority 0; }")
        for kind, match in self.RULES:
            self._nft("add", "rule", "bridge", self.TABLE, "pre", *match.split(), "counter", "comment", kind)
        self.pcap = tmp / "mdns.pcap"
        self.tcpdump = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "timeout", str(int(lifetime)), "tcpdump", "-i", "br0", "-n",
             "-U", "-Z", "root", "-w", str(self.pcap), "udp", "port", "5353"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        lan.processes.append(self.tcpdump)
        deadline = time.monotonic() + 10
        while not self.pcap.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _nft(self, *args: str) -> str:
        return subprocess.run(["ip", "netns", "exec", self.ns, "nft", *args], check=True, capture_output=True,
                              text=True, timeout=10).stdout

    def mark(self) -> tuple[float, dict[str, tuple[int, int]]]:
        """(wall-clock time, {"mdns"/"channel": (packets, bytes)}) so far."""
        seen = {"mdns": (0, 0), "channel": (0, 0)}
        for line in self._nft("list", "table", "bridge", self.TABLE).splitlines():
            words = line.split()
            if "counter" in words and "comment" in words:
                i = words.index("counter")
                kind = words[words.index("comment") + 1].strip('"')
                packets, octets = seen[kind]
                seen[kind] = (packets + int(words[i + 2]), octets + int(words[i + 4]))
        return time.time(), seen

    def multicast(self, since: float, until: float) -> int:
        """Packets tcpdump saw on br0 between two wall-clock times."""
        data = self.pcap.read_bytes()
        if len(data) < 24:
            return 0
        magic = struct.unpack("<I", data[:4])[0]
        order = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        scale = 1e-9 if magic in (0xA1B23C4D, 0x4D3CB2A1) else 1e-6
        count, at = 0, 24
        while at + 16 <= len(data):
            sec, frac, incl, _orig = struct.unpack(order + "IIII", data[at:at + 16])
            if at + 16 + incl > len(data):
                break
            stamp = sec + frac * scale
            count += since <= stamp < until
            at += 16 + incl
        return count


def stop_all(lan: Lan, procs: list[subprocess.Popen]) -> None:
    """SIGTERM to all at once, then wait: fifty boards stopped one by one take long."""
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc in lan.processes:
            lan.processes.remove(proc)


def until(condition, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"gave up waiting {limit:g} s for {what}")
        time.sleep(0.2)


def times_to(lines: list[Lines], patterns: list[list[str]], marks: list[int], since: float) -> list[float | None]:
    """For each process, the seconds from `since` until it printed a line for every
    one of its patterns (the last of them); None when one did not come in time."""
    deadline = since + LIMIT
    out: list[float | None] = []
    for proc, wanted, mark in zip(lines, patterns, marks):
        stamps = [proc.wait(p, mark, max(0.0, deadline - time.monotonic())) for p in wanted]
        out.append(None if None in stamps else max(stamps) - since)
    return out


def count(lines: Lines, pattern: str, start: int = 0) -> int:
    rx = re.compile(pattern)
    with lines.lock:
        return sum(1 for _, line in lines.lines[start:] if rx.search(line))


def scenario(lan: Lan, switch: Switch, tmp: Path, title: str, boards: list[str], servers: list[str],
             pins: dict[str, str] | None, mdns_only: bool, seconds: float) -> dict:
    """Start the boards, let them settle, start the servers, measure, stop the servers."""
    print(f"{title}: starting {len(boards)} board(s)", file=sys.stderr)
    marks = [switch.mark()]  # boards starting
    procs, lines = [], []
    for b in boards:
        if mdns_only:
            argv = pm("browse", "--watch", "--timeout", str(int(START_LIMIT + 3 * LIMIT + seconds + 120)))
        else:
            argv = pm("client", "--dry-run", "--mount-mode", "mpd", "--state-dir", str(tmp / f"k-{b}"),
                      *(("--server", pins[b]) if pins else ()))
        proc = lan[b].spawn(argv, env=ENV)
        procs.append(proc)
        lines.append(Lines(proc))
    until(lambda: all(mdns_bound(p.pid) for p in procs), START_LIMIT, "the boards' browsers")
    time.sleep(SETTLE)

    print(f"{title}: starting {len(servers)} server(s)", file=sys.stderr)
    if mdns_only:
        wanted = [[rf"^added +{s} " for s in servers]] * len(boards)
    else:
        wanted = [[rf"up with {pins[b] if pins else servers[0]}$"] for b in boards]
    starts = [line.mark() for line in lines]
    marks.append(switch.mark())  # bring-up
    began = time.monotonic()
    server_procs = {s: lan[s].spawn(pm("server", "--export", "/srv/music", "--mpd-port", "6600",
                                       "--state-dir", str(tmp / f"s-{s}")), env=ENV) for s in servers}
    server_lines = {s: Lines(p) for s, p in server_procs.items()}
    ups = times_to(lines, wanted, starts, began)
    time.sleep(SETTLE)

    print(f"{title}: steady window", file=sys.stderr)
    marks.append(switch.mark())  # steady
    watched = {**{f"s:{s}": p.pid for s, p in server_procs.items()}, **{f"b:{i}": p.pid for i, p in enumerate(procs)}}
    before = {k: Usage(pid) for k, pid in watched.items()}
    time.sleep(seconds)
    windows = {k: Window(before[k], Usage(pid)) for k, pid in watched.items()}
    channels = {s: count(sl, CONNECTED) - count(sl, r"^client \S+ \(.*\) disconnected")
                for s, sl in server_lines.items()}
    connected = []
    for sl in server_lines.values():
        with sl.lock:
            connected += [stamp for stamp, line in sl.lines if re.search(CONNECTED, line)]
    all_channels = max(connected) - began if connected and sum(channels.values()) == len(boards) else None

    print(f"{title}: stopping the servers", file=sys.stderr)
    marks.append(switch.mark())  # tear-down
    if mdns_only:
        wanted = [[rf"^removed +{s}\b" for s in servers]] * len(boards)
    else:
        wanted = [[DOWN_LINE]] * len(boards)
    stops = [line.mark() for line in lines]
    stopped = time.monotonic()
    for p in server_procs.values():
        p.send_signal(signal.SIGTERM)
    downs = times_to(lines, wanted, stops, stopped)
    rcs = [p.wait(LIMIT) for p in server_procs.values()]
    time.sleep(TAIL)
    marks.append(switch.mark())  # end
    refused = sum(count(sl, r"too many connections not through their handshake|no handshake slot within")
                  for sl in server_lines.values())
    reconnects = sum(count(line, r"^channel to \S+ .* closed") for line in lines)
    tracebacks = sum(count(line, r"Traceback") for line in [*lines, *server_lines.values()])
    stop_all(lan, list(server_procs.values()))
    stop_all(lan, procs)
    periods = {}
    names = ("boards starting", "bring-up", "steady", "tear-down")
    for name, (t0, c0), (t1, c1) in zip(names, marks, marks[1:]):
        periods[name] = {"seconds": t1 - t0, "packets": c1["mdns"][0] - c0["mdns"][0],
                         "bytes": c1["mdns"][1] - c0["mdns"][1], "multicast": switch.multicast(t0, t1),
                         "channel": c1["channel"][0] - c0["channel"][0],
                         "channel_bytes": c1["channel"][1] - c0["channel"][1]}
    return {"title": title, "boards": len(boards), "servers": servers, "ups": ups, "downs": downs,
            "periods": periods, "windows": windows, "channels": channels, "all_channels": all_channels,
            "rcs": rcs, "refused": refused,
            "reconnects": reconnects, "tracebacks": tracebacks, "mdns_only": mdns_only}


def main() -> int:
    n_boards = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    n_servers = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    minutes = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    servers = [f"music{i + 1}" for i in range(n_servers)]
    boards = [f"board{i + 1:02d}" for i in range(n_boards)]
    pins = {b: servers[i % n_servers] for i, b in enumerate(boards)}
    lifetime = 4 * (START_LIMIT + 3 * LIMIT + 2 * SETTLE + minutes * 60) + 600
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, Lan([*servers, *boards], lifetime=lifetime) as lan:
        tmp = Path(tmp)
        setup = time.monotonic() - began
        lan.wait_for_multicast(timeout=60)
        switch = Switch(lan, tmp, lifetime)
        seconds = minutes * 60
        results = [
            scenario(lan, switch, tmp, "one board", boards[:1], servers, pins, False, seconds),
            scenario(lan, switch, tmp, "mDNS only", boards, servers, None, True, seconds),
            scenario(lan, switch, tmp, "pinned", boards, servers, pins, False, seconds),
            scenario(lan, switch, tmp, "one server", boards, servers[:1], None, False, seconds),
        ]
        lan_hosts = len(lan.hosts)
    elapsed = time.monotonic() - began
    report(results, n_boards, n_servers, seconds, lan_hosts, setup, elapsed)
    return 0


def seconds_cell(samples: list[float | None], p: float | None) -> str:
    got = [s for s in samples if s is not None]
    missing = len(samples) - len(got)
    if not got:
        return "none"
    value = max(got) if p is None else percentile(got, p)
    text = f"{value:.2f} s"
    return text + (f" ({missing} missing)" if p is None and missing else "")


def report(results, n_boards, n_servers, seconds, lan_hosts, setup, elapsed) -> None:
    print(f"## Scale ({stacks()})\n")
    print(f"One LAN of {lan_hosts} hosts ({n_servers} servers, {n_boards} boards), set up in {setup:.0f} s; "
          f"whole run {elapsed / 60:.1f} min.\n")
    print("Servers started -> boards up (\"up with\"; mDNS only: every server's record listed) and -> "
          "the last board's channel connected (the servers' \"client ... connected\" lines); SIGTERM to "
          "the servers -> boards down (tear-down done; mDNS only: every goodbye seen):\n")
    print("| scenario | boards | up p50 | up p95 | all up | all channels up | down p50 | down p95 | all down |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        channels = "-" if r["mdns_only"] else ("not all" if r["all_channels"] is None else f"{r['all_channels']:.2f} s")
        print(f"| {r['title']} | {r['boards']} | {seconds_cell(r['ups'], 50)} | {seconds_cell(r['ups'], 95)} | "
              f"{seconds_cell(r['ups'], None)} | {channels} | {seconds_cell(r['downs'], 50)} | "
              f"{seconds_cell(r['downs'], 95)} | {seconds_cell(r['downs'], None)} |")
    print(f"\nmDNS on the switch (UDP port 5353, every frame once as it enters the bridge; IP bytes), "
          f"per period: packets, KiB, packets/s. Periods: boards starting (-> servers started, "
          f"{SETTLE:g} s of settling included), bring-up (-> all up + {SETTLE:g} s), steady, tear-down "
          f"(-> all down and the servers exited, + {TAIL:g} s):\n")
    names = list(results[0]["periods"])
    print("| scenario | " + " | ".join(names) + " | multicast seen on br0 (tcpdump) / counted | "
          "liveness channel (TCP), steady |")
    print("|---|" + "---|" * (len(names) + 2))
    for r in results:
        cells = []
        for name in names:
            p = r["periods"][name]
            cells.append(f"{p['packets']}, {p['bytes'] / 1024:.1f} KiB, {p['packets'] / p['seconds']:.1f}/s")
        counted = sum(p["packets"] for p in r["periods"].values())
        seen = sum(p["multicast"] for p in r["periods"].values())
        steady = r["periods"]["steady"]
        print(f"| {r['title']} | " + " | ".join(cells) + f" | {seen} / {counted} | "
              f"{steady['channel'] / steady['seconds']:.1f} packets/s, "
              f"{steady['channel_bytes'] / 1024 / steady['seconds']:.2f} KiB/s |")
    print(f"\nServers over the steady window ({seconds:g} s, all boards up): channels (connected boards), "
          f"CPU ticks (100 = one second of one core) and % of one core, wake-ups/s (voluntary context "
          f"switches), resident memory; boards: mean and max ticks, mean RSS:\n")
    print("| scenario | server: channels | server CPU | server wake-ups/s | server RSS | board CPU mean / max | "
          "board RSS mean |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        servers = [(k[2:], w) for k, w in r["windows"].items() if k.startswith("s:")]
        boards = [w for k, w in r["windows"].items() if k.startswith("b:")]
        for i, (name, w) in enumerate(servers):
            board_cells = " | |"
            if i == 0:
                ticks = [b.ticks for b in boards]
                mean = sum(ticks) / len(ticks)
                board_cells = (f" {mean:.1f} ({100 * mean / CLOCK_TICKS / w.seconds:.2f} %)"
                               f" / {max(ticks)} | {sum(b.rss_kb for b in boards) / len(boards) / 1024:.1f} MiB |")
            print(f"| {r['title'] if i == 0 else ''} | {name}: {r['channels'][name]} | {w.ticks} "
                  f"({w.cpu_percent:.2f} %) | {w.wakeups_per_s:.2f} | {w.rss_kb / 1024:.1f} MiB |" + board_cells)
    print()
    for r in results:
        print(f"- {r['title']}: server exit statuses {sorted(set(r['rcs']))}; connections the servers refused "
              f"(no handshake slot in time, or too many waiting) {r['refused']}; channel closes logged by boards "
              f"{r['reconnects']}; tracebacks {r['tracebacks']}.")


if __name__ == "__main__":
    sys.exit(main())
