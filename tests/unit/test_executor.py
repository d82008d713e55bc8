"""The process runner: timeouts that hold even when a killed process does not go.

A process stuck in the kernel (an NFS call to a server whose cable is
pulled: D state) does not die at once when it is killed. Here a real
process stands in for it: the runner's group kill is made to miss it, as the
kernel would make it miss, and the process is ended by the test afterwards.
No root; real `sh` and `sleep`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from pistop_mdns import executor
from pistop_mdns.executor import Runner

BOUND = 60.0  # how long a test waits for run() before calling it hung: never reached when it works


@pytest.fixture
def unkillable(monkeypatch, tmp_path):
    """(argv, pidfile): a command whose process group the runner's kill cannot reach."""
    pidfile = tmp_path / "pid"
    argv = ["sh", "-c", f'echo $$ > {pidfile}; exec sleep 1000']
    real_killpg = os.killpg

    def killpg(pgid: int, sig: int) -> None:
        if pidfile.exists() and pgid == int(pidfile.read_text()):
            return  # the kernel has it: the signal is pending, the process stays
        real_killpg(pgid, sig)

    monkeypatch.setattr(executor.os, "killpg", killpg)
    yield argv, pidfile
    if pidfile.exists():
        try:
            real_killpg(int(pidfile.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_in_thread(call):
    """Run `call` in a thread; (thread, box) where box gets the result."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    return thread, box


def test_a_process_that_survives_the_kill_does_not_hold_run(unkillable, caplog):
    argv, pidfile = unkillable
    thread, box = run_in_thread(lambda: Runner().run(argv, timeout=0.5))
    thread.join(BOUND)
    assert not thread.is_alive(), "run() is still waiting for a process it could not kill"
    result = box[0]
    assert result.timed_out and result.left_running and result.rc is None
    assert result.summary() == (f"sh -c 'echo $$ > {pidfile}; exec sleep 1000': no answer after the timeout, "
                                f"and it could not be killed (left behind)")
    assert os.path.exists(f"/proc/{pidfile.read_text().strip()}"), "the test's stand-in process should still run"
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"sh -c 'echo $$ > {pidfile}; exec sleep 1000': still running (pid {pidfile.read_text().strip()}, "
        f"state S) after SIGKILL; left behind"]


def test_a_killable_process_is_killed_at_the_timeout():
    result = Runner().run(["sleep", "1000"], timeout=0.2)
    assert result.timed_out and not result.left_running and result.rc is None
    assert result.summary() == "sleep 1000: no answer, killed after the timeout"


def test_a_started_command_runs_without_being_waited_for_and_is_still_killed_at_its_timeout(tmp_path):
    started = Runner().start(["sleep", "1000"], timeout=0.5)
    assert not started.done  # the caller goes on while it runs
    result = started.result(wait=BOUND)
    assert started.done and result is not None and result.timed_out


def test_a_started_command_that_finishes_gives_its_result():
    started = Runner().start(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=BOUND)
    result = started.result(wait=BOUND)
    assert (result.rc, result.out, result.err) == (3, "out\n", "err\n")


def test_result_without_waiting_is_none_while_the_command_runs():
    started = Runner().start(["sleep", "1000"], timeout=0.5)
    assert started.result(wait=0) is None
    assert started.result(wait=BOUND).timed_out


def test_dry_run_and_missing_programs_are_finished_at_once():
    assert Runner(dry_run=True).start(["umount", "-f", "/x"]).result(wait=0).ok
    missing = Runner().start(["no-such-program-pistop"]).result(wait=0)
    assert missing.not_found and missing.summary() == "no-such-program-pistop: command not found"


def test_a_command_still_running_when_the_program_exits_is_killed_with_it(tmp_path):
    """Each command has its own session, so nothing else would end it: a client
    stopped during a hung unmount must not leave the umount behind."""
    pidfile = tmp_path / "pid"
    script = ("import os, time\n"
              "from pistop_mdns.executor import Runner\n"
              f"Runner().start(['sh', '-c', 'echo $$ > {pidfile}; exec sleep 1000'], timeout=1000)\n"
              f"while not os.path.exists({str(pidfile)!r}): time.sleep(0.01)\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=BOUND,
                   env={**os.environ, "PYTHONPATH": os.getcwd()})
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + BOUND
    # gone ("?"), or killed and not yet reaped by init ("Z")
    while executor._proc_state(pid) not in ("?", "Z"):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"sleep (pid {pid}) outlived the program that started it")
        time.sleep(0.05)
