"""MachineApplier against a pretend board: the exact commands, their order, and
what each step does when things go wrong. No root, nothing is run."""

from __future__ import annotations

import logging
import sys
import types

import pytest

from pistop_mdns import core, machine
from pistop_mdns.executor import Result
from pistop_mdns.machine import MachineApplier, MountEntry
from pistop_mdns.model import (
    BRING_UP,
    Backup,
    DisableAutofsEntry,
    EnsureAutofs,
    Mount,
    Plan,
    PlanFinished,
    PointAutofs,
    ReportState,
    ServerSeen,
    SetMpdConf,
    StartMpd,
    StopService,
    Unmount,
    WaitReady,
)
from pistop_mdns.notify import Notifier
from tests.unit.board import (Board, Clock, ad, bring_up_plan, make_config, settings, silent_tear_down_plan,
                              tear_down_plan)

MPD_CONF = """\
# kitchen's mpd
music_directory\t"/mnt/music"   # the share
port "6601"
database {
    plugin "proxy"
    host "198.18.0.99"   # yesterday's address
    port "6600"
}
"""

MPD = "/service/mpd"
AUTOFS = "/service/autofs"


@pytest.fixture
def setup(tmp_path):
    """(make, board, clock): make(**client) builds the applier for that configuration."""
    board = Board(tmp_path / "mountinfo")
    clock = Clock()
    (tmp_path / "mpd.conf").write_text(MPD_CONF)

    def make(general: dict | None = None, **client):
        cfg = make_config(tmp_path, general, **client)
        applier = MachineApplier(cfg, board, sleep=clock.sleep, clock=clock, mountinfo=str(board.mountinfo))
        applier.notifier = Notifier(cfg, sleep=clock.sleep, addresses=lambda: ["198.18.0.12"],
                                    lcd_fifo=str(tmp_path / "no-lcd"), desktop_fifo=str(tmp_path / "no-desktop"))
        return cfg, applier

    return make, board, clock


def reports():
    said = []

    def report(state: str) -> bool:
        said.append(state)
        return True

    return said, report


# ---------------------------------------------------------------- bring-up


def test_direct_bring_up_runs_these_commands_in_this_order(setup, tmp_path, caplog):
    make, board, _ = setup
    cfg, applier = make()
    board.files = {"/mnt/music/ArtistA"}
    _, plan = bring_up_plan(cfg)
    said, report = reports()
    caplog.set_level(logging.INFO)

    result = applier.run_plan(plan, report)

    assert result.ok, result.detail
    assert board.calls == [
        ("mkdir", "-p", "--", "/mnt/music"),
        ("mount", "-t", "nfs4", "-o", "soft,timeo=5,retry=1", "--", "198.18.0.11:/srv/music", "/mnt/music"),
        ("ls", "-A", "--", "/mnt/music"),
        ("svstat", MPD),  # is mpd running?
        ("svstat", MPD),  # not supervised?
        ("svc", "-u", MPD),
        ("svstat", MPD),  # up now
    ]
    assert said == ["up"]
    assert (tmp_path / "mpd.conf").read_text() == MPD_CONF.replace('"198.18.0.99"', '"198.18.0.11"')
    assert (tmp_path / "mpd.conf.bak").read_text() == MPD_CONF
    lines = [r.getMessage() for r in caplog.records if r.name == "pistop_mdns.machine"]
    assert "kitchen: mounted 198.18.0.11:/srv/music at /mnt/music" in lines
    assert f"kitchen: pointed mpd at 198.18.0.11:6600 in {tmp_path / 'mpd.conf'}" in lines
    assert "kitchen: started mpd: svc -u /service/mpd: up (pid 101) 12 seconds" in lines
    assert len(lines) == len(plan.actions), "one line per step"


def test_mounting_what_is_mounted_from_the_same_source_does_nothing(setup):
    make, board, _ = setup
    cfg, applier = make()
    board.mount("/mnt/music", "198.18.0.11:/srv/music/")
    _, plan = bring_up_plan(cfg)
    mount = next(a for a in plan.actions if isinstance(a, Mount))

    assert applier.run_plan(Plan(1, BRING_UP, None, (mount,), "test"), reports()[1]).ok
    assert board.calls == []


