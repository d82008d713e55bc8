"""`pistop-mdns install-service ROLE`: run a role as a service (successor of pistop's create_service).

Roles: server, client, update (a timer), rsync (an rsync daemon for the music
directory: read-only to the LAN, writable with a password from the server's own
subnets, as pistop's rsync service was for pushing music to the server). Under
systemd it writes units to /etc/systemd/system and enables them; under
daemontools it writes SERVICE_DIR/pistop-mdns-ROLE/ with `run`, `log/run`
(multilog) and `variables/` (pistop-style settings), which svscan then starts.
`--from-pistop` replaces pistop's own service of the role (see `Migration`).
`--remove` undoes it, `--dry-run` shows what it would write and run. Running
it again converges: unchanged files are left alone, changed ones are
rewritten and the running service is restarted.

The unit texts live here (they are what `contrib/` ships: a unit test keeps
the two equal), so an installation from PyPI needs no data files. When the
Debian package ships the very unit that would be written, that one is
enabled instead of a copy in /etc, which would hide the package's updates. `--root DIR`
prefixes every path written, for tests and for preparing another system's
disk; there is no service manager to tell about that root, so units are only
enabled there (`systemctl --root`) and start at its next boot.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import secrets
import shlex
import shutil
import time
from dataclasses import dataclass
from typing import Callable

from pistop_mdns import commands, config, files, pistop
from pistop_mdns.config import Config
from pistop_mdns.executor import Runner
from pistop_mdns.services import SvStatus, parse_svstat

log = logging.getLogger(__name__)

ROLES = ("server", "client", "update", "rsync")
PROGRAM = "/usr/bin/pistop-mdns"  # where Debian's package puts it
UNIT_DIR = "/etc/systemd/system"
PACKAGED_UNIT_DIR = "/lib/systemd/system"  # where Debian's package ships the units of contrib/
RSYNC_CONF = "/etc/pistop-mdns/rsyncd.conf"
RSYNC_SECRETS = "/etc/pistop-mdns/rsyncd.secrets"
UPLOAD_MODULE = "music-upload"
UPLOAD_USER = "music"  # rsync's own user name for the upload module, not a system account
RSYNC_RUN_DIR = "/run/pistop-mdns-rsync"
DEFAULT_MUSIC = "/srv/music"
DEFAULT_INTERVAL = 21600  # the timer's OnUnitActiveSec=6h
BOOT_DELAY = 300  # pistop's first check came 5 minutes after boot
# `systemctl enable --now` waits for Type=notify's READY and a stop for the
# client's teardown (TimeoutStopSec=90s); svscan notices a new service
# within 5 seconds and supervise stops one at once.
SYSTEMCTL_TIMEOUT = 120.0
SUPERVISE_EXIT_WAIT = 15.0
SUPERVISE_START_WAIT = 15.0
# --from-pistop: how long a new service must run before the old one goes, and
# how long it may take to get there.
RUNNING_FOR = 2
START_WAIT = 30.0
PISTOP_COPY_DIR = "/etc/pistop-mdns/from-pistop"  # systemd: the old services' variables, as an envdir
AUTOFS_RELEASE_WAIT = 15.0  # --remove: for a reloaded automount to let go of a removed map's mount point
_UP_SECONDS = re.compile(r"^up \(pid \d+\) (\d+) seconds?")


def name(role: str) -> str:
    return f"pistop-mdns-{role}"


def enabled_unit(role: str) -> str:
    """The unit `enable` acts on: the timer for updates, the service otherwise."""
    return f"{name(role)}.timer" if role == "update" else f"{name(role)}.service"


@dataclass(frozen=True)
class File:
    path: str  # as seen on the running system (without --root)
    text: str | None  # None: a directory
    mode: int = 0o644
    keep: bool = False  # configuration the user edits: written when absent, never replaced or removed
    secret: bool = False  # never shown, not even by --dry-run


# ---------------------------------------------------------------- texts


def systemd_word(word: str) -> str:
    """One ExecStart= word: %, $ and \\ escaped, quoted when it holds spaces or quotes."""
    word = word.replace("\\", "\\\\").replace("%", "%%").replace("$", "$$")
    if re.search(r"[\s\"']", word) or not word:
        return '"' + word.replace('"', '\\"') + '"'
    return word


def exec_line(argv: list[str]) -> str:
    return " ".join(systemd_word(w) for w in argv)


_HEADER = """\
# {what}
# Written by `pistop-mdns install-service {role}`, which replaces it on every
# run: put local changes in a drop-in (`systemctl edit {unit}`).
"""

_SERVER_UNIT = """\
[Unit]
Description=pistop-mdns: advertise this music server to the room boards
Documentation=man:pistop-mdns(1)
# Units stop in the reverse order of their start. Starting after the network,
# the NFS server and mpd means stopping before them at shutdown: the goodbye
# (state=poweroff, then the mDNS goodbye packets) still reaches the clients,
# and they unmount while the share is still exported.
Wants=network-online.target
After=network.target network-online.target nfs-server.service mpd.service

[Service]
# READY=1 comes once the _pistop._tcp registration is up.
Type=notify
NotifyAccess=main
ExecStart={exec_start}
Restart=on-failure
RestartSec=5s
# Exit status 2 is a configuration error, written to the journal (and shown by
# `systemctl status`): a restart cannot mend it, so the unit stays stopped
# until it is fixed and the unit started again.
RestartPreventExitStatus=2
# On SIGTERM it tells the clients why it stops and sends the goodbyes, then
# exits 0 within about a second; the rest is margin for a slow network.
TimeoutStopSec=30s
# Log lines go to stderr, which is the journal; each carries its priority.
StandardError=journal

# Hardening. Nothing here gives the unit its own mount namespace
# (ProtectSystem=, ProtectHome=, PrivateTmp=, ReadOnlyPaths= would): the
# shutdown helper it starts for a client must unmount the music disk of the
# real system, and the backup at start writes to that disk.
# Neither it nor anything it starts gains privileges through setuid files.
NoNewPrivileges=yes
# IP for mDNS and the liveness channel, unix sockets for systemctl and the
# control socket, netlink to read the interface addresses.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
# It needs no namespaces, no realtime scheduling, no other personality and
# no system calls of other architectures.
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"""

_CLIENT_UNIT = """\
[Unit]
Description=pistop-mdns: follow the music server (mount, mpd, power)
Documentation=man:pistop-mdns(1)
# It browses the network. Ordered after autofs and mpd so that at shutdown
# it stops first and does not start them again while they go down.
Wants=network-online.target
After=network.target network-online.target autofs.service mpd.service

