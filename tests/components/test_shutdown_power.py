"""`pistop-mdns shutdown` with a real data disk in a private mount namespace, real daemontools
(svscan, supervise, svc, svstat) and a real busy mount: USB power is cut only after a clean unmount.

uhubctl and shutdown(8) are the only stand-ins: scripts that write their arguments to a
file, so the machine running the tests keeps its power. The data disk is a tmpfs mounted
inside a mount namespace of the test's own; nothing here is networked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import ENV, need, need_root, pm_argv, wait_for

pytestmark = pytest.mark.components

RECORDER = '#!/bin/sh\necho "$(basename "$0") $*" >> {calls}\n'


class MountNamespace:
    """A private mount namespace held by one sleeping process; commands join it with nsenter."""

    def __init__(self):
        self.holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "600"],
                                       start_new_session=True)
        self.started: list[subprocess.Popen] = []
        mine = os.readlink("/proc/self/ns/mnt")
        wait_for(lambda: os.readlink(f"/proc/{self.holder.pid}/ns/mnt") != mine, 10, interval=0.02,
                 what="the private mount namespace")

    def argv(self, argv: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--", *argv]

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=kw.pop("timeout", 30), **kw)

    def spawn(self, argv: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(self.argv(argv), start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.started.append(proc)
        return proc

    def close(self) -> None:
        for proc in [*reversed(self.started), self.holder]:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
            proc.wait(timeout=10)


@pytest.fixture
def machine(tmp_path):
    """The server's data disk mounted in a private namespace, recording uhubctl and shutdown, a config."""
    need_root()
    need("unshare", "nsenter", "findmnt", "mountpoint", "umount", package="util-linux")
    ns = MountNamespace()
    disk = tmp_path / "MDrive"
    disk.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for name in ("uhubctl", "shutdown"):
        (bin_dir / name).write_text(RECORDER.format(calls=calls))
        (bin_dir / name).chmod(0o755)
    env = {**ENV, "PATH": f"{bin_dir}:{ENV['PATH']}"}
    # Only the recorder may ever be found: this machine's USB hubs stay powered.
    assert shutil.which("uhubctl", path=env["PATH"]) == str(bin_dir / "uhubctl")
    assert ns.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)]).returncode == 0
    assert ns.run(["mkdir", str(disk / "data")]).returncode == 0
    assert not os.path.ismount(disk)  # the machine's own namespace never sees it
    service_dir = tmp_path / "service"
    service_dir.mkdir()
    conf = tmp_path / "server.toml"
    conf.write_text(f"""
[general]
hostname = "musicpi"
state_dir = "{tmp_path}/state"
service_manager = "daemontools"
service_dir = "{service_dir}"
[server]
export = "{disk}"
[shutdown]
services = ["mpdev"]
clients_timeout = 1
uhubctl_location = "2"
command = ["{bin_dir}/shutdown", "-h", "now"]
""")

    def shutdown(*args: str) -> subprocess.CompletedProcess:
        return ns.run(pm_argv("--config", str(conf), "shutdown", *args), env=env, timeout=120)

    def recorded() -> list[str]:
        return calls.read_text().splitlines() if calls.exists() else []

    def mounted() -> bool:
        return ns.run(["mountpoint", "-q", str(disk)]).returncode == 0

    yield ns, disk, service_dir, shutdown, recorded, mounted
    for service in service_dir.iterdir():
        subprocess.run(["svc", "-dx", str(service)], capture_output=True, timeout=10)
    ns.close()


def start_mpdev_under_svscan(ns: MountNamespace, disk: Path, service_dir: Path) -> subprocess.Popen:
    """mpdev's stand-in keeps its working directory on the disk, as mpdev keeps its files open there."""
    need("svscan", "supervise", "svc", "svstat", "svok", package="daemontools")
    mpdev = service_dir / "mpdev"
    mpdev.mkdir()
    (mpdev / "run").write_text(f"#!/bin/sh\ncd {disk}/data || exit 1\nexec sleep 600\n")
    (mpdev / "run").chmod(0o755)
    svscan = ns.spawn(["svscan", str(service_dir)])
    wait_for(lambda: " up (pid " in subprocess.run(["svstat", str(mpdev)], capture_output=True, text=True,
                                                   timeout=10).stdout, 20, interval=0.1, what="mpdev to be up")
    return svscan


def test_mpdev_and_svscan_are_stopped_the_disk_unmounted_then_usb_power_cut(machine):
    ns, disk, service_dir, shutdown, recorded, mounted = machine
    svscan = start_mpdev_under_svscan(ns, disk, service_dir)
    started = time.monotonic()
    proc = shutdown()
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    log = proc.stderr
    print(log)
    steps = [f"stop mpdev (daemontools): done (svc -d {service_dir}/mpdev: down",
             f"stop svscan (pid {svscan.pid}): done", f"unmount {disk}: done (umount -- {disk})",
             f"check that {disk} is unmounted: done", "cut USB power: done (uhubctl -a 0 -l 2)",
             "power off: done"]
    where = [log.find(f"musicpi: shutdown: {s}") for s in steps]
    assert all(i >= 0 for i in where) and where == sorted(where), log
    assert recorded() == ["uhubctl -a 0 -l 2", "shutdown -h now"]
    assert not mounted()
    wait_for(lambda: svscan.poll() is not None, 10, what="svscan to end")
    print(f"shutdown with mpdev under svscan: {elapsed:.2f} s")


def test_a_busy_disk_stays_mounted_and_powered_and_the_power_off_still_runs(machine):
    ns, disk, _, shutdown, recorded, mounted = machine
    shell = ns.spawn(["sh", "-c", f"cd {disk}/data && exec sleep 600"])  # someone's shell on the disk
    wait_for(lambda: os.readlink(f"/proc/{shell.pid}/cwd") == str(disk / "data"), 10, interval=0.02,
             what="the shell to work on the disk")
    proc = shutdown()
    assert proc.returncode == 1, proc.stderr
    assert f"musicpi: shutdown: unmount {disk} failed: umount -- {disk}: exit 32" in proc.stderr
    assert "target is busy" in proc.stderr
    assert f"check that {disk} is unmounted failed: {disk} is still mounted" in proc.stderr
    assert (f"musicpi: shutdown: USB power stays on: unmount {disk}, check that {disk} is unmounted failed"
            in proc.stderr)
    assert recorded() == ["shutdown -h now"]
    assert mounted()


def test_a_reboot_unmounts_but_never_cuts_usb_power(machine):
    _, disk, _, shutdown, recorded, mounted = machine
    proc = shutdown("-r", "now")
    assert proc.returncode == 0, proc.stderr
    assert "musicpi: shutdown: announcing stopping to the clients" in proc.stderr
    assert "musicpi: shutdown: a reboot: the USB power stays on" in proc.stderr
    assert f"unmount {disk}: done" in proc.stderr
    assert recorded() == ["shutdown -r now"]
    assert not mounted()


def test_a_cancel_stops_nothing_and_unmounts_nothing(machine):
    ns, disk, service_dir, shutdown, recorded, mounted = machine
    start_mpdev_under_svscan(ns, disk, service_dir)
    proc = shutdown("-c")
    assert proc.returncode == 0, proc.stderr
    assert "a message or a cancel only: nothing is stopped or unmounted" in proc.stderr
    assert "announcing" not in proc.stderr
    assert recorded() == ["shutdown -c"]
    assert mounted()
    assert " up (pid " in subprocess.run(["svstat", str(service_dir / "mpdev")], capture_output=True, text=True,
                                         timeout=10).stdout
