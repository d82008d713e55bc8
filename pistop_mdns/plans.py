"""The steps of a plan, in pistop's order, and the journal line that announces it.

The core (core.py) decides *what* happens: bring a server up, tear it down
(and why), or retarget to its new share. This module turns a decision into
the ordered actions the applier runs and into the one line a user reads in
`journalctl`. It is pure: no network, no files, no clock.

Hook scripts get the decision's reason twice: a keyword a script can test
(`PISTOP_REASON`: bring-up, retarget, poweroff, restart, stopping, silent,
gone, exit) and the sentence the journal shows (`PISTOP_REASON_TEXT`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pistop_mdns.model import (
    BRING_UP,
    RETARGET,
    TEAR_DOWN,
    Action,
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
    ServerAd,
    SetMpdConf,
    StartMpd,
    StopService,
    Sync,
    Unmount,
    WaitReady,
)

# PISTOP_REASON keywords.
REASON_BRING_UP = "bring-up"
REASON_RETARGET = "retarget"
REASON_POWEROFF = "poweroff"
REASON_RESTART = "restart"  # a restart that did not return within restart_grace
REASON_STOPPING = "stopping"
REASON_SILENT = "silent"  # no heartbeat for dead_time: crashed or unplugged
REASON_GONE = "gone"  # the record was withdrawn (or never came) and stayed away
REASON_EXIT = "exit"  # the client itself stops, with teardown_on_exit
REASONS = (REASON_BRING_UP, REASON_RETARGET, REASON_POWEROFF, REASON_RESTART, REASON_STOPPING,
           REASON_SILENT, REASON_GONE, REASON_EXIT)


@dataclass(frozen=True)
class Settings:
    """The part of the configuration the decisions and plans depend on."""

    hostname: str = "client"
    pins: tuple[str, ...] = ()  # servers to follow, most preferred first; () follows any
    mount_mode: str = "autofs"  # autofs, direct, mpd
    mountpoint: str = "/var/lib/mpd/MDrive"
    mount_fstype: str = "nfs4"
    mount_options: str = "soft,timeo=5,retry=1"
    mount_source: str = "{address}:{export}"
    autofs_location: str = "{address}:{export}"
    ready_marker: str = ""
    power_off: bool = False
    force_umount: bool = False
    poweroff_on_crash: bool = False
    keyed: bool = False
    gone_hold: float = 3.0
    restart_grace: float = 120.0
    dead_time: float = 10.0
    flap_window: float = 60.0
    flap_settle: float = 5.0
    startup_wait: float = 3.0
    teardown_on_exit: bool = False
    backup: bool = False
    local_networks: tuple[str, ...] = ()  # this host's subnets, "198.18.0.0/24"
    prefer_ipv6: bool = False
    set_music_directory: bool = False  # point mpd's music_directory into the mounted share


@dataclass(frozen=True)
class Leave:
    """Why the board leaves the server it is set up for."""

    reason: str  # a REASONS keyword
    why: str  # the sentence for the journal and PISTOP_REASON_TEXT
    power_off: bool = False
    unreachable: bool = False  # the server cannot answer: unmount without waiting for it


# ---------------------------------------------------------------- addresses and URLs


def choose_address(addresses: tuple[str, ...], s: Settings, keep: str | None = None) -> str:
    """The server address to use: one on this host's own subnets, IPv4 first.

    `keep`, the address in use, stays chosen while it is still offered and as
    good as any other: a server that gains an address must not interrupt the music.
    """
    nets = []
    for n in s.local_networks:
        try:
            nets.append(ipaddress.ip_network(n, strict=False))
        except ValueError:
            continue

    def rank(address: str) -> tuple[bool, bool]:
        ip = ipaddress.ip_address(address.split("%")[0])
        return (not any(ip in net for net in nets if net.version == ip.version),
                (ip.version == 4) == s.prefer_ipv6)

    best = min(addresses, key=rank)  # the first of the best, in the record's order
    if keep in addresses and rank(keep) == rank(best):
        return keep
    return best


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def share_url(ad: ServerAd, address: str) -> str:
    """The export as an nfs:// URL (what a ready marker is relative to)."""
    return f"nfs://{url_host(address)}{ad.export.rstrip('/') or '/'}"


def nfs_url(ad: ServerAd, address: str) -> str:
    """The music directory inside the export as an nfs:// URL (mpd's music_directory)."""
    path = ad.export.rstrip("/") + ("/" + ad.music if ad.music else "")
    return f"nfs://{url_host(address)}{path or '/'}"


def ready_marker(ad: ServerAd, s: Settings) -> str:
    return s.ready_marker or ad.music


def hook_env(ad: ServerAd | None, address: str, reason: str, text: str) -> tuple[tuple[str, str], ...]:
    env: tuple[tuple[str, str], ...] = ()
    if ad is not None:
        env = (
            ("PISTOP_SERVER", ad.instance),
            ("PISTOP_HOST", ad.host),
            ("PISTOP_ADDRESS", address),
            ("PISTOP_EXPORT", ad.export),
            ("PISTOP_MPD_PORT", str(ad.mpd_port)),
            ("PISTOP_MUSIC", ad.music),
        )
    return env + (("PISTOP_REASON", reason), ("PISTOP_REASON_TEXT", text))


# ---------------------------------------------------------------- steps


