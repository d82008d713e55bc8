"""What a client does when servers come and go: a pure state machine.

    state, plan, notes = step(state, event, settings)

`step` never touches the network, files or the clock. It folds the event into
what the client knows (which servers exist, which one it follows, what the
machine is set up for, whether an action plan is running), then compares the
*target* (the server the machine should be set up for, or none) with what is
*applied*. When they differ and no plan is running, it hands out one plan:
bring-up, tear-down or retarget. Events that arrive while a plan runs are only
recorded; when the plan finishes the comparison runs again, so a burst of
events collapses into one final decision.

The rules, in the order a reader meets them below:
- Candidates are servers whose record is present, says state=up, matches the
  pinned name (if any), and, with a key, have proven it over the channel. The
  first one seen is followed until it leaves; others are only logged.
- A followed server leaves when it announces stopping/poweroff (TXT state or
  channel notice), when it goes silent on the channel for dead_time, or when
  its record is withdrawn and stays away for gone_hold (unless the channel
  still hears it, or it announced a restart: then it has restart_grace).
- A server torn down less than flap_window ago must stay present for
  flap_settle before it is brought up again (a flapping server is debounced).
- Power-off happens only in a tear-down for an announced poweroff with
  power_off set (and, with a key, an authenticated announcement), or for a
  silent death with poweroff_on_crash set.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

from pistop_mdns.model import (
    BRING_UP,
    RETARGET,
    STATE_POWEROFF,
    STATE_RESTART,
    STATE_STOPPING,
    STATE_UP,
    TEAR_DOWN,
    Action,
    Backup,
    ChannelLost,
    ChannelUp,
    DisableAutofsEntry,
    EnsureAutofs,
    Event,
    Heartbeat,
    Mount,
    Notify,
    Plan,
    PlanFinished,
    PointAutofs,
    PowerOff,
    ReportState,
    RunHook,
    ServerAd,
    ServerGone,
    ServerNotice,
    ServerSeen,
    SetMpdConf,
    StartMpd,
    Started,
    StopRequested,
    StopService,
    Sync,
    Unmount,
    WaitReady,
)

# Phases a user sees in `pistop-mdns status`.
STARTING = "starting"
WAITING = "waiting"
BRINGING_UP = "bringing up"
UP = "up"
TEARING_DOWN = "tearing down"
POWERING_OFF = "powering off"
EXITED = "exited"


@dataclass(frozen=True)
class Settings:
    """The part of the configuration the decisions depend on."""

    hostname: str = "client"
    pin: str = ""
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


@dataclass(frozen=True)
class Known:
    """What the client knows about one server."""

    ad: ServerAd
    first_seen: float
    present_since: float | None  # None while the record is withdrawn
    gone_at: float | None = None
    announced: str | None = None  # restart, stopping or poweroff
    announced_auth: bool = False
    announced_at: float | None = None
    channel_up: bool = False
    last_heard: float | None = None  # any channel message; None: never connected
    dead: bool = False


@dataclass(frozen=True)
class State:
    phase: str = STARTING
    servers: dict[str, Known] = field(default_factory=dict)
    following: str | None = None
    applied: ServerAd | None = None  # the server the machine is set up for
    applied_address: str | None = None
    healthy: bool = True  # False after a bring-up gave up
    retry_wanted: bool = False  # a record update since the bring-up gave up
    busy: Plan | None = None
    next_plan_id: int = 1
    torn_down_at: dict[str, float] = field(default_factory=dict)
    started_at: float | None = None
    mounted_at_start: bool = False
    exiting: bool = False
    last_result: str = ""


@dataclass(frozen=True)
class _Target:
    known: Known | None
    why: str = ""
    power_off: bool = False
    unreachable: bool = False  # the server left without a word: it cannot answer an unmount


# ---------------------------------------------------------------- helpers


def choose_address(addresses: tuple[str, ...], settings: Settings) -> str:
    """The server address to use: one on this host's own subnets, IPv4 first."""
    nets = []
    for n in settings.local_networks:
        try:
            nets.append(ipaddress.ip_network(n, strict=False))
        except ValueError:
            continue
    ips = [ipaddress.ip_address(a.split("%")[0]) for a in addresses]
    order = sorted(
        range(len(ips)),
        key=lambda i: (
            not any(ips[i] in net for net in nets if net.version == ips[i].version),
            (ips[i].version == 4) == settings.prefer_ipv6,
            i,
        ),
    )
    return addresses[order[0]]


