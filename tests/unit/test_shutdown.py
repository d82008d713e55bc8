"""The safe shutdown helper: exact command lines in order, pishutdown's argument passing,
and USB power cut only after a clean unmount at a power-off."""

from __future__ import annotations

import os
import stat

import pytest

from pistop_mdns import config
from pistop_mdns.actions import keygen, shutdown
from pistop_mdns.actions.shutdown import Found, Step
from pistop_mdns.executor import Result


def cfg(**flags):
    return config.load("/dev/null", None, {tuple(k.split("__")): v for k, v in flags.items()})


class Recorder:
    """Stands in for the Runner: records every argv, answers from a table (argv prefix -> Results)."""

    def __init__(self, answers: dict[tuple[str, ...], list[Result]] | None = None):
        self.answers = answers or {}
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv, *, timeout=None, input=None, env=None) -> Result:
        argv = tuple(argv)
        self.calls.append(argv)
        for prefix, results in self.answers.items():
            if argv[:len(prefix)] == prefix and results:
                result = results.pop(0) if len(results) > 1 else results[0]
                return Result(argv, result.rc, result.out, result.err)
        return Result(argv, 0)


MOUNTED = Found(systemd=True, data_disk="/MDrive", disk_mounted=True)


def test_systemd_plan_in_order_with_the_default_command():
    steps = shutdown.plan(cfg(), [], MOUNTED)
    assert [(s.what, s.argv) for s in steps] == [
        ("stop mpdev", ("systemctl", "stop", "mpdev.service")),
        ("stop mpd", ("systemctl", "stop", "mpd.service")),
        ("stop smbd", ("systemctl", "stop", "smbd.service")),
        ("stop nmbd", ("systemctl", "stop", "nmbd.service")),
        ("stop nfs-server", ("systemctl", "stop", "nfs-server.service")),
        ("sync", ("sync",)),
        ("unmount /MDrive", ("umount", "--", "/MDrive")),
        ("check that /MDrive is unmounted", ("mountpoint", "-q", "--", "/MDrive")),
        ("sync", ("sync",)),
        ("power off", ("shutdown", "-h", "now")),
    ]
    assert all(s.absent == (5,) for s in steps[:5])  # a service that is not installed is no failure
    assert steps[6].tries == 3 and steps[7].expect == (32,)


def test_daemontools_services_mpdev_first_logs_last_then_svscan_and_usb_power_before_power_off():
    c = cfg(shutdown__uhubctl_location="2", shutdown__uhubctl_port="1,2")
    found = Found(supervised=("/service/fserver", "/service/fserver/log", "/service/mpdev", "/service/mpdev/log",
                              "/service/pistop-mdns-server"),
                  svscan_pids=(812,), data_disk="/MDrive", disk_mounted=True)
    steps = shutdown.plan(c, [], found)
    assert [(s.what, s.argv) for s in steps] == [
        ("stop mpdev (daemontools)", ("svc", "-d", "/service/mpdev")),
        ("stop fserver (daemontools)", ("svc", "-d", "/service/fserver")),
        ("stop pistop-mdns-server (daemontools)", ("svc", "-d", "/service/pistop-mdns-server")),
        ("stop the log of mpdev (daemontools)", ("svc", "-d", "/service/mpdev/log")),
        ("stop the log of fserver (daemontools)", ("svc", "-d", "/service/fserver/log")),
        ("stop svscan (pid 812)", ("kill", "-TERM", "812")),
        ("sync", ("sync",)),
        ("unmount /MDrive", ("umount", "--", "/MDrive")),
        ("check that /MDrive is unmounted", ("mountpoint", "-q", "--", "/MDrive")),
        ("sync", ("sync",)),
        ("cut USB power", ("uhubctl", "-a", "0", "-l", "2", "-p", "1,2")),
        ("power off", ("shutdown", "-h", "now")),
    ]
    assert steps[0].wait_down == "/service/mpdev" and not steps[5].guards_power
    assert steps[10].cuts_power and shutdown.power_note(c, [], found) is None


def test_svscan_run_by_systemd_is_stopped_as_a_unit():
    found = Found(systemd=True, supervised=("/service/mpdev",), svscan_units=("svscan.service",))
    steps = shutdown.plan(cfg(shutdown__services=""), [], found)
    assert [s.argv for s in steps] == [("svc", "-d", "/service/mpdev"), ("systemctl", "stop", "svscan.service"),
                                       ("sync",), ("shutdown", "-h", "now")]


