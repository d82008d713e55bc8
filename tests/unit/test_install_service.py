"""Service files (pure) and the installer's files and exact commands, in a temporary root.

systemctl cannot run on a test machine, so the commands for a live system
are compared with the exact argv a recording runner received.
"""

from __future__ import annotations

import configparser
import logging
import os
from pathlib import Path

import pytest

from pistop_mdns import config
from pistop_mdns.actions import install_service as svc
from pistop_mdns.executor import Result

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"


class RecordingRunner:
    def __init__(self, fail: tuple[str, ...] = ()):
        self.calls: list[tuple[str, ...]] = []
        self.fail = fail

    def run(self, argv, *, timeout=None, input=None, env=None) -> Result:
        argv = tuple(argv)
        self.calls.append(argv)
        if argv[0] == "svok":  # nothing is supervised in these tests
            return Result(argv, 100)
        return Result(argv, 1 if any(f in argv for f in self.fail) else 0, err="Failed to connect to bus")


def unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(text)
    return parser


def installer(tmp_path, runner, **kw) -> svc.Installer:
    return svc.Installer(runner, root=str(tmp_path), echo=lambda line: None, **kw)


# ---------------------------------------------------------------- texts


def test_contrib_holds_exactly_what_install_service_writes():
    """contrib/ is generated; regenerate with:
    python3 -c 'from pistop_mdns.actions import install_service as s; [open("contrib/"+n, "w").write(t)
    for n, t in s.contrib_files().items()]'"""
    for name, text in svc.contrib_files().items():
        assert (CONTRIB / name).read_text() == text, f"contrib/{name} differs from install_service.py"


def test_server_unit_is_notify_restarts_on_failure_and_stops_before_network_nfs_and_mpd():
    [f] = svc.systemd_files("server", ["/usr/bin/pistop-mdns"])
    u = unit(f.text)
    assert f.path == "/etc/systemd/system/pistop-mdns-server.service"
    assert u["Service"]["Type"] == "notify" and u["Service"]["NotifyAccess"] == "main"
    assert u["Service"]["ExecStart"] == "/usr/bin/pistop-mdns server"
    assert u["Service"]["Restart"] == "on-failure"
    # Stop order is the reverse of start order: After= these means stopping before them.
    assert set(u["Unit"]["After"].split()) >= {"network.target", "network-online.target",
                                               "nfs-server.service", "mpd.service"}
    assert u["Unit"]["Wants"] == "network-online.target"
    assert "ProtectSystem" not in u["Service"] and "PrivateTmp" not in u["Service"]


def test_client_unit_waits_for_its_browser_and_has_no_mount_namespace():
    [f] = svc.systemd_files("client", ["/usr/bin/pistop-mdns"])
    u = unit(f.text)
    assert u["Service"]["Type"] == "notify" and u["Service"]["ExecStart"] == "/usr/bin/pistop-mdns client"
    assert not any(k.startswith(("Protect", "Private", "ReadOnly")) for k in u["Service"])


def test_update_is_a_timer_5_minutes_after_boot_then_every_6_hours():
    files = svc.systemd_files("update", ["/usr/bin/pistop-mdns"])
    assert [f.path for f in files] == ["/etc/systemd/system/pistop-mdns-update.service",
                                       "/etc/systemd/system/pistop-mdns-update.timer"]
    timer = unit(files[1].text)
    assert timer["Timer"]["OnBootSec"] == "5min" and timer["Timer"]["OnUnitActiveSec"] == "6h"
    assert unit(files[0].text)["Service"]["Type"] == "oneshot"


def test_another_interval_comes_as_a_drop_in_that_resets_and_restates_the_schedule():
    files = svc.systemd_files("update", ["/usr/bin/pistop-mdns"], interval=3600)
    assert files[2].path == "/etc/systemd/system/pistop-mdns-update.timer.d/interval.conf"
    assert files[2].text.splitlines()[-4:] == ["[Timer]", "OnUnitActiveSec=", "OnBootSec=5min",
                                               "OnUnitActiveSec=3600s"]


