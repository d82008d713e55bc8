"""Shared by the benchmarks: run this checkout's CLI in LAN hosts, timestamp output lines,
and summarise samples (p50/p95) side by side with a baseline from the same run."""

from __future__ import annotations

import os
import re
import statistics
import sys
import threading
import time
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
