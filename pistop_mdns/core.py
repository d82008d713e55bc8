"""What a client does when servers come and go: a pure state machine.

    state, plan, notes = step(state, event, settings)

`step` never touches the network, files or the clock. It reads top to bottom
as three parts:

1. **What the client knows of each server** (`Known`): its latest record and
   one liveness status, as NUT's upsmon keeps one status per UPS. Each status
   carries the one deadline that can move it on, so a deadline is always
   derived from the status, and `_advance` moves every status past the
   deadlines that have come, so none can lie in the past:

        Up(since, heard) ── record withdrawn ──▶ Withdrawn(at, heard)
          │   ▲                                     │ gone_hold passed and
          │   └────── record back ──────────────────┤ the channel silent
          │                                         ▼
          ├── no heartbeat for dead_time ──▶ Silent   Gone(why)
          │     (heartbeat again: Up)                 ▲
          └── stop announced ──▶ Announced(reason, authenticated, at)
                                  restart: restart_grace passed ─┘
                                  stopping, poweroff: the board leaves

   A record that comes back soon after a tear-down (within flap_window)
   must stay flap_settle before it counts (`Up.settle_until`).

2. **Which server the board should be set up for** (`_decide`): the one it
   is set up for, until that one leaves (its status says why, and whether
   to power off) or a more preferred pinned server qualifies; otherwise the
   best candidate: present, `up`, pinned if pins are set, proven over an
   authenticated channel when a key is configured, not settling.

3. **What to do about it**: when the decision differs from what the machine
   is set up for (`applied`) and no plan runs, one plan comes out (plans.py
   builds its steps). Events that arrive while a plan runs are only folded
   in; when it finishes the comparison runs again, so a burst of events
   collapses into one final decision.

Power-off happens only in a tear-down for an announced poweroff with
power_off set (with a key: an authenticated announcement), or for a silent
death with poweroff_on_crash set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pistop_mdns import plans
from pistop_mdns.model import (
    BRING_UP,
    STATE_POWEROFF,
    STATE_RESTART,
    STATE_STOPPING,
    STATE_UP,
    TEAR_DOWN,
    ChannelLost,
    ChannelUp,
    Event,
    Heartbeat,
    Plan,
    PlanFinished,
    ServerAd,
    ServerGone,
    ServerNotice,
    ServerSeen,
    Started,
    StopRequested,
    Tick,
)
from pistop_mdns.plans import Leave, Settings, choose_address

__all__ = ["Settings", "State", "Known", "step", "next_deadline", "channel_targets", "choose_address"]

# Phases a user sees in `pistop-mdns status`.
STARTING = "starting"
WAITING = "waiting"
BRINGING_UP = "bringing up"
UP = "up"
TEARING_DOWN = "tearing down"
POWERING_OFF = "powering off"
EXITED = "exited"

# A bring-up that gave up is tried again after this long, doubling up to
# RETRY_MAX (and at once when the server's record changes).
RETRY_FIRST = 30.0
RETRY_MAX = 600.0


# ---------------------------------------------------------------- liveness


@dataclass(frozen=True)
class Up:
    """Present and, as far as anyone can tell, alive."""

    since: float
    heard: float | None = None  # last sign of life on the channel; None: none since `since`
    settle_until: float | None = None  # back soon after a tear-down: no bring-up before this

    def deadline(self, s: Settings) -> float | None:
        times = [t for t in (self.settle_until, None if self.heard is None else self.heard + s.dead_time)
                 if t is not None]
        return min(times) if times else None


@dataclass(frozen=True)
class Withdrawn:
    """The record was withdrawn without a reason; held for gone_hold (longer while the channel hears it)."""

    at: float
    heard: float | None = None

    def deadline(self, s: Settings) -> float | None:
        hold = self.at + s.gone_hold
        return hold if self.heard is None else max(hold, self.heard + s.dead_time)


@dataclass(frozen=True)
class Announced:
    """The server said it stops, and why: restart, stopping or poweroff."""

    reason: str
    authenticated: bool
    at: float

    def deadline(self, s: Settings) -> float | None:
        return self.at + s.restart_grace if self.reason == STATE_RESTART else None


@dataclass(frozen=True)
class Silent:
    """No heartbeat for dead_time: crashed, hung or unplugged. Only its channel revives it."""

    since: float

    def deadline(self, s: Settings) -> float | None:
        return None


@dataclass(frozen=True)
class Gone:
    """Withdrawn and not back in time, or a restart that did not return."""

    since: float
    reason: str  # plans.REASON_GONE or plans.REASON_RESTART
    why: str

    def deadline(self, s: Settings) -> float | None:
        return None


Life = Up | Withdrawn | Announced | Silent | Gone


@dataclass(frozen=True)
class Known:
    """What the client knows about one server."""

    ad: ServerAd
    first_seen: float
    life: Life
    record: bool = True  # its record is present (withdrawn: False)
    channel: bool = False  # a channel to it is connected now
    proven: tuple[str, str] | None = None  # (boot, address) an authenticated channel proved
    channel_seen: bool = False  # it has answered on a channel: expect it there when it returns
    torn_down_at: float | None = None  # the last tear-down of a set-up for it


@dataclass(frozen=True)
class Applied:
    """The server the machine is set up for (or was being brought up for)."""

    ad: ServerAd
    address: str
    ok: bool = True  # False: the last bring-up gave up
    retry_at: float | None = None  # not ok: when to try again; None: now (when it qualifies)
    failures: int = 0


@dataclass(frozen=True)
class State:
    phase: str = STARTING
    servers: dict[str, Known] = field(default_factory=dict)
    applied: Applied | None = None
    busy: Plan | None = None
    next_plan_id: int = 1
    now: float = 0.0  # the time of the last event
    startup_until: float | None = None  # until then an absent server may still appear
    leftover: bool = False  # a share (or mpd) was in use at start, for no known server
    exiting: bool = False
    powered_off: bool = False
    last_result: str = ""

    @property
    def following(self) -> str | None:
        """The server the board is set up for, or being brought up for."""
        return self.applied.ad.name if self.applied is not None else None


# ---------------------------------------------------------------- helpers


def _pin_rank(ad: ServerAd, s: Settings) -> int | None:
    """Preference of a server among the pins (0 is best); None: not pinned."""
    if not s.pins:
        return 0
    for i, pin in enumerate(s.pins):
        if pin.lower() in (ad.instance.lower(), ad.name.lower()):
            return i
    return None


def _heard(life: Life) -> float | None:
    return life.heard if isinstance(life, (Up, Withdrawn)) else None


def _channel_alive(k: Known, at: float, s: Settings) -> bool:
    heard = _heard(k.life)
    return k.channel and heard is not None and at - heard < s.dead_time


def _address(k: Known, state: State, s: Settings) -> str:
    """The address to use for server `k` (the one in use, while it is still as good)."""
    keep = state.applied.address if state.applied is not None and state.applied.ad.name == k.ad.name else None
    return choose_address(k.ad.addresses, s, keep)


def _proven(k: Known, address: str) -> bool:
    """With a key: an authenticated channel proved this record's boot at this address."""
    return k.proven == (k.ad.boot, address)


