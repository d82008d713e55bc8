"""A pretend room board for the machine, services and hooks unit tests.

`Board` stands in for the Runner: it records every argv exactly and answers
the way mount, umount, svc, svstat, systemctl, nfs-ls and friends answer on a
real board, keeping a mountinfo file up to date so MachineApplier reads its
mounts as it would from /proc/self/mountinfo. Nothing is run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pistop_mdns import config, core, derive
from pistop_mdns.actions.client import settings as client_settings
from pistop_mdns.executor import Result
from pistop_mdns.model import ChannelUp, Heartbeat, PlanFinished, ServerAd, ServerNotice, ServerSeen, Started, Tick

MOUNTINFO_BASE = "22 1 0:21 / / rw,relatime - ext4 /dev/sda1 rw\n"


def ad(address: str = "198.18.0.11", music: str = "", export: str = "/srv/music") -> ServerAd:
    return ServerAd(
        name="musicpi._pistop._tcp.local.", instance="musicpi", host="musicpi.local.",
        addresses=(address,), port=5555, export=export, nfsvers="4", mpd_port=6600, music=music,
        state="up", boot="b1", version="0.1.0", proto=1,
    )


def make_config(tmp_path: Path, general: dict | None = None, **client) -> config.Config:
    """A derived client configuration; nothing from /etc is read."""
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    flags = {
        ("general", "hostname"): "kitchen",
        ("general", "service_manager"): "daemontools",
        ("general", "service_dir"): "/service",
        ("client", "mount_mode"): "direct",
        ("client", "mountpoint"): "/mnt/music",
        ("client", "mpd_conf"): str(tmp_path / "mpd.conf"),
        ("client", "hooks_dirs"): [str(tmp_path / "hooks")],
        ("notify", "lcd_fifo"): "",
    }
    flags.update({("general", k): v for k, v in (general or {}).items()})
    flags.update({("client", k): v for k, v in client.items()})
    return derive.client(config.load(str(empty), None, flags))


def settings(cfg: config.Config) -> core.Settings:
    return client_settings(cfg, ("198.18.0.0/24",), False)


def bring_up_plan(cfg: config.Config, server: ServerAd | None = None):
    s = settings(cfg)
    state, _, _ = core.step(core.State(), Started(0.0), s)
    state, plan, _ = core.step(state, ServerSeen(0.1, server or ad()), s)
    assert plan is not None and plan.kind == "bring-up"
    return state, plan


def tear_down_plan(cfg: config.Config, reason: str = "stopping", server: ServerAd | None = None):
    s = settings(cfg)
    server = server or ad()
    state, plan = bring_up_plan(cfg, server)
    state, _, _ = core.step(state, PlanFinished(1.0, plan.id, True), s)
    state, plan, _ = core.step(state, ServerNotice(2.0, server.name, reason), s)
    assert plan is not None and plan.kind == "tear-down"
    return plan


def silent_tear_down_plan(cfg: config.Config, server: ServerAd | None = None):
    """The tear-down after the server went silent (its cable pulled): it cannot answer."""
    s = settings(cfg)
    server = server or ad()
    state, plan = bring_up_plan(cfg, server)
    state, _, _ = core.step(state, PlanFinished(1.0, plan.id, True), s)
    state, _, _ = core.step(state, ChannelUp(2.0, server.name), s)
    state, plan, _ = core.step(state, Tick(2.0 + s.dead_time), s)
    assert plan is not None and plan.kind == "tear-down"
    return plan


class Finished:
    """What Board.start returns for a command that ended: its result, at once."""

    done = True

    def __init__(self, result: Result):
        self._result = result

    def result(self, wait: float | None = None) -> Result:
        return self._result


class Blocked:
    """What Board.start returns for a command stuck in the kernel: it never ends."""

    done = False

    def result(self, wait: float | None = None) -> None:
        return None


@dataclass
class Board:
    mountinfo: Path
    mounts: dict[str, str] = field(default_factory=dict)  # target -> source
    files: set[str] = field(default_factory=set)  # paths `test -e` finds
    appears: dict[str, int] = field(default_factory=dict)  # path -> on which look `test -e` finds it
    busy: set[str] = field(default_factory=set)  # targets `umount -f` refuses
    # Targets of a server that cannot answer: umount takes the mount away, then
    # blocks in the kernel ("detaches"), or blocks with the mount still there ("hangs").
    detaches: set[str] = field(default_factory=set)
    hangs: set[str] = field(default_factory=set)
    services: dict[str, int | None] = field(default_factory=dict)  # service dir -> pid, None: down
    unsupervised: set[str] = field(default_factory=set)
    nfs: dict[str, list[str]] = field(default_factory=dict)  # nfs-ls URL -> names
    identities: dict[str, str] = field(default_factory=dict)  # path -> "dev:ino"
    stubborn: set[str] = field(default_factory=set)  # services that ignore svc -d
    svstat_script: dict[str, list[str]] = field(default_factory=dict)  # dir -> svstat's next answers
    answers: dict[tuple[str, ...], Result] = field(default_factory=dict)  # fixed answers
    calls: list[tuple[str, ...]] = field(default_factory=list)
    timeouts: list[float | None] = field(default_factory=list)
    envs: list[dict | None] = field(default_factory=list)
    next_pid: int = 100

    def __post_init__(self) -> None:
        self._write()

    def _write(self) -> None:
        lines = [MOUNTINFO_BASE]
        for i, (target, source) in enumerate(self.mounts.items()):
            escaped = target.replace(" ", "\\040")
            lines.append(f"{40 + i} 22 0:{50 + i} / {escaped} rw,relatime shared:1 - nfs4 {source} rw\n")
        self.mountinfo.write_text("".join(lines))

    def mount(self, target: str, source: str) -> None:
        self.mounts[target] = source
        self._write()

    def start(self, argv, *, timeout=None, input=None, env=None):
        argv = tuple(str(a) for a in argv)
        if argv[0] == "umount" and argv[-1] in self.detaches | self.hangs:
            self.calls.append(argv)
            self.timeouts.append(timeout)
            self.envs.append(env)
            if argv[-1] in self.detaches:
                self.mounts.pop(argv[-1], None)
                self._write()
            return Blocked()
        return Finished(self.run(argv, timeout=timeout, input=input, env=env))

    def run(self, argv, *, timeout=None, input=None, env=None) -> Result:
        argv = tuple(str(a) for a in argv)
        self.calls.append(argv)
        self.timeouts.append(timeout)
        self.envs.append(env)
        if argv in self.answers:
            return self.answers[argv]
        name, args = argv[0], argv[1:]
        if name == "mount":
            self.mount(args[-1], args[-2])
            return Result(argv, 0)
        if name == "umount":
            target = args[-1]
            if target in self.busy and args[0] == "-f":
                return Result(argv, 32, err=f"umount: {target}: target is busy.\n")
            self.mounts.pop(target, None)
            self._write()
            return Result(argv, 0)
        if name == "test":
            if args[1] in self.appears:
                self.appears[args[1]] -= 1
                if self.appears[args[1]] <= 0:
                    self.files.add(args[1])
            return Result(argv, 0 if args[1] in self.files else 1)
        if name == "ls":
            inside = sorted(p.rsplit("/", 1)[1] for p in self.files if p.rsplit("/", 1)[0] == args[-1])
            return Result(argv, 0, out="".join(n + "\n" for n in inside))
        if name == "stat":
            return Result(argv, 0, out="".join(self.identities.get(p, p) + "\n" for p in args[args.index("--") + 1:]))
        if name == "nfs-ls":
            if args[0] not in self.nfs:
                return Result(argv, 243, err="Failed to mount nfs share : MNT3ERR_ACCES(13)\n")
            return Result(argv, 0, out="".join(f"drwxr-xr-x  3     0     0         4096 {n}\n"
                                               for n in self.nfs[args[0]]))
        if name == "svstat":
            return Result(argv, 0, out=self.svstat_line(args[0]))
        if name == "svc":
            return self._svc(argv, args[0], args[1])
        if name == "systemctl":
            return self._systemctl(argv, args)
        return Result(argv, 0)

    def svstat_line(self, directory: str) -> str:
        if self.svstat_script.get(directory):
            return f"{directory}: {self.svstat_script[directory].pop(0)}\n"
        if directory in self.unsupervised:
            return f"{directory}: supervise not running\n"
        pid = self.services.get(directory)
        if pid is None:
            return f"{directory}: down 4 seconds, normally up\n"
        return f"{directory}: up (pid {pid}) 12 seconds\n"

    def _new_pid(self) -> int:
        self.next_pid += 1
        return self.next_pid

    def _svc(self, argv, flag: str, directory: str) -> Result:
        if directory in self.unsupervised:
            return Result(argv, 0, err=f"svc: warning: unable to control {directory}: supervise not running\n")
        if flag == "-u" and self.services.get(directory) is None:
            self.services[directory] = self._new_pid()
        elif flag == "-d" and directory not in self.stubborn:
            self.services[directory] = None
        elif flag == "-t" and self.services.get(directory) is not None:
            self.services[directory] = self._new_pid()
        return Result(argv, 0)

    def _systemctl(self, argv, args) -> Result:
        if args[0] == "--no-block":  # queued, and here carried out at once
            args = args[1:]
        verb, units = args[0], args[1:]
        if verb == "is-active":
            return Result(argv, 0 if self.services.get(units[-1]) else 3)
        unit = units[0]
        if verb in ("start", "restart"):
            self.services[unit] = self._new_pid()
        elif verb == "stop":
            self.services[unit] = None
        return Result(argv, 0)


class Clock:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