def test_a_share_from_another_address_is_dropped_before_mounting(setup):
    make, board, _ = setup
    cfg, applier = make()
    board.mount("/mnt/music", "198.18.0.99:/srv/music")
    mount = Mount("198.18.0.11:/srv/music", "/mnt/music", "nfs4", "soft,timeo=5,retry=1")

    assert applier.run_plan(Plan(1, BRING_UP, None, (mount,), "test"), reports()[1]).ok
    assert board.calls == [
        ("umount", "-fl", "--", "/mnt/music"),
        ("mkdir", "-p", "--", "/mnt/music"),
        ("mount", "-t", "nfs4", "-o", "soft,timeo=5,retry=1", "--", "198.18.0.11:/srv/music", "/mnt/music"),
    ]
    assert board.mounts == {"/mnt/music": "198.18.0.11:/srv/music"}


def test_a_bind_mount_of_the_same_directory_counts_as_mounted(setup):
    make, board, _ = setup
    cfg, applier = make()
    board.mount("/mnt/music", "/dev/sda1")
    board.identities = {"/srv/music": "2049:77", "/mnt/music": "2049:77"}
    mount = Mount("/srv/music", "/mnt/music", "none", "bind,ro")

    assert applier.run_plan(Plan(1, BRING_UP, None, (mount,), "test"), reports()[1]).ok
    assert board.calls == [("stat", "-L", "-c", "%d:%i", "--", "/srv/music", "/mnt/music")]


def test_a_failing_required_step_ends_the_plan_with_its_reason(setup):
    make, board, _ = setup
    cfg, applier = make()
    mount_argv = ("mount", "-t", "nfs4", "-o", "soft,timeo=5,retry=1", "--", "198.18.0.11:/srv/music", "/mnt/music")
    board.answers[mount_argv] = Result(mount_argv, 32, err="mount.nfs4: Connection refused\n")
    _, plan = bring_up_plan(cfg)

    result = applier.run_plan(plan, reports()[1])

    assert not result.ok
    assert result.detail == ("mount 198.18.0.11:/srv/music at /mnt/music: mount -t nfs4 -o soft,timeo=5,retry=1 -- "
                             "198.18.0.11:/srv/music /mnt/music: exit 32: mount.nfs4: Connection refused")
    assert board.calls[-1] == mount_argv, "nothing after the failed mount"


def test_mpd_is_never_started_on_a_share_that_does_not_become_ready(setup):
    make, board, clock = setup
    cfg, applier = make(ready_marker="data/stats.db", ready_timeout=5.0)
    _, plan = bring_up_plan(cfg)

    result = applier.run_plan(plan, reports()[1])

    assert not result.ok
    assert result.detail == ("wait for the share at /mnt/music: /mnt/music/data/stats.db not there yet "
                             "(gave up after 5 s)")
    assert not any(c[0] == "svc" for c in board.calls)
    assert clock.sleeps == [0.1, 0.2, 0.4, 0.8, 1.6], "backing off, bounded by ready_timeout"
    assert board.calls.count(("test", "-e", "/mnt/music/data/stats.db")) == 6


def test_the_marker_is_waited_for_and_then_mpd_starts(setup):
    make, board, clock = setup
    cfg, applier = make(ready_marker="data/stats.db")
    marker = ("test", "-e", "/mnt/music/data/stats.db")
    board.appears = {"/mnt/music/data/stats.db": 3}  # found on the third look
    _, plan = bring_up_plan(cfg)

    result = applier.run_plan(plan, reports()[1])

    assert result.ok, result.detail
    assert board.calls.count(marker) == 3
    assert clock.sleeps == [0.1, 0.2]
    assert board.calls.index(("svc", "-u", MPD)) > max(i for i, c in enumerate(board.calls) if c == marker)


def test_an_empty_mount_point_is_not_ready(setup):
    make, board, clock = setup
    cfg, applier = make(ready_timeout=0.5)
    board.mount("/mnt/music", "198.18.0.11:/srv/music")
    step = WaitReady("/mnt/music", "")

    result = applier.run_plan(Plan(1, BRING_UP, None, (step,), "test"), reports()[1])

    assert result.detail == "wait for the share at /mnt/music: /mnt/music is empty (gave up after 0.5 s)"