def candidacy(k: Known, s: Settings, address: str | None = None) -> str:
    """"" when a bring-up may start with this server now, else why not."""
    if not k.record:
        return "record withdrawn"
    if isinstance(k.life, Silent):
        return "silent on the channel"
    if isinstance(k.life, Announced):
        return f"state {k.life.reason}"
    if not isinstance(k.life, Up) or k.ad.state != STATE_UP:
        return f"state {k.ad.state}"
    if _pin_rank(k.ad, s) is None:
        return f"pinned to {', '.join(s.pins)}"
    if s.keyed and not (k.ad.authenticated and k.channel
                        and _proven(k, address or choose_address(k.ad.addresses, s))):
        return "waiting for the authenticated channel"
    if k.life.settle_until is not None:
        return f"flapping: must stay {s.flap_settle:g} s"
    return ""


def _preference(k: Known, s: Settings) -> tuple:
    return (_pin_rank(k.ad, s), k.first_seen, k.ad.name)


def channel_targets(state: State, s: Settings) -> dict[str, tuple[str, int]]:
    """The servers the liveness channel should be connected to: name -> (address, port).

    The one a running plan is for (it ends by telling that server this board
    is up or down); the one the board is set up for; and the best one that
    could be followed if it proved itself (with a key a server qualifies only
    once its channel is up, and a silent server comes back only through its
    channel) when it is preferred to what the board has now.
    """
    targets: dict[str, tuple[str, int]] = {}

    def add(k: Known | None) -> None:
        if k is not None and k.ad.name not in targets:
            targets[k.ad.name] = (_address(k, state, s), k.ad.port)

    if state.busy is not None and state.busy.server is not None:
        add(state.servers.get(state.busy.server.name))
    if state.applied is not None:
        add(state.servers.get(state.applied.ad.name))
    hopefuls = [
        k for k in state.servers.values()
        if k.record and k.ad.state == STATE_UP and isinstance(k.life, (Up, Silent))
        and _pin_rank(k.ad, s) is not None and (k.ad.authenticated or not s.keyed)
    ]
    current = state.servers.get(state.applied.ad.name) if state.applied is not None else None
    if hopefuls:
        best = min(hopefuls, key=lambda k: _preference(k, s))
        if current is None or _preference(best, s) < _preference(current, s):
            add(best)
    return targets


