"""The only place that runs external programs.

Every command goes through `Runner.run` (wait for it) or `Runner.start` (go
on, look later): it has a timeout (the process group is killed when it
expires), never raises for a failing, missing or hung program, and returns a
`Result` that says what happened in words a log line can use. No call waits
longer than the timeout plus a short grace, even for a process that a kill
cannot end at once (one stuck in the kernel on a dead NFS server): that one
is left behind, logged once. In dry-run mode it only logs what it would run.

sh 1.14 (Debian 12) and sh 2.x differ: 2.x returns a plain string unless
`_return_cmd=True`, an argument 1.14 would pass on to the program as a flag.
That difference is handled here and nowhere else.
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import signal
import threading
import time
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
    left_running: bool = False  # it outlived the kill (stuck in the kernel) and was left behind

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
        if self.left_running:
            return f"{self.command}: no answer after the timeout, and it could not be killed (left behind)"
        if self.timed_out:
            return f"{self.command}: no answer, killed after the timeout"
        detail = (self.err.strip() or self.out.strip()).splitlines()
        tail = f": {detail[-1]}" if detail else ""
        if self.rc is not None and self.rc < 0:
            return f"{self.command}: killed by signal {-self.rc}{tail}"
        return f"{self.command}: exit {self.rc}{tail}"


# After SIGKILL a process normally goes within milliseconds; one stuck in the
# kernel (D state: an NFS call to a server that cannot answer) may not go for
# minutes. This is how long the runner waits for it before leaving it behind.
KILL_GRACE = 2.0

# The process groups of commands still running. Each has its own session (so
# a timeout kills what it started), which also means it would outlive this
# process: at exit they are killed, as systemd does to the unit's cgroup.
_RUNNING: set[int] = set()


@atexit.register
def _kill_running() -> None:
    for pgid in list(_RUNNING):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


class Started:
    """A command that runs: ask for its `result`, or go on without it.

    Whether anyone waits or not, the process group is killed when its timeout
    passes. A process that outlives even that is left behind, logged once.
    """

    def __init__(self, argv: tuple[str, ...], running, limit: float, kill_grace: float):
        self.argv = argv
        self._running = running
        self._deadline = time.monotonic() + limit
        self._kill_grace = kill_grace
        self._finished = threading.Event()
        self._expired = threading.Event()
        self._done_by: object = running
        self._result: Result | None = None
        _RUNNING.add(running.process.pid)
        self._timer = threading.Timer(limit, self._kill)
        self._timer.daemon = True
        self._timer.start()
        threading.Thread(target=self._wait, daemon=True, name=f"wait {argv[0]}").start()

    def _kill(self) -> None:
        self._expired.set()
        try:
            os.killpg(self._running.process.pid, signal.SIGKILL)
        except OSError:
            pass

    def _wait(self) -> None:
        try:
            self._running.wait()
        except sh.ErrorReturnCode as e:  # sh 1.14 raises for signals even with _ok_code
            self._done_by = e
        finally:
            self._timer.cancel()
            _RUNNING.discard(self._running.process.pid)
            self._finished.set()

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def result(self, wait: float | None = None) -> Result | None:
        """The result. With `wait`, None when it still runs after `wait` seconds;
        without, it answers after the timeout and the kill grace at the latest."""
        if self._result is not None:
            return self._result
        if wait is not None:
            return self._finish() if self._finished.wait(wait) else None
        if not self._finished.wait(max(0.0, self._deadline - time.monotonic())):
            self._kill()  # the timer's job, done here too in case it is late
            if not self._finished.wait(self._kill_grace):
                pid = self._running.process.pid
                log.warning("%s: still running (pid %s, state %s) after SIGKILL; left behind",
                            shlex.join(self.argv), pid, _proc_state(pid))
                self._result = Result(self.argv, None, timed_out=True, left_running=True)
                return self._result
        return self._finish()

    def _finish(self) -> Result:
        done = self._done_by
        out, err = _decode(done.stdout), _decode(done.stderr)
        if self._expired.is_set():
            self._result = Result(self.argv, None, out, err, timed_out=True)
        else:
            self._result = Result(self.argv, done.exit_code, out, err)
        return self._result


class _Finished:
    """What `start` returns for a command that never ran (dry run, not found)."""

    def __init__(self, result: Result):
        self._result = result

    done = True

    def result(self, wait: float | None = None) -> Result:
        return self._result


class Runner:
    """Runs argv tuples with a timeout; `dry_run` logs instead of running."""

    def __init__(self, timeout: float = 30.0, dry_run: bool = False, kill_grace: float = KILL_GRACE):
        self.timeout = timeout
        self.dry_run = dry_run
        self.kill_grace = kill_grace

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        """Run and wait: at most the timeout plus the kill grace, whatever the process does."""
        result = self.start(argv, timeout=timeout, input=input, env=env).result()
        assert result is not None  # result() without `wait` always answers
        return result

    def start(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Started | _Finished:
        """Start argv and return at once; the process group is killed at the timeout."""
        argv = tuple(str(a) for a in argv)
        limit = self.timeout if timeout is None else timeout
        if self.dry_run:
            log.info("would run: %s", shlex.join(argv))
            return _Finished(Result(argv, 0))
        log.debug("run: %s (timeout %g s)", shlex.join(argv), limit)
        try:
            command = sh.Command(argv[0])
        except sh.CommandNotFound:
            return _Finished(Result(argv, None, not_found=True))
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
            return _Finished(Result(argv, None, not_found=True))
        except OSError as e:  # e.g. the file exists but is not executable
            return _Finished(Result(argv, 126, err=e.strerror or str(e)))
        # sh's own `_timeout` polls every 0.1 s and adds that to every command;
        # a timer that kills the process costs nothing when it is not needed.
        return Started(argv, running, limit, self.kill_grace)


def _proc_state(pid: int) -> str:
    """The kernel's one-letter state of a process (D: waiting in the kernel), or "?"."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _decode(data: bytes | str) -> str:
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