def test_a_marker_on_an_unmounted_mount_point_is_not_ready(setup):
    make, board, clock = setup
    cfg, applier = make(ready_timeout=0.5)
    board.files = {"/mnt/music/data/stats.db"}  # left over in the bare directory
    step = WaitReady("/mnt/music", "data/stats.db")

    result = applier.run_plan(Plan(1, BRING_UP, None, (step,), "test"), reports()[1])

    assert result.detail == "wait for the share at /mnt/music: nothing mounted at /mnt/music (gave up after 0.5 s)"


# ---------------------------------------------------------------- mpd mode


def test_mpd_mode_looks_for_the_marker_over_nfs_and_points_music_directory(setup, tmp_path):
    make, board, _ = setup
    cfg, applier = make(mount_mode="mpd", mountpoint=None)
    server = ad(music="Music")
    board.nfs = {"nfs://198.18.0.11/srv/music": ["Music", "data"]}
    board.services[MPD] = 55
    _, plan = bring_up_plan(cfg, server)

    result = applier.run_plan(plan, reports()[1])

    assert result.ok, result.detail
    assert board.calls == [
        ("nfs-ls", "nfs://198.18.0.11/srv/music"),
        ("svstat", MPD),
        ("svstat", MPD),
        ("svc", "-t", MPD),  # it ran and mpd.conf changed: restart
        ("svstat", MPD),
    ]
    text = (tmp_path / "mpd.conf").read_text()
    assert text == MPD_CONF.replace('"198.18.0.99"', '"198.18.0.11"').replace(
        '"/mnt/music"', '"nfs://198.18.0.11/srv/music/Music"')


def test_mpd_mode_without_the_marker_gives_up(setup):
    make, board, _ = setup
    cfg, applier = make(mount_mode="mpd", mountpoint=None, ready_marker="data/stats.db", ready_timeout=1.0)
    board.nfs = {"nfs://198.18.0.11/srv/music/data": ["other.db"]}
    _, plan = bring_up_plan(cfg)

    result = applier.run_plan(plan, reports()[1])

    assert result.detail == ("wait for the share at nfs://198.18.0.11/srv/music: data/stats.db not in "
                             "nfs://198.18.0.11/srv/music (gave up after 1 s)")
    assert set(board.calls) == {("nfs-ls", "nfs://198.18.0.11/srv/music/data")}


def test_mpd_mode_without_nfs_ls_warns_and_lets_mpd_try(setup, caplog):
    make, board, _ = setup
    cfg, applier = make(mount_mode="mpd", mountpoint=None)
    argv = ("nfs-ls", "nfs://198.18.0.11/srv/music")
    board.answers[argv] = Result(argv, None, not_found=True)
    step = WaitReady("", "", nfs_url="nfs://198.18.0.11/srv/music")

    assert applier.run_plan(Plan(1, BRING_UP, None, (step,), "test"), reports()[1]).ok
    assert "apt install libnfs-utils" in caplog.text


# ---------------------------------------------------------------- mpd.conf and mpd


@pytest.mark.parametrize("running, changed, expected", [
    (True, True, [("svstat", MPD), ("svstat", MPD), ("svc", "-t", MPD), ("svstat", MPD)]),
    (True, False, [("svstat", MPD)]),
    (False, True, [("svstat", MPD), ("svstat", MPD), ("svc", "-u", MPD), ("svstat", MPD)]),
    (False, False, [("svstat", MPD), ("svstat", MPD), ("svc", "-u", MPD), ("svstat", MPD)]),
])
def test_mpd_is_restarted_only_when_it_runs_and_mpd_conf_changed(setup, tmp_path, running, changed, expected):
    make, board, _ = setup
    cfg, applier = make()
    if not changed:
        (tmp_path / "mpd.conf").write_text(MPD_CONF.replace("198.18.0.99", "198.18.0.11"))
    board.services[MPD] = 7 if running else None
    steps = (SetMpdConf("198.18.0.11", 6600), StartMpd())

    assert applier.run_plan(Plan(1, BRING_UP, None, steps, "test"), reports()[1]).ok
    assert board.calls == expected
    assert board.services[MPD] is not None


