"""A simulated LAN on this machine: network namespaces joined by a bridge.

    with Lan(["musicpi", "kitchen", "bedroom"]) as lan:
        lan["kitchen"].run(["ping", "-c1", lan["musicpi"].address])
        proc = lan["musicpi"].spawn(["pistop-mdns", "server"])

Each host gets its own network namespace (eth0, a veth into a bridge
namespace, 198.18.0.x/24 from the benchmarking range), its own host name
(UTS namespace), and its own private mount namespace with a fresh /run, so
mounts, D-Bus sockets and state files stay inside it. Nothing of it touches
the machine's real interfaces: all traffic stays on the bridge.

Names carry a prefix and this process's PID, so two runs never collide and a
crashed run's leftovers can be recognised (`cleanup_stale`). Everything a Lan
made -- processes (by PID, with their process groups) and namespaces -- is
removed on exit, on an exception, and on SIGTERM/SIGINT (via KeyboardInterrupt
or SystemExit); every command has a timeout; every helper process ends by
itself after `lifetime` seconds even if nobody cleans up. `wait_for` and
`Output` (a process's lines, collected as they come) are the bounded waits
the demo and the tests use on it.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

PREFIX = "pm"
SUBNET = "198.18.0"
FIRST_HOST = 11
_counter = itertools.count(1)

AVAHI_CONF = """[server]
host-name={name}
use-ipv4=yes
use-ipv6=no
allow-interfaces=eth0
enable-dbus=yes
[publish]
publish-aaaa-on-ipv4=no
publish-hinfo=no
publish-workstation=no
"""


class LanError(RuntimeError):
    pass


def _ip(*args: str, timeout: float = 10) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise LanError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def require_root() -> None:
    if os.geteuid() != 0:
        raise LanError("the simulated LAN needs root (network namespaces): run it with sudo")


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; LanError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LanError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Output:
    """Collects a process's output lines in a thread, with timestamps, for waiting on.

    `on_line` (if given) sees each line as it comes, e.g. to print it.
    """

    def __init__(self, proc: subprocess.Popen, name: str = "", on_line: Callable[[str], None] | None = None):
        self.proc = proc
        self.name = name
        self.on_line = on_line
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                line = line.rstrip("\n")
                with self._lock:
                    self.lines.append((time.monotonic(), line))
                if self.on_line is not None:
                    self.on_line(line)
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
        """(when, line) of the first line from `start` on that matches; LanError after `timeout`."""
        try:
            return wait_for(lambda: self.find(pattern, start), timeout, what=f"{pattern!r} from {self.name}")
        except LanError:
            raise LanError(f"timed out after {timeout} s waiting for {pattern!r} from {self.name}; "
                           f"output so far:\n{self.text()}") from None

    def mark(self) -> int:
        with self._lock:
            return len(self.lines)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Remove namespaces left by runs of this module whose process is gone."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    removed = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(rf"{re.escape(prefix)}(\d+)x\d+-", name)
        if not m or _alive(int(m.group(1))):
            continue
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                              timeout=10).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        removed.append(name)
    return removed


@dataclass
class Host:
    name: str
    netns: str
    address: str
    lan: Lan = field(repr=False)
    holder: subprocess.Popen | None = field(default=None, repr=False)
    switch_port: str = ""  # the other end of eth0: a veth in the bridge namespace

    @property
    def pid(self) -> int:
        """PID of the process that holds this host's namespaces."""
        assert self.holder is not None
        return self.holder.pid

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` wrapped so it runs inside this host."""
        return ["nsenter", "-t", str(self.pid), "-n", "-u", "-m", "--", *argv]

    def run(self, argv: list[str], *, timeout: float = 30, check: bool = False,
            env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout,
                              env=env, input=input)
        if check and proc.returncode != 0:
            raise LanError(f"{self.name}: {' '.join(argv)}: exit {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout).strip()}")
        return proc

    def spawn(self, argv: list[str], *, env: dict[str, str] | None = None,
              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw) -> subprocess.Popen:
        """Start a long-running process in this host; the Lan stops it on exit."""
        proc = subprocess.Popen(self.argv(argv), env=env, stdout=stdout, stderr=stderr,
                                start_new_session=True, text=True, **kw)
        self.lan.processes.append(proc)
        return proc

    def start_avahi(self, conf_dir: str, timeout: float = 15) -> subprocess.Popen:
        """avahi-daemon (with its own system D-Bus) in this host, as an independent mDNS peer.

        Both run in the foreground, so the Lan stops them; the host's private
        /run keeps their sockets away from the machine's own.
        """
        conf = os.path.join(conf_dir, f"avahi-{self.name}.conf")
        with open(conf, "w") as f:
            f.write(AVAHI_CONF.format(name=self.name))
        self.run(["mkdir", "-p", "/run/dbus", "/run/avahi-daemon"], check=True)
        self.spawn(["dbus-daemon", "--system", "--nofork", "--nopidfile"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while self.run(["test", "-S", "/run/dbus/system_bus_socket"]).returncode != 0:
            if time.monotonic() > deadline:
                raise LanError(f"{self.name}: the D-Bus system bus did not start")
            time.sleep(0.05)
        daemon = self.spawn(["avahi-daemon", "--no-drop-root", "--no-chroot", "-f", conf])
        assert daemon.stdout is not None
        while time.monotonic() < deadline:
            line = daemon.stdout.readline()
            if not line:
                break
            if "Server startup complete" in line:
                return daemon
        raise LanError(f"{self.name}: avahi-daemon did not start")

    def link(self, up: bool) -> None:
        """Plug or unplug this host's cable (its eth0)."""
        _ip("-n", self.netns, "link", "set", "eth0", "up" if up else "down")

    def cable(self, plugged: bool) -> None:
        """Pull this host's cable out of the switch, or plug it back in.

        Unlike `link`, the host's own eth0 stays configured (address, routes),
        as on a board whose cable is pulled: only its port on the bridge goes down.
        """
        _ip("-n", self.lan.bridge, "link", "set", self.switch_port, "up" if plugged else "down")


class Lan:
    def __init__(self, hosts: list[str], *, prefix: str = PREFIX, subnet: str = SUBNET,
                 lifetime: float = 3600):
        if len(hosts) > 200:
            raise LanError("at most 200 hosts")
        self.prefix = f"{prefix}{os.getpid()}x{next(_counter)}"
        self.bridge = f"{self.prefix}-br"
        self.lifetime = lifetime
        self.hosts: dict[str, Host] = {}
        self.processes: list[subprocess.Popen] = []
        self._made: list[str] = []
        self._names = list(hosts)
        self._subnet = subnet

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __enter__(self) -> Lan:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        require_root()
        cleanup_stale()
        _ip("netns", "add", self.bridge)
        self._made.append(self.bridge)
        _ip("-n", self.bridge, "link", "set", "lo", "up")
        _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge, "link", "set", "br0", "up")
        for i, name in enumerate(self._names):
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name):
                raise LanError(f"host name {name!r}: use lower-case letters, digits and '-'")
            ns = f"{self.prefix}-{i}"
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{i}")
            _ip("-n", ns, "link", "set", f"v{i}", "netns", self.bridge)
            _ip("-n", self.bridge, "link", "set", f"v{i}", "master", "br0")
            _ip("-n", self.bridge, "link", "set", f"v{i}", "up")
            address = f"{self._subnet}.{FIRST_HOST + i}"
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            host = Host(name, ns, address, self, switch_port=f"v{i}")
            host.holder = self._hold(host)
            self.hosts[name] = host
        for host in self.hosts.values():
            self._wait_ready(host)

    def _hold(self, host: Host) -> subprocess.Popen:
        # One long-lived process owns the host's UTS and mount namespaces; all
        # commands join it with nsenter. A fresh /run keeps D-Bus, avahi,
        # rpcbind and our own state files private to the host.
        script = (
            'hostname "$1" && mount -t tmpfs -o mode=755 tmpfs /run && '
            'mkdir -p /run/lock && echo ready && exec sleep "$2"'
        )
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "--uts", "--mount",
             "--propagation", "private", "sh", "-c", script, "sh", host.name,
             str(int(self.lifetime))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def _wait_ready(self, host: Host) -> None:
        assert host.holder is not None and host.holder.stdout is not None
        line = host.holder.stdout.readline()
        if line.strip() != "ready":
            raise LanError(f"{host.name}: could not set up its namespaces: "
                           f"{host.holder.stderr.read() if host.holder.stderr else ''}")

    def wait_for_multicast(self, timeout: float = 10) -> None:
        """Wait until every host reaches the first one (the bridge learned them)."""
        first = next(iter(self.hosts.values()))
        deadline = time.monotonic() + timeout
        for host in list(self.hosts.values())[1:]:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LanError(f"{host.name} cannot reach {first.name}")
                if host.run(["ping", "-c1", "-W1", first.address], timeout=max(left, 2)).returncode == 0:
                    break

    def down(self) -> None:
        """Stop every process this Lan started and delete its namespaces."""
        for proc in reversed(self.processes):
            _stop(proc)
        self.processes.clear()
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self._made.clear()


def _stop(proc: subprocess.Popen, grace: float = 3) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of its group
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
