"""The client's decisions, as plain Python: events in, plans out. No network."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from pistop_mdns import core, plans
from pistop_mdns.model import (
    BRING_UP,
    RETARGET,
    TEAR_DOWN,
    ChannelLost,
    ChannelUp,
    DisableAutofsEntry,
    EnsureAutofs,
    Heartbeat,
    Mount,
    Notify,
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
    Tick,
    Unmount,
    WaitReady,
)

UP_WHY = "server musicpi (198.18.0.11) appeared"
S = core.Settings(hostname="kitchen", mount_mode="direct", mountpoint="/mnt/music",
                  local_networks=("198.18.0.0/24",))


def ad(instance="musicpi", addr=("198.18.0.11",), state="up", boot="b1", export="/srv/music",
       mpd_port=6600, authenticated=False, music="") -> ServerAd:
    return ServerAd(
        name=f"{instance}._pistop._tcp.local.", instance=instance, host=f"{instance}.local.",
        addresses=tuple(addr), port=5555, export=export, nfsvers="4", mpd_port=mpd_port, music=music,
        state=state, boot=boot, version="0.1.0", proto=1, authenticated=authenticated,
    )


class Driver:
    """Feeds events into core.step and keeps what came out."""

    def __init__(self, settings: core.Settings = S, mounted: bool = False):
        self.s = settings
        self.state = core.State()
        self.plans = []
        self.notes = []
        self.feed(Started(0.0, mounted))

    def feed(self, event):
        busy_before = self.state.busy
        self.state, plan, notes = core.step(self.state, event, self.s)
        self.notes += notes
        if plan is not None:
            assert busy_before is None or (isinstance(event, PlanFinished) and event.plan_id == busy_before.id), \
                "a plan was handed out while another ran"
            self.plans.append(plan)
        return plan

    def finish(self, at: float, ok: bool = True, detail: str = ""):
        assert self.state.busy is not None
        return self.feed(PlanFinished(at, self.state.busy.id, ok, detail))


def kinds(plan):
    return [type(a) for a in plan.actions]


# ---------------------------------------------------------------- bring-up


def test_server_appears_then_bring_up_plan_in_pistop_order():
    d = Driver()
    plan = d.feed(ServerSeen(1.0, ad()))
    assert plan.kind == BRING_UP
    assert plan.actions == (
        RunHook("pre_mount", plans.hook_env(ad(), "198.18.0.11", "bring-up", UP_WHY)),
        Mount("198.18.0.11:/srv/music", "/mnt/music", "nfs4", "soft,timeo=5,retry=1"),
        WaitReady("/mnt/music", ""),
        SetMpdConf("198.18.0.11", 6600, ""),
        StartMpd(),
        RunHook("post_mount", plans.hook_env(ad(), "198.18.0.11", "bring-up", UP_WHY)),
        Notify("On"),
        ReportState("up"),
    )
    assert d.state.phase == core.BRINGING_UP
    assert d.notes[-1] == ("kitchen: server musicpi (198.18.0.11) appeared -> mount 198.18.0.11:/srv/music "
                           "at /mnt/music, point mpd at 198.18.0.11:6600, start mpd")
    d.finish(2.0)
    assert d.state.phase == core.UP and d.state.applied.ad == ad()


def test_autofs_mode_points_the_map_and_mpd_mode_rewrites_music_directory():
    plan = Driver(replace(S, mount_mode="autofs")).feed(ServerSeen(1.0, ad(music="Music")))
    assert plan.actions[1:4] == (PointAutofs("198.18.0.11:/srv/music"), EnsureAutofs(),
                                 WaitReady("/mnt/music", "Music"))
    plan = Driver(replace(S, mount_mode="mpd", mountpoint="")).feed(ServerSeen(1.0, ad(music="Music")))
    assert WaitReady("", "Music", nfs_url="nfs://198.18.0.11/srv/music") in plan.actions
    assert SetMpdConf("198.18.0.11", 6600, "nfs://198.18.0.11/srv/music/Music") in plan.actions
    assert not any(isinstance(a, (Mount, PointAutofs)) for a in plan.actions)


def test_mount_source_template_and_ready_marker_come_from_settings():
    s = replace(S, mount_source="{export}", mount_fstype="none", mount_options="bind,ro",
                ready_marker="data/stats.db")
    plan = Driver(s).feed(ServerSeen(1.0, ad()))
    assert Mount("/srv/music", "/mnt/music", "none", "bind,ro") in plan.actions
    assert WaitReady("/mnt/music", "data/stats.db") in plan.actions


def test_address_on_own_subnet_preferred_ipv4_first():
    s = replace(S, local_networks=("10.0.0.0/8",))
    assert core.choose_address(("198.18.0.11", "10.1.2.3"), s) == "10.1.2.3"
    assert core.choose_address(("fd00::1", "198.18.0.11"), S) == "198.18.0.11"
    assert core.choose_address(("fd00::1", "192.0.2.1"), replace(S, local_networks=("fd00::/64",))) == "fd00::1"
    assert core.choose_address(("fd00::1", "192.0.2.1"), replace(S, local_networks=())) == "192.0.2.1"


def test_ipv6_address_is_bracketed_in_mount_source_and_url():
    s = replace(S, local_networks=("fd00::/64",))
    plan = Driver(s).feed(ServerSeen(1.0, ad(addr=("fd00::11",))))
    assert Mount("[fd00::11]:/srv/music", "/mnt/music", "nfs4", "soft,timeo=5,retry=1") in plan.actions
    assert SetMpdConf("fd00::11", 6600, "") in plan.actions


def test_second_server_is_logged_not_followed():
    d = Driver()
    d.feed(ServerSeen(1.0, ad()))
    d.finish(2.0)
    assert d.feed(ServerSeen(3.0, ad("other", addr=("198.18.0.13",)))) is None
    assert "kitchen: server other (198.18.0.13) appeared; staying with musicpi" in d.notes
    assert d.state.following == "musicpi._pistop._tcp.local."


def test_first_seen_is_kept_until_it_leaves_then_the_other_is_taken():
    d = Driver()
    d.feed(ServerSeen(1.0, ad()))
    d.finish(2.0)
    d.feed(ServerSeen(3.0, ad("other", addr=("198.18.0.13",))))
    plan = d.feed(ServerSeen(4.0, ad(state="stopping")))
    assert plan.kind == TEAR_DOWN
    plan = d.finish(5.0)
    assert plan.kind == BRING_UP and plan.server.instance == "other"


def test_pinned_server_only():
    d = Driver(replace(S, pins=("musicpi",)))
    assert d.feed(ServerSeen(1.0, ad("other"))) is None
    assert any("ignored, pinned to musicpi" in n for n in d.notes)
    plan = d.feed(ServerSeen(2.0, ad("musicpi")))
    assert plan.server.instance == "musicpi"


def test_pin_is_case_insensitive_and_accepts_full_name():
    assert Driver(replace(S, pins=("MusicPi",))).feed(ServerSeen(1.0, ad())) is not None
    assert Driver(replace(S, pins=("musicpi._pistop._tcp.local.",))).feed(ServerSeen(1.0, ad())) is not None


def test_server_not_up_is_not_a_candidate():
    for state in ("restart", "stopping", "poweroff"):
        assert Driver().feed(ServerSeen(1.0, ad(state=state))) is None


# ---------------------------------------------------------------- tear-down


def up(settings=S, **kw) -> Driver:
    d = Driver(settings)
    d.feed(ServerSeen(1.0, ad(**kw)))
    d.finish(2.0)
    return d


def test_announced_stopping_tears_down_in_pistop_order_without_power_off():
    d = up(replace(S, power_off=True))
    plan = d.feed(ServerSeen(10.0, ad(state="stopping")))
    env = plans.hook_env(ad(state="stopping"), "198.18.0.11", "stopping", "server musicpi is stopping")
    assert plan.kind == TEAR_DOWN and not plan.power_off
    assert plan.actions == (
        RunHook("pre_unmount", env),
        StopService("mpd"),
        Unmount("/mnt/music", lazy=False),
        RunHook("post_unmount", env),
        Notify("MusicOff"),
        ReportState("down"),
    )
    assert d.notes[-1] == "kitchen: server musicpi is stopping -> stop mpd, unmount /mnt/music"


def test_announced_poweroff_powers_off_only_when_configured():
    assert not up().feed(ServerSeen(10.0, ad(state="poweroff"))).power_off
    plan = up(replace(S, power_off=True)).feed(ServerSeen(10.0, ad(state="poweroff")))
    assert plan.power_off
    assert plan.actions[-3:] == (ReportState("off"), Sync(), PowerOff())
    assert Notify("PowerOff") in plan.actions
    assert Unmount("/mnt/music", lazy=False) in plan.actions


def test_force_umount_makes_the_power_off_unmount_lazy():
    plan = up(replace(S, power_off=True, force_umount=True)).feed(ServerSeen(10.0, ad(state="poweroff")))
    assert Unmount("/mnt/music", lazy=True) in plan.actions
    plan = up(replace(S, force_umount=True)).feed(ServerSeen(10.0, ad(state="poweroff")))
    assert Unmount("/mnt/music", lazy=False) in plan.actions


def test_autofs_teardown_stops_autofs_after_unmount():
    plan = up(replace(S, mount_mode="autofs")).feed(ServerSeen(10.0, ad(state="stopping")))
    assert kinds(plan)[1:4] == [StopService, Unmount, StopService]
    assert plan.actions[3] == StopService("autofs")


def test_mpd_mode_teardown_has_no_unmount():
    plan = up(replace(S, mount_mode="mpd")).feed(ServerSeen(10.0, ad(state="stopping")))
    assert not any(isinstance(a, Unmount) for a in plan.actions)
    assert StopService("mpd") in plan.actions


def test_bare_withdrawal_waits_gone_hold_then_tears_down():
    d = up()
    assert d.feed(ServerGone(10.0, ad().name)) is None
    assert core.next_deadline(d.state, S) == pytest.approx(10.0 + S.gone_hold)
    assert d.feed(Tick(10.0 + S.gone_hold - 0.1)) is None
    plan = d.feed(Tick(10.0 + S.gone_hold))
    assert plan.kind == TEAR_DOWN and not plan.power_off
    assert plan.why == "server musicpi withdrew its record"


def silent(settings) -> "Driver":
    """A server that was up, heard once over the channel, then nothing (a pulled cable)."""
    d = up(settings)
    d.feed(ChannelUp(3.0, ad().name))
    d.feed(Heartbeat(5.0, ad().name))
    return d


def test_a_silent_servers_share_goes_in_the_order_a_real_kernel_needs():
    # Seen on real Debian 12 machines (tests/system): mpd may be stuck reading a dead
    # server's share; a stop of autofs hangs while the share is mounted, and looks that
    # wait on automount when it stops stay stuck. autofs keeps running without the entry.
    d = silent(replace(S, mount_mode="autofs"))
    plan = d.feed(Tick(15.0))
    why = "server musicpi silent for 10 s (crashed or unplugged)"
    env = plans.hook_env(ad(), "198.18.0.11", "silent", why)
    assert plan.actions == (
        RunHook("pre_unmount", env),
        StopService("mpd", wait=False),
        DisableAutofsEntry(),
        Unmount("/mnt/music", unreachable=True),
        RunHook("post_unmount", env),
        Notify("MusicOff"),
        ReportState("down"),
    )
    assert d.notes[-1] == (f"kitchen: {why} -> ask mpd to stop, take the share out of the autofs map, "
                           "unmount /mnt/music (not waiting for the server)")


def test_a_record_withdrawn_without_a_reason_counts_as_unreachable_too():
    d = up()
    d.feed(ServerGone(10.0, ad().name))
    plan = d.feed(Tick(10.0 + S.gone_hold))
    assert plan.actions[1:3] == (StopService("mpd", wait=False), Unmount("/mnt/music", unreachable=True))
    assert kinds(plan)[3:] == [RunHook, Notify, ReportState]


def test_a_crash_with_poweroff_on_crash_still_unmounts_without_waiting():
    d = silent(replace(S, power_off=True, poweroff_on_crash=True, force_umount=True))
    plan = d.feed(Tick(15.0))
    assert plan.power_off
    assert Unmount("/mnt/music", lazy=True, unreachable=True) in plan.actions
    assert plan.actions[-3:] == (ReportState("off"), Sync(), PowerOff())


def test_an_announced_stop_is_not_unreachable():
    for state in ("stopping", "poweroff"):
        plan = up().feed(ServerSeen(10.0, ad(state=state)))
        assert not any(isinstance(a, Unmount) and a.unreachable for a in plan.actions)
        assert StopService("mpd") in plan.actions


def test_mpd_mode_unreachable_tear_down_only_asks_mpd_to_stop():
    plan = silent(replace(S, mount_mode="mpd", mountpoint="")).feed(Tick(15.0))
    assert [a for a in plan.actions if isinstance(a, (Unmount, StopService))] == [StopService("mpd", wait=False)]


def test_flap_within_gone_hold_does_nothing():
    d = up()
    d.feed(ServerGone(10.0, ad().name))
    assert d.feed(ServerSeen(11.0, ad())) is None
    assert d.feed(Tick(20.0)) is None
    assert len(d.plans) == 1 and d.state.phase == core.UP


def test_server_back_soon_after_teardown_must_settle_before_bring_up():
    d = up()
    d.feed(ServerGone(10.0, ad().name))
    d.feed(Tick(13.0))
    d.finish(14.0)
    assert d.feed(ServerSeen(15.0, ad())) is None  # flapping: must stay flap_settle
    assert d.feed(Tick(19.9)) is None
    plan = d.feed(Tick(20.0))
    assert plan.kind == BRING_UP


def test_server_back_long_after_teardown_comes_up_at_once():
    d = up()
    d.feed(ServerGone(10.0, ad().name))
    d.feed(Tick(13.0))
    d.finish(14.0)
    assert d.feed(ServerSeen(14.0 + S.flap_window + 1, ad())).kind == BRING_UP


def test_restart_keeps_the_share_for_the_grace_time():
    d = up()
    d.feed(ServerSeen(10.0, ad(state="restart")))
    assert d.feed(ServerGone(10.5, ad().name)) is None
    assert d.feed(Tick(10.5 + S.gone_hold + 1)) is None
    assert d.feed(ServerSeen(20.0, ad())) is None  # back, same boot, same address: nothing to do
    assert d.state.phase == core.UP and len(d.plans) == 1


def test_restart_that_never_returns_is_torn_down_after_grace():
    d = up()
    d.feed(ServerNotice(10.0, ad().name, "restart"))
    d.feed(ServerGone(10.5, ad().name))
    assert d.feed(Tick(10.0 + S.restart_grace - 1)) is None
    plan = d.feed(Tick(10.0 + S.restart_grace))
    assert plan.kind == TEAR_DOWN and "did not return" in plan.why


def test_restart_announced_but_never_gone_is_torn_down_after_grace():
    d = up()
    d.feed(ServerSeen(10.0, ad(state="restart"), added=False))
    assert d.feed(Tick(10.0 + S.restart_grace - 1)) is None
    assert d.feed(Tick(10.0 + S.restart_grace)).kind == TEAR_DOWN


def test_restart_record_back_to_up_clears_the_restart():
    d = up()
    d.feed(ServerSeen(10.0, ad(state="restart"), added=False))
    d.feed(ServerSeen(11.0, ad(), added=False))
    assert d.feed(Tick(10.0 + S.restart_grace + 1)) is None
    assert d.state.phase == core.UP


def test_restart_back_with_new_address_retargets():
    d = up()
    d.feed(ServerSeen(10.0, ad(state="restart")))
    d.feed(ServerGone(10.5, ad().name))
    plan = d.feed(ServerSeen(12.0, ad(addr=("198.18.0.21",))))
    assert plan.kind == RETARGET
    assert plan.why == "server musicpi moved to 198.18.0.21"
    assert Unmount("/mnt/music", lazy=True) in plan.actions
    assert Mount("198.18.0.21:/srv/music", "/mnt/music", "nfs4", "soft,timeo=5,retry=1") in plan.actions
    assert not any(isinstance(a, PowerOff) for a in plan.actions)


def test_rebooted_server_is_remounted():
    d = up()
    d.feed(ServerGone(10.0, ad().name))
    plan = d.feed(ServerSeen(11.0, ad(boot="b2")))
    assert plan.kind == RETARGET and "rebooted" in plan.why


def test_address_change_while_up_is_followed():
    d = up()
    plan = d.feed(ServerSeen(10.0, ad(addr=("198.18.0.99",)), added=False))
    assert plan.kind == RETARGET
    d.finish(11.0)
    assert d.state.applied.address == "198.18.0.99"


def test_mpd_port_change_rewrites_mpd_conf_without_unmount_in_mpd_mode():
    d = up(replace(S, mount_mode="mpd", mountpoint=""))
    plan = d.feed(ServerSeen(10.0, ad(mpd_port=6601), added=False))
    assert plan.kind == RETARGET
    assert not any(isinstance(a, Unmount) for a in plan.actions)
    assert SetMpdConf("198.18.0.11", 6601, "nfs://198.18.0.11/srv/music") in plan.actions


def test_version_only_update_changes_nothing():
    d = up()
    assert d.feed(ServerSeen(10.0, replace(ad(), version="0.2.0"), added=False)) is None
    assert d.state.applied.ad.version == "0.2.0"


# ---------------------------------------------------------------- liveness


def test_channel_silence_for_dead_time_tears_down_without_power_off():
    d = up(replace(S, power_off=True))
    d.feed(ChannelUp(3.0, ad().name))
    d.feed(Heartbeat(5.0, ad().name))
    assert core.next_deadline(d.state, d.s) == pytest.approx(15.0)
    assert d.feed(Tick(14.9)) is None
    plan = d.feed(Tick(15.0))
    assert plan.kind == TEAR_DOWN and not plan.power_off
    assert "silent for 10 s" in plan.why
    assert "kitchen: no heartbeat from musicpi for 10 s" in d.notes


def test_crash_powers_off_only_with_poweroff_on_crash():
    d = up(replace(S, power_off=True, poweroff_on_crash=True))
    d.feed(ChannelUp(3.0, ad().name))
    assert d.feed(Tick(13.0)).power_off


def test_lost_channel_alone_is_not_a_tear_down():
    d = up()
    d.feed(ChannelUp(3.0, ad().name))
    d.feed(ChannelLost(4.0, ad().name))
    assert d.feed(Tick(12.9)) is None
    d.feed(ChannelUp(12.95, ad().name))  # reconnected within the dead time
    assert d.feed(Tick(22.9)) is None


def test_withdrawal_while_channel_hears_the_server_is_ignored():
    d = up()
    d.feed(ChannelUp(3.0, ad().name))
    d.feed(Heartbeat(9.5, ad().name))
    assert d.feed(ServerGone(10.0, ad().name)) is None
    assert any("channel still hears it" in n for n in d.notes)
    d.feed(Heartbeat(12.0, ad().name))
    assert d.feed(Tick(14.0)) is None  # past gone_hold, but alive
    plan = d.feed(Tick(22.0))  # heartbeats stopped at 12: dead at 22
    assert plan.kind == TEAR_DOWN


def test_dead_server_comes_back_on_reconnect():
    d = up()
    d.feed(ChannelUp(3.0, ad().name))
    d.feed(Tick(13.0))
    d.finish(14.0)
    assert d.state.applied is None
    plan = d.feed(ChannelUp(80.0, ad().name))
    assert plan.kind == BRING_UP


def test_heartbeat_on_the_same_connection_revives_a_dead_server():
    d = up()
    d.feed(ChannelUp(3.0, ad().name))
    d.feed(Tick(13.0))  # cable out: dead
    d.finish(14.0)
    plan = d.feed(Heartbeat(40.0, ad().name))  # cable back, TCP carried on
    assert plan.kind == BRING_UP


def test_notice_over_channel_tears_down_before_the_record_changes():
    d = up(replace(S, power_off=True))
    plan = d.feed(ServerNotice(10.0, ad().name, "poweroff", authenticated=False))
    assert plan.power_off
    # a late "up" update of the still-present record must not undo the notice
    d.feed(ServerSeen(10.1, ad(), added=False))
    d.finish(11.0)
    assert d.state.applied is None and d.state.phase == core.POWERING_OFF


# ---------------------------------------------------------------- keys


KS = replace(S, keyed=True, power_off=True)


def proof(at, name="musicpi", address="198.18.0.11", boot="b1"):
    """The channel's handshake with `name` at `address` proved its key and boot id."""
    return ChannelUp(at, ad(name).name, address, boot)