def test_an_unchanged_mpd_conf_is_not_rewritten_and_keeps_no_new_backup(setup, tmp_path):
    make, _, _ = setup
    cfg, applier = make()
    text = MPD_CONF.replace("198.18.0.99", "198.18.0.11")
    (tmp_path / "mpd.conf").write_text(text)

    assert applier.run_plan(Plan(1, BRING_UP, None, (SetMpdConf("198.18.0.11", 6600),), "t"), reports()[1]).ok
    assert not (tmp_path / "mpd.conf.bak").exists()


def test_an_mpd_conf_without_proxy_block_is_left_alone_unless_asked(setup, tmp_path, caplog):
    make, _, _ = setup
    plain = 'music_directory "/mnt/music"\n'
    (tmp_path / "mpd.conf").write_text(plain)
    cfg, applier = make()
    step = (SetMpdConf("198.18.0.11", 6600),)

    assert applier.run_plan(Plan(1, BRING_UP, None, step, "t"), reports()[1]).ok
    assert (tmp_path / "mpd.conf").read_text() == plain
    assert "has no proxy database block, so it is left alone" in caplog.text
    assert "add_proxy_block = true" in caplog.text

    cfg, applier = make(add_proxy_block=True)
    assert applier.run_plan(Plan(1, BRING_UP, None, step, "t"), reports()[1]).ok
    assert (tmp_path / "mpd.conf").read_text() == (
        plain + 'database {\n    plugin "proxy"\n    host "198.18.0.11"\n    port "6600"\n}\n')


def test_an_mpd_conf_that_cannot_be_edited_fails_naming_the_file(setup, tmp_path):
    make, _, _ = setup
    (tmp_path / "mpd.conf").write_text('database {\n    plugin "proxy"\n')
    cfg, applier = make()

    result = applier.run_plan(Plan(1, BRING_UP, None, (SetMpdConf("198.18.0.11", 6600),), "t"), reports()[1])

    assert not result.ok
    assert result.detail.startswith(f"mpd.conf: {tmp_path / 'mpd.conf'} line 1: ")
    assert "fix:" in result.detail


def test_with_no_service_manager_mpd_is_left_to_the_user(setup, caplog):
    make, board, _ = setup
    cfg, applier = make(general={"service_manager": "none"})

    assert applier.run_plan(Plan(1, BRING_UP, None, (StartMpd(), StopService("mpd")), "t"), reports()[1]).ok
    assert board.calls == []
    assert "cannot start mpd: general.service_manager is none; start it yourself" in caplog.text


def test_systemd_commands(setup):
    make, board, _ = setup
    cfg, applier = make(general={"service_manager": "systemd"})
    board.services["mpd.service"] = 9

    assert applier.run_plan(Plan(1, BRING_UP, None, (StopService("mpd"),), "t"), reports()[1]).ok
    assert board.calls == [("systemctl", "stop", "mpd.service", "mpd.socket")]


def test_a_server_that_moves_is_followed_remount_and_mpd_conf(setup, tmp_path):
    make, board, _ = setup
    cfg, applier = make()
    board.files = {"/mnt/music/ArtistA"}
    s = settings(cfg)
    state, plan = bring_up_plan(cfg)
    assert applier.run_plan(plan, reports()[1]).ok
    state, _, _ = core.step(state, PlanFinished(1.0, plan.id, True), s)
    board.calls.clear()

    state, plan, _ = core.step(state, ServerSeen(2.0, ad(address="198.18.0.21"), added=False), s)

    assert plan is not None and plan.kind == "retarget"
    assert applier.run_plan(plan, reports()[1]).ok
    assert board.calls == [
        ("svstat", MPD),
        ("svc", "-d", MPD),
        ("svstat", MPD),
        ("umount", "-fl", "--", "/mnt/music"),  # the old server may be gone: never wait on it
        ("mkdir", "-p", "--", "/mnt/music"),
        ("mount", "-t", "nfs4", "-o", "soft,timeo=5,retry=1", "--", "198.18.0.21:/srv/music", "/mnt/music"),
        ("ls", "-A", "--", "/mnt/music"),
        ("svstat", MPD),
        ("svstat", MPD),
        ("svc", "-u", MPD),
        ("svstat", MPD),
    ]
    assert (tmp_path / "mpd.conf").read_text() == MPD_CONF.replace('"198.18.0.99"', '"198.18.0.21"')
    assert (tmp_path / "mpd.conf.bak").read_text() == MPD_CONF.replace('"198.18.0.99"', '"198.18.0.11"')


