"""Shared by the LAN and component tests: run the real command in a LAN host,
read its output as it comes, wait for conditions with a bounded loop."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
ENV.pop("JOURNAL_STREAM", None)


def pm_argv(*args: str) -> list[str]:
    """argv of this checkout's pistop-mdns, run by the interpreter running the tests."""
    return [PYTHON, "-m", "pistop_mdns", *args]


def need(*programs: str, package: str | None = None) -> None:
    """Fail (never skip) when a real component is missing: CI must not go green without it."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install {package or ' '.join(missing)} "
                    f"(tools/test installs everything)")


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (network and mount namespaces): run it with sudo")


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Output:
    """Collects a process's output lines in a thread, with timestamps, for waiting on."""

    def __init__(self, proc: subprocess.Popen, name: str = ""):
        self.proc = proc
        self.name = name
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                with self._lock:
                    self.lines.append((time.monotonic(), line.rstrip("\n")))
        except (ValueError, OSError):
            pass  # the stream was closed by the LAN's clean-up

    def text(self) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.lines)

    def find(self, pattern: str, start: int = 0) -> tuple[float, str] | None:
        rx = re.compile(pattern)
        with self._lock:
            for stamp, line in self.lines[start:]:
                if rx.search(line):
                    return stamp, line
        return None

    def count(self, pattern: str) -> int:
        rx = re.compile(pattern)
        with self._lock:
            return sum(1 for _, line in self.lines if rx.search(line))

    def wait(self, pattern: str, timeout: float, start: int = 0) -> tuple[float, str]:
        try:
            return wait_for(lambda: self.find(pattern, start), timeout, what=f"{pattern!r} from {self.name}")
        except pytest.fail.Exception:
            raise pytest.fail.Exception(
                f"timed out after {timeout} s waiting for {pattern!r} from {self.name}; output so far:\n"
                + self.text()) from None

    def mark(self) -> int:
        with self._lock:
            return len(self.lines)
