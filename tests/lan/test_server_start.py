"""The server on the simulated LAN keeps pistop's fserver habits: it backs up [backup] paths
at start, and tells its LCD and desktop notifiers "PowerOn", and "PowerOff" when it powers off."""

from __future__ import annotations

import os
import re
import stat

import pytest

from tests.helpers import need, wait_for
from tests.lan import peers

pytestmark = pytest.mark.lan


def reader(path) -> int:
    """A FIFO with its reader open, as lcd-daemon and notify-daemon keep theirs."""
    os.mkfifo(path)
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK)


def received(fd: int, seen: list[str]) -> str:
    try:
        seen.append(os.read(fd, 4096).decode())
    except BlockingIOError:
        pass
    return "".join(seen)


def test_server_backs_up_at_start_and_says_power_on_then_power_off(make_lan, tmp_path):
    need("rsync")
    lan = make_lan(["musicpi"])
    src = tmp_path / "etc"
    src.mkdir()
    (src / "mpd.conf").write_text('music_directory "/MDrive/Music"\n')
    disk = tmp_path / "MDrive"
    (disk / "backup").mkdir(parents=True)
    lcd, desktop = reader(tmp_path / "lcdfifo"), reader(tmp_path / "notifyfifo")
    try:
        conf = tmp_path / "server.toml"
        conf.write_text(f"""
[server]
stop_reason = "poweroff"
[notify]
lcd_fifo = "{tmp_path}/lcdfifo"
notify_fifo = "{tmp_path}/notifyfifo"
[backup]
paths = ["{src}"]
dest = "{disk}"
""")
        srv = peers.start(lan["musicpi"], "--config", str(conf), "server", "--export", "/srv/music", "--mpd-port",
                          "6600", "--state-dir", str(tmp_path / "state"))
        srv.wait(r"advertising musicpi\._pistop\._tcp", 30)
        lcd_seen: list[str] = []
        desktop_seen: list[str] = []
        wait_for(lambda: received(lcd, lcd_seen) == "3 0 3:musicpi PowerOn\n", 10, what="PowerOn on the LCD")
        wait_for(lambda: received(desktop, desktop_seen) == "summary:host-status\nbody: PowerOn musicpi\n", 10,
                 what="PowerOn on the desktop")
        srv.wait(re.escape(f"backup {src} -> {disk}/backup/musicpi{src}/: rsync status 0"), 30)
        copy = disk / "backup" / "musicpi" / str(src).lstrip("/") / "mpd.conf"
        assert copy.read_text() == 'music_directory "/MDrive/Music"\n'
        assert srv.find(r"musicpi: notified LCD \(fifo .*\) and desktop \(fifo .*\): PowerOn")
        assert peers.stop(srv) == 0
        wait_for(lambda: received(lcd, lcd_seen).endswith("3 0 3:musicpi PowerOff\n"), 10, what="PowerOff")
        wait_for(lambda: received(desktop, desktop_seen).endswith("body: PowerOff musicpi\n"), 10,
                 what="PowerOff on the desktop")
        assert stat.S_ISFIFO(os.stat(tmp_path / "lcdfifo").st_mode)
    finally:
        os.close(lcd)
        os.close(desktop)