def next_deadline(state: State, s: Settings) -> float | None:
    """When the core wants a Tick even if nothing else happens; always after `state.now`."""
    times = [k.life.deadline(s) for k in state.servers.values()]
    times.append(state.startup_until)
    if state.applied is not None and not state.applied.ok and state.busy is None:
        times.append(state.applied.retry_at)
    times = [t for t in times if t is not None]
    return min(times) if times else None


# ---------------------------------------------------------------- 1. what the client knows


def _fresh_life(ad: ServerAd, at: float, old: Known | None, s: Settings) -> Life:
    """The status of a record that (re)appears: new, back after a withdrawal, or rebooted."""
    if ad.state != STATE_UP:
        return Announced(ad.state, ad.authenticated, at)
    settle = None
    if old is not None and old.torn_down_at is not None and at - old.torn_down_at < s.flap_window:
        settle = at + s.flap_settle
    return Up(at, _expect_channel(old, at), settle)


def _expect_channel(old: Known | None, at: float) -> float | None:
    """A server that had a channel is expected back on it: the dead time counts
    from its return, not from the last heartbeat before it left."""
    return at if old is not None and old.channel_seen else None


def _seen(state: State, ad: ServerAd, at: float, s: Settings, notes: list[str]) -> State:
    servers = dict(state.servers)
    old = servers.get(ad.name)
    if old is None:
        servers[ad.name] = Known(ad, first_seen=at, life=_fresh_life(ad, at, None, s))
        addr = ", ".join(ad.addresses)
        if state.applied is not None and state.applied.ad.name != ad.name:
            notes.append(f"{s.hostname}: server {ad.instance} ({addr}) appeared; staying with "
                         f"{state.applied.ad.instance}")
        elif _pin_rank(ad, s) is None:
            notes.append(f"{s.hostname}: server {ad.instance} ({addr}) appeared; ignored, pinned to "
                         f"{', '.join(s.pins)}")
        return replace(state, servers=servers)
    back = not old.record or ad.boot != old.ad.boot
    life = old.life
    if back:
        life = _fresh_life(ad, at, old, s)
    elif ad.state != STATE_UP:
        if not (isinstance(life, Announced) and life.reason == ad.state):
            life = Announced(ad.state, ad.authenticated, at)
    elif isinstance(life, Announced) and life.reason == STATE_RESTART or isinstance(life, Gone):
        life = Up(at, _expect_channel(old, at))  # it says it is up again
    # Otherwise the status stands: a late "up" refresh of a still-present
    # record must not undo a stop notice that came over the channel, and a
    # cached record does not revive a silent server.
    servers[ad.name] = replace(old, ad=ad, record=True, life=life)
    applied = state.applied
    if applied is not None and applied.ad.name == ad.name and not applied.ok:
        applied = replace(applied, retry_at=None)  # a changed record is worth another try
    return replace(state, servers=servers, applied=applied)


