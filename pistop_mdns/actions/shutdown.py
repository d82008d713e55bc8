"""`pistop-mdns shutdown`: power the music server off without pulling the rug.

The successor of pistop's pishutdown. On the server, in this order:
  1. tell the running `pistop-mdns server` to announce `poweroff` (or, for a
     reboot, `stopping`) and wait, bounded, until every connected client
     reports it is down (mpd stopped, share unmounted), and every client that
     powers off is off (its connection closed, its address silent);
  2. stop every daemontools service that supervise runs in service_dir
     (mpdev keeps files open on the disk; [shutdown] services first, then the
     rest, then their log services), each until svstat says it is down, then
     svscan itself, as pishutdown did;
  3. stop [shutdown] services through systemd (one that is not installed is
     skipped);
  4. sync; unmount the data disk (a plain umount, never forced or lazy); check
     that it is no longer mounted; sync again;
  5. cut USB power with uhubctl: only for a power-off, only when the data disk
     is known and every step so far succeeded; otherwise say why the power
     stays on;
  6. run the power-off command (`shutdown -h now`; arguments given to this
     command replace `-h now`, as pishutdown passed them to shutdown).
Every step is logged; a failing step is reported and the next one still runs,
so nothing ever skips the sync. `-k` (a warning only) and `-c` (a cancel)
shut nothing down: only the command runs, as with pishutdown.

From a board, `pistop-mdns shutdown --server NAME` asks that server (found
over mDNS) to do the above. It needs the shared key on both hosts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shlex
import time
from dataclasses import dataclass
from typing import Callable

from pistop_mdns import auth, channel, commands, mdns
from pistop_mdns.config import Config, ConfigError
from pistop_mdns.executor import Runner
from pistop_mdns.model import STATE_POWEROFF, STATE_STOPPING, STATE_UP
from pistop_mdns.services import SYSTEMD_MARKER, parse_svstat

log = logging.getLogger(__name__)

POWEROFF = "poweroff"
REBOOT = "reboot"
MESSAGE = "message"  # shutdown -k (a warning only) or -c (cancel): nothing goes down
# What a remote host may pass on to shutdown(8): options and times, nothing else.
SAFE_ARG = re.compile(r"[-+A-Za-z0-9:]{1,16}\Z")
# The systemd units that run svscan: daemontools-run's and indimail's.
SVSCAN_UNITS = ("daemontools.service", "svscan.service")
# svc -d only asks; supervise sends TERM and the service may take a while.
SERVICE_DOWN_WAIT = 20.0
UMOUNT_TRIES = 3
NOT_LOADED = 5  # systemctl stop: the unit is not installed
NOT_A_MOUNT = 32  # mountpoint -q


@dataclass(frozen=True)
class Step:
    what: str
    argv: tuple[str, ...]
    expect: tuple[int, ...] = (0,)
    absent: tuple[int, ...] = ()  # exit statuses that mean "not installed: nothing to do"
    wait_down: str = ""  # a daemontools service directory: wait until svstat says down
    tries: int = 1
    guards_power: bool = True  # a failure keeps the USB power on
    cuts_power: bool = False
    unexpected: str = ""  # what exit status 0, when not expected, means (for the log)


@dataclass(frozen=True)
class Found:
    """What the helper found on this host before planning (see `survey`)."""

    systemd: bool = False  # stop [shutdown] services with systemctl
    supervised: tuple[str, ...] = ()  # service directories (and log/ ones) supervise runs
    svscan_units: tuple[str, ...] = ()  # active systemd units that run svscan
    svscan_pids: tuple[int, ...] = ()  # without such a unit: svscan processes scanning service_dir
    data_disk: str = ""
    disk_mounted: bool = False


def kind_of(args: list[str]) -> str:
    """poweroff, reboot or message, from the arguments pishutdown passed on to shutdown(8)."""
    letters: set[str] = set()
    words: set[str] = set()
    for arg in args:
        if arg.startswith("--"):
            words.add(arg.split("=", 1)[0])
        elif arg.startswith("-") and len(arg) > 1:
            letters.update(arg[1:])
    if letters & {"k", "c"} or words & {"--cancel", "--show"}:
        return MESSAGE
    if "r" in letters or "--reboot" in words:
        return REBOOT
    return POWEROFF


def reason_for(args: list[str]) -> str | None:
    """What the server announces to its clients; None: nothing goes down."""
    return {POWEROFF: STATE_POWEROFF, REBOOT: STATE_STOPPING}.get(kind_of(args))


def poweroff_argv(command: list[str], args: list[str]) -> tuple[str, ...]:
    return (command[0], *args) if args else tuple(command)


def _ordered(cfg: Config, supervised: tuple[str, ...]) -> list[str]:
    """[shutdown] services first in their order (mpdev before mpd), the rest by name, logs last."""
    first = {name: i for i, name in enumerate(cfg.shutdown.services)}

    def key(directory: str) -> tuple:
        is_log = os.path.basename(directory) == "log"
        name = os.path.basename(os.path.dirname(directory) if is_log else directory)
        return (is_log, first.get(name, len(first)), name)

    return sorted(supervised, key=key)


def plan(cfg: Config, args: list[str], found: Found) -> list[Step]:
    """The steps after the clients are down, as command lines (pure)."""
    kind = kind_of(args)
    s = cfg.shutdown
    final = Step("power off" if kind == POWEROFF else "reboot" if kind == REBOOT else "pass it on to shutdown(8)",
                 poweroff_argv(s.command, args), guards_power=False)
    if kind == MESSAGE:
        return [final]
    steps: list[Step] = []
    for directory in _ordered(cfg, found.supervised):
        if os.path.basename(directory) == "log":
            what = f"stop the log of {os.path.basename(os.path.dirname(directory))} (daemontools)"
        else:
            what = f"stop {os.path.basename(directory)} (daemontools)"
        steps.append(Step(what, commands.svc("-d", directory), wait_down=directory))
    # svscan holds nothing on the disk: failing to stop it is no reason to keep the power on.
    for unit in found.svscan_units:
        steps.append(Step(f"stop {unit}", commands.systemctl("stop", unit), guards_power=False))
    for pid in found.svscan_pids:
        steps.append(Step(f"stop svscan (pid {pid})", commands.kill(pid), guards_power=False))
    if found.systemd:
        for name in s.services:
            steps.append(Step(f"stop {name}", commands.systemctl("stop", commands.systemd_unit(name)),
                              absent=(NOT_LOADED,)))
    steps.append(Step("sync", commands.sync()))
    disk = found.data_disk
    if disk:
        if found.disk_mounted:
            steps.append(Step(f"unmount {disk}", commands.unmount_disk(disk), tries=UMOUNT_TRIES))
        steps.append(Step(f"check that {disk} is unmounted", commands.mountpoint(disk), expect=(NOT_A_MOUNT,),
                          unexpected=f"{disk} is still mounted"))
        steps.append(Step("sync", commands.sync()))
        if s.uhubctl_location and kind == POWEROFF:
            steps.append(Step("cut USB power", commands.uhubctl_off(s.uhubctl_location, s.uhubctl_port),
                              guards_power=False, cuts_power=True))
    steps.append(final)
    return steps


def power_note(cfg: Config, args: list[str], found: Found) -> str | None:
    """Why uhubctl_location is set but the plan cuts no power (pure); None when it does, or is not asked to."""
    if not cfg.shutdown.uhubctl_location:
        return None
    kind = kind_of(args)
    if kind == REBOOT:
        return "a reboot: the USB power stays on"
    if kind == MESSAGE:
        return None
    if not found.data_disk:
        return ("USB power stays on: no data disk known (the export is not on a disk of its own); "
                "fix: set data_disk in [shutdown]")
    return None


# ---------------------------------------------------------------- looking around


def service_manager(cfg: Config) -> str:
    chosen = cfg.general.service_manager
    if chosen != "auto":
        return chosen
    if os.path.isdir(SYSTEMD_MARKER):
        return "systemd"
    return "daemontools" if os.path.isdir(cfg.general.service_dir) else "none"


def supervised_services(service_dir: str, runner: Runner) -> tuple[str, ...]:
    """Service directories (and their log/ directories) that supervise runs, by name."""
    try:
        names = sorted(os.listdir(service_dir))
    except OSError:
        return ()
    found: list[str] = []
    for name in names:
        directory = os.path.join(service_dir, name)
        if name.startswith(".") or not os.path.isdir(directory):
            continue
        for d in (directory, os.path.join(directory, "log")):
            if d != directory and not os.path.isdir(d):
                continue
            result = runner.run(commands.svok(d), timeout=5)
            if result.not_found:
                return tuple(found)  # no daemontools here
            if result.ok:
                found.append(d)
    return tuple(found)


def svscan_processes(service_dir: str, proc: str = "/proc") -> tuple[int, ...]:
    """PIDs of the svscan processes that scan `service_dir` (svscan works in the directory it scans)."""
    target = os.path.realpath(service_dir)
    pids = []
    try:
        entries = os.listdir(proc)
    except OSError:
        return ()
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "comm")) as f:
                if f.read().strip() != "svscan":
                    continue
            if os.path.realpath(os.readlink(os.path.join(proc, entry, "cwd"))) == target:
                pids.append(int(entry))
        except OSError:
            continue
    return tuple(sorted(pids))


def data_disk(cfg: Config, runner: Runner) -> str:
    """[shutdown] data_disk, else the mount that holds the export unless that is the root file system."""
    if cfg.shutdown.data_disk:
        return os.path.normpath(cfg.shutdown.data_disk)
    export = cfg.server.export
    if not export:
        return ""
    result = runner.run(commands.mount_holding(export), timeout=5)
    lines = result.out.strip().splitlines() if result.ok else []
    return lines[0].strip() if lines and lines[0].strip() != "/" else ""


def survey(cfg: Config, runner: Runner, own_unit: str | None = None, proc: str = "/proc") -> Found:
    manager = service_manager(cfg)
    systemd = manager == "systemd"
    supervised: tuple[str, ...] = ()
    units: list[str] = []
    pids: tuple[int, ...] = ()
    if manager != "none" and os.path.isdir(cfg.general.service_dir):
        supervised = supervised_services(cfg.general.service_dir, runner)
        if systemd:
            for unit in SVSCAN_UNITS:
                if not runner.run(commands.systemctl_is_active(unit), timeout=5).ok:
                    continue
                if unit == own_unit:
                    log.warning("%s: shutdown runs inside %s: stopping it would end this helper too; its "
                                "services are stopped one by one instead", cfg.general.hostname, unit)
                    continue
                units.append(unit)
        if not units and not systemd:
            pids = svscan_processes(cfg.general.service_dir, proc)
    disk = data_disk(cfg, runner)
    mounted = bool(disk) and runner.run(commands.mountpoint(disk), timeout=5).ok
    return Found(systemd=systemd, supervised=supervised, svscan_units=tuple(units), svscan_pids=pids,
                 data_disk=disk, disk_mounted=mounted)


# ---------------------------------------------------------------- doing


def _wait_down(runner: Runner, directory: str, sleep: Callable[[float], None],
               clock: Callable[[], float]) -> tuple[bool, str]:
    deadline = clock() + SERVICE_DOWN_WAIT
    while True:
        result = runner.run(commands.svstat(directory), timeout=5)
        status = parse_svstat(result.out or result.err, directory)
        if status.state in ("down", "unsupervised"):
            return True, f"svc -d {directory}: {status.text}"
        if clock() >= deadline:
            return False, f"svc -d {directory}: still {status.text} after {SERVICE_DOWN_WAIT:g} s"
        sleep(0.1)


def carry_out(steps: list[Step], runner: Runner, host: str, *, sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic) -> list[str]:
    """Run the steps in order, logging one line each; the failed steps' names."""
    failed: list[str] = []
    guarding: list[str] = []
    for step in steps:
        if step.cuts_power and guarding:
            log.warning("%s: shutdown: USB power stays on: %s failed", host, ", ".join(guarding))
            continue
        for attempt in range(1, step.tries + 1):
            result = runner.run(step.argv)
            if result.rc in step.expect or result.rc in step.absent or attempt == step.tries:
                break
            log.info("%s: shutdown: %s: try %d of %d failed: %s", host, step.what, attempt, step.tries,
                     result.summary())
            sleep(1.0)
        if result.rc in step.absent:
            log.info("%s: shutdown: %s: not installed, nothing to stop (%s)", host, step.what, result.command)
            continue
        ok = result.rc in step.expect
        if ok:
            detail = result.command
        elif step.unexpected and result.rc == 0:  # it ran fine and answered otherwise
            detail = step.unexpected
        else:
            detail = result.summary()
        if ok and step.wait_down:
            ok, detail = _wait_down(runner, step.wait_down, sleep, clock)
        if ok:
            log.info("%s: shutdown: %s: done (%s)", host, step.what, detail)
            continue
        failed.append(step.what)
        if step.guards_power:
            guarding.append(step.what)
        log.warning("%s: shutdown: %s failed: %s; going on", host, step.what, detail)
    return failed


