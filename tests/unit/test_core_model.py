"""A model check of the client's core: hypothesis drives `core.step` with any
interleaving of records appearing, changing and leaving, channels coming and
going, heartbeats, notices, plans finishing (well or not) and time passing,
and checks the core's promises after every step.

`bench/model_check.py` runs the same machine with many more examples.
"""

from __future__ import annotations

import os
from dataclasses import replace

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pistop_mdns import core
from pistop_mdns.model import (
    BRING_UP,
    RETARGET,
    TEAR_DOWN,
    ChannelLost,
    ChannelUp,
    Heartbeat,
    PlanFinished,
    PowerOff,
    ReportState,
    ServerAd,
    ServerGone,
    ServerNotice,
    ServerSeen,
    Started,
    StopService,
    Sync,
    Tick,
    Unmount,
    WaitReady,
)

NAMES = ("musicpi", "attic")
ADDRESSES = ("198.18.0.11", "198.18.0.21")
BOOTS = ("b1", "b2")
BASE = core.Settings(hostname="kitchen", mountpoint="/mnt/music", local_networks=("198.18.0.0/24",),
                     restart_grace=40.0)


def full(name: str) -> str:
    return f"{name}._pistop._tcp.local."


def record(name, state="up", boot="b1", addresses=("198.18.0.11",), authenticated=True) -> ServerAd:
    return ServerAd(name=full(name), instance=name, host=f"{name}.local.", addresses=tuple(addresses),
                    port=5555, export="/srv/music", nfsvers="4", mpd_port=6600, music="", state=state,
                    boot=boot, version="0.1.0", proto=1, authenticated=authenticated)