def _mount_steps(ad: ServerAd, address: str, s: Settings) -> list[Action]:
    marker = ready_marker(ad, s)
    if s.mount_mode == "mpd":
        return [WaitReady(s.mountpoint, marker, nfs_url=share_url(ad, address))]
    fill = {"address": url_host(address), "export": ad.export, "host": ad.host.rstrip(".")}
    if s.mount_mode == "autofs":
        return [PointAutofs(s.autofs_location.format(**fill)), EnsureAutofs(), WaitReady(s.mountpoint, marker)]
    return [
        Mount(s.mount_source.format(**fill), s.mountpoint, s.mount_fstype, s.mount_options),
        WaitReady(s.mountpoint, marker),
    ]


def music_directory(ad: ServerAd, address: str, s: Settings) -> str:
    """What mpd.conf's music_directory is set to; "" leaves it as it is."""
    if s.mount_mode == "mpd":
        return nfs_url(ad, address)
    if s.set_music_directory:
        return s.mountpoint.rstrip("/") + ("/" + ad.music if ad.music else "")
    return ""


def _up_steps(ad: ServerAd, address: str, s: Settings, env) -> list[Action]:
    steps: list[Action] = [RunHook("pre_mount", env)]
    steps += _mount_steps(ad, address, s)
    steps += [
        SetMpdConf(address, ad.mpd_port, music_directory(ad, address, s)),
        StartMpd(),
        RunHook("post_mount", env),
        Notify("On"),
        ReportState("up"),
    ]
    return steps


def _unmount_steps(s: Settings, lazy: bool, unreachable: bool) -> list[Action]:
    if s.mount_mode == "mpd":
        return []
    if unreachable:
        # Seen on real Debian 12 machines (tests/system) with a server that
        # cannot answer: an unmount call sits in the kernel for minutes, so it
        # is started, not waited for; stopping autofs hangs while the share is
        # mounted, and after the detach a look into the mount point would make
        # automount mount the dead share again. So autofs runs on, with the
        # share's entry taken out of its map first (it reads the map afresh on
        # every lookup); the bring-up puts the entry back.
        steps: list[Action] = [DisableAutofsEntry()] if s.mount_mode == "autofs" else []
        return steps + [Unmount(s.mountpoint, lazy=lazy, unreachable=True)]
    steps = [Unmount(s.mountpoint, lazy=lazy)]
    if s.mount_mode == "autofs":
        steps.append(StopService("autofs"))
    return steps


def bring_up(plan_id: int, ad: ServerAd, address: str, why: str, s: Settings) -> Plan:
    steps = _up_steps(ad, address, s, hook_env(ad, address, REASON_BRING_UP, why))
    if s.backup:
        steps.append(Backup())
    return Plan(plan_id, BRING_UP, ad, tuple(steps), why)


def retarget(plan_id: int, ad: ServerAd, address: str, why: str, s: Settings) -> Plan:
    env = hook_env(ad, address, REASON_RETARGET, why)
    steps: list[Action] = []
    if s.mount_mode != "mpd":
        # The old share's server may already be gone. autofs keeps running:
        # its map is repointed by the mount steps.
        steps += [RunHook("pre_unmount", env), StopService("mpd"),
                  Unmount(s.mountpoint, lazy=True), RunHook("post_unmount", env)]
    steps += _up_steps(ad, address, s, env)
    return Plan(plan_id, RETARGET, ad, tuple(steps), why)


def tear_down(plan_id: int, ad: ServerAd | None, address: str, leave: Leave, s: Settings) -> Plan:
    env = hook_env(ad, address, leave.reason, leave.why)
    # mpd may be stuck reading the share of a server that cannot answer, until
    # the share is detached: it is asked to stop and not waited for.
    steps: list[Action] = [RunHook("pre_unmount", env), StopService("mpd", wait=not leave.unreachable)]
    steps += _unmount_steps(s, lazy=leave.power_off and s.force_umount, unreachable=leave.unreachable)
    steps += [
        RunHook("post_unmount", env),
        Notify("PowerOff" if leave.power_off else "MusicOff"),
        # "off": down, and about to power off; the server's shutdown waits
        # until this board is gone.
        ReportState("off" if leave.power_off else "down"),
    ]
    if leave.power_off:
        steps += [Sync(), PowerOff()]
    return Plan(plan_id, TEAR_DOWN, ad, tuple(steps), leave.why, leave.power_off)


def describe(plan: Plan, address: str, s: Settings) -> str:
    """The one journal line that says what the client is about to do and why."""
    if plan.kind == TEAR_DOWN:
        what = []  # in the plan's order
        for a in plan.actions:
            if isinstance(a, StopService):
                what.append(f"stop {a.service}" if a.wait else f"ask {a.service} to stop")
            elif isinstance(a, DisableAutofsEntry):
                what.append("take the share out of the autofs map")
            elif isinstance(a, Unmount):
                how = " (not waiting for the server)" if a.unreachable else " (lazy)" if a.lazy else ""
                what.append(f"unmount {a.target}{how}")
        if plan.power_off:
            what.append("sync and power off")
        return f"{s.hostname}: {plan.why} -> " + ", ".join(what)
    ad = plan.server
    assert ad is not None
    if s.mount_mode == "mpd":
        share = f"mpd reads {nfs_url(ad, address)}"
    else:
        source = next((a.source if isinstance(a, Mount) else a.location for a in plan.actions
                       if isinstance(a, (Mount, PointAutofs))), "")
        share = f"mount {source} at {s.mountpoint}"
    return f"{s.hostname}: {plan.why} -> {share}, point mpd at {url_host(address)}:{ad.mpd_port}, start mpd"