def test_rsync_unit_runs_the_daemon_in_the_foreground_with_its_own_config():
    unit_file, conf = svc.systemd_files("rsync", ["/usr/bin/pistop-mdns"], rsync=svc.RsyncSetup("x"))
    assert unit(unit_file.text)["Service"]["ExecStart"] == (
        "/usr/bin/rsync --daemon --no-detach --config=/etc/pistop-mdns/rsyncd.conf")
    assert conf == svc.File("/etc/pistop-mdns/rsyncd.conf", "x", keep=True)


def test_rsyncd_conf_serves_the_music_read_only_and_takes_uploads_with_a_password_from_own_subnets():
    text = svc.rsyncd_conf("/srv/My Music", 8873, owner="pi", group="audio",
                           subnets=("192.168.2.0/24", "2001:db8::/64"))
    conf = unit("[global]\n" + text.replace("\t", ""))
    assert conf["global"]["port"] == "8873" and conf["global"]["uid"] == "nobody"
    assert conf["music"]["path"] == "/srv/My Music" and conf["music"]["read only"] == "yes"
    upload = conf["music-upload"]
    assert upload["path"] == "/srv/My Music" and upload["read only"] == "no" and upload["list"] == "no"
    assert (upload["uid"], upload["gid"]) == ("pi", "audio")
    assert upload["auth users"] == "music" and upload["secrets file"] == "/etc/pistop-mdns/rsyncd.secrets"
    assert upload["hosts allow"] == "192.168.2.0/24 2001:db8::/64"
    assert upload["refuse options"] == "delete"
    assert svc.writable_modules(text) == {"music-upload": ("/srv/My Music", "pi")}


def test_writable_modules_follow_rsyncs_defaults_and_the_global_section():
    text = ("uid = root\nread only = false\n[a]\npath = /a\n[b]\npath = /b\nread only = yes\n"
            "[global]\n[c]\n  Read   Only = 0\n path = /c\n uid = pi\n[d]\n")
    assert svc.writable_modules(text) == {"a": ("/a", "root"), "c": ("/c", "pi")}
    assert svc.writable_modules("[m]\npath = /m\n") == {}


def test_the_upload_password_is_private_kept_and_the_drop_in_makes_the_music_writable():
    setup = svc.RsyncSetup("conf", password="s3cret", writable=("/srv/My Music",))
    files = svc.systemd_files("rsync", ["/usr/bin/pistop-mdns"], rsync=setup)
    by_path = {f.path: f for f in files}
    secrets = by_path["/etc/pistop-mdns/rsyncd.secrets"]
    assert (secrets.text, secrets.mode, secrets.keep, secrets.secret) == ("music:s3cret\n", 0o600, True, True)
    dropin = unit(by_path["/etc/systemd/system/pistop-mdns-rsync.service.d/upload.conf"].text)
    assert dropin["Service"]["ReadWritePaths"] == '-"/srv/My Music"'
    assert "CapabilityBoundingSet" not in dropin["Service"]
    as_root = svc.rsync_dropin(["/srv/music"], as_root=True)
    assert unit(as_root)["Service"]["CapabilityBoundingSet"] == "CAP_CHOWN CAP_FOWNER"
    # daemontools runs the daemon without a sandbox: no drop-in there.
    assert "/etc/systemd/system/pistop-mdns-rsync.service.d/upload.conf" not in [
        f.path for f in svc.daemontools_files("rsync", "/service", [], rsync=setup)]


def test_dry_run_never_shows_the_password(tmp_path):
    shown: list[str] = []
    inst = svc.Installer(RecordingRunner(), root=str(tmp_path), dry_run=True, echo=shown.append)
    inst.install_systemd("rsync", svc.systemd_files("rsync", [], rsync=svc.RsyncSetup("conf", password="s3cret")))
    assert "s3cret" not in "\n".join(shown) and "(a new password, not shown)" in "\n".join(shown)
    assert not (tmp_path / "etc").exists()