async def announce(state_dir: str, reason: str, wait: float) -> dict | None:
    """Ask the local server to announce `reason` and wait for its clients; None when none runs."""
    path = os.path.join(state_dir, "server.sock")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 3)
    except (OSError, asyncio.TimeoutError):
        return None
    try:
        writer.write(json.dumps({"t": "announce", "reason": reason, "wait": wait}).encode() + b"\n")
        await writer.drain()
        return await channel.read_message(reader, wait + 10)
    except channel.ChannelError as e:
        log.warning("the server did not answer the announcement: %s", e)
        return {}
    finally:
        writer.close()


def run_local(cfg: Config, args: list[str], runner: Runner | None = None, *,
              sleep: Callable[[float], None] = time.sleep) -> int:
    runner = runner or Runner(timeout=cfg.general.timeout)
    host = cfg.general.hostname
    reason = reason_for(args)
    if reason is None:
        log.info("%s: shutdown %s: a message or a cancel only: nothing is stopped or unmounted", host,
                 shlex.join(args))
        found = Found()
    else:
        wait = cfg.shutdown.clients_timeout
        log.info("%s: shutdown: announcing %s to the clients, waiting up to %g s for them", host, reason, wait)
        answer = asyncio.run(announce(cfg.general.state_dir, reason, wait))
        if answer is None:
            log.warning("%s: no pistop-mdns server runs here (no %s/server.sock): no clients to wait for",
                        host, cfg.general.state_dir)
        elif answer.get("still_up"):
            log.warning("%s: still up after %g s: %s; going on", host, wait, ", ".join(answer["still_up"]))
        elif answer:
            told = answer.get("told", [])
            log.info("%s: all %d client(s) are down%s", host, len(told), f": {', '.join(told)}" if told else "")
        if answer and answer.get("off"):
            log.info("%s: powered off: %s", host, ", ".join(answer["off"]))
        if answer and answer.get("still_on"):
            log.warning("%s: said they power off but still answer after %g s: %s; going on", host, wait,
                        ", ".join(answer["still_on"]))
        from pistop_mdns.actions.server import own_unit

        found = survey(cfg, runner, own_unit())
    note = power_note(cfg, args, found)
    if note:
        log.warning("%s: shutdown: %s", host, note)
    steps = plan(cfg, args, found)
    failed = carry_out(steps, runner, host, sleep=sleep)
    if reason is not None and steps[-1].what in failed:
        # The host stays on after all: the server must not say "poweroff" forever.
        log.warning("%s: shutdown: the host did not go down; telling the server it is up again", host)
        asyncio.run(announce(cfg.general.state_dir, STATE_UP, 0))
    return 0 if not failed else 1