def test_a_reboot_unmounts_but_keeps_the_usb_power_on():
    c = cfg(shutdown__uhubctl_location="2")
    steps = shutdown.plan(c, ["-r", "+1"], MOUNTED)
    assert not any(s.argv[0] == "uhubctl" for s in steps)
    assert ("umount", "--", "/MDrive") in [s.argv for s in steps]
    assert steps[-1] == Step("reboot", ("shutdown", "-r", "+1"), guards_power=False)
    assert shutdown.power_note(c, ["-r", "+1"], MOUNTED) == "a reboot: the USB power stays on"


@pytest.mark.parametrize("args", [["-k", "now"], ["-c"], ["-rk", "now"], ["--cancel"], ["-h", "-c"]])
def test_a_warning_or_a_cancel_only_runs_the_command(args):
    c = cfg(shutdown__uhubctl_location="2")
    assert shutdown.plan(c, args, MOUNTED) == [Step("pass it on to shutdown(8)", ("shutdown", *args),
                                                    guards_power=False)]
    assert shutdown.reason_for(args) is None and shutdown.power_note(c, args, MOUNTED) is None


def test_without_a_known_data_disk_the_usb_power_stays_on():
    c = cfg(shutdown__uhubctl_location="2")
    found = Found(systemd=True)
    assert not any(s.cuts_power for s in shutdown.plan(c, [], found))
    assert "no data disk known" in shutdown.power_note(c, [], found)
    assert "fix: set data_disk in [shutdown]" in shutdown.power_note(c, [], found)


def test_a_disk_already_unmounted_is_only_checked():
    found = Found(data_disk="/MDrive", disk_mounted=False)
    steps = shutdown.plan(cfg(shutdown__uhubctl_location="2"), [], found)
    assert [s.argv[0] for s in steps] == ["sync", "mountpoint", "sync", "uhubctl", "shutdown"]


def test_no_service_manager_still_syncs_and_powers_off():
    steps = shutdown.plan(cfg(shutdown__command="/usr/local/bin/off"), [], Found())
    assert [s.argv for s in steps] == [("sync",), ("/usr/local/bin/off",)]


def test_reboot_is_announced_as_stopping_everything_else_as_poweroff():
    assert shutdown.reason_for(["-r", "now"]) == "stopping"
    assert shutdown.reason_for(["--reboot"]) == "stopping"
    assert shutdown.reason_for(["-h", "now"]) == "poweroff"
    assert shutdown.reason_for(["-P", "+5", "going down -r"]) == "poweroff"
    assert shutdown.reason_for([]) == "poweroff"


# ---------------------------------------------------------------- carrying it out


def run_plan(c, args, found, answers):
    runner = Recorder(answers)
    sleeps: list[float] = []
    failed = shutdown.carry_out(shutdown.plan(c, args, found), runner, "musicpi", sleep=sleeps.append,
                                clock=lambda: 0.0)
    return runner.calls, failed, sleeps


def test_a_busy_disk_keeps_the_usb_power_on_and_still_powers_off(caplog):
    busy = Result((), 32, err="umount: /MDrive: target is busy.")
    calls, failed, sleeps = run_plan(cfg(shutdown__uhubctl_location="2", shutdown__services=""), [],
                                     Found(data_disk="/MDrive", disk_mounted=True),
                                     {("umount",): [busy], ("mountpoint",): [Result((), 0)]})
    assert calls == [("sync",), ("umount", "--", "/MDrive"), ("umount", "--", "/MDrive"), ("umount", "--", "/MDrive"),
                     ("mountpoint", "-q", "--", "/MDrive"), ("sync",), ("shutdown", "-h", "now")]
    assert failed == ["unmount /MDrive", "check that /MDrive is unmounted"]
    assert sleeps == [1.0, 1.0]
    text = caplog.text
    assert ("musicpi: shutdown: unmount /MDrive failed: umount -- /MDrive: exit 32: umount: /MDrive: target is busy."
            in text)
    assert "check that /MDrive is unmounted failed: /MDrive is still mounted" in text
    assert "musicpi: shutdown: USB power stays on: unmount /MDrive, check that /MDrive is unmounted failed" in text


