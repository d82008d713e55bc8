"""The timing defects of issue 10, one test each (each failed on the core before
the liveness redesign). They use only what both cores have: Settings, State,
step, next_deadline and the events."""

from __future__ import annotations

from dataclasses import replace

from pistop_mdns import core
from pistop_mdns.model import (
    BRING_UP,
    TEAR_DOWN,
    ChannelLost,
    ChannelUp,
    Heartbeat,
    PlanFinished,
    ServerAd,
    ServerGone,
    ServerNotice,
    ServerSeen,
    Started,
    Tick,
)

S = core.Settings(hostname="kitchen", mount_mode="direct", mountpoint="/mnt/music",
                  local_networks=("198.18.0.0/24",))
NAME = "musicpi._pistop._tcp.local."


def ad(addresses=("198.18.0.11",), state="up", boot="b1") -> ServerAd:
    return ServerAd(name=NAME, instance="musicpi", host="musicpi.local.", addresses=tuple(addresses),
                    port=5555, export="/srv/music", nfsvers="4", mpd_port=6600, music="", state=state,
                    boot=boot, version="0.1.0", proto=1)


class Board:
    """Steps the core like the client's loop does: a Tick at every deadline."""

    def __init__(self, s=S):
        self.s = s
        self.state = core.State()
        self.plans = []
        self.now = 0.0
        self.feed(Started(0.0))

    def feed(self, event):
        self.now = event.at
        self.state, plan, _ = core.step(self.state, event, self.s)
        if plan is not None:
            self.plans.append(plan)
        return plan

    def finish(self, at, ok=True):
        return self.feed(PlanFinished(at, self.state.busy.id, ok, "" if ok else "it failed"))

    def run_until(self, until):
        """Let time pass as the client loop would: a Tick at each deadline, no event otherwise.
        Returns how many times the loop woke."""
        wakes = 0
        while True:
            deadline = core.next_deadline(self.state, self.s)
            if deadline is None or deadline > until:
                return wakes
            # The client waits max(0, deadline - now) + 0.01 s: a deadline in the
            # past is a wake-up every 10 ms.
            self.feed(Tick(max(deadline, self.now) + 0.01))
            wakes += 1
            if wakes > 1000:
                return wakes


def test_a_stopped_server_does_not_wake_the_board_every_10_ms():
    b = Board()
    b.feed(ServerSeen(1.0, ad()))
    b.finish(2.0)
    b.feed(ServerGone(10.0, NAME))
    assert b.run_until(60.0) <= 5  # the tear-down, then nothing
    b.finish(b.now)
    assert b.state.phase == core.WAITING
    assert b.run_until(600.0) <= 3


def test_fifty_flaps_leave_no_deadline_in_the_past():
    b = Board()
    t = 1.0
    for _ in range(50):
        b.feed(ServerSeen(t, ad()))
        b.run_until(t + 1)
        if b.state.busy is not None:
            b.finish(t + 1)
        b.feed(ServerGone(t + 2, NAME))
        b.run_until(t + 20)
        if b.state.busy is not None:
            b.finish(t + 20)
        t += 30
    deadline = core.next_deadline(b.state, b.s)
    assert deadline is None or deadline > b.now
    assert b.run_until(t + 3600) <= 5


def test_a_restart_longer_than_the_dead_time_is_not_taken_for_a_crash():
    b = Board(replace(S, power_off=True, poweroff_on_crash=True))
    b.feed(ServerSeen(1.0, ad()))
    b.feed(ChannelUp(1.5, NAME))
    b.finish(2.0)
    for t in range(3, 11):
        b.feed(Heartbeat(float(t), NAME))
    b.feed(ServerNotice(10.2, NAME, "restart"))
    b.feed(ChannelLost(10.3, NAME))
    b.feed(ServerGone(10.4, NAME))
    assert b.run_until(35.0) == 0 or not b.plans[1:]
    b.feed(ServerSeen(35.0, ad()))  # back 25 s later; its channel a few seconds after
    b.run_until(38.0)
    b.feed(ChannelUp(38.0, NAME))
    b.feed(Heartbeat(40.0, NAME))
    assert [p.kind for p in b.plans] == [BRING_UP]
    assert b.state.phase == core.UP


def test_a_board_whose_bring_up_gave_up_still_powers_off_with_its_server():
    b = Board(replace(S, power_off=True))
    b.feed(ServerSeen(1.0, ad()))
    b.finish(2.0, ok=False)
    plan = b.feed(ServerSeen(5.0, ad(state="poweroff")))
    assert plan is not None and plan.kind == TEAR_DOWN and plan.power_off


def test_a_new_address_beside_the_one_in_use_does_not_interrupt_the_music():
    b = Board()
    b.feed(ServerSeen(1.0, ad()))
    b.finish(2.0)
    assert b.feed(ServerSeen(5.0, ad(addresses=("198.18.0.11", "198.18.0.50")))) is None
    assert b.feed(ServerSeen(6.0, ad(addresses=("198.18.0.11", "fd00::11")))) is None
    # one that sorts first, on the same subnet, is not better than the one in use either
    assert b.feed(ServerSeen(7.0, ad(addresses=("198.18.0.10", "198.18.0.11")))) is None
    assert len(b.plans) == 1


def test_without_a_key_a_board_that_gave_up_tries_again_by_itself():
    b = Board()
    b.feed(ServerSeen(1.0, ad()))
    b.finish(2.0, ok=False)
    b.run_until(3600.0)
    assert [p.kind for p in b.plans][:2] == [BRING_UP, BRING_UP]


def test_a_failed_power_off_does_not_leave_the_board_powering_off():
    b = Board(replace(S, power_off=True))
    b.feed(ServerSeen(1.0, ad()))
    b.finish(2.0)
    b.feed(ServerSeen(5.0, ad(state="poweroff")))
    b.finish(6.0, ok=False)
    assert b.state.phase == core.WAITING
    # and it follows the server again when it comes back
    b.feed(ServerGone(7.0, NAME))
    b.feed(ServerSeen(200.0, ad(boot="b2")))
    assert b.plans[-1].kind == BRING_UP