[Service]
# READY=1 comes once the mDNS browser runs.
Type=notify
NotifyAccess=main
ExecStart={exec_start}
Restart=on-failure
RestartSec=5s
# Exit status 2 is a configuration error, written to the journal (and shown by
# `systemctl status`): a restart cannot mend it, so the unit stays stopped
# until it is fixed and the unit started again.
RestartPreventExitStatus=2
# With teardown_on_exit it stops mpd and unmounts the share before it exits
# (unmount retries, hooks): give it the time.
TimeoutStopSec=90s
StandardError=journal

# Hardening. It runs as root, with the host's file systems writable and in
# the host's mount namespace, on purpose: it mounts the share, rewrites
# /etc/mpd.conf and the autofs map, starts and stops services, runs your
# hooks and powers the board off. What can still be taken away:
# gaining privileges through setuid files,
NoNewPrivileges=yes
# creating namespaces, realtime scheduling, changing personality,
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
# and system calls of other architectures.
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"""

_UPDATE_UNIT = """\
[Unit]
Description=pistop-mdns: upgrade the music software ([update] packages)
Documentation=man:pistop-mdns(1)
Wants=network-online.target
After=network.target network-online.target

[Service]
# Started by pistop-mdns-update.timer; one check, then it exits.
Type=oneshot
ExecStart={exec_start}
StandardError=journal
# An upgrade must never make the music stutter.
Nice=10
IOSchedulingClass=idle
# No sandboxing: apt (or dnf, yum, zypper) and the packages' maintainer
# scripts change the whole system, and restart services.
"""

_UPDATE_TIMER = """\
[Unit]
Description=pistop-mdns: check for upgrades 5 minutes after boot, then every 6 hours
Documentation=man:pistop-mdns(1)

[Timer]
# pistop waited 5 minutes after boot for the network to settle, then checked
# every INTERVAL seconds (6 hours by default). install-service writes a
# drop-in (pistop-mdns-update.timer.d/interval.conf) when [update] interval
# says otherwise.
OnBootSec=5min
OnUnitActiveSec=6h

[Install]
WantedBy=timers.target
"""

_RSYNC_UNIT = """\
[Unit]
Description=pistop-mdns: rsync daemon for the music directory
Documentation=man:pistop-mdns(1) man:rsyncd.conf(5)
After=network.target
# Debian's rsync.service would want the same port.
Conflicts=rsync.service

[Service]
ExecStart={exec_start}
Restart=on-failure
RestartSec=5s
# Holds the lock file that enforces `max connections`.
RuntimeDirectory=pistop-mdns-rsync

# Hardening. The whole file system is read-only to the daemon (install-service
# writes a drop-in, upload.conf, that makes the upload module's directory
# writable), it sees no devices, kernel settings or other users' /tmp, and
# keeps only the capabilities to bind port 873, chroot into the module and
# switch to the users named in rsyncd.conf.
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectHostname=yes
ProtectClock=yes
CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_SYS_CHROOT CAP_SETUID CAP_SETGID
NoNewPrivileges=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"""

_RSYNCD_CONF = """\
# rsyncd.conf of pistop-mdns-rsync, see rsyncd.conf(5): the music directory,
# read-only to the LAN ([music]) and writable with a password from the server's
# own subnets ([music-upload], for pushing music to the server as pistop's rsync
# service was for).
# Written by `pistop-mdns install-service rsync` because it did not exist; it is
# yours now: install-service never replaces or removes it.
# The server advertises this daemon as _rsync._tcp when [server] advertise_rsync
# is true; keep `port` equal to [server] rsync_port.
port = {port}
# Files are served as nobody, locked into the module's directory.
uid = nobody
gid = nogroup
use chroot = yes
max connections = 4
lock file = {run_dir}/rsyncd.lock
timeout = 600

[music]
	comment = music library
	path = {music}
	read only = yes
	list = yes

# Push music to the server from a computer on its own subnets, e.g.
#   rsync -rtv --password-file=music.pw "Some Album" rsync://{user}@musicpi.local/{module}/
# music.pw (mode 600) holds the password that follows "{user}:" in {secrets}.
# Files land as the owner of the music directory; mpd's auto_update (or
# `mpc update`) adds them to the database. Deleting is refused, so a mistyped
# --delete cannot empty the library: remove that line to allow it.
[{module}]
	comment = add music to the library (password needed)
	path = {music}
	read only = no
	list = no
	uid = {owner}
	gid = {group}
	auth users = {user}
	secrets file = {secrets}
	hosts allow = {subnets}
	refuse options = delete
