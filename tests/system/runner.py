#!/usr/bin/python3
"""The guest's end of the test bed: runs the host's scripts, one at a time.

The host writes queue/N.timeout, then queue/N.sh (renamed into place), on the
9p share. This runs `sh queue/N.sh` in its own session with output to
out/N.out, kills the session when the timeout passes, and writes the exit
status to out/N.rc (124 after a timeout) last, atomically: the host waits for
that file. A script whose processes cannot be killed (stuck in D state) is
left behind after a short grace, so the queue always moves on.

out/ready holds this boot's id once systemd says the system is up, so the host
can tell a fresh boot from the last one. Long-lived things are started from
scripts with `systemd-run`, never left in the background of a script.
"""

import os
import shutil
import signal
import subprocess
import time

SHARE = "/mnt/share"
QUEUE = os.path.join(SHARE, "queue")
OUT = os.path.join(SHARE, "out")
RUNNING = "/run/pistop-test"  # this boot's scripts
POLL = 0.1
KILL_GRACE = 10.0
TIMED_OUT = 124


def mount_share() -> None:
    os.makedirs(SHARE, exist_ok=True)
    for _ in range(300):
        if subprocess.run(["mountpoint", "-q", SHARE]).returncode == 0:
            return
        subprocess.run(["mount", "-t", "9p", "-o", "trans=virtio,version=9p2000.L,msize=262144", "share", SHARE])
        time.sleep(POLL)
    raise SystemExit("cannot mount the 9p share")


def write_atomically(path: str, text: str) -> None:
    with open(path + ".part", "w") as f:
        f.write(text)
    os.rename(path + ".part", path)


def run_one(number: int) -> None:
    # Out of the queue first: a script that reboots or powers off the guest
    # must not run again at the next boot.
    script = os.path.join(RUNNING, f"{number}.sh")
    shutil.move(os.path.join(QUEUE, f"{number}.sh"), script)
    with open(os.path.join(QUEUE, f"{number}.timeout")) as f:
        timeout = float(f.read())
    with open(os.path.join(OUT, f"{number}.out"), "w") as out:
        proc = subprocess.Popen(["sh", script], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd="/")
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            try:
                proc.wait(KILL_GRACE)
            except subprocess.TimeoutExpired:
                out.write(f"\n[runner: pid {proc.pid} could not be killed; left behind]\n")
            out.write(f"\n[runner: killed after {timeout:g} s]\n")
            rc = TIMED_OUT
    os.unlink(script)
    write_atomically(os.path.join(OUT, f"{number}.rc"), f"{rc}\n")


def pending() -> list[int]:
    numbers = []
    for name in os.listdir(QUEUE):
        stem, dot, ext = name.partition(".")
        if ext == "sh" and stem.isdigit():
            numbers.append(int(stem))
    return sorted(numbers)


def main() -> None:
    mount_share()
    for directory in (QUEUE, OUT, RUNNING):
        os.makedirs(directory, exist_ok=True)
    subprocess.run(["systemctl", "is-system-running", "--wait"], stdout=subprocess.DEVNULL, timeout=600)
    with open("/proc/sys/kernel/random/boot_id") as f:
        write_atomically(os.path.join(OUT, "ready"), f.read())
    while True:
        for number in pending():
            run_one(number)
        time.sleep(POLL)


if __name__ == "__main__":
    main()
