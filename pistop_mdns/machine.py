"""The client's real hands: carrying out a plan's steps on this board.

`MachineApplier` runs each action of a `Plan` (see model.py) in order and
logs one line per step, `kitchen: mounted 198.18.0.11:/srv/music at
/var/lib/mpd/MDrive`. A failing `required` step ends the plan with a
one-line reason naming the step; any other failing step is a warning and the
plan carries on. Every step can be repeated safely (the client reconciles at
start and retries): mounting what is already mounted from the same source,
stopping a stopped mpd, rewriting an mpd.conf that already says the right
thing are all no-ops.

External programs run through the Runner (timeouts), services through
services.py, files are edited by files.py and written by files.atomic_write.
Whether something is mounted is read from /proc/self/mountinfo, which
never blocks; looking *into* a share (the ready marker) goes through a child
process with a timeout, because a stat on a dead NFS server can hang.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shlex
import time
from dataclasses import dataclass
from typing import Callable

from pistop_mdns import commands, files
from pistop_mdns.apply import Facts, PlanResult, Reporter
from pistop_mdns.config import Config
from pistop_mdns.executor import Runner
from pistop_mdns.hooks import Hooks
from pistop_mdns.model import (
    Backup,
    DisableAutofsEntry,
    EnsureAutofs,
    Mount,
    Notify,
    Plan,
    PointAutofs,
    PowerOff,
    ReportState,
    RunHook,
    SetMpdConf,
    StartMpd,
    StopService,
    Sync,
    Unmount,
    WaitReady,
)
from pistop_mdns.notify import Notifier
from pistop_mdns.services import Outcome, Services

log = logging.getLogger(__name__)

MOUNTINFO = "/proc/self/mountinfo"
UMOUNT_PAUSE = 1.0  # between unmount tries (client.umount_retries counts them)
DETACH_POLL = 0.1  # how often mountinfo is read while a mount of an unreachable server goes
READY_FIRST_PAUSE = 0.1  # ready check back-off: 0.1 s, doubling, at most READY_MAX_PAUSE
READY_MAX_PAUSE = 2.0


class StepFailed(Exception):
    """A step did not do its job; the message is the one-line reason."""


@dataclass
class _PlanMemory:
    """What one plan's later steps need to know about its earlier ones."""

    mpd_conf_changed: bool = False
    autofs_map_changed: bool = False


# ---------------------------------------------------------------- mountinfo (pure)


@dataclass(frozen=True)
class MountEntry:
    target: str
    root: str  # the directory of the mounted file system that appears at target
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash as \ooo (octal).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        if len(fields) < dash + 3:
            continue
        entries.append(MountEntry(_unescape(fields[4]), _unescape(fields[3]), fields[dash + 1],
                                  _unescape(fields[dash + 2])))
    return entries


def mounted_at(entries: list[MountEntry], target: str) -> list[MountEntry]:
    """The real file systems mounted at `target`, bottom first.

    An `autofs` entry is only autofs's trigger: the share is mounted when a
    real file system sits there (on top of it, for a direct map).
    """
    return [e for e in entries if e.target == target and e.fstype != "autofs"]


def same_source(mounted: str, wanted: str) -> bool:
    return mounted.rstrip("/") == wanted.rstrip("/")


def nfs_ls_names(out: str) -> list[str]:
    """File names from `nfs-ls` lines: `drwxr-xr-x  3  0  0  4096 name`."""
    names = []
    for line in out.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6:
            names.append(parts[5])
    return names


# ---------------------------------------------------------------- the applier