def _observe(state: State, event: Event, s: Settings, notes: list[str]) -> State:
    """Fold one event into what the client knows; no decisions yet."""
    at = event.at
    if isinstance(event, Started):
        return replace(state, startup_until=at + s.startup_wait, leftover=event.mounted)
    if isinstance(event, StopRequested):
        return replace(state, exiting=True)
    if isinstance(event, PlanFinished):
        return _plan_finished(state, event, s, notes)
    if isinstance(event, Tick):
        return state  # only the deadlines, in _advance
    if isinstance(event, ServerSeen):
        if s.keyed and not event.ad.authenticated:
            notes.append(f"{s.hostname}: ignoring unauthenticated record of {event.ad.instance}")
            return state
        return _seen(state, event.ad, at, s, notes)
    k = state.servers.get(event.name)  # the remaining events are about one known server
    if k is None:
        return state
    mine = state.following == event.name
    if isinstance(event, ServerGone):
        if not k.record:
            return state
        life = k.life
        if isinstance(life, Up):
            life = Withdrawn(at, life.heard)
            if mine and _channel_alive(replace(k, life=life), at, s):
                notes.append(f"{s.hostname}: server {k.ad.instance} withdrew its record but the "
                             f"channel still hears it; waiting")
        elif isinstance(life, Silent):
            life = Gone(at, plans.REASON_GONE, f"server {k.ad.instance} withdrew its record")
        k = replace(k, record=False, life=life)
    elif isinstance(event, ServerNotice):
        if s.keyed and not event.authenticated:
            notes.append(f"{s.hostname}: ignoring unauthenticated '{event.reason}' notice from {k.ad.instance}")
            return state
        life = k.life
        if event.reason == STATE_UP:
            if isinstance(life, Announced):
                life = Up(at, at)
        elif not (isinstance(life, Announced) and life.reason == event.reason):
            life = Announced(event.reason, event.authenticated, at)
        k = replace(k, life=_heard_now(life, at))
    elif isinstance(event, (ChannelUp, Heartbeat)):
        # Heartbeats come only from an established session, so both are signs
        # of life: after a cable was out for longer than the dead time, the
        # same TCP connection may carry on without a new handshake.
        life = k.life
        if isinstance(life, Silent):
            life = Up(at, at)
            if mine or state.applied is None:
                notes.append(f"{s.hostname}: server {k.ad.instance} is heard again")
        k = replace(k, channel=True, channel_seen=True, life=_heard_now(life, at))
        if isinstance(event, ChannelUp) and s.keyed:
            k = replace(k, proven=(event.boot, event.address))
    elif isinstance(event, ChannelLost):
        k = replace(k, channel=False)
    return replace(state, servers={**state.servers, event.name: k})


def _heard_now(life: Life, at: float) -> Life:
    return replace(life, heard=at) if isinstance(life, (Up, Withdrawn)) else life


def _plan_finished(state: State, event: PlanFinished, s: Settings, notes: list[str]) -> State:
    plan = state.busy
    if plan is None or plan.id != event.plan_id:
        return state
    result = f"{plan.kind} {'ok' if event.ok else 'failed'}" + (f": {event.detail}" if event.detail else "")
    state = replace(state, busy=None, last_result=result)
    if plan.kind != TEAR_DOWN:
        assert state.applied is not None and plan.server is not None
        if event.ok:
            notes.append(f"{s.hostname}: up with {plan.server.instance}")
            return replace(state, applied=replace(state.applied, ok=True, retry_at=None, failures=0))
        failures = state.applied.failures + 1
        wait = min(RETRY_FIRST * 2 ** (failures - 1), RETRY_MAX)
        notes.append(f"{s.hostname}: gave up bringing up {plan.server.instance} ({event.detail}); "
                     f"will retry in {wait:g} s or when its record changes")
        return replace(state, applied=replace(state.applied, ok=False, retry_at=event.at + wait,
                                              failures=failures))
    servers = dict(state.servers)
    if plan.server is not None and plan.server.name in servers:
        servers[plan.server.name] = replace(servers[plan.server.name], torn_down_at=event.at)
    state = replace(state, servers=servers, applied=None)
    if plan.power_off:
        if event.ok:
            return replace(state, powered_off=True)
        notes.append(f"{s.hostname}: power-off failed ({event.detail}); this board stays on and "
                     f"keeps following the servers")
    elif not event.ok:
        notes.append(f"{s.hostname}: tear-down incomplete ({event.detail})")
    return state