"""

_RUN = """\
#!/bin/sh
# {what}, supervised by daemontools.
# Written by `pistop-mdns install-service {role}`, which replaces it on every run.
# Settings: {settings}.
exec 2>&1
{body}
"""

_LOG_RUN = """\
#!/bin/sh
# The log of {service}: multilog keeps it in ./main (current, rotated files)
# with a TAI64N time stamp on every line (`tai64nlocal < main/current`).
exec multilog t ./main
"""

WHAT = {
    "server": "pistop-mdns server: advertises this music server over mDNS",
    "client": "pistop-mdns client: follows the music server",
    "update": "pistop-mdns update: upgrades the music software",
    "rsync": "rsync daemon of pistop-mdns: serves the music directory, and takes new music",
}


def rsync_argv(daemontools: bool) -> list[str]:
    argv = ["/usr/bin/rsync", "--daemon", "--no-detach", f"--config={RSYNC_CONF}"]
    # Under systemd the daemon logs to syslog, that is the journal; under
    # daemontools its log file is the pipe to multilog.
    return argv + ["--log-file=/dev/stdout"] if daemontools else argv


def rsyncd_conf(music: str, port: int, *, owner: str = "mpd", group: str = "audio",
                subnets: tuple[str, ...] = ("192.168.1.0/24",)) -> str:
    """rsyncd.conf with the read-only [music] module and the password-protected upload module."""
    return _RSYNCD_CONF.format(music=music, port=port, run_dir=RSYNC_RUN_DIR, owner=owner, group=group,
                               subnets=" ".join(subnets), user=UPLOAD_USER, module=UPLOAD_MODULE,
                               secrets=RSYNC_SECRETS)


_FALSE = ("no", "false", "0")


def writable_modules(text: str) -> dict[str, tuple[str, str]]:
    """{module: (path, uid)} of the rsyncd.conf modules that are not read-only (rsync's default)."""
    glob: dict[str, str] = {}
    modules: dict[str, dict[str, str]] = {}
    settings = glob
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            module = line[1:-1].strip()
            settings = glob if module == "global" else modules.setdefault(module, {})
        elif "=" in line:
            key, value = line.split("=", 1)
            settings[" ".join(key.lower().split())] = value.strip()
    out = {}
    for module, own in modules.items():
        merged = {**glob, **own}
        if "path" in merged and merged.get("read only", "yes").lower() in _FALSE:
            out[module] = (merged["path"], merged.get("uid", "nobody"))
    return out


def rsync_dropin_path() -> str:
    return f"{UNIT_DIR}/{name('rsync')}.service.d/upload.conf"


def rsync_dropin(paths: list[str], as_root: bool) -> str:
    """systemd drop-in: the writable modules' directories, and for root's files the right to own them."""
    lines = [
        "# Written by `pistop-mdns install-service rsync`, which replaces it on every run:",
        f"# the writable modules of {RSYNC_CONF} write here.",
        "[Service]",
        "ReadWritePaths=" + " ".join("-" + systemd_word(p) for p in paths),
    ]
    if as_root:
        lines[2:2] = ["# The music directory belongs to root, so uploads are written as root and need",
                      "# the right to give files their owners."]
        lines.append("CapabilityBoundingSet=CAP_CHOWN CAP_FOWNER")
    return "\n".join(lines) + "\n"


def secrets_text(password: str) -> str:
    return f"{UPLOAD_USER}:{password}\n"


def interval_dropin(interval: int) -> str:
    return (
        "# Written by `pistop-mdns install-service update`: [update] interval = "
        f"{interval} seconds.\n"
        "# An empty assignment clears the timer's schedule; both lines come back.\n"
        "[Timer]\n"
        "OnUnitActiveSec=\n"
        "OnBootSec=5min\n"
        f"OnUnitActiveSec={interval}s\n"
    )


def dropin_path() -> str:
    return f"{UNIT_DIR}/{name('update')}.timer.d/interval.conf"


@dataclass(frozen=True)
class RsyncSetup:
    """What the rsync role writes besides its service: rsyncd.conf, the upload password, the drop-in."""

    conf: str
    password: str | None = None  # None: no secrets file (contrib/, tests)
    writable: tuple[str, ...] = ()  # directories the daemon must be able to write (systemd drop-in)
    as_root: bool = False  # uploads are written as root


def rsync_files(setup: RsyncSetup | None, systemd: bool) -> list[File]:
    setup = setup or RsyncSetup(rsyncd_conf(DEFAULT_MUSIC, 873))
    out = [File(RSYNC_CONF, setup.conf, keep=True)]
    if setup.password is not None:
        out.append(File(RSYNC_SECRETS, secrets_text(setup.password), 0o600, keep=True, secret=True))
    if systemd and setup.writable:
        out.append(File(rsync_dropin_path(), rsync_dropin(list(setup.writable), setup.as_root)))
    return out


def systemd_files(role: str, command: list[str], *, interval: int = DEFAULT_INTERVAL,
                  rsync: RsyncSetup | None = None, role_args: list[str] | tuple[str, ...] = ()) -> list[File]:
    """The files `install-service ROLE --init systemd` writes; `command` = pistop-mdns and global options."""
    unit = f"{name(role)}.service"
    header = _HEADER.format(what=WHAT[role], role=role, unit=unit)
    body = {"server": _SERVER_UNIT, "client": _CLIENT_UNIT, "update": _UPDATE_UNIT, "rsync": _RSYNC_UNIT}[role]
    argv = rsync_argv(daemontools=False) if role == "rsync" else [*command, role, *role_args]
    out = [File(f"{UNIT_DIR}/{unit}", header + body.format(exec_start=exec_line(argv)))]
    if role == "update":
        timer = f"{name(role)}.timer"
        out.append(File(f"{UNIT_DIR}/{timer}",
                        _HEADER.format(what=WHAT[role], role=role, unit=timer) + _UPDATE_TIMER))
        if interval != DEFAULT_INTERVAL:
            out.append(File(dropin_path(), interval_dropin(interval)))
    if role == "rsync":
        out += rsync_files(rsync, systemd=True)
    return out


def systemd_paths(role: str) -> list[str]:
    """Every non-configuration file `install-service ROLE` may have written (for --remove)."""
    paths = [f"{UNIT_DIR}/{name(role)}.service"]
    if role == "update":
        paths += [f"{UNIT_DIR}/{name(role)}.timer", dropin_path()]
    if role == "rsync":
        paths.append(rsync_dropin_path())
    return paths


def run_body(role: str, command: list[str], interval: int, role_args: list[str] | tuple[str, ...] = ()) -> str:
    if role == "rsync":
        return f"mkdir -p {RSYNC_RUN_DIR}\nexec {shlex.join(rsync_argv(daemontools=True))}"
    argv = [*command, "--envdir", "./variables", role, *role_args]
    if role != "update":
        return f"exec {shlex.join(argv)}"
    return (
        "# supervise starts this again whenever it exits: wait 5 minutes (the\n"
        "# network settles after boot), check once, pause for the rest of [update]\n"
        "# interval, exit.\n"
        f"sleep {BOOT_DELAY}\n"
        f"{shlex.join(argv)}\n"
        f"exec sleep {max(interval - BOOT_DELAY, 1)}"
    )


def daemontools_files(role: str, service_dir: str, command: list[str], *, interval: int = DEFAULT_INTERVAL,
                      rsync: RsyncSetup | None = None, role_args: list[str] | tuple[str, ...] = ()) -> list[File]:
    """The files `install-service ROLE --init daemontools` writes."""
    d = f"{service_dir.rstrip('/')}/{name(role)}"
    out = [
        File(d, None, 0o755),
        File(f"{d}/variables", None, 0o755),
        File(f"{d}/log", None, 0o755),
        File(f"{d}/log/run", _LOG_RUN.format(service=name(role)), 0o755),
        File(f"{d}/run", _RUN.format(what=WHAT[role], role=role, body=run_body(role, command, interval, role_args),
                                     settings=RSYNC_CONF if role == "rsync" else
                                     "the configuration file, or pistop-style files in ./variables"), 0o755),
    ]
    if role == "rsync":
        out += rsync_files(rsync, systemd=False)
    return out


def contrib_files() -> dict[str, str]:
    """The generated files shipped in contrib/ (units as installed by the package, example rsyncd.conf)."""
    out = {}
    for role in ROLES:
        for f in systemd_files(role, [PROGRAM]):
            out[os.path.basename(f.path)] = f.text or ""
    return out


# ---------------------------------------------------------------- decisions


def detect_init(setting: str = "auto", *, exists: Callable[[str], bool] = os.path.isdir,
                which: Callable[[str], str | None] = shutil.which) -> str | None:
    """systemd when it is PID 1, else daemontools when svscan is installed, else None."""
    if setting in ("systemd", "daemontools"):
        return setting
    if exists("/run/systemd/system"):
        return "systemd"
    if which("svscan"):
        return "daemontools"
    return None


def program_path(which: Callable[[str], str | None] = shutil.which) -> str:
    found = which("pistop-mdns")
    return os.path.abspath(found) if found else PROGRAM


def global_args(config_path: str | None, envdir: str | None, daemontools: bool) -> list[str]:
    """Options that give the service the configuration install-service was given."""
    args = []
    if config_path:
        args += ["--config", os.path.abspath(config_path)]
    if envdir and not daemontools:  # under daemontools the envdir's files are copied to ./variables
        args += ["--envdir", os.path.abspath(envdir)]
    return args


def music_directory(mpd_conf: str) -> str | None:
    try:
        value = files.mpd_conf_value(files.read_text(mpd_conf), "music_directory")
    except (files.FileFormatError, OSError):
        return None
    return value if value and value.startswith("/") else None


@dataclass(frozen=True)
class Holder:
    """Who listens on a TCP port."""

    pid: int | None  # None: held, by a process we cannot see (another user, no root)
    name: str = ""
    cmdline: str = ""

    def __str__(self) -> str:
        if self.pid is None:
            return "a process this user cannot see"
        return f"{self.name} (pid {self.pid}: {self.cmdline})"

    @property
    def ours(self) -> bool:
        return ("pistop-mdns" in self.cmdline or "pistop_mdns" in self.cmdline) and " server" in self.cmdline


def listening_inodes(text: str, port: int) -> set[int]:
    """Socket inodes listening on TCP `port`, from the text of /proc/net/tcp or tcp6."""
    inodes = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "0A" or ":" not in fields[1]:  # 0A: LISTEN
            continue
        try:
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
        except ValueError:
            continue
    return inodes


def port_holder(port: int, proc: str = "/proc") -> Holder | None:
    """The process listening on TCP `port` in this network namespace; None when the port is free."""
    inodes: set[int] = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            with open(os.path.join(proc, table)) as f:
                inodes |= listening_inodes(f.read(), port)
        except OSError:
            continue
    if not inodes:
        return None
    sockets = {f"socket:[{inode}]" for inode in inodes}
    for entry in sorted((e for e in os.listdir(proc) if e.isdigit()), key=int):
        fd_dir = os.path.join(proc, entry, "fd")
        try:
            links = [os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir)]
        except OSError:
            continue
        if sockets.isdisjoint(links):
            continue
        try:
            with open(os.path.join(proc, entry, "comm")) as f:
                comm = f.read().strip()
            with open(os.path.join(proc, entry, "cmdline"), "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            comm, cmdline = "?", ""
        return Holder(int(entry), comm, cmdline)
    return Holder(None)


def descends_from(pid: int, ancestor: int, proc: str = "/proc") -> bool:
    """Is `pid` the process `ancestor` or one it started (directly or not)?"""
    for _ in range(64):
        if pid == ancestor:
            return True
        try:
            with open(os.path.join(proc, str(pid), "stat")) as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])  # the field after the state: the parent
        except (OSError, ValueError, IndexError):
            return False
        if pid <= 1:
            return False
    return False


