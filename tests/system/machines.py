"""Two (or more) real Debian 12 machines under qemu, on a private wire.

    with Testbed(image) as bed:
        server = bed.add("musicpi", "198.18.0.11")
        board = bed.add("kitchen", "198.18.0.12")
        bed.boot_all()
        print(board.sh("systemctl is-system-running").out)
        bed.pull_cable(server); ...; bed.plug_cable(server)
        server.sh("systemctl poweroff", wait=False); server.wait_off(120)

The wire: a network namespace holding only a bridge and one tap device per
guest. qemu runs inside that namespace with `-nodefaults` (so no user-mode
NIC that could reach outside) and one virtio NIC on its tap; the namespace
has no uplink, so nothing a guest sends leaves the bridge. Pulling a cable is
setting the guest's tap down in the bridge.

Driving a guest: each has a directory shared over 9p; the guest's runner
(runner.py) runs queue/N.sh and answers in out/N.out and out/N.rc.

Clean-up: every name carries PREFIX and this process's PID. Guests are killed
by the PID qemu writes to its -pidfile, the namespace (and with it the taps)
is deleted, the work directory removed, on exit, on an exception and on
SIGTERM/SIGINT; a run that died without cleaning up is recognised by its dead
PID and cleaned up by the next one (`cleanup_stale`). Every guest also ends
by itself after LIFETIME seconds (`timeout` around qemu), whatever happens.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pistop_mdns import lan as simulated_lan
from tests.system.image import Image

PREFIX = "pmvm"
WORK_PREFIX = "pistop-mdns-vm-"
LIFETIME = 3600
MEMORY_MB = 1024
BOOT_TIMEOUT = 300  # a guest under TCG on a busy 2-core host: usually 40-60 s
POLL = 0.1
_counter = itertools.count(1)


class GuestError(AssertionError):
    """A guest did not do what a test asked; the message says what and shows its output."""


@dataclass(frozen=True)
class Result:
    rc: int
    out: str


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if proc.returncode != 0:
        raise GuestError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_pid(pid: int, grace: float = 10) -> None:
    """SIGTERM (qemu then quits at once), SIGKILL after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return
            time.sleep(POLL)


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cleanup_stale() -> list[str]:
    """Remove what dead runs left: their guests, bridge namespaces and work directories."""
    removed = []
    for work in Path(tempfile.gettempdir()).glob(f"{WORK_PREFIX}*"):
        m = re.match(rf"{re.escape(WORK_PREFIX)}(\d+)-", work.name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        for pidfile in work.glob("*/qemu.pid"):
            pid = _read_pid(pidfile)
            if pid is not None and _is_qemu(pid):
                _kill_pid(pid)
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], timeout=120)
        removed.append(str(work))
    # The namespaces (their taps go with them) and any process still in them.
    removed += simulated_lan.cleanup_stale(PREFIX)
    return removed