def test_the_music_directorys_owner_writes_the_uploads_else_mpds_user(tmp_path):
    import grp
    import pwd

    music = tmp_path / "music"
    music.mkdir()
    os.chown(music, 65534, 65534)
    assert svc.music_owner(str(music), "/nonexistent") == (pwd.getpwuid(65534).pw_name, grp.getgrgid(65534).gr_name)
    mpd_conf = tmp_path / "mpd.conf"
    mpd_conf.write_text('user "root"\n')
    assert svc.music_owner(str(tmp_path / "missing"), str(mpd_conf)) == ("root", grp.getgrgid(0).gr_name)
    assert svc.music_owner(str(tmp_path / "missing"), "/nonexistent") == ("nobody", "nogroup")


def test_exec_start_words_are_quoted_and_escaped_for_systemd():
    assert svc.exec_line(["/opt/my tools/pistop-mdns", "--config", "/etc/100%.toml", "$HOME"]) == (
        '"/opt/my tools/pistop-mdns" --config /etc/100%%.toml $$HOME')


def test_global_options_reach_the_service():
    assert svc.global_args("/etc/x.toml", "/service/fclient", daemontools=False) == [
        "--config", "/etc/x.toml", "--envdir", "/service/fclient"]
    # Under daemontools the envdir's variables are copied into ./variables instead.
    assert svc.global_args(None, "/service/fclient", daemontools=True) == []


def test_daemontools_client_layout_and_run_script():
    files = svc.daemontools_files("client", "/service", ["/usr/bin/pistop-mdns"])
    by_path = {f.path: f for f in files}
    assert set(by_path) == {"/service/pistop-mdns-client", "/service/pistop-mdns-client/variables",
                            "/service/pistop-mdns-client/log", "/service/pistop-mdns-client/log/run",
                            "/service/pistop-mdns-client/run"}
    run = by_path["/service/pistop-mdns-client/run"]
    assert run.mode == 0o755
    assert run.text.startswith("#!/bin/sh\n")
    assert run.text.endswith("exec 2>&1\nexec /usr/bin/pistop-mdns --envdir ./variables client\n")
    assert by_path["/service/pistop-mdns-client/log/run"].text.endswith("exec multilog t ./main\n")


def test_daemontools_update_waits_checks_and_pauses_for_the_interval():
    run = {f.path: f for f in svc.daemontools_files("update", "/service", ["/usr/bin/pistop-mdns"],
                                                    interval=7200)}["/service/pistop-mdns-update/run"]
    assert run.text.endswith("sleep 300\n/usr/bin/pistop-mdns --envdir ./variables update\nexec sleep 6900\n")


def test_daemontools_rsync_logs_to_multilog():
    run = {f.path: f for f in svc.daemontools_files("rsync", "/service", [])}["/service/pistop-mdns-rsync/run"]
    assert run.text.endswith("mkdir -p /run/pistop-mdns-rsync\nexec /usr/bin/rsync --daemon --no-detach "
                             "--config=/etc/pistop-mdns/rsyncd.conf --log-file=/dev/stdout\n")


@pytest.mark.parametrize("setting, systemd_runs, svscan, expected", [
    ("auto", True, True, "systemd"),
    ("auto", False, True, "daemontools"),
    ("auto", False, False, None),
    ("daemontools", True, False, "daemontools"),
])
def test_detect_init(setting, systemd_runs, svscan, expected):
    found = svc.detect_init(setting, exists=lambda p: systemd_runs and p == "/run/systemd/system",
                            which=lambda p: "/usr/bin/svscan" if svscan and p == "svscan" else None)
    assert found == expected


# ---------------------------------------------------------------- systemd, live


def test_install_on_a_live_system_writes_reloads_and_enables_now(tmp_path):
    runner = RecordingRunner()
    files = svc.systemd_files("server", ["/usr/bin/pistop-mdns"])
    assert installer(tmp_path, runner).install_systemd("server", files) == 0
    path = tmp_path / "etc/systemd/system/pistop-mdns-server.service"
    assert path.read_text() == files[0].text and (path.stat().st_mode & 0o777) == 0o644
    assert runner.calls == [("systemctl", "daemon-reload"),
                            ("systemctl", "enable", "--now", "pistop-mdns-server.service")]