# ---------------------------------------------------------------- doing


class Installer:
    """Writes, enables, restarts and removes; every command through the Runner.

    `live` means the files go to the running system (no --root), so its
    service manager is told (daemon-reload, enable --now, restarts).
    """

    def __init__(self, runner: Runner, *, root: str = "/", live: bool = True, dry_run: bool = False,
                 echo: Callable[[str], None] = print):
        self.runner = runner
        self.root = root
        self.live = live
        self.dry_run = dry_run
        self.echo = echo

    def at(self, path: str) -> str:
        """`path` under --root."""
        return os.path.join(self.root, path.lstrip("/"))

    def command(self, argv: tuple[str, ...], timeout: float = SYSTEMCTL_TIMEOUT) -> bool:
        if self.dry_run:
            self.echo(f"would run: {shlex.join(argv)}")
            return True
        result = self.runner.run(argv, timeout=timeout)
        if not result.ok:
            log.error("%s", result.summary())
        return result.ok

    def write(self, f: File) -> bool:
        """Put one file or directory in place; True when something changed."""
        path = self.at(f.path)
        if f.text is None:
            if os.path.isdir(path):
                return False
            if self.dry_run:
                self.echo(f"would create directory {path}/")
            else:
                os.makedirs(path, f.mode, exist_ok=True)
            return True
        if f.keep and os.path.lexists(path):
            log.info("kept %s (your configuration)", path)
            return False
        try:
            old = files.read_text(path)
        except (files.FileFormatError, OSError):
            old = None
        mode_ok = old is not None and (os.stat(path).st_mode & 0o7777) == f.mode
        if old == f.text and mode_ok:
            return False
        if self.dry_run:
            self.echo(f"would write {path} (mode {f.mode:o}):")
            shown = "(a new password, not shown)" if f.secret else f.text
            self.echo("".join(f"    {line}\n" for line in shown.splitlines()).rstrip("\n"))
            return True
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        files.atomic_write(path, f.text, backup_suffix=None)
        os.chmod(path, f.mode)
        log.info("%s %s", "wrote" if old is None else "updated", path)
        return True

    def delete(self, path: str) -> bool:
        full = self.at(path)
        if not os.path.lexists(full):
            return False
        if self.dry_run:
            self.echo(f"would remove {full}")
            return True
        os.unlink(full)
        log.info("removed %s", full)
        parent = os.path.dirname(full)
        if parent.endswith(".d") and not os.listdir(parent):
            os.rmdir(parent)
        return True

    # ------------------------------------------------------------ systemd

    def packaged(self, f: File) -> bool:
        """Does the package ship exactly this unit? Then a copy in /etc would only hide its updates."""
        if not f.path.startswith(UNIT_DIR + "/") or f.path.count("/") != UNIT_DIR.count("/") + 1:
            return False
        try:
            return files.read_text(self.at(f"{PACKAGED_UNIT_DIR}/{os.path.basename(f.path)}")) == f.text
        except (files.FileFormatError, OSError):
            return False

    def install_systemd(self, role: str, wanted: list[File], start: bool = True) -> int:
        """Write and enable the units; `start` False leaves a new unit stopped."""
        unit = f"{name(role)}.service"
        existed = any(os.path.exists(self.at(f"{d}/{unit}")) for d in (UNIT_DIR, PACKAGED_UNIT_DIR))
        ours = [f for f in wanted if not self.packaged(f)]
        for f in wanted:
            if f not in ours:
                log.info("%s: the packaged unit in %s is used", os.path.basename(f.path), PACKAGED_UNIT_DIR)
        changed = [f for f in ours if self.write(f)]
        keep = {f.path for f in ours}
        stale = [p for p in systemd_paths(role) if p not in keep and self.delete(p)]
        target = enabled_unit(role)
        if not self.live:
            if not self.command(commands.systemctl_in_root(self.root, "enable", target)):
                return 1
            log.info("%s enabled under %s; it starts at that system's next boot", target, self.root)
            return 0
        if (changed or stale) and not self.command(commands.systemctl("daemon-reload")):
            return 1
        if not self.command(commands.systemctl("enable", "--now", target) if start else
                            commands.systemctl("enable", target)):
            return 1
        if existed and changed and role != "update":
            # A running service keeps its old settings until restarted.
            if not self.command(commands.systemctl("try-restart", unit)):
                return 1
        log.info("%s: %s, enabled%s", target, "installed" if not existed else
                 "updated" if changed or stale else "already installed and up to date",
                 " and started" if start else "")
        return 0

    def remove_systemd(self, role: str) -> int:
        target = enabled_unit(role)
        present = [p for p in systemd_paths(role) if os.path.lexists(self.at(p))]
        if not present and not os.path.exists(self.at(f"{PACKAGED_UNIT_DIR}/{target}")):
            log.info("%s is not installed: nothing to remove", target)
            return 0
        if self.live:
            # A running update is left to finish: stopping apt midway breaks packages.
            if not self.command(commands.systemctl("disable", "--now", target)):
                return 1
        elif not self.command(commands.systemctl_in_root(self.root, "disable", target)):
            return 1
        for path in present:
            self.delete(path)
        if present and self.live and not self.command(commands.systemctl("daemon-reload")):
            return 1
        if role == "rsync":
            for kept in (RSYNC_CONF, RSYNC_SECRETS):
                if os.path.exists(self.at(kept)):
                    log.info("kept %s (your configuration)", self.at(kept))
        log.info("%s removed", target)
        return 0

    # ------------------------------------------------------------ daemontools

    def supervised(self, directory: str) -> bool:
        return self.runner.run(commands.svok(directory), timeout=10).ok

    def install_daemontools(self, role: str, service_dir: str, wanted: list[File],
                            variables_from: str | None = None, start: bool = True) -> int:
        """Put the service in place; `start` False leaves a ./down file, so supervise keeps it down."""
        live_dir = self.at(service_dir)
        final = os.path.join(live_dir, name(role))
        hidden = os.path.join(live_dir, "." + name(role))
        if os.path.lexists(hidden):
            log.error("%s exists: an earlier removal did not finish; fix: run `pistop-mdns install-service "
                      "%s --remove`, then install again", hidden, role)
            return 1
        if not os.path.isdir(live_dir):
            log.warning("%s does not exist: %s it; make sure svscan watches it (Debian's daemontools-run "
                        "watches /etc/service: use --service-dir /etc/service)", live_dir,
                        "would create" if self.dry_run else "creating")
        existed = os.path.isdir(final)
        if not start:
            wanted = [*wanted, File(f"{service_dir.rstrip('/')}/{name(role)}/down", "")]
        service_files = [f for f in wanted if f.path.startswith(service_dir.rstrip("/") + "/")]
        others = [f for f in wanted if f not in service_files]
        for f in others:
            self.write(f)
        if existed:
            changed = {f.path for f in service_files if self.write(f)}
            self.copy_variables(variables_from, final, role)
            base = f"{service_dir.rstrip('/')}/{name(role)}"
            for path, directory in ((f"{base}/run", final), (f"{base}/log/run", os.path.join(final, "log"))):
                if path in changed and not self.dry_run and self.supervised(directory):
                    # supervise runs the new script only when the old one exits.
                    if not self.command(commands.svc("-t", directory)):
                        return 1
            log.info("%s: %s", final, "updated" if changed else "already installed and up to date")
            return 0
        if self.dry_run:
            for f in service_files:
                self.write(f)
            self.copy_variables(variables_from, final, role)
            self.echo(f"(built as {hidden}, then renamed: svscan starts it within 5 seconds)")
            return 0
        # Built under a dot name, which svscan ignores, and renamed into place
        # whole: svscan never starts a half-written service.
        prefix = service_dir.rstrip("/") + "/" + name(role)
        hidden_prefix = service_dir.rstrip("/") + "/." + name(role)
        for f in service_files:
            self.write(File(hidden_prefix + f.path[len(prefix):], f.text, f.mode, f.keep))
        self.copy_variables(variables_from, hidden, role)
        os.rename(hidden, final)
        log.info("installed %s: svscan starts %s within 5 seconds", final, "it" if start else "supervise in it")
        return 0

    def copy_variables(self, envdir: str | None, service: str, role: str) -> None:
        """pistop's variables (MDRIVE, POWER_OFF, ...) from --envdir, where ./variables lacks them."""
        if not envdir:
            return
        source = config.envdir_path(envdir)
        target = os.path.join(service, "variables")
        used, _, _ = pistop.sort_variables({var: b"x" for var in set(config.BY_ENVVAR) | {"PORT"}
                                            if (source / var).is_file()}, role)
        for var in used:
            src, dst = source / var, os.path.join(target, var)
            if src.is_file() and not os.path.lexists(dst):
                if self.dry_run:
                    self.echo(f"would copy {src} to {dst}")
                else:
                    shutil.copyfile(src, dst)
                    log.info("copied %s to %s", src, dst)

    def remove_daemontools(self, role: str, service_dir: str) -> int:
        return self.remove_service_dir(os.path.join(self.at(service_dir), name(role)))

    def remove_service_dir(self, final: str) -> int:
        """Stop a daemontools service and its log (svc -dx) and delete its directory.

        Renamed to a dot name first: svscan ignores those, so it does not start
        a new supervise for the service while it goes.
        """
        hidden = os.path.join(os.path.dirname(final), "." + os.path.basename(final))
        if not os.path.lexists(final) and not os.path.lexists(hidden):
            log.info("%s is not installed: nothing to remove", final)
            return 0
        log_dir = os.path.join(hidden, "log")
        has_log = os.path.isdir(os.path.join(final, "log")) or os.path.isdir(log_dir)
        if self.dry_run:
            for line in (f"would rename {final} to {hidden} (svscan stops watching it)",
                         f"would run: svc -dx {hidden}{f' {log_dir}' if has_log else ''}", f"would remove {hidden}"):
                self.echo(line)
            return 0
        if os.path.lexists(final):
            os.rename(final, hidden)
        directories = [hidden, log_dir] if has_log else [hidden]
        for directory in directories:
            if self.supervised(directory):
                self.command(commands.svc("-dx", directory))
        deadline = time.monotonic() + SUPERVISE_EXIT_WAIT
        while any(self.supervised(d) for d in directories):
            if time.monotonic() > deadline:
                log.error("supervise still runs in %s after %g s; fix: `svc -dx %s`, then run this again",
                          hidden, SUPERVISE_EXIT_WAIT, " ".join(directories))
                return 1
            time.sleep(0.2)
        shutil.rmtree(hidden)
        log.info("removed %s", final)
        return 0

    # ------------------------------------------------------------ starting, for --from-pistop

    def svstat(self, directory: str) -> SvStatus:
        result = self.runner.run(commands.svstat(directory), timeout=10)
        return parse_svstat(result.out or result.err, directory)

    def wait_supervised(self, directory: str, limit: float = SUPERVISE_START_WAIT) -> bool:
        """svscan notices a new service directory within 5 seconds and starts supervise in it."""
        deadline = time.monotonic() + limit
        while not self.supervised(directory):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def svc_until(self, directory: str, flag: str, down: bool, limit: float = SUPERVISE_EXIT_WAIT) -> bool:
        if not self.command(commands.svc(flag, directory)):
            return False
        deadline = time.monotonic() + limit
        while self.svstat(directory).up == down:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def stays_up(self, directory: str, limit: float = START_WAIT) -> tuple[bool, str]:
        """Up for RUNNING_FOR seconds with one pid: a service that crashes at start never is."""
        deadline = time.monotonic() + limit
        while True:
            status = self.svstat(directory)
            seconds = _UP_SECONDS.search(status.text)
            if status.up and seconds and int(seconds.group(1)) >= RUNNING_FOR:
                return True, status.text
            if time.monotonic() > deadline:
                return False, status.text
            time.sleep(0.2)

    def unit_stays_active(self, unit: str) -> tuple[bool, str]:
        if not self.command(commands.systemctl("start", unit)):
            return False, f"systemctl start {unit} failed"
        time.sleep(RUNNING_FOR)  # Type=notify: started means ready; still active afterwards means it stays
        active = self.runner.run(commands.systemctl_is_active(unit), timeout=10).ok
        return active, "active" if active else "no longer active"


