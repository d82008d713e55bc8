"""Starting and stopping mpd and autofs, whatever runs them.

One interface, three backends:

- systemd: `systemctl start mpd.service`; stopping mpd also stops
  `mpd.socket`, or the next client connection would start mpd again.
- daemontools: `svc -u/-d/-t/-h SERVICE_DIR/NAME`, and `svstat` to see the
  state; svc only queues the request, so after -u and -d we poll svstat
  (bounded) until the service is there.
- none: nothing to call; every request is logged as something the user has
  to do (see `Outcome.skipped`).

`general.service_manager = auto` picks systemd when /run/systemd/system
exists (systemd is PID 1), else daemontools when SERVICE_DIR/NAME exists,
else none. Services are named logically ("mpd", "autofs") and mapped to
`client.mpd_service` / `client.autofs_service`. Every command runs through
the Runner, with a timeout.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Callable

from pistop_mdns import commands
from pistop_mdns.config import Config
from pistop_mdns.executor import Result, Runner

SYSTEMD = "systemd"
DAEMONTOOLS = "daemontools"
NONE = "none"
SYSTEMD_MARKER = "/run/systemd/system"

# Stopping mpd is retried (pistop looped until it stopped); a few tries one
# second apart cover a slow shutdown without holding a tear-down for long.
STOP_TRIES = 3
STOP_PAUSE = 1.0
# svc returns at once; how long supervise may take to reach the wanted state.
STATE_WAIT = 10.0
POLL = 0.1
# svstat answers from supervise's status file: it has no reason to be slow.
SVSTAT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str  # what was done, or why it failed, for the caller's one log line
    skipped: bool = False  # no service manager: nothing was done


@dataclass(frozen=True)
class SvStatus:
    """One `svstat DIR` answer."""

    state: str  # "up", "down", "unsupervised" (supervise not running, no such service) or "unknown"
    pid: int | None = None
    text: str = ""  # svstat's words after "DIR: "

    @property
    def up(self) -> bool:
        return self.state == "up"


_UP = re.compile(r": up \(pid (\d+)\) \d+ seconds?")
_DOWN = re.compile(r": down \d+ seconds?")


def parse_svstat(out: str, service_dir: str) -> SvStatus:
    line = out.strip().splitlines()[0] if out.strip() else ""
    text = line[len(service_dir) + 2:] if line.startswith(service_dir + ": ") else line
    up = _UP.search(line)
    if up:
        return SvStatus("up", int(up.group(1)), text)
    if _DOWN.search(line):
        return SvStatus("down", None, text)
    return SvStatus("unsupervised", None, text or "no answer")


def _svc_failed(result: Result) -> str | None:
    """svc exits 0 even when it could not reach supervise; it only warns on stderr."""
    if not result.ok:
        return result.summary()
    warning = next((line for line in result.err.splitlines() if "warning" in line), None)
    return f"{result.command}: {warning.split('warning: ', 1)[-1]}" if warning else None


class Services:
    def __init__(
        self,
        cfg: Config,
        runner: Runner,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        systemd_marker: str = SYSTEMD_MARKER,
    ):
        self.cfg = cfg
        self.runner = runner
        self.sleep = sleep
        self.clock = clock
        self.systemd_marker = systemd_marker
        self.timeout = float(cfg.general.timeout)

    # ------------------------------------------------------------ naming

    def name(self, service: str) -> str:
        """The configured name of logical service "mpd" or "autofs"."""
        return {"mpd": self.cfg.client.mpd_service, "autofs": self.cfg.client.autofs_service}.get(service, service)

    def service_dir(self, service: str) -> str:
        return os.path.join(self.cfg.general.service_dir, self.name(service))

    def backend(self, service: str) -> str:
        chosen = self.cfg.general.service_manager
        if chosen != "auto":
            return chosen
        if os.path.isdir(self.systemd_marker):
            return SYSTEMD
        if os.path.isdir(self.service_dir(service)):
            return DAEMONTOOLS
        return NONE

    # ------------------------------------------------------------ requests

    def is_running(self, service: str) -> bool | None:
        """True or False; None when it cannot be told (no service manager, no answer)."""
        backend = self.backend(service)
        if backend == SYSTEMD:
            r = self.runner.run(commands.systemctl_is_active(commands.systemd_unit(self.name(service))),
                                timeout=self.timeout)
            return None if r.rc is None else r.ok
        if backend == DAEMONTOOLS:
            status = self.svstat(service)
            return None if status is None else status.up
        return None

    def start(self, service: str) -> Outcome:
        backend = self.backend(service)
        if backend == SYSTEMD:
            return self._systemctl("start", service)
        if backend == DAEMONTOOLS:
            return self._svc_until(service, "-u", lambda before, now: now.up)
        return self._cannot("start", service)

    def restart(self, service: str) -> Outcome:
        backend = self.backend(service)
        if backend == SYSTEMD:
            return self._systemctl("restart", service)
        if backend == DAEMONTOOLS:
            # -t: supervise restarts a service that is meant to be up; a new
            # pid is the proof that it did.
            return self._svc_until(service, "-t", lambda before, now: now.up and now.pid != before.pid)
        return self._cannot("restart", service)

    def reload(self, service: str) -> Outcome:
        backend = self.backend(service)
        if backend == SYSTEMD:
            return self._systemctl("reload", service)
        if backend == DAEMONTOOLS:
            r = self.runner.run(commands.svc("-h", self.service_dir(service)), timeout=self.timeout)
            failed = _svc_failed(r)
            return Outcome(False, failed) if failed else Outcome(True, r.command)
        return self._cannot("reload", service)

    def stop(self, service: str) -> Outcome:
        """Stop, retried up to STOP_TRIES times until the service is seen stopped."""
        backend = self.backend(service)
        if backend == NONE:
            return self._cannot("stop", service)
        last = Outcome(False, "")
        for attempt in range(1, STOP_TRIES + 1):
            if backend == SYSTEMD:
                last = self._systemd_stop(service)
            else:
                last = self._svc_until(service, "-d", lambda before, now: not now.up, unsupervised_ok=True)
            if last.ok:
                return last
            if attempt < STOP_TRIES:
                self.sleep(STOP_PAUSE)
        return Outcome(False, f"{last.detail} (gave up after {STOP_TRIES} tries)")

    def ask_to_stop(self, service: str) -> Outcome:
        """Ask the service manager to stop it and return at once, without looking whether it did."""
        backend = self.backend(service)
        if backend == SYSTEMD:
            r = self.runner.run(commands.systemctl_no_block("stop", *self._units("stop", service)),
                                timeout=self.timeout)
            return Outcome(r.ok, r.command if r.ok else r.summary())
        if backend == DAEMONTOOLS:
            r = self.runner.run(commands.svc("-d", self.service_dir(service)), timeout=self.timeout)
            failed = _svc_failed(r)
            return Outcome(False, failed) if failed else Outcome(True, r.command)
        return self._cannot("stop", service)

    # ------------------------------------------------------------ systemd

    def _units(self, verb: str, service: str) -> tuple[str, ...]:
        unit = commands.systemd_unit(self.name(service))
        if verb == "stop" and service == "mpd":
            return (unit, commands.systemd_socket(unit))
        return (unit,)

    def _systemctl(self, verb: str, service: str) -> Outcome:
        r = self.runner.run(commands.systemctl(verb, *self._units(verb, service)), timeout=self.timeout)
        return Outcome(r.ok, r.command if r.ok else r.summary())

    def _systemd_stop(self, service: str) -> Outcome:
        r = self.runner.run(commands.systemctl("stop", *self._units("stop", service)), timeout=self.timeout)
        if r.ok:
            return Outcome(True, r.command)
        # A missing mpd.socket makes the command fail although mpd stopped:
        # what counts is that the service is no longer active.
        if self.is_running(service) is False:
            return Outcome(True, f"{r.command} ({self.name(service)} is inactive)")
        return Outcome(False, r.summary())

    # ------------------------------------------------------------ daemontools

    def svstat(self, service: str) -> SvStatus | None:
        directory = self.service_dir(service)
        r = self.runner.run(commands.svstat(directory), timeout=SVSTAT_TIMEOUT)
        if r.rc is None:
            return None
        return parse_svstat(r.out or r.err, directory)

    def _svc_until(self, service: str, flag: str, reached: Callable[[SvStatus, SvStatus], bool],
                   unsupervised_ok: bool = False) -> Outcome:
        """svc FLAG, then poll svstat until reached(status before, status now)."""
        directory = self.service_dir(service)
        before = self.svstat(service) or SvStatus("unknown", None, "svstat did not answer")
        if before.state == "unsupervised":
            if unsupervised_ok:
                return Outcome(True, f"{directory}: {before.text}, so {self.name(service)} is not running")
            return Outcome(False, f"{directory}: {before.text}; fix: start svscan (or supervise {directory})")
        r = self.runner.run(commands.svc(flag, directory), timeout=self.timeout)
        failed = _svc_failed(r)
        if failed:
            return Outcome(False, failed)
        deadline = self.clock() + min(STATE_WAIT, self.timeout)
        while True:
            status = self.svstat(service)
            if status is not None and reached(before, status):
                return Outcome(True, f"{r.command}: {status.text}")
            if self.clock() >= deadline:
                seen = status.text if status is not None else "svstat did not answer"
                return Outcome(False, f"{r.command}: still {seen} after {min(STATE_WAIT, self.timeout):g} s")
            self.sleep(POLL)

    # ------------------------------------------------------------ none

    def _cannot(self, verb: str, service: str) -> Outcome:
        name = self.name(service)
        if self.cfg.general.service_manager == NONE:
            why = "general.service_manager is none"
        else:
            why = (f"no service manager found (no {self.systemd_marker}, no "
                   f"{self.service_dir(service)}); fix: set general.service_manager and general.service_dir")
        return Outcome(True, f"cannot {verb} {name}: {why}; {verb} it yourself", skipped=True)