def _channel_alive(k: Known, at: float, s: Settings) -> bool:
    return k.channel_up and k.last_heard is not None and at - k.last_heard < s.dead_time


def _short(k: Known) -> str:
    return k.ad.instance


def _is_candidate(k: Known, state: State, at: float, s: Settings) -> tuple[bool, str]:
    """Whether a bring-up may start with this server now, and if not, why."""
    if k.present_since is None:
        return False, "record withdrawn"
    if k.dead:
        return False, "silent on the channel"
    if k.ad.state != STATE_UP or k.announced is not None:
        return False, f"state {k.announced or k.ad.state}"
    if s.pin and s.pin.lower() not in (k.ad.instance.lower(), k.ad.name.lower()):
        return False, f"pinned to {s.pin}"
    if s.keyed and not (k.ad.authenticated and k.channel_up):
        return False, "waiting for the authenticated channel"
    torn = state.torn_down_at.get(k.ad.name)
    if torn is not None and at - torn < s.flap_window and at - k.present_since < s.flap_settle:
        return False, f"flapping: must stay {s.flap_settle:g} s"
    return True, ""


def _target(state: State, at: float, s: Settings) -> _Target:
    if state.exiting:
        if s.teardown_on_exit:
            return _Target(None, "the client is stopping")
        return _Target(state.servers.get(state.following) if state.following else None)
    following = state.servers.get(state.following) if state.following else None
    if following is not None and (state.applied is None or not state.healthy) \
            and not _is_candidate(following, state, at, s)[0]:
        # Not set up for it (yet, or any more): it has to qualify like any other.
        following = None
    if following is not None:
        k = following
        if k.announced == STATE_POWEROFF:
            power_off = s.power_off and (k.announced_auth or not s.keyed)
            return _Target(None, f"server {_short(k)} is powering off", power_off)
        if k.announced == STATE_STOPPING:
            return _Target(None, f"server {_short(k)} is stopping")
        if k.dead:
            return _Target(
                None,
                f"server {_short(k)} silent for {s.dead_time:g} s (crashed or unplugged)",
                s.power_off and s.poweroff_on_crash,
                unreachable=True,
            )
        if k.announced == STATE_RESTART:
            since = k.announced_at if k.announced_at is not None else at
            if at - since < s.restart_grace:
                return _Target(k)
            return _Target(None, f"server {_short(k)} did not return within {s.restart_grace:g} s")
        if k.present_since is None:
            gone = k.gone_at if k.gone_at is not None else at
            if _channel_alive(k, at, s):
                return _Target(k)
            if at - gone < s.gone_hold:
                return _Target(k)
            return _Target(None, f"server {_short(k)} withdrew its record", unreachable=True)
        return _Target(k)
    candidates = [k for k in state.servers.values() if _is_candidate(k, state, at, s)[0]]
    if not candidates:
        return _Target(None)
    return _Target(min(candidates, key=lambda k: (k.first_seen, k.ad.name)))


def channel_target(state: State, s: Settings) -> Known | None:
    """The server the liveness channel should be connected to.

    The one a running plan is for; the followed one; otherwise the one that would be followed if it proved
    itself: with a key, a server becomes a candidate only once its channel is
    up, and a server declared dead comes back only through its channel.
    """
    if state.busy is not None and state.busy.server is not None and state.busy.server.name in state.servers:
        # A running plan ends by telling its server this board is up or down.
        return state.servers[state.busy.server.name]
    if state.following in state.servers:
        return state.servers[state.following]
    hopefuls = [
        k for k in state.servers.values()
        if k.present_since is not None and k.ad.state == STATE_UP and k.announced is None
        and not (s.pin and s.pin.lower() not in (k.ad.instance.lower(), k.ad.name.lower()))
        and (k.ad.authenticated or not s.keyed)
    ]
    return min(hopefuls, key=lambda k: (k.first_seen, k.ad.name)) if hopefuls else None


