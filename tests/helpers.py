"""Shared by the LAN and component tests: run the real command in a LAN host,
read its output as it comes, wait for conditions with a bounded loop."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from pistop_mdns import lan

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
    try:
        return lan.wait_for(predicate, timeout, interval, what)
    except lan.LanError as e:
        raise pytest.fail.Exception(str(e)) from None


class Output(lan.Output):
    """A process's output lines (see pistop_mdns.lan.Output); a wait that times out fails the test."""

    def wait(self, pattern: str, timeout: float, start: int = 0) -> tuple[float, str]:
        try:
            return super().wait(pattern, timeout, start)
        except lan.LanError as e:
            raise pytest.fail.Exception(str(e)) from None