class ClientCore(RuleBasedStateMachine):
    """One board's core; `self.plans` is everything it handed out."""

    @initialize(keyed=st.booleans(), power_off=st.booleans(), on_crash=st.booleans(),
                pins=st.sampled_from([(), ("musicpi",), ("musicpi", "attic")]),
                mode=st.sampled_from(["autofs", "direct", "mpd"]), mounted=st.booleans())
    def start(self, keyed, power_off, on_crash, pins, mode, mounted):
        self.s = replace(BASE, keyed=keyed, power_off=power_off, poweroff_on_crash=on_crash, pins=pins,
                         mount_mode=mode)
        self.state = core.State()
        self.now = 0.0
        self.plans = []
        self.feed(Started(0.0, mounted))

    # ------------------------------------------------------------ driving

    def feed(self, event):
        busy_before = self.state.busy
        self.state, plan, notes = core.step(self.state, event, self.s)
        assert all(isinstance(n, str) and n and "\n" not in n for n in notes)
        if plan is not None:
            # at most one plan runs: a new one only when none ran or this event ended it
            assert busy_before is None or (isinstance(event, PlanFinished) and event.plan_id == busy_before.id)
            assert self.state.busy == plan
            self.check_plan(plan)
            self.plans.append(plan)
        return plan

    def wait(self, seconds: float) -> None:
        """Let time pass as the client's loop does: a Tick at every deadline on the way."""
        until = self.now + seconds
        for _ in range(100):
            deadline = core.next_deadline(self.state, self.s)
            if deadline is None or deadline > until:
                break
            self.now = deadline
            self.feed(Tick(deadline))
        self.now = until
        self.feed(Tick(until))

    def later(self, dt=0.01) -> float:
        self.now += dt
        return self.now

    # ------------------------------------------------------------ the LAN

    @rule(name=st.sampled_from(NAMES), state=st.sampled_from(["up", "up", "up", "restart", "stopping", "poweroff"]),
          boot=st.sampled_from(BOOTS), addresses=st.sampled_from([ADDRESSES[:1], ADDRESSES[1:], ADDRESSES]),
          authenticated=st.booleans(), dt=st.sampled_from([0.01, 0.5, 3.0]))
    def record_seen(self, name, state, boot, addresses, authenticated, dt):
        self.feed(ServerSeen(self.later(dt), record(name, state, boot, addresses, authenticated)))

    @rule(name=st.sampled_from(NAMES), dt=st.sampled_from([0.01, 0.5, 3.0]))
    def record_withdrawn(self, name, dt):
        self.feed(ServerGone(self.later(dt), full(name)))

    @rule(name=st.sampled_from(NAMES), address=st.sampled_from(ADDRESSES), boot=st.sampled_from(BOOTS))
    def channel_up(self, name, address, boot):
        self.feed(ChannelUp(self.later(), full(name), address, boot))

    @rule(name=st.sampled_from(NAMES), dt=st.sampled_from([0.01, 2.0, 9.0]))
    def heartbeat(self, name, dt):
        self.feed(Heartbeat(self.later(dt), full(name)))

    @rule(name=st.sampled_from(NAMES))
    def channel_lost(self, name):
        self.feed(ChannelLost(self.later(), full(name)))

    @rule(name=st.sampled_from(NAMES), reason=st.sampled_from(["up", "restart", "stopping", "poweroff"]),
          authenticated=st.booleans())
    def notice(self, name, reason, authenticated):
        self.feed(ServerNotice(self.later(), full(name), reason, authenticated))

    @precondition(lambda self: self.state.busy is not None)
    @rule(ok=st.booleans(), dt=st.sampled_from([0.01, 1.0, 20.0]))
    def plan_finished(self, ok, dt):
        self.feed(PlanFinished(self.later(dt), self.state.busy.id, ok))

    @rule(seconds=st.sampled_from([0.5, 2.9, 5.0, 10.0, 45.0, 700.0]))
    def time_passes(self, seconds):
        self.wait(seconds)

    # ------------------------------------------------------------ scenarios with a promise

    def _set_up_and_idle(self, name: str) -> bool:
        k = self.state.servers.get(full(name))
        return (self.state.busy is None and self.state.applied is not None and self.state.applied.ok
                and self.state.following == full(name) and k is not None and isinstance(k.life, core.Up)
                and k.channel and not self.state.powered_off)

    @precondition(lambda self: any(self._set_up_and_idle(n) for n in NAMES))
    @rule(away=st.sampled_from([1.0, 9.0, 11.0, 25.0, 39.0]), channel_after=st.sampled_from([0.1, 4.0, 8.0]))
    def restart_within_grace(self, away, channel_after):
        """A restart announced and completed within restart_grace never tears down."""
        name = next(n for n in NAMES if self._set_up_and_idle(n))
        k = self.state.servers[full(name)]
        before = len(self.plans)
        self.feed(ServerNotice(self.later(), full(name), "restart", True))
        self.feed(ChannelLost(self.later(), full(name)))
        self.feed(ServerGone(self.later(), full(name)))
        self.wait(away)
        self.feed(ServerSeen(self.later(), replace(k.ad, state="up")))
        self.wait(channel_after)
        self.feed(ChannelUp(self.later(), full(name), self.state.applied.address, k.ad.boot))
        self.feed(Heartbeat(self.later(1.0), full(name)))
        leaving = [p for p in self.plans[before:] if p.kind == TEAR_DOWN and p.server is not None
                   and p.server.name == full(name) and not p.why.startswith("switching")]
        assert not leaving, leaving[0].why

    @precondition(lambda self: self.s.power_off and self.state.applied is not None
                  and not self.state.powered_off and not (self.state.busy and self.state.busy.kind == TEAR_DOWN))
    @rule(ok=st.booleans())
    def authenticated_poweroff(self, ok):
        """An authenticated poweroff with power_off set always ends in a power-off plan,
        whether the bring-up worked, failed, or is still running."""
        name = self.state.applied.ad.name
        plan = self.feed(ServerNotice(self.later(), name, "poweroff", True))
        if plan is None and self.state.busy is not None:
            plan = self.feed(PlanFinished(self.later(), self.state.busy.id, ok))
        assert plan is not None and plan.kind == TEAR_DOWN and plan.power_off, plan

    # ------------------------------------------------------------ promises

    def check_plan(self, plan) -> None:
        s = self.s
        if s.pins and plan.kind in (BRING_UP, RETARGET):
            assert plan.server.instance in s.pins
        if s.keyed and plan.kind in (BRING_UP, RETARGET):
            k = self.state.servers[plan.server.name]
            assert plan.server.authenticated and k.channel
            assert k.proven == (plan.server.boot, self.state.applied.address)
        if plan.power_off:
            assert s.power_off and plan.kind == TEAR_DOWN
            life = self.state.servers[plan.server.name].life
            by_word = isinstance(life, core.Announced) and life.reason == "poweroff"
            by_silence = isinstance(life, core.Silent) and s.poweroff_on_crash
            assert by_word or by_silence
            if s.keyed and by_word:
                assert life.authenticated  # nothing powers off on an unauthenticated word
            assert isinstance(plan.actions[-1], PowerOff) and isinstance(plan.actions[-2], Sync)
            assert ReportState("off") in plan.actions and ReportState("down") not in plan.actions
        names = [type(a) for a in plan.actions]
        if Unmount in names:  # mpd stops (its state saved) before the share goes
            assert StopService in names[:names.index(Unmount)]
        if WaitReady in names:
            assert names.index(WaitReady) < len(names) - 1

    @precondition(lambda self: not self.state.powered_off)
    @rule()
    def quiet_lan_converges(self):
        """Once plans finish well and time passes with no news, the machine is set up for a
        server the rules pick, or for none when none qualifies."""
        for _ in range(10):
            if self.state.busy is not None:
                self.feed(PlanFinished(self.later(), self.state.busy.id, True))
            else:
                self.wait(800.0)
        if self.state.powered_off:
            return
        assert self.state.busy is None
        qualified = {n for n, k in self.state.servers.items() if not core.candidacy(k, self.s)}
        if self.state.applied is None:
            assert not qualified
        else:
            assert self.state.applied.ok or not qualified

    @invariant()
    def no_deadline_in_the_past(self):
        if hasattr(self, "state"):
            deadline = core.next_deadline(self.state, self.s)
            assert deadline is None or deadline > self.state.now, (deadline, self.state.now)

    def teardown(self):
        """Every server leaves; once every deadline has passed the board is down and idle."""
        if not hasattr(self, "state"):
            return
        for name in NAMES:
            self.feed(ServerGone(self.later(), full(name)))
            self.feed(ChannelLost(self.later(), full(name)))
        for _ in range(20):
            if self.state.busy is not None:
                self.feed(PlanFinished(self.later(), self.state.busy.id, True))
            else:
                self.wait(800.0)
        assert self.state.busy is None
        assert self.state.applied is None and not self.state.leftover
        assert core.next_deadline(self.state, self.s) is None
        assert self.state.phase in (core.WAITING, core.POWERING_OFF)


EXAMPLES = int(os.environ.get("PISTOP_MODEL_EXAMPLES", "200"))
ClientCore.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=40, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
test_client_core_model = ClientCore.TestCase