def _advance(state: State, at: float, s: Settings, notes: list[str]) -> State:
    """Move every status past the deadlines that have come by `at`."""
    servers = dict(state.servers)
    for name, k in state.servers.items():
        life = k.life
        for _ in range(4):  # each pass moves a status on; none moves more than twice
            due = life.deadline(s)
            if due is None or due > at:
                break
            life = _expire(k, life, at, s, notes if name == state.following else None)
        if life is not k.life:
            servers[name] = replace(k, life=life, channel=k.channel and not isinstance(life, Silent))
    state = replace(state, servers=servers)
    if state.startup_until is not None and state.startup_until <= at:
        state = replace(state, startup_until=None)
    applied = state.applied
    if applied is not None and not applied.ok and applied.retry_at is not None and applied.retry_at <= at:
        state = replace(state, applied=replace(applied, retry_at=None))
    return state


def _expire(k: Known, life: Life, at: float, s: Settings, notes: list[str] | None) -> Life:
    """The status that follows `life` once its deadline has come."""
    name = k.ad.instance
    if isinstance(life, Up):
        if life.heard is not None and life.heard + s.dead_time <= at:
            if notes is not None:
                notes.append(f"{s.hostname}: no heartbeat from {name} for {s.dead_time:g} s")
            return Silent(life.heard + s.dead_time)
        return replace(life, settle_until=None)
    if isinstance(life, Withdrawn):
        return Gone(life.deadline(s) or life.at, plans.REASON_GONE, f"server {name} withdrew its record")
    assert isinstance(life, Announced) and life.reason == STATE_RESTART
    return Gone(life.at + s.restart_grace, plans.REASON_RESTART,
                f"server {name} did not return within {s.restart_grace:g} s")


# ---------------------------------------------------------------- 2. which server


def _leave(k: Known, s: Settings) -> Leave | None:
    """Why the board must leave the server it is set up for now, or None to stay."""
    life, name = k.life, k.ad.instance
    if isinstance(life, Announced) and life.reason == STATE_POWEROFF:
        power_off = s.power_off and (life.authenticated or not s.keyed)
        return Leave(plans.REASON_POWEROFF, f"server {name} is powering off", power_off)
    if isinstance(life, Announced) and life.reason == STATE_STOPPING:
        return Leave(plans.REASON_STOPPING, f"server {name} is stopping")
    if isinstance(life, Silent):
        return Leave(plans.REASON_SILENT, f"server {name} silent for {s.dead_time:g} s (crashed or unplugged)",
                     s.power_off and s.poweroff_on_crash, unreachable=True)
    if isinstance(life, Gone):
        # Withdrawn without a word, or a restart that never came back: with
        # no channel to it, it may be down with its disk, so nothing may wait for it.
        return Leave(life.reason, life.why, unreachable=not k.channel)
    return None


def _best(state: State, s: Settings) -> Known | None:
    candidates = [k for k in state.servers.values() if not candidacy(k, s)]
    return min(candidates, key=lambda k: _preference(k, s)) if candidates else None


# ---------------------------------------------------------------- 3. what to do


def _new_plan(state: State, plan: Plan, address: str, s: Settings, notes: list[str]) -> tuple[State, Plan]:
    notes.append(plans.describe(plan, address, s))
    return replace(state, busy=plan, next_plan_id=state.next_plan_id + 1), plan


