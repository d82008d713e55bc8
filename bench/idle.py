#!/usr/bin/env python3
"""What an idle board and an idle server cost: CPU, wake-ups and memory over minutes,
next to a bare python3 sleeping and a board with mDNS only, in the same run.

Hosts: musicpi (`pistop-mdns server`), kitchen (a dry-run `pistop-mdns client`, and
`python3 -c 'import time; time.sleep(N)'`), bedroom (`pistop-mdns browse --watch`: the
same mDNS browser, without the liveness channel and the core). Phases, each measured
for MINUTES after things settled:

  before:  no server on the LAN yet;
  up:      the server runs and the board is up with it (heartbeats every 2 s);
  stopped: the server was stopped with SIGTERM (stop notice, goodbye) and the board
           tore down -- the old core woke every 10 ms from here on (issue 10);
  flapped: after FLAPS more starts and stops of the server (every other one waits
           until the board is up; the others stop the server as soon as its record
           is on the LAN, while the board still waits out flap_settle).

Measured from outside, through /proc: CPU ticks (user + system, 100 a second of one
core), resident memory, and voluntary context switches summed over the threads (every
sleep that ended: the wake-ups). Then, in a separate window of TRACE_SECONDS (strace
slows what it traces), `strace -c -f` counts the epoll_wait calls: the event loop's
own wake-ups.

Usage: sudo python3 bench/idle.py [MINUTES] [FLAPS] [TRACE_SECONDS]   (defaults 3, 50, 30)
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from operator import attrgetter
from pathlib import Path

from common import ENV, Lines, loop_wakeups, mdns_bound, measure, pm, stacks

from pistop_mdns.lan import Lan

SETTLE = 15.0  # after a change: registration announcements, queries and plans are over
LIMIT = 60.0  # seconds any one wait may take before the run is abandoned
PHASES = ("before", "up", "stopped", "flapped")
PHASE_TITLES = {"before": "before any server", "up": "server up", "stopped": "after the server stopped",
                "flapped": "after {flaps} flaps"}
ROWS = (("bare", "bare `python3` sleeping"), ("mdns", "board, mDNS only (`browse --watch`)"),
        ("board", "board (`client --dry-run`)"), ("server", "server (1 board connected)"))


def wait(lines: Lines, pattern: str, start: int, what: str) -> float:
    stamp = lines.wait(pattern, start, LIMIT)
    if stamp is None:
        sys.exit(f"gave up waiting {LIMIT:g} s for {what}")
    return stamp


def until(condition, what: str) -> None:
    deadline = time.monotonic() + LIMIT
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"gave up waiting {LIMIT:g} s for {what}")
        time.sleep(0.1)


class Run:
    def __init__(self, lan: Lan, tmp: Path, minutes: float, trace: float):
        self.lan, self.tmp, self.seconds, self.trace = lan, tmp, minutes * 60, trace
        self.results: dict[str, dict] = {}
        self.server = None

    def start_server(self):
        self.server = self.lan["musicpi"].spawn(pm("server", "--export", "/srv/music", "--mpd-port", "6600",
                                                   "--state-dir", str(self.tmp / "s")), env=ENV)
        return self.server

    def stop_server(self) -> int:
        self.server.send_signal(signal.SIGTERM)
        rc = self.server.wait(LIMIT)
        self.lan.processes.remove(self.server)
        self.server = None
        return rc

    def phase(self, name: str, pids: dict[str, int]) -> None:
        time.sleep(SETTLE)
        windows = measure(pids, self.seconds)
        loops = loop_wakeups(pids, self.trace, self.tmp)
        self.results[name] = {"windows": windows, "loops": loops}
        board = windows["board"]
        print(f"  {name}: board {board.ticks} ticks, {board.wakeups_per_s:.2f} wake-ups/s, "
              f"loop {loops['board']}", file=sys.stderr)


def main() -> int:
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    flaps = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    trace = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
    lifetime = 4 * (minutes * 60 + trace + SETTLE + LIMIT) + flaps * 4 * LIMIT
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, \
            Lan(["musicpi", "kitchen", "bedroom"], lifetime=lifetime) as lan:
        tmp = Path(tmp)
        lan.wait_for_multicast()
        run = Run(lan, tmp, minutes, trace)
        bare = lan["kitchen"].spawn([sys.executable, "-c", f"import time; time.sleep({lifetime:.0f})"])
        mdns = Lines(lan["bedroom"].spawn(pm("browse", "--watch", "--timeout", f"{lifetime:.0f}"), env=ENV))
        board = Lines(lan["kitchen"].spawn(pm("client", "--dry-run", "--mount-mode", "mpd",
                                              "--state-dir", str(tmp / "k")), env=ENV))
        pids = {"bare": bare.pid, "mdns": mdns.proc.pid, "board": board.proc.pid}
        until(lambda: mdns_bound(board.proc.pid) and mdns_bound(mdns.proc.pid), "the browsers to start")

        print("phase before", file=sys.stderr)
        run.phase("before", pids)

        print("phase up", file=sys.stderr)
        b0, m0 = board.mark(), mdns.mark()
        server = run.start_server()
        wait(board, r"up with musicpi", b0, "the board to come up")
        wait(mdns, r"^added +musicpi", m0, "browse --watch to see the server")
        run.phase("up", {**pids, "server": server.pid})

        print("phase stopped", file=sys.stderr)
        b0, m0 = board.mark(), mdns.mark()
        rc = run.stop_server()
        wait(board, r"would tell the server this board is down", b0, "the board's tear-down")
        wait(mdns, r"^removed +musicpi", m0, "browse --watch to see the goodbye")
        run.phase("stopped", pids)

        print(f"{flaps} flaps", file=sys.stderr)
        flap_began, ups, rcs = time.monotonic(), 0, [rc]
        b_flaps = board.mark()
        for i in range(flaps):
            b0, m0 = board.mark(), mdns.mark()
            run.start_server()
            if i % 2 == (flaps - 1) % 2:  # the last flap is a full one
                wait(board, r"up with musicpi", b0, f"the board to come up (flap {i + 1})")
            else:
                wait(mdns, r"^(added|updated) +musicpi", m0, f"the record (flap {i + 1})")
            m1 = mdns.mark()
            rcs.append(run.stop_server())
            wait(mdns, r"^removed +musicpi", m1, f"the goodbye (flap {i + 1})")
        if flaps:
            wait(board, r"would tell the server this board is down", b0, "the board's last tear-down")
        flap_seconds = time.monotonic() - flap_began
        with board.lock:
            ups = sum(1 for _, line in board.lines[b_flaps:] if "up with musicpi" in line)
            tracebacks = sum(1 for _, line in board.lines if "Traceback" in line)
        run.phase("flapped", pids)
        elapsed = time.monotonic() - began
    print_report(run.results, minutes, flaps, trace, ups, flap_seconds, rcs, tracebacks, elapsed)
    return 0


def loop_cell(_, loop) -> str:
    if loop is None:
        return "n/a"
    if loop.calls == 0:
        return "no epoll_wait"
    shortest = "-" if loop.shortest_ms is None else f"{loop.shortest_ms} ms"
    return f"{loop.waits_per_s:.2f}/s, {loop.timer_per_s:.2f}/s timer, {shortest}"


def print_report(results, minutes, flaps, trace, ups, flap_seconds, rcs, tracebacks, elapsed) -> None:
    seconds = minutes * 60
    titles = [PHASE_TITLES[p].format(flaps=flaps) for p in PHASES]
    head = "| process | " + " | ".join(titles) + " |\n|---|" + "---|" * len(PHASES)

    def cells(key, fmt) -> str:
        out = []
        for p in PHASES:
            w = results[p]["windows"].get(key)
            out.append("-" if w is None else fmt(w, results[p]["loops"].get(key)))
        return " | ".join(out)

    def ratio(value, den) -> str:
        out = []
        for p in PHASES:
            a, b = value(results[p]["windows"]["board"]), den(p)
            out.append(f"{a / b:.2f}" if b else "n/a (baseline 0)")
        return " | ".join(out)

    print(f"## Idle ({stacks()})\n")
    print(f"CPU over {seconds:g} s per phase, as ticks of user + system time (100 = one second of one "
          f"core) and % of one core:\n")
    print(head)
    for key, name in ROWS:
        print(f"| {name} | " + cells(key, lambda w, _: f"{w.ticks} ({w.cpu_percent:.2f} %)") + " |")
    ticks = attrgetter("ticks")
    print("| board / board before any server | " +
          ratio(ticks, lambda p: results["before"]["windows"]["board"].ticks) + " |")
    print("| board / mDNS-only board, same phase | " +
          ratio(ticks, lambda p: results[p]["windows"]["mdns"].ticks) + " |")
    print(f"\nWake-ups per second over the same {seconds:g} s: voluntary context switches summed over "
          f"the threads (every sleep that ended):\n")
    print(head)
    for key, name in ROWS:
        print(f"| {name} | " + cells(key, lambda w, _: f"{w.wakeups_per_s:.2f}") + " |")
    per_s = attrgetter("wakeups_per_s")
    print("| board / board before any server | " +
          ratio(per_s, lambda p: results["before"]["windows"]["board"].wakeups_per_s) + " |")
    print("| board / mDNS-only board, same phase | " +
          ratio(per_s, lambda p: results[p]["windows"]["mdns"].wakeups_per_s) + " |")
    print(f"\nThe event loop's wake-ups, from `strace -f -e trace=epoll_wait` over the next {trace:g} s: "
          f"epoll_wait calls that could sleep, per second; of those, the ones a timer ended (no "
          f"event); the shortest timeout asked for:\n")
    print(head)
    for key, name in ROWS:
        print(f"| {name} | " + cells(key, loop_cell) + " |")
    print("\nResident memory (VmRSS) at the end of each phase, and threads:\n")
    print(head)
    for key, name in ROWS:
        print(f"| {name} | " + cells(key, lambda w, _: f"{w.rss_kb / 1024:.1f} MiB, {w.threads}") + " |")
    children = sum(r["windows"][k].child_ticks for r in results.values() for k in r["windows"])
    print(f"\n{flaps} flaps in {flap_seconds:.0f} s; the board came up {ups} times; server exit statuses "
          f"{sorted(set(rcs))}; tracebacks in the board's log: {tracebacks}; ticks of waited-for "
          f"children in the windows: {children}. Whole run {elapsed / 60:.1f} min.")


if __name__ == "__main__":
    sys.exit(main())