def test_installing_again_changes_nothing_and_only_makes_sure_it_runs(tmp_path):
    files = svc.systemd_files("client", ["/usr/bin/pistop-mdns"])
    installer(tmp_path, RecordingRunner()).install_systemd("client", files)
    path = tmp_path / "etc/systemd/system/pistop-mdns-client.service"
    before = path.stat().st_mtime_ns
    runner = RecordingRunner()
    assert installer(tmp_path, runner).install_systemd("client", files) == 0
    assert runner.calls == [("systemctl", "enable", "--now", "pistop-mdns-client.service")]
    assert path.stat().st_mtime_ns == before


def test_a_changed_unit_is_reloaded_and_the_running_service_restarted(tmp_path):
    installer(tmp_path, RecordingRunner()).install_systemd("client", svc.systemd_files("client", ["/a/pm"]))
    runner = RecordingRunner()
    installer(tmp_path, runner).install_systemd("client", svc.systemd_files("client", ["/b/pm"]))
    assert runner.calls == [("systemctl", "daemon-reload"),
                            ("systemctl", "enable", "--now", "pistop-mdns-client.service"),
                            ("systemctl", "try-restart", "pistop-mdns-client.service")]


def test_update_enables_the_timer_and_the_interval_drop_in_comes_and_goes(tmp_path):
    runner = RecordingRunner()
    inst = installer(tmp_path, runner)
    assert inst.install_systemd("update", svc.systemd_files("update", ["/usr/bin/pistop-mdns"], interval=3600)) == 0
    dropin = tmp_path / "etc/systemd/system/pistop-mdns-update.timer.d/interval.conf"
    assert dropin.exists()
    assert runner.calls[-1] == ("systemctl", "enable", "--now", "pistop-mdns-update.timer")
    runner.calls.clear()
    assert inst.install_systemd("update", svc.systemd_files("update", ["/usr/bin/pistop-mdns"])) == 0
    assert not dropin.exists() and not dropin.parent.exists()
    assert runner.calls == [("systemctl", "daemon-reload"),
                            ("systemctl", "enable", "--now", "pistop-mdns-update.timer")]


def test_remove_disables_now_deletes_what_it_wrote_and_reloads(tmp_path):
    inst = installer(tmp_path, RecordingRunner())
    inst.install_systemd("update", svc.systemd_files("update", ["/usr/bin/pistop-mdns"], interval=3600))
    runner = RecordingRunner()
    assert installer(tmp_path, runner).remove_systemd("update") == 0
    assert runner.calls == [("systemctl", "disable", "--now", "pistop-mdns-update.timer"),
                            ("systemctl", "daemon-reload")]
    assert list((tmp_path / "etc/systemd/system").iterdir()) == []


def test_remove_keeps_the_rsync_configuration(tmp_path):
    inst = installer(tmp_path, RecordingRunner())
    inst.install_systemd("rsync", svc.systemd_files("rsync", [], rsync=svc.RsyncSetup(
        "mine", password="pw", writable=("/srv/music",))))
    secrets = tmp_path / "etc/pistop-mdns/rsyncd.secrets"
    assert secrets.read_text() == "music:pw\n" and (secrets.stat().st_mode & 0o777) == 0o600
    assert inst.remove_systemd("rsync") == 0
    assert (tmp_path / "etc/pistop-mdns/rsyncd.conf").read_text() == "mine"
    assert secrets.read_text() == "music:pw\n"
    assert not (tmp_path / "etc/systemd/system/pistop-mdns-rsync.service").exists()
    assert not (tmp_path / "etc/systemd/system/pistop-mdns-rsync.service.d").exists()