def test_a_clean_unmount_cuts_the_power_after_the_second_sync():
    calls, failed, _ = run_plan(cfg(shutdown__uhubctl_location="1-1", shutdown__services="mpd,smbd"), [], MOUNTED,
                                {("systemctl", "stop", "smbd.service"): [Result((), 5, err="Unit smbd.service "
                                                                                "not loaded.")],
                                 ("mountpoint",): [Result((), 32)]})
    assert calls == [("systemctl", "stop", "mpd.service"), ("systemctl", "stop", "smbd.service"), ("sync",),
                     ("umount", "--", "/MDrive"), ("mountpoint", "-q", "--", "/MDrive"), ("sync",),
                     ("uhubctl", "-a", "0", "-l", "1-1"), ("shutdown", "-h", "now")]
    assert failed == []


def test_a_service_that_fails_to_stop_keeps_the_power_on():
    calls, failed, _ = run_plan(cfg(shutdown__uhubctl_location="2", shutdown__services="nfs-server"), [], MOUNTED,
                                {("systemctl",): [Result((), 1, err="Job failed")],
                                 ("mountpoint",): [Result((), 32)]})
    assert failed == ["stop nfs-server"]
    assert not any(c[0] == "uhubctl" for c in calls) and calls[-1] == ("shutdown", "-h", "now")


def test_daemontools_services_are_waited_for_until_svstat_says_down():
    mpdev = "/service/mpdev"
    calls, failed, sleeps = run_plan(
        cfg(shutdown__uhubctl_location="2"), [], Found(supervised=(mpdev,), svscan_pids=(9,), data_disk="/MDrive",
                                                      disk_mounted=True),
        {("svstat",): [Result((), 0, out=f"{mpdev}: up (pid 42) 9 seconds, want down\n"),
                       Result((), 0, out=f"{mpdev}: down 0 seconds, normally up\n")],
         ("kill",): [Result((), 1, err="kill: (9) - No such process")],  # svscan already gone: no reason to stay on
         ("mountpoint",): [Result((), 32)]})
    assert calls[:4] == [("svc", "-d", mpdev), ("svstat", mpdev), ("svstat", mpdev), ("kill", "-TERM", "9")]
    assert sleeps == [0.1]
    assert failed == ["stop svscan (pid 9)"]
    assert ("uhubctl", "-a", "0", "-l", "2") in calls


def test_a_service_that_never_goes_down_keeps_the_power_on(caplog):
    mpdev = "/service/mpdev"
    clock = iter(range(0, 1000, 5))
    runner = Recorder({("svstat",): [Result((), 0, out=f"{mpdev}: up (pid 42) 9 seconds, want down\n")],
                       ("mountpoint",): [Result((), 32)]})
    steps = shutdown.plan(cfg(shutdown__uhubctl_location="2"), [], Found(supervised=(mpdev,), data_disk="/MDrive",
                                                                        disk_mounted=True))
    failed = shutdown.carry_out(steps, runner, "musicpi", sleep=lambda s: None, clock=lambda: next(clock))
    assert failed == ["stop mpdev (daemontools)"]
    assert "svc -d /service/mpdev: still up (pid 42) 9 seconds, want down after 20 s" in caplog.text
    assert not any(c[0] == "uhubctl" for c in runner.calls)


# ---------------------------------------------------------------- looking around


def test_supervised_services_are_those_svok_answers_for(tmp_path):
    for d in ("mpdev/log", "fserver", ".pistop-mdns-client", "down-one"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "README").write_text("not a service")
    runner = Recorder({("svok", str(tmp_path / "down-one")): [Result((), 100)]})
    assert shutdown.supervised_services(str(tmp_path), runner) == (
        str(tmp_path / "fserver"), str(tmp_path / "mpdev"), str(tmp_path / "mpdev/log"))
    assert runner.calls == [("svok", str(tmp_path / d)) for d in ("down-one", "fserver", "mpdev", "mpdev/log")]


def test_without_daemontools_nothing_is_supervised(tmp_path):
    (tmp_path / "mpdev").mkdir()

    class Missing(Recorder):
        def run(self, argv, **kw):
            return Result(tuple(argv), None, not_found=True)

    assert shutdown.supervised_services(str(tmp_path), Missing()) == ()


