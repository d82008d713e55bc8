"""Shared by the benchmarks: run this checkout's CLI in LAN hosts, timestamp output lines,
and summarise samples (p50/p95) side by side with a baseline from the same run."""

from __future__ import annotations

import os
import re
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
ENV.pop("JOURNAL_STREAM", None)


def pm(*args: str) -> list[str]:
    return [sys.executable, "-m", "pistop_mdns", *args]


class Lines:
    """Output lines of a process with the monotonic time each arrived."""

    def __init__(self, proc):
        self.proc = proc
        self.lines: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for line in self.proc.stdout:
                with self.lock:
                    self.lines.append((time.monotonic(), line.rstrip("\n")))
        except (ValueError, OSError):
            pass

    def mark(self) -> int:
        with self.lock:
            return len(self.lines)

    def wait(self, pattern: str, start: int, timeout: float) -> float | None:
        """Arrival time of the first line from index `start` matching `pattern`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for stamp, line in self.lines[start:]:
                    if rx.search(line):
                        return stamp
            time.sleep(0.005)
        return None


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def row(name: str, samples: list[float], baseline: list[float] | None = None) -> str:
    p50, p95 = percentile(samples, 50), percentile(samples, 95)
    text = f"| {name} | {len(samples)} | {p50 * 1000:.0f} ms | {p95 * 1000:.0f} ms |"
    if baseline:
        b50, b95 = percentile(baseline, 50), percentile(baseline, 95)
        text += f" {p50 / b50:.2f} | {p95 / b95:.2f} |"
    else:
        text += " 1.00 | 1.00 |"
    return text


HEADER = "| measured | rounds | p50 | p95 | p50 / baseline | p95 / baseline |\n|---|---|---|---|---|---|"


def stacks() -> str:
    import click
    import sh
    import zeroconf

    return f"Python {sys.version.split()[0]}, zeroconf {zeroconf.__version__}, sh {sh.__version__}, click {click.__version__}"


def mean(samples: list[float]) -> float:
    return statistics.fmean(samples)


# ------------------------------------------------------------- a process seen from outside

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MDNS_PORT_HEX = f"{5353:04X}"


class Usage:
    """One look at a process from outside, through /proc: CPU ticks (user + system,
    the process's own threads), resident memory, and voluntary context switches
    summed over its threads -- each one a sleep that ended, i.e. a wake-up."""

    def __init__(self, pid: int):
        self.at = time.monotonic()
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        self.ticks = int(fields[11]) + int(fields[12])
        self.child_ticks = int(fields[13]) + int(fields[14])  # children it waited for
        self.rss_kb = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    self.rss_kb = int(line.split()[1])
        self.wakeups = 0
        self.threads = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            self.wakeups += int(line.split()[1])
                            self.threads += 1
            except OSError:
                pass  # a worker thread that just ended


class Window:
    """What a process used between two looks: `Window(before, after)`."""

    def __init__(self, before: Usage, after: Usage):
        self.seconds = after.at - before.at
        self.ticks = after.ticks - before.ticks
        self.child_ticks = after.child_ticks - before.child_ticks
        self.wakeups = after.wakeups - before.wakeups
        self.rss_kb = after.rss_kb
        self.threads = after.threads

    @property
    def cpu_percent(self) -> float:
        """Share of one core, in per cent."""
        return 100.0 * self.ticks / CLOCK_TICKS / self.seconds

    @property
    def wakeups_per_s(self) -> float:
        return self.wakeups / self.seconds


def measure(pids: dict[str, int], seconds: float) -> dict[str, Window]:
    """Usage of each named process over the same `seconds`."""
    before = {name: Usage(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: Window(before[name], Usage(pid)) for name, pid in pids.items()}


@dataclass
class LoopWakeups:
    """A process's epoll_wait calls over `seconds`, as strace saw them."""

    seconds: float
    calls: int = 0  # every call, also the non-blocking ones (timeout 0) asyncio makes
    waits: int = 0  # calls that could sleep (timeout not 0): each return is a wake-up
    timer: int = 0  # of those, the ones that returned no event: woken by a timer
    shortest_ms: int | None = None  # the shortest positive timeout asked for

    @property
    def waits_per_s(self) -> float:
        return self.waits / self.seconds

    @property
    def timer_per_s(self) -> float:
        return self.timer / self.seconds


_EPOLL_CALL = re.compile(r"^epoll_\w+\(\d+, (?:\[.*?\]|NULL|0x[0-9a-f]+), \d+, (-?\d+)(?:, [^=]*)?\)\s+= (-?\d+)")


def loop_wakeups(pids: dict[str, int], seconds: float, out_dir: Path) -> dict[str, LoopWakeups | None]:
    """The event loop's wake-ups of each process over the same `seconds`: `strace -f`
    attached to all at once, tracing only epoll_wait. None where strace is missing or
    failed. Attaching slows the traced process: measure CPU in another window."""
    import shutil
    import subprocess

    if shutil.which("strace") is None:
        return {name: None for name in pids}
    procs = {}
    for name, pid in pids.items():
        out = out_dir / f"strace-{name}-{pid}.txt"
        procs[name] = (out, subprocess.Popen(
            ["timeout", "-s", "INT", str(seconds), "strace", "-f", "-qq", "-o", str(out),
             "-e", "trace=epoll_wait,epoll_pwait,epoll_pwait2", "-p", str(pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    found: dict[str, LoopWakeups | None] = {}
    for name, (out, proc) in procs.items():
        try:
            proc.wait(seconds + 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        found[name] = _epoll_calls(out, seconds)
    return found


def _epoll_calls(path: Path, seconds: float) -> LoopWakeups | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    result = LoopWakeups(seconds)
    pending: dict[str, str] = {}  # pid -> first half of a call another thread interrupted
    for line in text.splitlines():
        m = re.match(r"^(\d+)\s+(.*)$", line)
        pid, call = (m.group(1), m.group(2)) if m else ("", line)
        if call.endswith("<unfinished ...>"):
            pending[pid] = call[: -len("<unfinished ...>")].rstrip()
            continue
        resumed = re.match(r"^<\.\.\. epoll_\w+ resumed>\s*(.*)$", call)
        if resumed:
            call = pending.pop(pid, "") + " " + resumed.group(1)
            call = re.sub(r"\(\s+", "(", call)
        m = _EPOLL_CALL.match(call)
        if not m:
            continue
        timeout, returned = int(m.group(1)), int(m.group(2))
        result.calls += 1
        if timeout != 0:
            result.waits += 1
            result.timer += returned == 0
        if timeout > 0 and (result.shortest_ms is None or timeout < result.shortest_ms):
            result.shortest_ms = timeout
    return result


def mdns_bound(pid: int) -> bool:
    """The process holds a UDP socket on port 5353: its mDNS stack is up."""
    try:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
            if m:
                inodes.add(m.group(1))
        with open(f"/proc/{pid}/net/udp") as f:
            rows = [line.split() for line in list(f)[1:]]
    except OSError:
        return False
    return any(r[1].endswith(":" + MDNS_PORT_HEX) and r[9] in inodes for r in rows if len(r) > 9)