def test_an_existing_rsync_configuration_is_never_replaced(tmp_path):
    conf = tmp_path / "etc/pistop-mdns/rsyncd.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("edited by hand")
    secrets = tmp_path / "etc/pistop-mdns/rsyncd.secrets"
    secrets.write_text("music:old\n")
    installer(tmp_path, RecordingRunner()).install_systemd("rsync", svc.systemd_files("rsync", [], rsync=svc.RsyncSetup(
        "new", password="new")))
    assert conf.read_text() == "edited by hand" and secrets.read_text() == "music:old\n"


def test_remove_of_what_is_not_installed_is_a_no_op(tmp_path):
    runner = RecordingRunner()
    assert installer(tmp_path, runner).remove_systemd("server") == 0 and runner.calls == []


def test_a_failing_systemctl_is_status_1_with_its_message(tmp_path, caplog):
    runner = RecordingRunner(fail=("daemon-reload",))
    assert installer(tmp_path, runner).install_systemd("server", svc.systemd_files("server", ["/p"])) == 1
    assert "systemctl daemon-reload: exit 1: Failed to connect to bus" in caplog.text


def package_ships(tmp_path, role: str) -> None:
    """Put the units of contrib/ where Debian's package installs them."""
    for f in svc.systemd_files(role, [svc.PROGRAM]):
        if f.path.startswith("/etc/systemd/system/"):
            shipped = tmp_path / "lib/systemd/system" / os.path.basename(f.path)
            shipped.parent.mkdir(parents=True, exist_ok=True)
            shipped.write_text(f.text)


def test_the_packaged_unit_is_enabled_rather_than_copied(tmp_path, caplog):
    package_ships(tmp_path, "server")
    runner = RecordingRunner()
    with caplog.at_level(logging.INFO):
        assert installer(tmp_path, runner).install_systemd("server", svc.systemd_files("server", [svc.PROGRAM])) == 0
    assert not (tmp_path / "etc").exists()
    assert runner.calls == [("systemctl", "enable", "--now", "pistop-mdns-server.service")]
    assert "the packaged unit in /lib/systemd/system is used" in caplog.text


def test_an_earlier_copy_gives_way_to_the_packaged_unit(tmp_path):
    installer(tmp_path, RecordingRunner()).install_systemd("server", svc.systemd_files("server", [svc.PROGRAM]))
    package_ships(tmp_path, "server")
    runner = RecordingRunner()
    installer(tmp_path, runner).install_systemd("server", svc.systemd_files("server", [svc.PROGRAM]))
    assert not (tmp_path / "etc/systemd/system/pistop-mdns-server.service").exists()
    assert runner.calls == [("systemctl", "daemon-reload"),
                            ("systemctl", "enable", "--now", "pistop-mdns-server.service")]


def test_another_command_line_still_needs_its_own_unit(tmp_path):
    package_ships(tmp_path, "client")
    files = svc.systemd_files("client", [svc.PROGRAM, "--config", "/etc/other.toml"])
    installer(tmp_path, RecordingRunner()).install_systemd("client", files)
    assert (tmp_path / "etc/systemd/system/pistop-mdns-client.service").read_text() == files[0].text


def test_remove_disables_a_packaged_unit_and_leaves_the_package_alone(tmp_path):
    package_ships(tmp_path, "update")
    runner = RecordingRunner()
    assert installer(tmp_path, runner).remove_systemd("update") == 0
    assert runner.calls == [("systemctl", "disable", "--now", "pistop-mdns-update.timer")]
    assert (tmp_path / "lib/systemd/system/pistop-mdns-update.timer").exists()


# ---------------------------------------------------------------- other roots, dry run


def test_under_another_root_units_are_only_enabled_there(tmp_path):
    runner = RecordingRunner()
    inst = installer(tmp_path, runner, live=False)
    assert inst.install_systemd("server", svc.systemd_files("server", ["/usr/bin/pistop-mdns"])) == 0
    assert runner.calls == [("systemctl", f"--root={tmp_path}", "enable", "pistop-mdns-server.service")]
    runner.calls.clear()
    assert inst.remove_systemd("server") == 0
    assert runner.calls == [("systemctl", f"--root={tmp_path}", "disable", "pistop-mdns-server.service")]