# ---------------------------------------------------------------- tear-down


def test_tear_down_order_hooks_stop_mpd_then_unmount(setup, tmp_path):
    make, board, _ = setup
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for stage in ("pre_unmount", "post_unmount"):
        (hooks / stage).write_text("#!/bin/sh\n")
        (hooks / stage).chmod(0o755)
    cfg, applier = make()
    board.mount("/mnt/music", "198.18.0.11:/srv/music")
    board.services[MPD] = 7
    plan = tear_down_plan(cfg)
    said, report = reports()

    assert applier.run_plan(plan, report).ok
    assert board.calls == [
        (str(hooks / "pre_unmount"),),
        ("svstat", MPD),
        ("svc", "-d", MPD),
        ("svstat", MPD),
        ("umount", "-f", "--", "/mnt/music"),
        (str(hooks / "post_unmount"),),
    ]
    env = board.envs[0]
    assert env["PISTOP_EVENT"] == "pre_unmount"
    assert env["PISTOP_ADDRESS"] == "198.18.0.11"
    assert env["PISTOP_SERVER"] == "musicpi"
    assert env["PISTOP_REASON"] == "stopping"
    assert env["PISTOP_REASON_TEXT"] == "server musicpi is stopping"
    assert said == ["down"]


def test_a_busy_mount_is_retried_then_given_up_with_a_warning(setup, caplog):
    make, board, clock = setup
    cfg, applier = make(umount_retries=3)
    board.mount("/mnt/music", "198.18.0.11:/srv/music")
    board.busy = {"/mnt/music"}
    plan = tear_down_plan(cfg)

    result = applier.run_plan(plan, reports()[1])

    assert result.ok, "the unmount is not required: the tear-down carries on"
    assert board.calls.count(("umount", "-f", "--", "/mnt/music")) == 3
    assert clock.sleeps == [1.0, 1.0]
    assert ("kitchen: unmount /mnt/music: umount -f -- /mnt/music: exit 32: umount: /mnt/music: target is busy. "
            "(gave up after 3 tries); carrying on") in caplog.text


def test_a_required_unmount_that_gives_up_fails_the_plan(setup):
    make, board, _ = setup
    cfg, applier = make()
    board.mount("/mnt/music", "198.18.0.11:/srv/music")
    argv = ("umount", "-f", "--", "/mnt/music")
    board.answers[argv] = Result(argv, 32, err="target is busy\n")

    result = applier.run_plan(Plan(1, "tear-down", None, (Unmount("/mnt/music", required=True),), "t"),
                              reports()[1])

    assert result == machine.PlanResult(False, "unmount /mnt/music: umount -f -- /mnt/music: exit 32: target is busy "
                                               "(gave up after 10 tries)")


def test_unmounting_what_is_not_mounted_is_fine(setup):
    make, board, _ = setup
    cfg, applier = make()
    assert applier.run_plan(Plan(1, "tear-down", None, (Unmount("/mnt/music"),), "t"), reports()[1]).ok
    assert board.calls == []


def test_power_off_unmounts_lazily_syncs_then_shuts_down(setup):
    make, board, _ = setup
    cfg, applier = make(power_off=True, force_umount=True)
    board.mount("/mnt/music", "198.18.0.11:/srv/music")
    board.busy = {"/mnt/music"}
    plan = tear_down_plan(cfg, reason="poweroff")

    assert plan.power_off
    said, report = reports()
    assert applier.run_plan(plan, report).ok
    assert said == ["off"]
    tail = [c for c in board.calls if c[0] in ("umount", "sync", "shutdown")]
    assert tail == [("umount", "-fl", "--", "/mnt/music"), ("sync",), ("shutdown", "-h", "now")]
    assert board.mounts == {}


def test_a_failing_power_off_fails_the_plan(setup):
    make, board, _ = setup
    cfg, applier = make(power_off=True, poweroff_command=["poweroff-now"])
    board.answers[("poweroff-now",)] = Result(("poweroff-now",), None, not_found=True)
    plan = tear_down_plan(cfg, reason="poweroff")

    said, report = reports()
    assert applier.run_plan(plan, report) == machine.PlanResult(False, "power off: poweroff-now: command not found")
    assert said == ["off", "down"]  # the server's shutdown must not wait for a board that stays on