def next_deadline(state: State, s: Settings) -> float | None:
    """When the core wants a Tick even if nothing else happens."""
    times: list[float] = []
    if state.phase == STARTING and state.started_at is not None:
        times.append(state.started_at + s.startup_wait)
    for k in state.servers.values():
        if k.last_heard is not None and not k.dead:
            times.append(k.last_heard + s.dead_time)
        if k.present_since is None and k.gone_at is not None:
            times.append(k.gone_at + s.gone_hold)
        if k.announced == STATE_RESTART and k.announced_at is not None:
            times.append(k.announced_at + s.restart_grace)
        torn = state.torn_down_at.get(k.ad.name)
        if torn is not None and k.present_since is not None:
            times.append(min(torn + s.flap_window, k.present_since + s.flap_settle))
    return min(times) if times else None


# ---------------------------------------------------------------- plans


def hook_env(ad: ServerAd, address: str, reason: str) -> tuple[tuple[str, str], ...]:
    return (
        ("PISTOP_SERVER", ad.instance),
        ("PISTOP_HOST", ad.host),
        ("PISTOP_ADDRESS", address),
        ("PISTOP_EXPORT", ad.export),
        ("PISTOP_MPD_PORT", str(ad.mpd_port)),
        ("PISTOP_MUSIC", ad.music),
        ("PISTOP_REASON", reason),
    )


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def share_url(ad: ServerAd, address: str) -> str:
    """The export as an nfs:// URL (what a ready marker is relative to)."""
    return f"nfs://{_url_host(address)}{ad.export.rstrip('/') or '/'}"


def nfs_url(ad: ServerAd, address: str) -> str:
    """The music directory inside the export as an nfs:// URL (mpd's music_directory)."""
    path = ad.export.rstrip("/") + ("/" + ad.music if ad.music else "")
    return f"nfs://{_url_host(address)}{path or '/'}"


def ready_marker(ad: ServerAd, s: Settings) -> str:
    return s.ready_marker or ad.music


def _mount_steps(ad: ServerAd, address: str, s: Settings) -> list[Action]:
    marker = ready_marker(ad, s)
    if s.mount_mode == "mpd":
        return [WaitReady(s.mountpoint, marker, nfs_url=share_url(ad, address))]
    fill = {"address": _url_host(address), "export": ad.export, "host": ad.host.rstrip(".")}
    if s.mount_mode == "autofs":
        return [PointAutofs(s.autofs_location.format(**fill)), EnsureAutofs(), WaitReady(s.mountpoint, marker)]
    source = s.mount_source.format(**fill)
    return [
        Mount(source, s.mountpoint, s.mount_fstype, s.mount_options),
        WaitReady(s.mountpoint, marker),
    ]


def _bring_up_steps(ad: ServerAd, address: str, s: Settings) -> list[Action]:
    env = hook_env(ad, address, "bring-up")
    music_dir = nfs_url(ad, address) if s.mount_mode == "mpd" else ""
    steps: list[Action] = [RunHook("pre_mount", env)]
    steps += _mount_steps(ad, address, s)
    steps += [
        SetMpdConf(address, ad.mpd_port, music_dir),
        StartMpd(),
        RunHook("post_mount", env),
        Notify("On"),
        ReportState("up"),
    ]
    if s.backup:
        steps.append(Backup())
    return steps


def _unmount_steps(s: Settings, lazy: bool, unreachable: bool = False) -> list[Action]:
    if s.mount_mode == "mpd":
        return []
    if unreachable and s.mount_mode == "autofs":
        # Seen on a real kernel with a server that cannot answer: while its
        # share is mounted, stopping autofs hangs (automount unmounts it at
        # stop); after the detach, a look into the mount point makes automount
        # mount the dead share again, and looks waiting on automount when it
        # stops stay stuck. So autofs keeps running, with the share's entry
        # taken out of its map first: it reads the map afresh on every lookup
        # and finds nothing to mount. The bring-up puts the entry back.
        return [DisableAutofsEntry(), Unmount(s.mountpoint, lazy=lazy, unreachable=True)]
    steps: list[Action] = [Unmount(s.mountpoint, lazy=lazy, unreachable=unreachable)]
    if s.mount_mode == "autofs":
        steps.append(StopService("autofs"))
    return steps