class MachineApplier:
    def __init__(
        self,
        cfg: Config,
        runner: Runner | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        mountinfo: str = MOUNTINFO,
    ):
        self.cfg = cfg
        self.runner = runner or Runner(timeout=cfg.general.timeout)
        self.sleep = sleep
        self.clock = clock
        self.mountinfo = mountinfo
        self.hostname = cfg.general.hostname
        self.timeout = float(cfg.general.timeout)
        self.services = Services(cfg, self.runner, sleep=sleep, clock=clock)
        self.hooks = Hooks(cfg, self.runner)
        self.notifier = Notifier(cfg, sleep=sleep)
        self._handlers = {
            RunHook: self._run_hook,
            PointAutofs: self._point_autofs,
            DisableAutofsEntry: self._disable_autofs_entry,
            EnsureAutofs: self._ensure_autofs,
            Mount: self._mount,
            Unmount: self._unmount,
            WaitReady: self._wait_ready,
            SetMpdConf: self._set_mpd_conf,
            StartMpd: self._start_mpd,
            StopService: self._stop_service,
            Notify: self._notify,
            ReportState: self._report_state,
            Backup: self._backup,
            Sync: self._sync,
            PowerOff: self._power_off,
        }

    # ------------------------------------------------------------ Applier

    def run_plan(self, plan: Plan, report: Reporter) -> PlanResult:
        memory = _PlanMemory()
        for action in plan.actions:
            try:
                done = self._handlers[type(action)](action, plan, memory, report)
            except StepFailed as e:
                if action.required:
                    log.warning("%s: %s; the rest of this %s is skipped", self.hostname, e, plan.kind)
                    return PlanResult(False, str(e))
                log.warning("%s: %s; carrying on", self.hostname, e)
                continue
            if done:
                log.info("%s: %s", self.hostname, done)
        return PlanResult(True)

    def probe(self) -> Facts:
        mounted = None
        if self.cfg.client.mount_mode != "mpd" and self.cfg.client.mountpoint:
            mounted = bool(self._mounted(self.cfg.client.mountpoint))
        return Facts(mounted=mounted, mpd_running=self.services.is_running("mpd"))

    # ------------------------------------------------------------ mounts

    def _canonical(self, target: str) -> str:
        # mountinfo holds resolved paths. Only the parent is resolved: the
        # mount point itself may be a dead NFS mount, and looking at it could hang.
        parent, name = posixpath.split(posixpath.normpath(target))
        return posixpath.join(os.path.realpath(parent), name)

    def _mounted(self, target: str) -> list[MountEntry]:
        try:
            with open(self.mountinfo) as f:
                text = f.read()
        except OSError as e:
            raise StepFailed(f"cannot read {self.mountinfo}: {e.strerror}") from None
        return mounted_at(parse_mountinfo(text), self._canonical(target))

    def _same_mount(self, action: Mount, entry: MountEntry) -> bool:
        if same_source(entry.source, action.source):
            return True
        if not action.source.startswith("/"):
            return False
        # A bind mount names the device, not the directory: compare identities.
        r = self.runner.run(commands.stat_identity(action.source, action.target), timeout=self.timeout)
        ids = r.out.split()
        return r.ok and len(ids) == 2 and ids[0] == ids[1]

    def _mount(self, a: Mount, plan: Plan, memory: _PlanMemory, report: Reporter) -> str:
        what = f"mount {a.source} at {a.target}"
        current = self._mounted(a.target)
        replaced = ""
        if current:
            if self._same_mount(a, current[-1]):
                return f"{a.source} is already mounted at {a.target}"
            # Another share (yesterday's server address) is there: mounting on
            # top would hide it but keep it busy; drop it without waiting on it.
            self._umount_until_gone(a.target, lazy=True, tries=1)
            replaced = f" (replacing {current[-1].source})"
        mkdir = self.runner.run(commands.mkdir_p(a.target), timeout=self.timeout)
        if not mkdir.ok:
            raise StepFailed(f"{what}: {mkdir.summary()}")
        r = self.runner.run(commands.mount(a.fstype, a.options, a.source, a.target), timeout=self.timeout)
        if not r.ok:
            raise StepFailed(f"{what}: {r.summary()}")
        return f"mounted {a.source} at {a.target}{replaced}"

    def _umount_until_gone(self, target: str, *, lazy: bool, tries: int) -> tuple[int, str]:
        """Unmount until nothing is mounted at `target`: (tries used, "" or the last failure)."""
        last = ""
        for attempt in range(1, tries + 1):
            r = self.runner.run(commands.umount(target, lazy=lazy), timeout=self.timeout)
            if not self._mounted(target):
                return attempt, ""
            last = r.summary() if not r.ok else f"{r.command}: still mounted"
            log.debug("%s: unmount %s, try %d of %d: %s", self.hostname, target, attempt, tries, last)
            if attempt < tries:
                self.sleep(UMOUNT_PAUSE)
        return tries, last

    def _unmount(self, a: Unmount, plan: Plan, memory: _PlanMemory, report: Reporter) -> str:
        if not self._mounted(a.target):
            return f"nothing mounted at {a.target}"
        if a.unreachable:
            return self._detach(a.target)
        tries = self.cfg.client.umount_retries
        used, failure = self._umount_until_gone(a.target, lazy=a.lazy, tries=tries)
        if failure:
            raise StepFailed(f"unmount {a.target}: {failure} (gave up after {tries} tries)")
        how = " lazily" if a.lazy else ""
        return f"unmounted {a.target}{how}" + (f" (after {used} tries)" if used > 1 else "")

    def _detach(self, target: str) -> str:
        """Unmount a share whose server cannot answer, never waiting on the server.

        On a real kernel (TESTBED.md section 9) a forced lazy unmount takes the
        mount out of the tree at once, and the call may then stay blocked in
        the kernel (D state) for as long as the server is away. So the call is
        started, not waited for; mountinfo says when the mount is gone; the call
        is left to end by itself (the runner kills it at its timeout, or leaves
        it when even that cannot). Bounded by general.timeout in all.
        """
        argv = commands.umount_detach(target)
        deadline = self.clock() + self.timeout
        started = None
        tries = 0
        while self._mounted(target):
            if started is None or started.done:
                if tries == self.cfg.client.umount_retries:
                    last = started.result(0).summary() if started is not None else ""
                    raise StepFailed(f"unmount {target}: {last}, still mounted (gave up after {tries} tries)")
                started = self.runner.start(argv, timeout=self.timeout)
                tries += 1
            elif self.clock() >= deadline:
                raise StepFailed(f"unmount {target}: still mounted {self.timeout:g} s after {shlex.join(argv)}")
            self.sleep(DETACH_POLL)
        if started is not None and not started.done:
            return (f"unmounted {target} without waiting for the server ({shlex.join(argv)} is still blocked "
                    f"in the kernel; left to end by itself)")
        return f"unmounted {target} without waiting for the server"

    # ------------------------------------------------------------ ready check

    def _wait_ready(self, a: WaitReady, plan: Plan, memory: _PlanMemory, report: Reporter) -> str:
        check = self._nfs_ready if a.nfs_url else self._mount_ready
        deadline = self.clock() + self.cfg.client.ready_timeout
        pause = READY_FIRST_PAUSE
        while True:
            left = deadline - self.clock()
            problem = check(a, plan, max(1.0, min(self.timeout, left)))
            if problem is None:
                where = a.nfs_url or a.mountpoint
                return f"share ready at {where}" + (f" ({a.marker} found)" if a.marker else "")
            if self.clock() + pause > deadline:
                raise StepFailed(f"wait for the share at {a.nfs_url or a.mountpoint}: {problem} "
                                 f"(gave up after {self.cfg.client.ready_timeout:g} s)")
            self.sleep(pause)
            pause = min(pause * 2, READY_MAX_PAUSE)

    def _mount_ready(self, a: WaitReady, plan: Plan, timeout: float) -> str | None:
        """None when ready, else what is missing. Looking comes first: it makes autofs mount."""
        if a.marker:
            path = posixpath.join(a.mountpoint, a.marker)
            r = self.runner.run(commands.path_exists(path), timeout=timeout)
            if not r.ok:
                return f"{path} not there yet" if r.rc == 1 else r.summary()
        else:
            r = self.runner.run(commands.ls_all(a.mountpoint), timeout=timeout)
            if not r.ok:
                return r.summary()
            if not r.out.strip():
                return f"{a.mountpoint} is empty"
        if not self._mounted(a.mountpoint):
            return f"nothing mounted at {a.mountpoint}"
        return None

    def _nfs_ready(self, a: WaitReady, plan: Plan, timeout: float) -> str | None:
        # The marker is relative to the share, as under a mount point.
        base = a.nfs_url.rstrip("/")
        parent, name = posixpath.split(a.marker.strip("/"))
        url = f"{base}/{parent}" if parent else base
        r = self.runner.run(commands.nfs_ls(url), timeout=timeout)
        if r.not_found:
            # Without libnfs-utils the share cannot be looked at; mpd will say.
            log.warning("%s: nfs-ls is not installed, so %s cannot be checked before mpd starts "
                        "(fix: apt install libnfs-utils)", self.hostname, a.nfs_url)
            return None
        if not r.ok:
            return r.summary()
        names = nfs_ls_names(r.out)
        if name and name not in names:
            return f"{a.marker} not in {base}"
        if not names:
            return f"{url} is empty"
        return None

    # ------------------------------------------------------------ autofs

    def _point_autofs(self, a: PointAutofs, plan: Plan, memory: _PlanMemory, report: Reporter) -> str:
        c = self.cfg.client
        path, key = c.autofs_map, c.autofs_key
        try:
            text = files.read_text(path, setting="client.autofs_map") if os.path.exists(path) else ""
            new = files.rewrite_autofs_map(text, key, location=a.location, options=c.autofs_options, path=path)
        except (files.FileFormatError, ValueError) as e:
            raise StepFailed(f"autofs map: {e}") from None
        memory.autofs_map_changed = self._write(path, new, "client.autofs_map")
        if memory.autofs_map_changed:
            return f"pointed {key} in {path} at {a.location}"
        return f"{key} in {path} already points at {a.location}"

    def _disable_autofs_entry(self, a: DisableAutofsEntry, plan: Plan, memory: _PlanMemory,
                              report: Reporter) -> str:
        c = self.cfg.client
        path, key = c.autofs_map, c.autofs_key
        try:
            text = files.read_text(path, setting="client.autofs_map") if os.path.exists(path) else ""
            new = files.disable_autofs_entry(text, key, path=path)
        except files.FileFormatError as e:
            raise StepFailed(f"autofs map: {e}") from None
        if new is text:
            return f"no {key} entry in {path} to take out"
        self._write(path, new, "client.autofs_map")
        return f"took {key} out of {path} until the server is back"

    def _ensure_autofs(self, a: EnsureAutofs, plan: Plan, memory: _PlanMemory, report: Reporter) -> str | None:
        running = self.services.is_running("autofs")
        if running and not memory.autofs_map_changed:
            return "autofs already runs with this map"
        if running:
            return self._service_result(self.services.reload("autofs"), "reload autofs",
                                        "reloaded autofs (map changed)")
        return self._service_result(self.services.start("autofs"), "start autofs", "started autofs")

    # ------------------------------------------------------------ mpd

    def _set_mpd_conf(self, a: SetMpdConf, plan: Plan, memory: _PlanMemory, report: Reporter) -> str | None:
        c = self.cfg.client
        path = c.mpd_conf
        try:
            text = files.read_text(path, setting="client.mpd_conf")
            if files.mpd_proxy(text, path=path) is None and not c.add_proxy_block:
                log.warning("%s: %s has no proxy database block, so it is left alone (fix: add "
                            "one, or set add_proxy_block = true in [client])", self.hostname, path)
                return None
            new = files.rewrite_mpd_conf(text, proxy_host=a.host, proxy_port=a.port,
                                         music_directory=a.music_directory or None,
                                         add_proxy_block=c.add_proxy_block, drop_db_file=c.add_proxy_block,
                                         path=path)
        except (files.FileFormatError, ValueError) as e:
            raise StepFailed(f"mpd.conf: {e}") from None
        memory.mpd_conf_changed = self._write(path, new, "client.mpd_conf")
        music = f", music_directory {a.music_directory}" if a.music_directory else ""
        if memory.mpd_conf_changed:
            return f"pointed mpd at {a.host}:{a.port}{music} in {path}"
        return f"{path} already points mpd at {a.host}:{a.port}{music}"

    def _start_mpd(self, a: StartMpd, plan: Plan, memory: _PlanMemory, report: Reporter) -> str | None:
        running = self.services.is_running("mpd")
        if running and not memory.mpd_conf_changed:
            return "mpd already runs with this mpd.conf"
        if running:
            return self._service_result(self.services.restart("mpd"), "restart mpd",
                                        "restarted mpd (mpd.conf changed)")
        return self._service_result(self.services.start("mpd"), "start mpd", "started mpd")

    def _stop_service(self, a: StopService, plan: Plan, memory: _PlanMemory, report: Reporter) -> str | None:
        if not a.wait:
            return self._service_result(self.services.ask_to_stop(a.service), f"stop {a.service}",
                                        f"asked {a.service} to stop, not waiting")
        return self._service_result(self.services.stop(a.service), f"stop {a.service}", f"stopped {a.service}")

    def _service_result(self, outcome: Outcome, what: str, done: str) -> str | None:
        if not outcome.ok:
            raise StepFailed(f"{what}: {outcome.detail}")
        if outcome.skipped:
            log.warning("%s: %s", self.hostname, outcome.detail)
            return None
        return f"{done}: {outcome.detail}"

    # ------------------------------------------------------------ the rest

    def _run_hook(self, a: RunHook, plan: Plan, memory: _PlanMemory, report: Reporter) -> str:
        return f"hook {a.stage}: {self.hooks.run(a.stage, a.env)}"

    def _notify(self, a: Notify, plan: Plan, memory: _PlanMemory, report: Reporter) -> str:
        return self.notifier.send(a.message)

    def _report_state(self, a: ReportState, plan: Plan, memory: _PlanMemory, report: Reporter) -> str:
        what = "down and powers off now" if a.state == "off" else a.state
        if report(a.state):
            return f"told the server this board is {what}"
        # Normal in a tear-down: the server is usually gone already.
        return f"could not tell the server this board is {what} (no channel)"

    def _backup(self, a: Backup, plan: Plan, memory: _PlanMemory, report: Reporter) -> str:
        from pistop_mdns.backup import run_backup  # the backup command's module; only needed here

        if not run_backup(self.cfg, self.runner, default_dest=self.cfg.client.mountpoint):
            raise StepFailed("backup failed (see the lines above)")
        return "backup done"

    def _sync(self, a: Sync, plan: Plan, memory: _PlanMemory, report: Reporter) -> str:
        r = self.runner.run(commands.sync(), timeout=self.timeout)
        if not r.ok:
            raise StepFailed(f"sync: {r.summary()}")
        return "synced file systems"

    def _power_off(self, a: PowerOff, plan: Plan, memory: _PlanMemory, report: Reporter) -> str:
        argv = commands.poweroff(self.cfg.client.poweroff_command)
        r = self.runner.run(argv, timeout=self.timeout)
        if not r.ok:
            report("down")  # not off after all: the server's shutdown must not wait for it
            raise StepFailed(f"power off: {r.summary()}")
        return f"powering off: {r.command}"

    # ------------------------------------------------------------ files

    def _write(self, path: str, text: str, setting: str) -> bool:
        try:
            return files.atomic_write(path, text)
        except OSError as e:
            raise StepFailed(f"cannot write {path}: {e.strerror}; fix: run as root, or set {setting}") from None