def test_with_key_bring_up_waits_for_the_authenticated_channel():
    d = Driver(KS)
    assert d.feed(ServerSeen(1.0, ad(authenticated=True))) is None
    assert d.feed(ChannelUp(1.1, ad().name, "198.18.0.99", "b1")) is None  # proved elsewhere: not enough
    assert d.feed(ChannelUp(1.15, ad().name, "198.18.0.11", "b0")) is None  # another boot: not enough
    plan = d.feed(proof(1.2))
    assert plan.kind == BRING_UP


def test_channel_targets_are_the_followed_server_and_the_one_that_would_be():
    d = Driver(KS)
    d.feed(ServerSeen(1.0, ad("other", authenticated=False)))
    assert core.channel_targets(d.state, KS) == {}  # unsigned with a key: never
    d.feed(ServerSeen(1.1, ad(authenticated=True)))
    assert core.channel_targets(d.state, KS) == {ad().name: ("198.18.0.11", 5555)}
    d.feed(proof(1.2))
    assert d.state.following == ad().name
    d.finish(2.0)
    d.feed(Tick(12.0))  # silent: dead, being torn down
    assert list(core.channel_targets(d.state, KS)) == [ad().name]  # the tear-down reports to it
    d.finish(13.0)
    assert d.state.following is None
    assert list(core.channel_targets(d.state, KS)) == [ad().name]  # keep listening for it
    d.feed(ServerSeen(14.0, ad(state="stopping", authenticated=True)))
    assert core.channel_targets(d.state, KS) == {}