# ---------------------------------------------------------------- autofs


def test_autofs_bring_up_points_the_map_starts_autofs_and_mounts_by_looking(setup, tmp_path):
    make, board, _ = setup
    master = tmp_path / "auto.master"
    amap = tmp_path / "autofs.mounts"
    master.write_text(f"/var/lib/mpd {amap} --timeout=60\n")
    amap.write_text("# the music disk\nMDrive -fstype=nfs,vers=4,soft,timeo=5,retry=1 198.18.0.99:/srv/music\n")
    cfg, applier = make(mount_mode="autofs", mountpoint=None, autofs_master=str(master))
    assert cfg.client.mountpoint == "/var/lib/mpd/MDrive"
    board.files = {"/var/lib/mpd/MDrive/ArtistA"}
    board.mount("/var/lib/mpd/MDrive", "198.18.0.11:/srv/music")  # what looking into it does
    _, plan = bring_up_plan(cfg)

    assert applier.run_plan(plan, reports()[1]).ok
    assert amap.read_text() == "# the music disk\nMDrive -fstype=nfs,vers=4,soft,timeo=5,retry=1 198.18.0.11:/srv/music\n"
    assert board.calls[:5] == [
        ("svstat", AUTOFS),
        ("svstat", AUTOFS),
        ("svc", "-u", AUTOFS),
        ("svstat", AUTOFS),
        ("ls", "-A", "--", "/var/lib/mpd/MDrive"),
    ]


@pytest.mark.parametrize("changed, expected", [
    (True, [("svstat", AUTOFS), ("svc", "-h", AUTOFS)]),
    (False, [("svstat", AUTOFS)]),
])
def test_a_running_autofs_is_reloaded_only_when_its_map_changed(setup, tmp_path, changed, expected):
    make, board, _ = setup
    amap = tmp_path / "auto.music"
    amap.write_text(f"music -fstype=bind :{'/old' if changed else '/new'}\n")
    cfg, applier = make(mount_mode="autofs", mountpoint="/mnt/auto/music", autofs_map=str(amap),
                        autofs_key="music", autofs_options="fstype=bind")
    board.services[AUTOFS] = 3

    steps = (PointAutofs(":/new"), EnsureAutofs())
    assert applier.run_plan(Plan(1, BRING_UP, None, steps, "t"), reports()[1]).ok
    assert board.calls == expected
    assert amap.read_text() == "music -fstype=bind :/new\n"


def test_a_missing_autofs_map_is_created(setup, tmp_path):
    make, _, _ = setup
    amap = tmp_path / "auto.music"
    cfg, applier = make(mount_mode="autofs", mountpoint="/mnt/auto/music", autofs_map=str(amap),
                        autofs_key="MDrive")

    assert applier.run_plan(Plan(1, BRING_UP, None, (PointAutofs("198.18.0.11:/srv/music"),), "t"),
                            reports()[1]).ok
    assert amap.read_text() == "MDrive -fstype=nfs,vers=4,soft,timeo=5,retry=1 198.18.0.11:/srv/music\n"


def test_autofs_tear_down_unmounts_then_stops_autofs(setup):
    make, board, _ = setup
    cfg, applier = make(mount_mode="autofs", mountpoint="/mnt/auto/music", autofs_map="/nonexistent/map",
                        autofs_key="music")
    board.mount("/mnt/auto/music", "198.18.0.11:/srv/music")
    board.services[AUTOFS] = 3
    plan = tear_down_plan(cfg)

    assert applier.run_plan(plan, reports()[1]).ok
    assert [c for c in board.calls if c[0] in ("umount", "svc")] == [
        ("svc", "-d", MPD), ("umount", "-f", "--", "/mnt/auto/music"), ("svc", "-d", AUTOFS)]


# ---------------------------------------------------------------- a server that cannot answer

DETACH = ("umount", "-i", "-f", "-l", "--")