def _decide(state: State, s: Settings, notes: list[str]) -> tuple[State, Plan | None]:
    applied = state.applied
    pid = state.next_plan_id
    if state.exiting:
        if s.teardown_on_exit and applied is not None:
            leave = Leave(plans.REASON_EXIT, "the client is stopping")
            return _new_plan(state, plans.tear_down(pid, applied.ad, applied.address, leave, s),
                             applied.address, s, notes)
        return state, None

    if applied is not None:
        k = state.servers[applied.ad.name]
        leave = _leave(k, s)
        best = _best(state, s)
        if leave is None and best is not None and best.ad.name != k.ad.name \
                and _preference(best, s)[0] < _preference(k, s)[0]:
            leave = Leave(plans.REASON_RETARGET, f"switching from {k.ad.instance} to {best.ad.instance} "
                          f"(preferred)")
        if leave is not None:
            return _new_plan(state, plans.tear_down(pid, applied.ad, applied.address, leave, s),
                             applied.address, s, notes)
        address = _address(k, state, s)
        if not k.record or candidacy(k, s, address) and not applied.ok:
            return state, None  # holding on (withdrawn, restarting), or waiting to retry
        if not applied.ok:
            if applied.retry_at is not None:
                return state, None
            why = f"server {k.ad.instance} ({address}): trying again"
            plan = plans.bring_up(pid, k.ad, address, why, s)
            state = replace(state, applied=Applied(k.ad, address, ok=True, failures=applied.failures))
            return _new_plan(state, plan, address, s, notes)
        if k.ad.boot != applied.ad.boot or address != applied.address or not _same_share(k.ad, applied.ad):
            if s.keyed and not _proven(k, address):
                return state, None  # the channel to the new address proves it first
            if k.ad.boot != applied.ad.boot:
                why = f"server {k.ad.instance} rebooted ({address})"
            elif address != applied.address:
                why = f"server {k.ad.instance} moved to {address}"
            else:
                why = f"server {k.ad.instance} changed its share"
            plan = plans.retarget(pid, k.ad, address, why, s)
            return _new_plan(replace(state, applied=Applied(k.ad, address)), plan, address, s, notes)
        if k.ad != applied.ad:
            state = replace(state, applied=replace(applied, ad=k.ad))
        return state, None

    best = _best(state, s)
    if best is not None:
        address = choose_address(best.ad.addresses, s)
        plan = plans.bring_up(pid, best.ad, address, f"server {best.ad.instance} ({address}) appeared", s)
        state = replace(state, applied=Applied(best.ad, address), leftover=False)
        return _new_plan(state, plan, address, s, notes)
    if state.leftover and state.startup_until is None:
        leave = Leave(plans.REASON_GONE, "share mounted at start but no server found")
        state = replace(state, leftover=False)
        return _new_plan(state, plans.tear_down(pid, None, "", leave, s), "", s, notes)
    return state, None


def _same_share(a: ServerAd, b: ServerAd) -> bool:
    """Whether switching between the two records needs no remount or mpd change
    (the address is compared by the caller: only the one in use matters)."""
    return (a.export, a.nfsvers, a.mpd_port, a.music) == (b.export, b.nfsvers, b.mpd_port, b.music)


def _phase(state: State) -> str:
    if state.powered_off:
        return POWERING_OFF
    if state.busy is not None:
        return TEARING_DOWN if state.busy.kind == TEAR_DOWN else BRINGING_UP
    if state.exiting:
        return EXITED
    if state.applied is not None and state.applied.ok:
        return UP
    if state.startup_until is not None and state.applied is None:
        return STARTING
    return WAITING


def step(state: State, event: Event, s: Settings) -> tuple[State, Plan | None, list[str]]:
    """Fold `event` into `state`; return the new state, a plan to run (or None) and log lines."""
    notes: list[str] = []
    at = event.at
    state = _observe(replace(state, now=max(state.now, at)), event, s, notes)
    state = _advance(state, at, s, notes)
    plan = None
    if not state.powered_off and state.busy is None:
        state, plan = _decide(state, s, notes)
    return replace(state, phase=_phase(state)), plan, notes