def test_the_channel_stays_while_a_tear_down_for_its_server_runs():
    d = up(replace(S, power_off=True))
    d.feed(ServerNotice(10.0, ad().name, "poweroff"))
    assert d.state.busy.kind == TEAR_DOWN
    assert list(core.channel_targets(d.state, d.s)) == [ad().name]
    d.finish(11.0)
    assert core.channel_targets(d.state, d.s) == {}


def test_with_key_unauthenticated_notice_is_ignored():
    d = Driver(KS)
    d.feed(ServerSeen(1.0, ad(authenticated=True)))
    d.feed(proof(1.2))
    d.finish(2.0)
    assert d.feed(ServerNotice(3.0, ad().name, "poweroff", authenticated=False)) is None
    assert any("ignoring unauthenticated 'poweroff'" in n for n in d.notes)
    plan = d.feed(ServerNotice(4.0, ad().name, "poweroff", authenticated=True))
    assert plan.power_off


def test_with_key_a_forged_goodbye_does_not_tear_down_a_live_server():
    d = Driver(KS)
    d.feed(ServerSeen(1.0, ad(authenticated=True)))
    d.feed(proof(1.2))
    d.finish(2.0)
    d.feed(ServerGone(3.0, ad().name))
    for t in (4.0, 6.0, 8.0, 10.0):
        d.feed(Heartbeat(t, ad().name))
        assert d.feed(Tick(t + 0.5)) is None
    assert d.state.phase == core.UP