# ---------------------------------------------------------------- the verb


def run(cfg: Config, role: str, *, init: str | None, remove: bool, dry_run: bool, root: str,
        config_path: str | None, envdir: str | None, echo: Callable[[str], None],
        from_pistop: str | None = None) -> int:
    """`from_pistop`: None, or the old service's directory ("" for the role's default)."""
    if os.geteuid() != 0 and not dry_run:
        log.error("install-service needs root: it writes system files and starts services; "
                  "fix: run it with sudo (or try --dry-run)")
        return 2
    init = init or detect_init(cfg.general.service_manager if cfg.general.service_manager != "none" else "auto")
    if init is None:
        log.error("no service manager found: systemd is not running (/run/systemd/system) and daemontools' "
                  "svscan is not installed; fix: give --init systemd or --init daemontools")
        return 2
    root = os.path.abspath(root)
    installer = Installer(Runner(cfg.general.timeout), root=root, live=root == "/", dry_run=dry_run, echo=echo)
    daemontools = init == "daemontools"
    port_given = cfg.sources[("server", "port")] == "option --port"
    if port_given and role != "server":
        log.error("--port is the server's liveness channel port: boards find it in the server's record%s; "
                  "fix: drop --port", ", and the rsync daemon's is --rsync-port" if role == "rsync" else "")
        return 2
    if remove:
        if from_pistop is not None:
            log.error("--remove and --from-pistop: fix: give one of them")
            return 2
        if daemontools:
            status = installer.remove_daemontools(role, cfg.general.service_dir)
        else:
            status = installer.remove_systemd(role)
        if role == "client" and status == 0:
            status = undo_board_setup(cfg, installer)
        return status
    old = None
    if from_pistop is not None:
        old = old_service(cfg, role, from_pistop, installer, envdir=envdir, daemontools=daemontools)
        if old is None:
            return 2
        if not daemontools:
            envdir = os.path.join(PISTOP_COPY_DIR, os.path.basename(old))
    else:
        refusal = conflict(cfg, role, installer)
        if refusal:
            log.error("%s", refusal)
            return 2
        if installer.live and role in ("server", "client"):
            problem = check_role(cfg, role)
            if problem:
                log.error("%s; nothing was installed (the %s would stop at once with this error)", problem, role)
                return 2
    program = program_path()
    if program == PROGRAM and not os.path.exists(PROGRAM):
        log.warning("pistop-mdns is not on PATH: the service will run %s; install the package", PROGRAM)
    command = [program, *global_args(config_path, envdir, daemontools)]
    role_args = ["--port", str(cfg.server.port)] if port_given else []
    rsync = rsync_setup(cfg, installer) if role == "rsync" else None
    interval = cfg.update.interval
    try:
        if daemontools:
            wanted = daemontools_files(role, cfg.general.service_dir, command, interval=interval, rsync=rsync,
                                       role_args=role_args)
        else:
            wanted = systemd_files(role, command, interval=interval, rsync=rsync, role_args=role_args)
        if old is not None:
            status = Migration(installer, cfg, role, old, daemontools, echo).run(wanted)
        elif daemontools:
            status = installer.install_daemontools(role, cfg.general.service_dir, wanted, variables_from=envdir)
        else:
            status = installer.install_systemd(role, wanted)
    except OSError as e:
        log.error("install-service %s: %s: %s; fix: check that %s is writable", role, e.filename or "",
                  e.strerror, root)
        return 1
    if status == 0 and role == "rsync":
        if rsync is not None and rsync.writable:
            log.info("music can be pushed to rsync://%s@%s/%s/ from the hosts in `hosts allow` of %s; its "
                     "password follows \"%s:\" in %s", UPLOAD_USER, cfg.general.hostname or "this-host",
                     UPLOAD_MODULE, installer.at(RSYNC_CONF), UPLOAD_USER, installer.at(RSYNC_SECRETS))
        if not cfg.server.advertise_rsync:
            log.info("to have the server advertise it as _rsync._tcp, set advertise_rsync = true in [server]")
    return status