def _tear_down_steps(ad: ServerAd | None, address: str, reason: str, power_off: bool, s: Settings,
                     unreachable: bool = False) -> list[Action]:
    env = hook_env(ad, address, reason) if ad else (("PISTOP_REASON", reason),)
    steps: list[Action] = [RunHook("pre_unmount", env)]
    lazy = power_off and s.force_umount
    if unreachable:
        # mpd may be stuck reading the share of a server that cannot answer,
        # until the server is back: it is asked to stop, not waited for, and
        # the share is detached without waiting for the server.
        steps += [StopService("mpd", wait=False), *_unmount_steps(s, lazy, unreachable=True)]
    else:
        steps += [StopService("mpd"), *_unmount_steps(s, lazy)]
    steps += [
        RunHook("post_unmount", env),
        Notify("PowerOff" if power_off else "MusicOff"),
        ReportState("down"),
    ]
    if power_off:
        steps += [Sync(), PowerOff()]
    return steps


def _retarget_steps(ad: ServerAd, address: str, s: Settings) -> list[Action]:
    env = hook_env(ad, address, "retarget")
    steps: list[Action] = []
    if s.mount_mode != "mpd":
        steps += [RunHook("pre_unmount", env), StopService("mpd")]
        # The old server may already be gone: a lazy unmount cannot hang on it.
        # autofs keeps running; its map is repointed below.
        steps += [Unmount(s.mountpoint, lazy=True)]
        steps += [RunHook("post_unmount", env)]
    steps += [RunHook("pre_mount", env)]
    steps += _mount_steps(ad, address, s)
    steps += [
        SetMpdConf(address, ad.mpd_port, nfs_url(ad, address) if s.mount_mode == "mpd" else ""),
        StartMpd(),
        RunHook("post_mount", env),
        Notify("On"),
        ReportState("up"),
    ]
    return steps


def describe(plan: Plan, address: str | None, s: Settings) -> str:
    """The one journal line that says what the client is about to do and why."""
    if plan.kind == TEAR_DOWN:
        what = []  # in the plan's order
        for a in plan.actions:
            if isinstance(a, StopService):
                what.append(f"stop {a.service}" if a.wait else f"ask {a.service} to stop")
            elif isinstance(a, Unmount):
                how = " (not waiting for the server)" if a.unreachable else " (lazy)" if a.lazy else ""
                what.append(f"unmount {a.target}{how}")
            elif isinstance(a, DisableAutofsEntry):
                what.append("take the share out of the autofs map")
        if plan.power_off:
            what.append("sync and power off")
        return f"{s.hostname}: {plan.why} -> " + ", ".join(what)
    ad = plan.server
    assert ad is not None and address is not None
    if s.mount_mode == "mpd":
        share = f"mpd reads {nfs_url(ad, address)}"
    else:
        source = next((a.source if isinstance(a, Mount) else a.location for a in plan.actions
                       if isinstance(a, (Mount, PointAutofs))), "")
        share = f"mount {source} at {s.mountpoint}"
    return f"{s.hostname}: {plan.why} -> {share}, point mpd at {_url_host(address)}:{ad.mpd_port}, start mpd"


# ---------------------------------------------------------------- step