def test_svscan_processes_are_found_by_the_directory_they_scan(tmp_path):
    service = tmp_path / "service"
    service.mkdir()
    proc = tmp_path / "proc"
    for pid, comm, cwd in ((812, "svscan", service), (813, "svscan", tmp_path), (814, "sleep", service)):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "comm").write_text(comm + "\n")
        (proc / str(pid) / "cwd").symlink_to(cwd)
    (proc / "self").mkdir()
    assert shutdown.svscan_processes(str(service), str(proc)) == (812,)


def test_the_data_disk_is_the_mount_holding_the_export_unless_it_is_root():
    c = cfg(server__export="/MDrive/Music")
    assert shutdown.data_disk(c, Recorder({("findmnt",): [Result((), 0, out="/MDrive\n")]})) == "/MDrive"
    assert shutdown.data_disk(c, Recorder({("findmnt",): [Result((), 0, out="/\n")]})) == ""
    assert shutdown.data_disk(c, Recorder({("findmnt",): [Result((), 1)]})) == ""
    runner = Recorder()
    assert shutdown.data_disk(cfg(shutdown__data_disk="/MDrive/"), runner) == "/MDrive" and runner.calls == []


def test_mdrive_of_pistop_is_the_servers_data_disk(tmp_path):
    (tmp_path / "MDRIVE").write_text("/MDrive\n")
    c = config.load("/dev/null", str(tmp_path))
    assert c.shutdown.data_disk == "/MDrive" and c.client.mountpoint == "/MDrive"
    assert c.sources[("shutdown", "data_disk")] == str(tmp_path / "MDRIVE")


def test_remote_arguments_must_be_plain_options():
    assert all(shutdown.SAFE_ARG.match(a) for a in ["-h", "now", "+5", "-r", "23:00"])
    assert not any(shutdown.SAFE_ARG.match(a) for a in ["--server=x;rm", "a b", "$(reboot)", ""])


def test_keygen_writes_a_private_key_once(tmp_path, capsys):
    path = str(tmp_path / "etc" / "key")
    assert keygen.run(path, force=False) == 0
    text = open(path).read().strip()
    assert len(text) == 64 and int(text, 16) >= 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "scp -p" in capsys.readouterr().out
    assert keygen.run(path, force=False) == 1
    assert open(path).read().strip() == text
    assert keygen.run(path, force=True) == 0
    assert open(path).read().strip() != text


@pytest.mark.parametrize("rc, told", [(1, ["poweroff", "up"]), (0, ["poweroff"])])
def test_a_power_off_that_fails_tells_the_server_it_is_up_again(monkeypatch, rc, told):
    said = []

    async def announce(state_dir, reason, wait):
        said.append(reason)
        return {"t": "result", "ok": True, "told": []}

    monkeypatch.setattr(shutdown, "announce", announce)
    monkeypatch.setattr(shutdown, "survey", lambda *a, **kw: Found())
    c = cfg(shutdown__command="/usr/local/bin/off", general__service_manager="none")
    runner = Recorder({("/usr/local/bin/off",): [Result((), rc, err="refused")]})
    assert shutdown.run_local(c, [], runner) == (1 if rc else 0)
    assert said == told


def test_the_helper_says_which_boards_went_off_and_which_still_answer(monkeypatch, caplog):
    async def announce(state_dir, reason, wait):
        return {"t": "result", "ok": False, "told": ["kitchen", "attic", "den"], "still_up": [],
                "off": ["kitchen", "attic"], "still_on": ["den"]}

    monkeypatch.setattr(shutdown, "announce", announce)
    monkeypatch.setattr(shutdown, "survey", lambda *a, **kw: Found())
    c = cfg(shutdown__command="/usr/local/bin/off", general__service_manager="none",
            general__hostname="musicpi")
    caplog.set_level("INFO")
    assert shutdown.run_local(c, [], Recorder({})) == 0
    lines = [r.getMessage() for r in caplog.records]
    assert "musicpi: all 3 client(s) are down: kitchen, attic, den" in lines
    assert "musicpi: powered off: kitchen, attic" in lines
    assert "musicpi: said they power off but still answer after 60 s: den; going on" in lines
    assert lines.index("musicpi: powered off: kitchen, attic") < next(
        i for i, line in enumerate(lines) if "power off: done" in line)