def test_with_key_a_new_address_is_used_only_once_the_channel_proved_it():
    d = Driver(KS)
    d.feed(ServerSeen(1.0, ad(authenticated=True)))
    d.feed(proof(1.2))
    d.finish(2.0)
    assert d.feed(ServerSeen(3.0, ad(addr=("198.18.0.66",), authenticated=True), added=False)) is None
    assert core.channel_targets(d.state, KS) == {ad().name: ("198.18.0.66", 5555)}
    assert d.state.applied.address == "198.18.0.11"
    plan = d.feed(proof(3.5, address="198.18.0.66"))
    assert plan.kind == RETARGET and plan.why == "server musicpi moved to 198.18.0.66"


# ---------------------------------------------------------------- failures, reconcile, exit


def test_failed_bring_up_waits_for_a_record_update_then_retries():
    d = Driver()
    d.feed(ServerSeen(1.0, ad()))
    d.finish(2.0, ok=False, detail="share not ready after 30 s")
    assert d.state.phase == core.WAITING
    assert any("gave up bringing up musicpi (share not ready after 30 s); will retry in 30 s" in n
               for n in d.notes)
    assert d.feed(Tick(20.0)) is None
    plan = d.feed(ServerSeen(21.0, ad(), added=False))
    assert plan.kind == BRING_UP and "trying again" in plan.why