def _observe(state: State, event: Event, s: Settings, notes: list[str]) -> State:
    """Fold one event into what the client knows; no decisions yet."""
    servers = dict(state.servers)
    at = event.at
    if isinstance(event, Started):
        return replace(state, started_at=at, mounted_at_start=event.mounted)
    if isinstance(event, ServerSeen):
        ad = event.ad
        old = servers.get(ad.name)
        announced = None if ad.state == STATE_UP else ad.state
        if old is None:
            servers[ad.name] = Known(ad, first_seen=at, present_since=at, announced=announced,
                                     announced_auth=ad.authenticated,
                                     announced_at=at if announced else None)
            addr = ", ".join(ad.addresses)
            if state.following and state.following != ad.name:
                notes.append(f"{s.hostname}: server {ad.instance} ({addr}) appeared; staying with "
                             f"{state.servers[state.following].ad.instance}")
            elif s.pin and s.pin.lower() not in (ad.instance.lower(), ad.name.lower()):
                notes.append(f"{s.hostname}: server {ad.instance} ({addr}) appeared; ignored, pinned to {s.pin}")
        else:
            # A server that comes back (or rebooted) starts afresh. While its
            # record stays present, a stop announcement sticks: a late "up"
            # update must not undo a notice that arrived over the channel.
            back = old.present_since is None or ad.boot != old.ad.boot
            announced_at = old.announced_at if announced == old.announced else at
            if announced is None and not back and old.announced in (STATE_STOPPING, STATE_POWEROFF):
                announced, announced_auth, announced_at = old.announced, old.announced_auth, old.announced_at
            else:
                announced_auth = ad.authenticated
            servers[ad.name] = replace(
                old,
                ad=ad,
                present_since=old.present_since if old.present_since is not None else at,
                gone_at=None,
                announced=announced,
                announced_auth=announced_auth,
                announced_at=announced_at if announced else None,
                dead=False if back else old.dead,
            )
        retry = state.retry_wanted or (state.applied is not None and not state.healthy
                                       and state.applied.name == ad.name)
        return replace(state, servers=servers, retry_wanted=retry)
    if isinstance(event, ServerGone):
        old = servers.get(event.name)
        if old is None or old.present_since is None:
            return state
        servers[event.name] = replace(old, present_since=None, gone_at=at)
        if state.following == event.name and old.announced is None:
            if _channel_alive(old, at, s):
                notes.append(f"{s.hostname}: server {old.ad.instance} withdrew its record but the "
                             f"channel still hears it; waiting")
        return replace(state, servers=servers)
    if isinstance(event, ServerNotice):
        old = servers.get(event.name)
        if old is None:
            return state
        if s.keyed and not event.authenticated:
            notes.append(f"{s.hostname}: ignoring unauthenticated '{event.reason}' notice from {old.ad.instance}")
            return state
        reason = event.reason if event.reason != STATE_UP else None
        servers[event.name] = replace(old, announced=reason, announced_auth=event.authenticated, last_heard=at,
                                      announced_at=(old.announced_at if reason == old.announced else at)
                                      if reason else None)
        return replace(state, servers=servers)
    if isinstance(event, (ChannelUp, Heartbeat)):
        old = servers.get(event.name)
        if old is None:
            return state
        # Heartbeats come only from an established session, so both are signs
        # of life: after a cable was out for longer than the dead time, the
        # same TCP connection may carry on without a new handshake.
        servers[event.name] = replace(old, channel_up=True, last_heard=at, dead=False)
        return replace(state, servers=servers)
    if isinstance(event, ChannelLost):
        old = servers.get(event.name)
        if old is None:
            return state
        servers[event.name] = replace(old, channel_up=False)
        return replace(state, servers=servers)
    if isinstance(event, PlanFinished):
        return _plan_finished(state, event, s, notes)
    if isinstance(event, StopRequested):
        return replace(state, exiting=True)
    return state  # Tick: only the deadlines below


def _plan_finished(state: State, event: PlanFinished, s: Settings, notes: list[str]) -> State:
    plan = state.busy
    if plan is None or plan.id != event.plan_id:
        return state
    result = f"{plan.kind} {'ok' if event.ok else 'failed'}" + (f": {event.detail}" if event.detail else "")
    state = replace(state, busy=None, last_result=result)
    if plan.kind in (BRING_UP, RETARGET):
        if event.ok:
            notes.append(f"{s.hostname}: up with {plan.server.instance}")
            return replace(state, phase=UP, healthy=True, retry_wanted=False)
        notes.append(f"{s.hostname}: gave up bringing up {plan.server.instance} ({event.detail}); "
                     f"will retry when its record changes")
        return replace(state, phase=WAITING, healthy=False, retry_wanted=False)
    # tear-down
    torn = dict(state.torn_down_at)
    if plan.server is not None:
        torn[plan.server.name] = event.at
    if plan.power_off:
        return replace(state, phase=POWERING_OFF, applied=None, applied_address=None, torn_down_at=torn)
    if not event.ok:
        notes.append(f"{s.hostname}: tear-down incomplete ({event.detail})")
    return replace(state, phase=WAITING, applied=None, applied_address=None, healthy=True, torn_down_at=torn)