def _is_qemu(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().startswith("qemu-system")
    except OSError:
        return False


class Guest:
    def __init__(self, bed: Testbed, name: str, address: str, index: int):
        self.bed = bed
        self.name = name
        self.address = address
        self.index = index
        self.dir = bed.work / name
        self.share = self.dir / "share"
        self.overlay = self.dir / "disk.qcow2"
        self.pidfile = self.dir / "qemu.pid"
        self.console = self.dir / "console.log"
        self.tap = f"tap-{index}"
        self.proc: subprocess.Popen | None = None
        self.boot_id = ""
        self.off = threading.Event()
        self.off_at = 0.0
        self._numbers = itertools.count(1)

    # ------------------------------------------------------------ power

    def argv(self) -> list[str]:
        image = self.bed.image
        # quiet: the serial console is slow under TCG; mitigations=off: page-table isolation
        # and friends cost a TCG guest dearly, and this one runs only the test bed.
        kernel_args = (f"root=/dev/vda rw console=ttyS0,115200 quiet mitigations=off net.ifnames=0 "
                       f"systemd.hostname={self.name} "
                       f"systemd.machine_id={self.index:032x} pistop.ip={self.address}/24")
        return [
            "timeout", "-k", "10", str(LIFETIME),
            "qemu-system-x86_64",
            # -nodefaults: no default NIC (a user-mode one would reach outside), no monitor, no VGA.
            "-nodefaults", "-no-user-config", "-display", "none", "-name", self.name,
            # TCG: /dev/kvm here is PVM, under which a stock kernel does not boot (TESTBED.md 9).
            "-machine", "pc", "-accel", "tcg,tb-size=256", "-cpu", "max", "-smp", "1", "-m", str(MEMORY_MB),
            "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", kernel_args,
            "-drive", f"file={self.overlay},format=qcow2,if=virtio,cache=unsafe",
            "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac=52:54:00:00:00:{self.index:02x}",
            "-virtfs", f"local,path={self.share},mount_tag=share,security_model=none,id=share",
            "-device", "virtio-rng-pci",
            "-serial", f"file:{self.console}",
            "-pidfile", str(self.pidfile),
        ]

    def boot(self) -> None:
        """Start the guest from its overlay (a fresh one when there is none)."""
        if self.running():
            raise GuestError(f"{self.name} is already running")
        if not self.overlay.exists():
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                            str(self.bed.image.disk), str(self.overlay)], check=True, timeout=60)
        (self.share / "out" / "ready").unlink(missing_ok=True)
        self.pidfile.unlink(missing_ok=True)
        with open(self.dir / "qemu.log", "ab") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.bed.netns, *self.argv()],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        # The moment qemu exits is the moment the guest powered off: noted as it happens.
        self.off = threading.Event()
        threading.Thread(target=self._note_off, args=(self.proc, self.off), daemon=True).start()

    def _note_off(self, proc: subprocess.Popen, off: threading.Event) -> None:
        proc.wait()
        self.off_at = time.monotonic()
        off.set()

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Wait until the guest's runner says this boot is up (systemd finished starting)."""
        ready = self.share / "out" / "ready"
        deadline = time.monotonic() + timeout
        while True:
            text = ready.read_text().strip() if ready.exists() else ""
            if text and text != self.boot_id:
                self.boot_id = text
                return
            if not self.running():
                raise GuestError(f"{self.name}: qemu exited while booting\n{self.tail()}")
            if time.monotonic() > deadline:
                raise GuestError(f"{self.name}: not up after {timeout} s\n{self.tail()}")
            time.sleep(POLL * 5)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_off(self, timeout: float) -> float:
        """Wait until the guest powered off (its qemu exited); the host's monotonic time it did."""
        if self.proc is None:
            raise GuestError(f"{self.name} was never started")
        if not self.off.wait(timeout):
            raise GuestError(f"{self.name}: still on after {timeout} s\n{self.tail()}")
        return self.off_at

    def kill(self) -> None:
        pid = _read_pid(self.pidfile)
        if pid is not None and _is_qemu(pid):
            _kill_pid(pid)
        if self.proc is not None:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)

    def reset(self) -> None:
        """Power it off hard and boot it again from a fresh overlay: a clean machine."""
        self.kill()
        self.overlay.unlink(missing_ok=True)
        self.boot()
        self.wait_ready()

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console output)"
        return f"--- {self.name} console (last {lines} lines)\n" + "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------ commands

    def submit(self, script: str, timeout: float) -> int:
        """Queue a script; returns its number for `answer`."""
        number = next(self._numbers)
        queue = self.share / "queue"
        (queue / f"{number}.timeout").write_text(f"{timeout}\n")
        part = queue / f"{number}.sh.part"
        part.write_text(script)
        part.rename(queue / f"{number}.sh")
        return number

    def answer(self, number: int, timeout: float) -> tuple[int, str] | None:
        """(exit status, output) of script `number`, waiting at most `timeout` s; None if none came."""
        rc_file = self.share / "out" / f"{number}.rc"
        deadline = time.monotonic() + timeout
        while not rc_file.exists():
            if time.monotonic() > deadline or not self.running():
                return None
            time.sleep(POLL / 2)
        out = (self.share / "out" / f"{number}.out").read_text(errors="replace")
        return int(rc_file.read_text()), out

    def said(self, number: int) -> str:
        """What script `number` wrote so far (also after the guest went off)."""
        try:
            return (self.share / "out" / f"{number}.out").read_text(errors="replace")
        except OSError:
            return ""

    def sh(self, script: str, timeout: float = 60, check: bool = True) -> Result:
        """Run a shell script in the guest (as root) and wait for it, `timeout` s at most.

        The guest kills it at `timeout`; the host waits a little longer for
        that answer (a slow runner is not a failing script).
        """
        number = self.submit(script, timeout)
        answer = self.answer(number, timeout + 60)
        if answer is None:
            raise GuestError(f"{self.name}: no answer after {timeout + 60:g} s to:\n{script}\n{self.tail()}")
        rc, out = answer
        if check and rc != 0:
            raise GuestError(f"{self.name}: exit {rc} from:\n{script}\n--- output\n{out[-6000:]}")
        return Result(rc, out)


class Testbed:
    def __init__(self, image: Image):
        self.image = image
        self.netns = f"{PREFIX}{os.getpid()}x{next(_counter)}-br"
        self.work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-"))
        self.guests: dict[str, Guest] = {}
        self._made_netns = False

    def __enter__(self) -> Testbed:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        cleanup_stale()
        _ip("netns", "add", self.netns)
        self._made_netns = True
        _ip("-n", self.netns, "link", "set", "lo", "up")
        _ip("-n", self.netns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.netns, "link", "set", "br0", "up")

    def add(self, name: str, address: str) -> Guest:
        guest = Guest(self, name, address, len(self.guests) + 1)
        for directory in (guest.share / "queue", guest.share / "out"):
            directory.mkdir(parents=True)
        _ip("-n", self.netns, "tuntap", "add", "dev", guest.tap, "mode", "tap")
        _ip("-n", self.netns, "link", "set", guest.tap, "master", "br0")
        _ip("-n", self.netns, "link", "set", guest.tap, "up")
        self.guests[name] = guest
        return guest

    def boot_all(self) -> None:
        for guest in self.guests.values():
            guest.boot()
        for guest in self.guests.values():
            guest.wait_ready()

    def pull_cable(self, guest: Guest) -> None:
        _ip("-n", self.netns, "link", "set", guest.tap, "down")

    def plug_cable(self, guest: Guest) -> None:
        _ip("-n", self.netns, "link", "set", guest.tap, "up")

    def down(self) -> None:
        for guest in self.guests.values():
            guest.kill()
        if self._made_netns:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=15)
            self._made_netns = False
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.work)], timeout=120)