def test_failed_bring_ups_are_retried_with_a_growing_pause():
    d = Driver()
    d.feed(ServerSeen(1.0, ad()))
    finished = 2.0
    pauses = []
    for _ in range(7):
        d.finish(finished, ok=False)
        retry = d.state.applied.retry_at
        pauses.append(retry - finished)
        assert d.feed(Tick(retry)).kind == BRING_UP
        finished = retry + 1
    assert pauses == [30, 60, 120, 240, 480, 600, 600]


def test_failed_bring_up_is_still_torn_down_when_the_server_leaves():
    d = Driver()
    d.feed(ServerSeen(1.0, ad()))
    d.finish(2.0, ok=False)
    plan = d.feed(ServerSeen(3.0, ad(state="stopping")))
    assert plan.kind == TEAR_DOWN


def test_events_during_a_plan_are_coalesced_into_one_final_decision():
    d = Driver()
    d.feed(ServerSeen(1.0, ad()))
    for ev in [ServerSeen(1.1, ad(state="stopping")), ServerGone(1.2, ad().name),
               ServerSeen(1.3, ad(boot="b2")), ServerSeen(1.4, ad(boot="b2"), added=False)]:
        assert d.feed(ev) is None
    plan = d.finish(2.0)
    assert plan.kind == RETARGET  # the bring-up was for boot b1; b2 is the truth now
    d.finish(3.0)
    assert d.state.applied.ad.boot == "b2" and len(d.plans) == 2