def old_service(cfg: Config, role: str, given: str, installer: Installer, *, envdir: str | None,
                daemontools: bool) -> str | None:
    """The old pistop service to move from, checked; None (and the reason logged) when it cannot be."""
    old = os.path.abspath(given) if given else installer.at(pistop.default_dir(role, cfg.general.service_dir))
    if envdir:
        log.error("--envdir and --from-pistop both name pistop variables; fix: give only --from-pistop %s", old)
        return None
    if not os.path.isdir(old) or not (os.path.exists(os.path.join(old, "run"))
                                      or os.path.isdir(os.path.join(old, "variables"))):
        log.error("%s: no pistop service there (no run file, no variables/); fix: give --from-pistop the old "
                  "service's directory, e.g. %s", old, pistop.default_dir(role))
        return None
    if not daemontools and not installer.live:
        log.error("--from-pistop stops and starts services of the running system: under systemd it cannot be "
                  "combined with --root; fix: run it on that system")
        return None
    problem = check_role(cfg, role)
    if problem:
        log.error("%s; nothing was changed", problem)
        return None
    return old


def check_role(cfg: Config, role: str) -> str | None:
    """The configuration error the role's service would stop with at start, or None.

    The service exits 2 on it and its unit does not restart
    (RestartPreventExitStatus=2); checking here, with the configuration the
    service will be given, names the error before anything is installed, on
    any service manager, without waiting for a journal. For a client it also
    says what the client will guess and set up on this board.
    """
    from pistop_mdns import derive, fresh

    try:
        if role == "server":
            derive.server(cfg)
        elif role == "client":
            checked = fresh.client(cfg)
            source = checked.sources[("client", "mount_mode")]
            if source.startswith(("derived", fresh.GUESSED)):
                log.info("the client will use mount_mode %s (%s)", checked.client.mount_mode, source)
            entries = fresh.needs(checked, fresh.look(checked))
            if entries:
                log.info("on this board nobody configured, the client %s; %s",
                         fresh.summary(checked, entries, done=False), fresh.REMOVE_HINT)
    except config.ConfigError as e:
        return str(e)
    return None


