"""The only place that runs external programs.

Every command goes through `Runner.run`: it has a timeout (the process is
killed when it expires), never raises for a failing, missing or hung program,
and returns a `Result` that says what happened in words a log line can use.
In dry-run mode it only logs what it would run.

sh 1.14 (Debian 12) and sh 2.x differ: 2.x returns a plain string unless
`_return_cmd=True`, an argument 1.14 would pass on to the program as a flag.
That difference is handled here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import threading
from dataclasses import dataclass
from typing import Mapping, Sequence

import sh

log = logging.getLogger(__name__)

_SH2 = int(sh.__version__.split(".")[0]) >= 2
_RETURN_CMD = {"_return_cmd": True} if _SH2 else {}
# Any exit status, and death by any signal, is a result to report, not an exception.
_ANY_STATUS = list(range(-64, 256))


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    rc: int | None  # None: the program did not finish (timeout) or does not exist
    out: str = ""
    err: str = ""
    timed_out: bool = False
    not_found: bool = False

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    def summary(self) -> str:
        """`umount -f /mnt: exit 32: target is busy` and the like."""
        if self.not_found:
            return f"{self.argv[0]}: command not found"
        if self.timed_out:
            return f"{self.command}: no answer, killed after the timeout"
        detail = (self.err.strip() or self.out.strip()).splitlines()
        tail = f": {detail[-1]}" if detail else ""
        if self.rc is not None and self.rc < 0:
            return f"{self.command}: killed by signal {-self.rc}{tail}"
        return f"{self.command}: exit {self.rc}{tail}"


class Runner:
    """Runs argv tuples with a timeout; `dry_run` logs instead of running."""

    def __init__(self, timeout: float = 30.0, dry_run: bool = False):
        self.timeout = timeout
        self.dry_run = dry_run

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        argv = tuple(str(a) for a in argv)
        limit = self.timeout if timeout is None else timeout
        if self.dry_run:
            log.info("would run: %s", shlex.join(argv))
            return Result(argv, 0)
        log.debug("run: %s (timeout %g s)", shlex.join(argv), limit)
        try:
            command = sh.Command(argv[0])
        except sh.CommandNotFound:
            return Result(argv, None, not_found=True)
        kwargs = dict(
            _bg=True,
            _bg_exc=False,
            # Its own process group, so a timeout kills what it started too.
            _new_session=True,
            _ok_code=_ANY_STATUS,
            _tty_out=False,
            _in=input if input is not None else "",
            **_RETURN_CMD,
        )
        if env is not None:
            kwargs["_env"] = {**os.environ, **env}
        try:
            running = command(*argv[1:], **kwargs)
        except sh.CommandNotFound:
            return Result(argv, None, not_found=True)
        except OSError as e:  # e.g. the file exists but is not executable
            return Result(argv, 126, err=e.strerror or str(e))
        # sh's own `_timeout` polls every 0.1 s and adds that to every command;
        # a timer that kills the process costs nothing when it is not needed.
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            try:
                os.killpg(running.process.pid, signal.SIGKILL)
            except OSError:
                pass

        timer = threading.Timer(limit, kill)
        timer.daemon = True
        timer.start()
        try:
            running.wait()
            done = running
        except sh.ErrorReturnCode as e:  # sh 1.14 raises for signals even with _ok_code
            done = e
        finally:
            timer.cancel()
        if expired.is_set():
            return Result(argv, None, _decode(done.stdout), _decode(done.stderr), timed_out=True)
        return Result(argv, done.exit_code, _decode(done.stdout), _decode(done.stderr))


def _decode(data: bytes | str) -> str:
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