def test_a_silent_servers_share_leaves_the_autofs_map_then_is_detached_without_waiting(setup, tmp_path, caplog):
    make, board, clock = setup
    amap = tmp_path / "auto.music"
    amap.write_text("# the music\nmusic -fstype=nfs,vers=4 198.18.0.11:/srv/music\n")
    cfg, applier = make(mount_mode="autofs", mountpoint="/mnt/auto/music", autofs_map=str(amap),
                        autofs_key="music")
    board.mount("/mnt/auto/music", "198.18.0.11:/srv/music")
    board.detaches = {"/mnt/auto/music"}  # as the kernel does: the mount goes, the call blocks
    board.services.update({AUTOFS: 3, MPD: 7})
    plan = silent_tear_down_plan(cfg)
    caplog.set_level(logging.INFO)

    assert applier.run_plan(plan, reports()[1]).ok
    assert board.calls == [
        ("svc", "-d", MPD),  # asked, not waited for: no svstat
        (*DETACH, "/mnt/auto/music"),
    ]
    assert board.mounts == {} and board.services == {AUTOFS: 3, MPD: None}, "autofs runs on, without the entry"
    # taken out before the detach: a look into the mount point finds nothing to mount
    assert amap.read_text() == "# the music\n#pistop-mdns-off# music -fstype=nfs,vers=4 198.18.0.11:/srv/music\n"
    assert caplog.text.index(f"took music out of {amap}") < caplog.text.index("unmounted /mnt/auto/music")
    assert clock.sleeps.count(machine.DETACH_POLL) == 1, "one look at mountinfo after starting the unmount"
    assert board.timeouts[board.calls.index((*DETACH, "/mnt/auto/music"))] == cfg.general.timeout
    assert ("kitchen: unmounted /mnt/auto/music without waiting for the server (umount -i -f -l -- /mnt/auto/music "
            "is still blocked in the kernel; left to end by itself)") in caplog.text
    assert f"kitchen: asked mpd to stop, not waiting: svc -d {MPD}" in caplog.text

    # the server is back: the bring-up puts the entry back where it was
    assert applier.run_plan(Plan(2, BRING_UP, None, (PointAutofs("198.18.0.11:/srv/music"),), "t"),
                            reports()[1]).ok
    assert amap.read_text() == "# the music\nmusic -fstype=nfs,vers=4,soft,timeo=5,retry=1 198.18.0.11:/srv/music\n"


def test_taking_out_an_autofs_entry_that_is_not_there_changes_nothing(setup, tmp_path):
    make, board, _ = setup
    cfg, applier = make(mount_mode="autofs", mountpoint="/mnt/auto/music", autofs_map=str(tmp_path / "none"),
                        autofs_key="music")
    assert applier.run_plan(Plan(1, "tear-down", None, (DisableAutofsEntry(),), "t"), reports()[1]).ok
    assert not (tmp_path / "none").exists()


def test_asking_systemd_to_stop_mpd_queues_the_job_for_both_units(setup, caplog):
    make, board, _ = setup
    cfg, applier = make(general={"service_manager": "systemd"})
    caplog.set_level(logging.INFO)

    plan = Plan(1, "tear-down", None, (StopService("mpd", wait=False),), "t")
    assert applier.run_plan(plan, reports()[1]).ok
    assert board.calls == [("systemctl", "--no-block", "stop", "mpd.service", "mpd.socket")]
    assert "kitchen: asked mpd to stop, not waiting: systemctl --no-block stop mpd.service mpd.socket" in caplog.text


def test_a_detach_whose_call_returns_says_so_plainly(setup, caplog):
    make, board, _ = setup
    cfg, applier = make()
    board.mount("/mnt/music", "198.18.0.11:/srv/music")
    caplog.set_level(logging.INFO)

    plan = Plan(1, "tear-down", None, (Unmount("/mnt/music", unreachable=True),), "t")
    assert applier.run_plan(plan, reports()[1]).ok
    assert board.calls == [(*DETACH, "/mnt/music")]
    assert "kitchen: unmounted /mnt/music without waiting for the server\n" in caplog.text + "\n"


def test_a_detach_that_never_takes_the_mount_away_gives_up_at_the_timeout(setup, caplog):
    make, board, clock = setup
    cfg, applier = make(general={"timeout": 5})
    board.mount("/mnt/music", "198.18.0.11:/srv/music")
    board.hangs = {"/mnt/music"}

    plan = Plan(1, "tear-down", None, (Unmount("/mnt/music", unreachable=True), StopService("mpd")), "t")
    assert applier.run_plan(plan, reports()[1]).ok, "the unmount is not required: the tear-down carries on"
    assert board.calls.count((*DETACH, "/mnt/music")) == 1, "a blocked call is not started again"
    assert 5.0 <= sum(clock.sleeps) <= 5.0 + machine.DETACH_POLL + 1e-9, "bounded by general.timeout"
    assert "kitchen: unmount /mnt/music: still mounted 5 s after umount -i -f -l -- /mnt/music; carrying on" in caplog.text
    assert ("svc", "-d", MPD) in board.calls