def test_dry_run_prints_files_and_commands_and_writes_nothing(tmp_path):
    printed: list[str] = []
    runner = RecordingRunner()
    inst = svc.Installer(runner, root=str(tmp_path), dry_run=True, echo=printed.append)
    assert inst.install_systemd("server", svc.systemd_files("server", ["/usr/bin/pistop-mdns"])) == 0
    assert list(tmp_path.iterdir()) == [] and runner.calls == []
    text = "\n".join(printed)
    assert f"would write {tmp_path}/etc/systemd/system/pistop-mdns-server.service (mode 644):" in text
    assert "    ExecStart=/usr/bin/pistop-mdns server" in text
    assert "would run: systemctl enable --now pistop-mdns-server.service" in text


def test_daemontools_dry_run_writes_nothing(tmp_path):
    printed: list[str] = []
    inst = svc.Installer(RecordingRunner(), root=str(tmp_path), dry_run=True, echo=printed.append)
    files = svc.daemontools_files("client", "/service", ["/usr/bin/pistop-mdns"])
    assert inst.install_daemontools("client", "/service", files) == 0
    assert list(tmp_path.iterdir()) == []
    assert f"would write {tmp_path}/service/pistop-mdns-client/run (mode 755):" in printed


# ---------------------------------------------------------------- daemontools files


def test_daemontools_install_builds_under_a_dot_name_and_renames(tmp_path):
    runner = RecordingRunner()
    files = svc.daemontools_files("client", "/service", ["/usr/bin/pistop-mdns"])
    assert installer(tmp_path, runner).install_daemontools("client", "/service", files) == 0
    service = tmp_path / "service/pistop-mdns-client"
    assert sorted(p.name for p in (tmp_path / "service").iterdir()) == ["pistop-mdns-client"]
    assert (service / "run").stat().st_mode & 0o777 == 0o755 and (service / "variables").is_dir()
    assert runner.calls == []  # svscan notices the new directory by itself


def test_pistop_variables_are_copied_from_envdir_without_overwriting(tmp_path):
    old = tmp_path / "fclient/variables"
    old.mkdir(parents=True)
    (old / "MDRIVE").write_text("/home/pi/MDrive\n")
    (old / "HOST").write_text("192.168.1.10\n")  # the server fclient called: static_servers
    (old / "MAXDAEMONS").write_text("10\n")  # tcpserver's: not copied
    files = svc.daemontools_files("client", "/service", ["/p"])
    inst = installer(tmp_path, RecordingRunner())
    assert inst.install_daemontools("client", "/service", files, variables_from=str(tmp_path / "fclient")) == 0
    variables = tmp_path / "service/pistop-mdns-client/variables"
    assert sorted(os.listdir(variables)) == ["HOST", "MDRIVE"]
    (variables / "MDRIVE").write_text("/mnt/changed\n")
    inst.install_daemontools("client", "/service", files, variables_from=str(tmp_path / "fclient"))
    assert (variables / "MDRIVE").read_text() == "/mnt/changed\n"
    loaded = config.load("/dev/null", str(tmp_path / "service/pistop-mdns-client"))
    assert loaded.client.mountpoint == "/mnt/changed"


def test_a_left_over_dot_directory_stops_the_install(tmp_path, caplog):
    (tmp_path / "service/.pistop-mdns-client").mkdir(parents=True)
    files = svc.daemontools_files("client", "/service", ["/p"])
    with caplog.at_level(logging.INFO):
        assert installer(tmp_path, RecordingRunner()).install_daemontools("client", "/service", files) == 1
    assert "install-service client --remove" in caplog.text


def test_root_is_required_except_for_a_dry_run(monkeypatch, caplog):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    cfg = config.load("/dev/null")
    status = svc.run(cfg, "client", init="daemontools", remove=False, dry_run=False, root="/",
                     config_path=None, envdir=None, echo=lambda line: None)
    assert status == 2 and "install-service needs root" in caplog.text and "sudo" in caplog.text
