"""`pistop-mdns shutdown`: power the music server off without pulling the rug.

The successor of pistop's pishutdown. On the server, in this order:
  1. tell the running `pistop-mdns server` to announce `poweroff` (or, for a
     reboot, `stopping`) and wait, bounded, until every connected client
     reports it is down (mpd stopped, share unmounted);
  2. stop the configured services (mpd, smbd, nmbd, nfs-server);
  3. sync; unmount the data disk; sync again;
  4. cut USB power with uhubctl, when configured;
  5. run the power-off command (`shutdown -h now`; arguments given to this
     command replace `-h now`, as pishutdown passed them to shutdown).
Every step is logged; a failing step is reported and the next one still runs,
so nothing ever skips the sync.

From a board, `pistop-mdns shutdown --server NAME` asks that server (found
over mDNS) to do the above. It needs the shared key on both hosts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from dataclasses import dataclass

from pistop_mdns import auth, channel, commands, mdns
from pistop_mdns.config import Config, ConfigError
from pistop_mdns.executor import Runner
from pistop_mdns.model import STATE_POWEROFF, STATE_STOPPING
from pistop_mdns.services import SYSTEMD_MARKER

log = logging.getLogger(__name__)

REBOOT_ARGS = ("-r", "--reboot")
# What a remote host may pass on to shutdown(8): options and times, nothing else.
SAFE_ARG = re.compile(r"[-+A-Za-z0-9:]{1,16}\Z")


@dataclass(frozen=True)
class Step:
    what: str
    argv: tuple[str, ...]


def reason_for(args: list[str]) -> str:
    return STATE_STOPPING if any(a in REBOOT_ARGS for a in args) else STATE_POWEROFF


def poweroff_argv(command: list[str], args: list[str]) -> tuple[str, ...]:
    return (command[0], *args) if args else tuple(command)


def service_manager(cfg: Config) -> str:
    chosen = cfg.general.service_manager
    if chosen != "auto":
        return chosen
    if os.path.isdir(SYSTEMD_MARKER):
        return "systemd"
    return "daemontools" if os.path.isdir(cfg.general.service_dir) else "none"


def plan(cfg: Config, args: list[str], data_disk: str, manager: str) -> list[Step]:
    """The steps after the clients are down, as command lines (pure)."""
    steps: list[Step] = []
    for name in cfg.shutdown.services:
        if manager == "systemd":
            steps.append(Step(f"stop {name}", commands.systemctl("stop", commands.systemd_unit(name))))
        elif manager == "daemontools":
            steps.append(Step(f"stop {name}", commands.svc("-d", os.path.join(cfg.general.service_dir, name))))
    steps.append(Step("sync", commands.sync()))
    if data_disk:
        steps.append(Step(f"unmount {data_disk}", ("umount", data_disk)))
        steps.append(Step("sync", commands.sync()))
    s = cfg.shutdown
    if s.uhubctl_location:
        steps.append(Step("cut USB power", commands.uhubctl_off(s.uhubctl_location, s.uhubctl_port)))
    steps.append(Step("power off", poweroff_argv(s.command, args)))
    return steps


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


def _data_disk(cfg: Config, runner: Runner) -> str:
    if cfg.shutdown.data_disk:
        return cfg.shutdown.data_disk
    export = cfg.server.export
    if export and runner.run(commands.mountpoint(export), timeout=5).ok:
        return export
    return ""


def run_local(cfg: Config, args: list[str], runner: Runner | None = None) -> int:
    runner = runner or Runner(timeout=cfg.general.timeout)
    host = cfg.general.hostname
    reason = reason_for(args)
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
    steps = plan(cfg, args, _data_disk(cfg, runner), service_manager(cfg))
    failed = 0
    for step in steps:
        result = runner.run(step.argv)
        if result.ok:
            log.info("%s: shutdown: %s: done (%s)", host, step.what, result.command)
        else:
            failed += 1
            log.warning("%s: shutdown: %s failed: %s; going on", host, step.what, result.summary())
    return 0 if failed == 0 else 1


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