def test_a_detach_the_kernel_refuses_is_retried_then_given_up(setup, caplog):
    make, board, clock = setup
    cfg, applier = make(umount_retries=3)
    board.mount("/mnt/music", "198.18.0.11:/srv/music")
    argv = (*DETACH, "/mnt/music")
    board.answers[argv] = Result(argv, 32, err="umount: /mnt/music: must be superuser to unmount.\n")

    plan = Plan(1, "tear-down", None, (Unmount("/mnt/music", unreachable=True),), "t")
    assert applier.run_plan(plan, reports()[1]).ok
    assert board.calls == [argv] * 3
    assert ("kitchen: unmount /mnt/music: umount -i -f -l -- /mnt/music: exit 32: umount: /mnt/music: must be "
            "superuser to unmount., still mounted (gave up after 3 tries); carrying on") in caplog.text


# ---------------------------------------------------------------- the rest


def test_backup_runs_with_the_mount_point_as_default_destination(setup, monkeypatch):
    make, board, _ = setup
    cfg, applier = make()
    calls = []
    fake = types.ModuleType("pistop_mdns.backup")
    fake.run_backup = lambda cfg, runner, default_dest: calls.append((runner, default_dest)) or False
    monkeypatch.setitem(sys.modules, "pistop_mdns.backup", fake)

    result = applier.run_plan(Plan(1, BRING_UP, None, (Backup(), ReportState("up")), "t"), reports()[1])

    assert result.ok, "a failed backup is a warning"
    assert calls == [(board, "/mnt/music")]


def test_probe_says_what_is_mounted_and_whether_mpd_runs(setup):
    make, board, _ = setup
    cfg, applier = make()
    assert applier.probe() == machine.Facts(mounted=False, mpd_running=False)
    board.mount("/mnt/music", "198.18.0.11:/srv/music")
    board.services[MPD] = 4
    assert applier.probe() == machine.Facts(mounted=True, mpd_running=True)
    cfg, applier = make(mount_mode="mpd", mountpoint=None)
    assert applier.probe().mounted is None


def test_report_state_says_when_the_server_could_not_be_told(setup, caplog):
    make, _, _ = setup
    caplog.set_level(logging.INFO)
    cfg, applier = make()
    assert applier.run_plan(Plan(1, "tear-down", None, (ReportState("down"),), "t"), lambda s: False).ok
    assert "kitchen: could not tell the server this board is down (no channel)" in caplog.text


# ---------------------------------------------------------------- pure helpers


def test_mountinfo_is_parsed_with_escapes_and_optional_fields():
    text = (
        "22 1 0:21 / / rw - ext4 /dev/sda1 rw\n"
        "40 22 0:50 / /mnt/my\\040music rw,relatime shared:1 master:2 - nfs4 198.18.0.11:/srv/music rw,vers=4.2\n"
        "41 22 0:51 / /var/lib/mpd/MDrive rw - autofs /etc/autofs.mounts rw\n"
        "42 41 8:1 /srv/music /var/lib/mpd/MDrive rw - ext4 /dev/sdb1 rw\n"
    )
    entries = machine.parse_mountinfo(text)
    assert entries[1] == MountEntry("/mnt/my music", "/", "nfs4", "198.18.0.11:/srv/music")
    assert machine.mounted_at(entries, "/var/lib/mpd/MDrive") == [
        MountEntry("/var/lib/mpd/MDrive", "/srv/music", "ext4", "/dev/sdb1")]
    assert machine.mounted_at(entries[:3], "/var/lib/mpd/MDrive") == [], "autofs's trigger is no share"


def test_nfs_ls_names():
    out = "drwxr-xr-x  3     0     0         4096 A\n-rw-r--r--  1     0     0            1 two words.txt\n"
    assert machine.nfs_ls_names(out) == ["A", "two words.txt"]