async def _remote(cfg: Config, name: str, args: list[str], key: bytes) -> int:
    found: dict[str, mdns.Found] = {}

    def on_event(event: mdns.BrowseEvent) -> None:
        if isinstance(event, mdns.Found) and event.ad.instance.lower() == name.lower():
            found["ad"] = event

    ipv6 = cfg.general.ip_version == "all"
    addrs = [i.address for i in mdns.local_interfaces(cfg.general.interfaces, ipv6)]
    browser = mdns.Browser(on_event, key=key, ipv6=ipv6, max_skew=cfg.general.max_clock_skew)
    await browser.start(addrs)
    try:
        for _ in range(50):
            if "ad" in found:
                break
            await asyncio.sleep(0.1)
    finally:
        await browser.close()
    if "ad" not in found:
        log.error("no server %s found on the LAN (or it does not prove the key)", name)
        return 1
    ad = found["ad"].ad
    address = ad.addresses[0]
    try:
        result = await channel.send_command(address, ad.port, name=cfg.general.hostname, key=key,
                                            cmd="shutdown", args=args, timeout=10)
    except channel.ChannelError as e:
        log.error("asking %s (%s) to shut down: %s", name, address, e)
        return 1
    log.info("%s (%s): %s", name, address, result.get("msg", ""))
    return 0 if result.get("ok") else 1


def run_remote(cfg: Config, name: str, args: list[str]) -> int:
    key = auth.load_key(cfg.general.key_file, required=False)
    if key is None:
        raise ConfigError(
            f"{cfg.general.key_file}: no key: a server accepts remote commands only with the shared key; "
            f"fix: run `pistop-mdns keygen` on the server and copy the key file here"
        )
    bad = [a for a in args if not SAFE_ARG.match(a)]
    if bad:
        raise ConfigError(f"shutdown arguments {bad!r} are not plain shutdown(8) options; fix: drop them")
    return asyncio.run(_remote(cfg, name, args, key))