def _mark_dead(state: State, at: float, s: Settings, notes: list[str]) -> State:
    servers = dict(state.servers)
    changed = False
    for name, k in state.servers.items():
        if (k.last_heard is not None and not k.dead and at - k.last_heard >= s.dead_time
                and k.announced != STATE_RESTART):
            servers[name] = replace(k, dead=True, channel_up=False)
            changed = True
            if name == state.following:
                notes.append(f"{s.hostname}: no heartbeat from {k.ad.instance} for {at - k.last_heard:.1f} s")
    return replace(state, servers=servers) if changed else state


def _new_plan(state: State, kind: str, server: ServerAd | None, actions: list[Action], why: str,
              power_off: bool = False) -> tuple[State, Plan]:
    plan = Plan(state.next_plan_id, kind, server, tuple(actions), why, power_off)
    return replace(state, busy=plan, next_plan_id=state.next_plan_id + 1), plan


def step(state: State, event: Event, s: Settings) -> tuple[State, Plan | None, list[str]]:
    """Fold `event` into `state`; return the new state, a plan to run (or None) and log lines."""
    notes: list[str] = []
    at = event.at
    state = _observe(state, event, s, notes)
    state = _mark_dead(state, at, s, notes)
    if state.phase == POWERING_OFF:
        return state, None, notes
    if state.busy is not None:
        return state, None, notes
    if state.exiting and not s.teardown_on_exit or (state.exiting and state.applied is None):
        return replace(state, phase=EXITED), None, notes

    target = _target(state, at, s)
    applied = state.applied

    if target.known is None:
        if applied is not None or (state.phase == STARTING and state.mounted_at_start
                                   and state.started_at is not None
                                   and at >= state.started_at + s.startup_wait):
            if applied is None:
                why = "share mounted at start but no server found"
                address = ""
            else:
                why = target.why or "no server to follow"
                address = state.applied_address or ""
            actions = _tear_down_steps(applied, address, why, target.power_off, s, target.unreachable)
            state, plan = _new_plan(state, TEAR_DOWN, applied, actions, why, target.power_off)
            state = replace(state, phase=TEARING_DOWN, following=None, mounted_at_start=False)
            notes.append(describe(plan, address, s))
            return state, plan, notes
        if state.following is not None:
            state = replace(state, following=None)
        if state.phase == STARTING and state.started_at is not None and at < state.started_at + s.startup_wait:
            return state, None, notes
        return replace(state, phase=WAITING, mounted_at_start=False), None, notes

    k = target.known
    ad = k.ad
    address = choose_address(ad.addresses, s)
    state = replace(state, following=ad.name)
    if applied is None or (not state.healthy and state.retry_wanted and applied.name == ad.name):
        why = f"server {ad.instance} ({address}) " + ("appeared" if applied is None else
                                                       "updated its record; retrying")
        state, plan = _new_plan(state, BRING_UP, ad, _bring_up_steps(ad, address, s), why)
        state = replace(state, phase=BRINGING_UP, applied=ad, applied_address=address, healthy=True)
        notes.append(describe(plan, address, s))
        return state, plan, notes
    if applied.name != ad.name:
        # The followed server changed under an applied set-up: tear down first.
        why = f"switching from {applied.instance} to {ad.instance}"
        actions = _tear_down_steps(applied, state.applied_address or "", why, False, s)
        state, plan = _new_plan(state, TEAR_DOWN, applied, actions, why)
        state = replace(state, phase=TEARING_DOWN)
        notes.append(describe(plan, state.applied_address, s))
        return state, plan, notes
    if not state.healthy:
        return state, None, notes  # a bring-up gave up: wait for a record update
    if k.present_since is not None and (not ad.same_share(applied) or address != state.applied_address):
        if applied.boot != ad.boot:
            why = f"server {ad.instance} rebooted ({address})"
        elif address != state.applied_address:
            why = f"server {ad.instance} moved to {address}"
        else:
            why = f"server {ad.instance} changed its share"
        state, plan = _new_plan(state, RETARGET, ad, _retarget_steps(ad, address, s), why)
        state = replace(state, phase=BRINGING_UP, applied=ad, applied_address=address)
        notes.append(describe(plan, address, s))
        return state, plan, notes
    if k.present_since is not None and state.applied != ad:
        state = replace(state, applied=ad)
    return state, None, notes
