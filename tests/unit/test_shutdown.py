"""The safe shutdown helper's plan: exact command lines, pishutdown's argument passing."""

from __future__ import annotations

import os
import stat

from pistop_mdns import config
from pistop_mdns.actions import keygen, shutdown
from pistop_mdns.actions.shutdown import Step


def cfg(**flags):
    return config.load("/dev/null", None, {tuple(k.split("__")): v for k, v in flags.items()})


def test_systemd_plan_in_order_with_the_default_command():
    steps = shutdown.plan(cfg(), [], "/home/pi/MDrive", "systemd")
    assert steps == [
        Step("stop mpd", ("systemctl", "stop", "mpd.service")),
        Step("stop smbd", ("systemctl", "stop", "smbd.service")),
        Step("stop nmbd", ("systemctl", "stop", "nmbd.service")),
        Step("stop nfs-server", ("systemctl", "stop", "nfs-server.service")),
        Step("sync", ("sync",)),
        Step("unmount /home/pi/MDrive", ("umount", "/home/pi/MDrive")),
        Step("sync", ("sync",)),
        Step("power off", ("shutdown", "-h", "now")),
    ]


def test_arguments_replace_h_now_and_usb_power_is_cut_before_power_off():
    c = cfg(shutdown__services="mpd", shutdown__uhubctl_location="2", shutdown__uhubctl_port="1,2")
    steps = shutdown.plan(c, ["-r", "+1"], "", "daemontools")
    assert steps == [
        Step("stop mpd", ("svc", "-d", "/service/mpd")),
        Step("sync", ("sync",)),
        Step("cut USB power", ("uhubctl", "-a", "0", "-l", "2", "-p", "1,2")),
        Step("power off", ("shutdown", "-r", "+1")),
    ]


def test_no_service_manager_still_syncs_and_powers_off():
    steps = shutdown.plan(cfg(shutdown__command="/usr/local/bin/off"), [], "", "none")
    assert steps == [Step("sync", ("sync",)), Step("power off", ("/usr/local/bin/off",))]


def test_reboot_is_announced_as_stopping_everything_else_as_poweroff():
    assert shutdown.reason_for(["-r", "now"]) == "stopping"
    assert shutdown.reason_for(["-h", "now"]) == "poweroff"
    assert shutdown.reason_for([]) == "poweroff"


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