def test_mounted_at_start_without_server_is_torn_down_after_startup_wait():
    d = Driver(mounted=True)
    assert d.feed(Tick(S.startup_wait - 0.1)) is None
    plan = d.feed(Tick(S.startup_wait))
    assert plan.kind == TEAR_DOWN and plan.why == "share mounted at start but no server found"
    assert not plan.power_off


def test_mounted_at_start_with_server_present_brings_up_idempotently():
    d = Driver(mounted=True)
    plan = d.feed(ServerSeen(0.5, ad()))
    assert plan.kind == BRING_UP


def test_not_mounted_at_start_and_no_server_just_waits():
    d = Driver()
    assert d.feed(Tick(10.0)) is None
    assert d.state.phase == core.WAITING


def test_stop_requested_exits_without_tear_down_by_default():
    d = up()
    assert d.feed(StopRequested(5.0)) is None
    assert d.state.phase == core.EXITED


def test_stop_requested_waits_for_the_running_plan():
    d = Driver()
    d.feed(ServerSeen(1.0, ad()))
    d.feed(StopRequested(1.5))
    assert d.state.phase == core.BRINGING_UP
    d.finish(2.0)
    assert d.state.phase == core.EXITED


def test_stop_requested_tears_down_when_configured():
    d = up(replace(S, teardown_on_exit=True))
    plan = d.feed(StopRequested(5.0))
    assert plan.kind == TEAR_DOWN and not plan.power_off
    d.finish(6.0)
    assert d.state.phase == core.EXITED


def test_nothing_happens_after_power_off_started():
    d = up(replace(S, power_off=True))
    d.feed(ServerSeen(10.0, ad(state="poweroff")))
    d.finish(11.0)
    assert d.feed(ServerSeen(12.0, ad("other"))) is None


def test_stale_plan_finished_is_ignored():
    d = Driver()
    d.feed(ServerSeen(1.0, ad()))
    assert d.feed(PlanFinished(2.0, 99, True)) is None
    assert d.state.busy is not None