def mounts_at(target: str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """File system types mounted at `target`, autofs triggers included, topmost last."""
    from pistop_mdns.machine import parse_mountinfo

    try:
        with open(mountinfo) as f:
            entries = parse_mountinfo(f.read())
    except OSError:
        return []
    # mountinfo holds resolved paths; only the parent is resolved, as machine.py does.
    parent, name = os.path.split(os.path.normpath(target))
    where = os.path.join(os.path.realpath(parent), name)
    return [e.fstype for e in entries if e.target == where]


def undo_board_setup(cfg: Config, installer: Installer) -> int:
    """What the client created or changed on a board nobody configured (fresh.RECORD), taken back."""
    from pistop_mdns import fresh
    from pistop_mdns.services import Services

    services = Services(cfg, installer.runner)

    def if_running(service: str, verb: str, why: str) -> None:
        """Restart or reload `service` when it runs (said, not done, on a dry run)."""
        if installer.dry_run or not installer.live:
            if installer.live:
                installer.echo(f"would {verb} {service}, if it runs, {why}")
            return
        if services.is_running(service):
            outcome = getattr(services, verb)(service)
            (log.info if outcome.ok else log.warning)("%s %s %s: %s", verb, service, why, outcome.detail)

    def restart_mpd() -> None:
        if_running("mpd", "restart", "on the restored mpd.conf")

    def reload_autofs() -> None:
        if_running("autofs", "reload", "so it lets go of the share")

    reloaded: list[bool] = []

    def reload_and_note() -> None:
        reloaded.append(True)
        reload_autofs()

    def unmount(target: str) -> None:
        # /proc/self/mountinfo, never a look at the directory: that would make
        # autofs mount it again, and could hang on a server that is gone.
        if not installer.live or installer.dry_run:
            return
        deadline = time.monotonic() + AUTOFS_RELEASE_WAIT
        while reloaded and mounts_at(target) and time.monotonic() < deadline:
            time.sleep(0.2)  # a reloaded automount lets go of the mount point by itself
        for _ in range(3):  # the share, then an autofs trigger under it
            if not mounts_at(target):
                return
            # Lazily: the share of a server that is gone must not hold the removal.
            installer.command(commands.umount(target, lazy=True), timeout=30)

    try:
        done = fresh.undo(installer.root, dry_run=installer.dry_run, echo=installer.echo, restart_mpd=restart_mpd,
                          reload_autofs=reload_and_note, unmount=unmount)
    except (OSError, files.FileFormatError) as e:
        log.error("cannot take back what the client set up (%s): %s; fix: see that file's entries",
                  installer.at(fresh.RECORD), getattr(e, "strerror", None) or e)
        return 1
    if done is None or installer.dry_run:
        return 0
    if done.restored:
        log.info("restored %s as it was before pistop-mdns changed it", ", ".join(installer.at(p) for p in done.restored))
    if done.removed:
        log.info("removed what pistop-mdns had created: %s", ", ".join(installer.at(p) for p in done.removed))
    for left in done.left:
        log.warning("left %s; fix: remove it yourself when it is no longer needed", installer.at(left))
    return 0


def conflict(cfg: Config, role: str, installer: Installer) -> str | None:
    """Why installing ROLE beside what runs here would fail or fight; None when nothing is in the way."""
    old = installer.at(pistop.default_dir(role, cfg.general.service_dir))
    old_runs = os.path.isdir(old) and installer.supervised(old)
    move = f"`pistop-mdns install-service {role} --from-pistop`"
    if role == "server" and (installer.live or old_runs):  # else another system's disk: its ports are not here
        port = cfg.server.port
        holder = port_holder(port)
        if holder is None or holder.ours:
            if old_runs:
                log.warning("pistop's fserver still runs in %s: the boards that still run pistop use it; when "
                            "every board runs pistop-mdns, move over with %s", old, move)
            return None
        status = installer.svstat(old) if old_runs else None
        if status is not None and status.pid is not None and holder.pid is not None \
                and descends_from(holder.pid, status.pid):
            return (f"port {port} is held by pistop's fserver ({old}: {holder}); fix: move over with {move} "
                    f"(it stops and removes fserver once the new server runs), or run beside it with --port N")
        return f"port {port} is held by {holder}; fix: stop that program, or choose another port with --port N"
    if role == "client" and old_runs:
        return (f"pistop's fclient runs in {old}: both would mount the share and start and stop mpd; "
                f"fix: move over with {move} (it stops and removes fclient once the new client runs)")
    if old_runs:
        log.warning("pistop's %s still runs in %s; to replace it, use %s", os.path.basename(old), old, move)
    return None


class Migration:
    """`install-service ROLE --from-pistop`: the new service replaces pistop's, never leaving the host without one.

    1. the new service is installed but not started (a ./down file; a unit
       enabled but not started), with the old service's variables;
    2. when the old service holds what the new one needs (fserver's
       tcpserver on the server's port) it is stopped first (svc -d);
    3. the new service is started and must stay up RUNNING_FOR seconds;
       if it does not, it is stopped again, the old one is started again
       (svc -u) and nothing is removed;
    4. only then the old service and its log are stopped for good (svc -dx)
       and its directory is removed.
    """

    def __init__(self, installer: Installer, cfg: Config, role: str, old: str, daemontools: bool,
                 echo: Callable[[str], None]):
        self.installer = installer
        self.cfg = cfg
        self.role = role
        self.old = old
        self.daemontools = daemontools
        self.echo = echo
        self.new = os.path.join(installer.at(cfg.general.service_dir), name(role)) if daemontools \
            else enabled_unit(role)
        self.done: list[str] = []

    def run(self, wanted: list[File]) -> int:
        i = self.installer
        variables = pistop.read_variables(self.old)
        used, unused, unknown = pistop.sort_variables(variables, self.role)
        old_name = os.path.basename(self.old)
        log.info("moving %s from pistop's %s", self.role, self.old)
        if self.daemontools:
            status = i.install_daemontools(self.role, self.cfg.general.service_dir, wanted, start=False)
            target = os.path.join(self.new, "variables")
        else:
            target = i.at(os.path.join(PISTOP_COPY_DIR, old_name))
            self.carry_over(variables, used, target)
            status = i.install_systemd(self.role, wanted, start=False)
        if status != 0:
            return status
        if self.daemontools:
            self.carry_over(variables, used, target)
        self.done.append(f"installed {self.new}{' (down until it is started)' if self.daemontools else ''}")
        if used:
            self.done.append(f"carried over {', '.join(used)} to {target}/")
        for var in unused:
            why = pistop.UNUSED_OFF_BOARD[var] if var in pistop.SERVER_ADDRESS else pistop.UNUSED[var]
            self.done.append(f"not used any more: {var}: {why}")
        if unknown:
            self.done.append(f"left behind (not pistop's, or unknown): {', '.join(unknown)}")
        if i.dry_run:
            for line in (f"would start {self.new} and wait until it runs for {RUNNING_FOR} seconds",
                         f"then stop and remove pistop's {self.old} (svc -dx, then the directory)"):
                self.echo(line)
            return 0
        old_up = i.supervised(self.old) and i.svstat(self.old).up
        if self.daemontools and not i.wait_supervised(self.new):
            log.error("no supervise started in %s within %g s: svscan does not watch %s; fix: start svscan "
                      "there (or give --service-dir); pistop's %s was left as it is", self.new,
                      SUPERVISE_START_WAIT, os.path.dirname(self.new), old_name)
            return 1
        stopped_first = old_up and self.holds_port()
        if stopped_first:
            log.info("pistop's %s holds port %d: stopping it first", old_name, self.cfg.server.port)
            if not i.svc_until(self.old, "-d", down=True):
                log.error("pistop's %s did not stop; the new %s was not started; fix: `svc -d %s`, then run "
                          "this again", old_name, self.role, self.old)
                return 1
            self.done.append(f"stopped pistop's {old_name} first: it held port {self.cfg.server.port}")
        runs, how = self.start()
        if not runs:
            self.roll_back(stopped_first)
            log.error("the new %s did not stay up (%s): it is stopped again%s and pistop's %s %s; fix: see %s, "
                      "then run this again", self.role, how, "" if not self.daemontools else " (./down)",
                      old_name, "runs again" if stopped_first else "was left as it is",
                      f"{self.new}/log/main/current" if self.daemontools else f"journalctl -u {self.new}")
            return 1
        self.done.append(f"{self.new} runs: {how}")
        if old_up and not stopped_first and not i.svc_until(self.old, "-d", down=True):
            log.warning("pistop's %s did not report down; removing it anyway", old_name)
        if i.remove_service_dir(self.old) != 0:
            return 1
        self.done.append(f"stopped pistop's {old_name} and its log (svc -dx) and removed {self.old}")
        logs = i.at(os.path.join("/var/log/svc", old_name))
        if os.path.isdir(logs):
            self.done.append(f"left alone: {logs} (pistop's logs)")
        self.echo(f"moved {self.role} from pistop's {self.old}:")
        for line in self.done:
            self.echo(f"  {line}")
        return 0

    def carry_over(self, variables: dict[str, bytes], used: list[str], target: str) -> None:
        """The variables pistop-mdns reads, into the new service's envdir."""
        if self.installer.dry_run:
            self.echo(f"would copy {', '.join(used) or 'no variables'} from {pistop.variables_dir(self.old)} "
                      f"to {target}/")
            return
        os.makedirs(target, 0o755, exist_ok=True)
        for var in used:
            content, note = pistop.carried_over(var, variables[var])
            path = os.path.join(target, var)
            with open(path + ".new", "wb") as f:
                f.write(content)
            os.replace(path + ".new", path)
            if note:
                self.done.append(note)

    def holds_port(self) -> bool:
        if self.role != "server":
            return False
        holder = port_holder(self.cfg.server.port)
        status = self.installer.svstat(self.old)
        return holder is not None and holder.pid is not None and status.pid is not None \
            and descends_from(holder.pid, status.pid)

    def start(self) -> tuple[bool, str]:
        i = self.installer
        if not self.daemontools:
            return i.unit_stays_active(self.new)
        os.unlink(os.path.join(self.new, "down"))  # from now on it starts with svscan, at boot too
        if not i.command(commands.svc("-u", self.new)):
            return False, f"svc -u {self.new} failed"
        return i.stays_up(self.new)

    def roll_back(self, restart_old: bool) -> None:
        i = self.installer
        if self.daemontools:
            with open(os.path.join(self.new, "down"), "w"):
                pass
            # A service that crashes at start may be restarted once more before -d is read.
            if not i.svc_until(self.new, "-d", down=True):
                log.warning("%s does not report down; fix: `svc -d %s`", self.new, self.new)
        else:
            i.command(commands.systemctl("disable", "--now", self.new))
        if restart_old:
            i.svc_until(self.old, "-u", down=False)


def music_owner(music: str, mpd_conf: str) -> tuple[str, str]:
    """User and group the upload module writes as: the music directory's owner, else mpd's user."""
    try:
        st = os.stat(music)
        return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name
    except (OSError, KeyError):
        pass
    try:
        user = files.mpd_conf_value(files.read_text(mpd_conf), "user")
        if user:
            return user, grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    except (files.FileFormatError, OSError, KeyError):
        pass
    return "nobody", "nogroup"


def own_subnets(cfg: Config) -> tuple[str, ...]:
    """The networks of this host's addresses (interfaces as configured), for `hosts allow`."""
    from pistop_mdns import mdns

    found = mdns.local_interfaces(cfg.general.interfaces, cfg.general.ip_version == "all")
    return tuple(dict.fromkeys(i.network for i in found))


def rsync_setup(cfg: Config, installer: Installer) -> RsyncSetup:
    music = music_directory(cfg.server.mpd_conf)
    if music is None:
        log.warning("no music_directory in %s: %s serves %s until you edit `path` there",
                    cfg.server.mpd_conf, RSYNC_CONF, DEFAULT_MUSIC)
        music = DEFAULT_MUSIC
    owner, group = music_owner(music, cfg.server.mpd_conf)
    subnets = own_subnets(cfg)
    if not subnets:
        log.warning("no network address on this host: uploads are allowed from 127.0.0.1 only; fix: edit "
                    "`hosts allow` in %s", RSYNC_CONF)
        subnets = ("127.0.0.1",)
    if owner == "root":
        log.warning("%s belongs to root: uploads are written as root; better: chown -R it to mpd's user", music)
    conf = rsyncd_conf(music, cfg.server.rsync_port, owner=owner, group=group, subnets=subnets)
    try:
        in_place = files.read_text(installer.at(RSYNC_CONF))  # kept: the user's file decides
    except (files.FileFormatError, OSError):
        in_place = conf
    writable = writable_modules(in_place)
    if in_place != conf and not writable:
        log.info("%s has no writable module (written by an older version?): to push music, add the [%s] "
                 "module of `pistop-mdns install-service rsync --dry-run --root /tmp/x`, or remove the file "
                 "and run this again", installer.at(RSYNC_CONF), UPLOAD_MODULE)
    return RsyncSetup(conf, password=secrets.token_urlsafe(18),
                      writable=tuple(dict.fromkeys(path for path, _ in writable.values())),
                      as_root=any(uid in ("root", "0") for _, uid in writable.values()))
