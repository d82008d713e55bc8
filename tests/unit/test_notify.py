"""pistop's host_status messages, exactly, and delivery that never blocks or
fails: FIFOs with and without a reader, UDP through a recording socket."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time

import pytest

from pistop_mdns import notify
from pistop_mdns.notify import Notifier, desktop_lines, lcd_lines, load_average
from tests.unit.board import make_config

NOW = time.struct_time((2026, 11, 25, 9, 5, 7, 2, 329, 0))
ADDRESSES = ["198.18.0.12", "192.168.1.20"]


def test_lcd_lines_when_the_music_comes_on():
    assert lcd_lines("On", "kitchen", "0.15 0.10 0.05", ADDRESSES, NOW) == [
        "0 0 3:Load 0.15 0.10 0.05",
        "1 0 0:198.18.0.12 192.168.1.20",
        "2 0 0:25-11-26 09:05:07",
        "3 0 0:kitchen On",
    ]


@pytest.mark.parametrize("message", ["MusicOff", "PowerOff"])
def test_lcd_and_desktop_lines_when_the_music_goes_off(message):
    assert lcd_lines(message, "kitchen", "1.00 0.50 0.25", ADDRESSES, NOW) == [f"3 0 3:kitchen {message}"]
    assert desktop_lines(message, "kitchen", "1.00 0.50 0.25", ADDRESSES) == [
        "summary:host-status", f"body: {message} kitchen"]


def test_desktop_lines_when_the_music_comes_on():
    assert desktop_lines("On", "kitchen", "0.15 0.10 0.05", ADDRESSES) == [
        "summary:host-status",
        "body:Load 0.15 0.10 0.05",
        "body:198.18.0.12 192.168.1.20",
        "body: Music on for kitchen",
    ]


def test_load_average_from_proc():
    assert load_average("0.15 0.10 0.05 1/234 5678\n") == "0.15 0.10 0.05"


def notifier(tmp_path, sleeps=None, **notify_settings) -> Notifier:
    cfg = make_config(tmp_path)
    for key, value in notify_settings.items():
        cfg = cfg.replace("notify", key, value, "test")
    return Notifier(cfg, sleep=(sleeps.append if sleeps is not None else lambda s: None),
                    addresses=lambda: ADDRESSES, lcd_fifo=str(tmp_path / "run-lcdfifo"),
                    desktop_fifo=str(tmp_path / "run-notify-fifo"))


def read_all(fd: int) -> str:
    try:
        return os.read(fd, 65536).decode()
    except BlockingIOError:
        return ""


def test_fifos_with_readers_get_the_lines(tmp_path):
    lcd, desktop = tmp_path / "lcdfifo", tmp_path / "notify-fifo"
    os.mkfifo(lcd)
    os.mkfifo(desktop)
    readers = [os.open(p, os.O_RDONLY | os.O_NONBLOCK) for p in (lcd, desktop)]
    sleeps: list[float] = []
    try:
        said = notifier(tmp_path, sleeps, lcd_fifo=str(lcd), notify_fifo=str(desktop)).send("On")
        lcd_text, desktop_text = (read_all(fd) for fd in readers)
    finally:
        for fd in readers:
            os.close(fd)
    assert said == f"notified LCD (fifo {lcd}) and desktop (fifo {desktop}): On"
    lines = lcd_text.splitlines()
    assert lines[0].startswith("0 0 3:Load ") and lines[1:2] == ["1 0 0:198.18.0.12 192.168.1.20"]
    assert lines[3] == "3 0 0:kitchen On" and lcd_text.endswith("\n")
    assert sleeps == [0.5], "the LCD re-initialises after the first line"
    assert desktop_text.splitlines()[0] == "summary:host-status"
    assert desktop_text.splitlines()[-1] == "body: Music on for kitchen"


def test_the_default_fifos_are_used_when_they_exist(tmp_path):
    os.mkfifo(tmp_path / "run-lcdfifo")
    reader = os.open(tmp_path / "run-lcdfifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        said = notifier(tmp_path).send("MusicOff")
        assert read_all(reader) == "3 0 3:kitchen MusicOff\n"
    finally:
        os.close(reader)
    assert said == f"notified LCD (fifo {tmp_path / 'run-lcdfifo'}): MusicOff"


def test_a_fifo_nobody_reads_is_skipped_at_once(tmp_path):
    os.mkfifo(tmp_path / "lcdfifo")
    started = time.monotonic()
    said = notifier(tmp_path, lcd_fifo=str(tmp_path / "lcdfifo")).send("PowerOff")
    assert said == "no LCD or desktop notifier reached (PowerOff)"
    assert time.monotonic() - started < 5, "never waits for a reader"


def test_a_regular_file_named_as_fifo_is_not_written(tmp_path, caplog):
    target = tmp_path / "lcdfifo"
    target.write_text("precious\n")
    said = notifier(tmp_path, lcd_fifo=str(target)).send("On")
    assert target.read_text() == "precious\n"
    assert said == "no LCD or desktop notifier reached (On)"
    assert f"kitchen: {target} is not a FIFO" in caplog.text


def test_a_missing_configured_fifo_is_one_warning(tmp_path, caplog):
    said = notifier(tmp_path, notify_fifo=str(tmp_path / "gone")).send("On")
    assert said == "no LCD or desktop notifier reached (On)"
    assert "No such file or directory; fix: start its daemon" in caplog.text


class RecordingSocket:
    sent: list[tuple[bytes, tuple]] = []
    fail: int | None = None

    def __init__(self, family, kind):
        assert kind == socket.SOCK_DGRAM
        self.blocking = True

    def setblocking(self, flag):
        self.blocking = flag

    def sendto(self, data, address):
        assert not self.blocking, "UDP must never block"
        if RecordingSocket.fail:
            raise OSError(RecordingSocket.fail, os.strerror(RecordingSocket.fail))
        RecordingSocket.sent.append((data, address))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def udp(monkeypatch):
    RecordingSocket.sent = []
    RecordingSocket.fail = None
    monkeypatch.setattr(notify.socket, "socket", RecordingSocket)
    return RecordingSocket


def test_udp_lcd_gets_one_datagram_a_line_and_the_desktop_one_message(tmp_path, udp):
    said = notifier(tmp_path, lcd_host="198.18.0.5", notify_host="198.18.0.6").send("MusicOff")
    assert udp.sent == [
        (b"3 0 3:kitchen MusicOff\n", ("198.18.0.5", 1806)),
        (b"summary:host-status\nbody: MusicOff kitchen\n", ("198.18.0.6", 1807)),
    ]
    assert said == "notified LCD (udp 198.18.0.5:1806) and desktop (udp 198.18.0.6:1807): MusicOff"


def test_an_unreachable_udp_host_is_no_failure(tmp_path, udp):
    udp.fail = errno.ENETUNREACH
    said = notifier(tmp_path, lcd_host="198.18.0.5", lcd_port=2000).send("On")
    assert said == "no LCD or desktop notifier reached (On)"


def test_a_name_lookup_that_hangs_is_abandoned(monkeypatch):
    release = threading.Event()

    def hanging(host, port, *args, flags=0, **kw):
        if flags & socket.AI_NUMERICHOST:
            raise socket.gaierror(socket.EAI_NONAME, "not numeric")
        release.wait(10)
        raise socket.gaierror(socket.EAI_AGAIN, "timeout")

    monkeypatch.setattr(notify.socket, "getaddrinfo", hanging)
    started = time.monotonic()
    try:
        assert notify._resolve("lcdhost", 1806, timeout=0.2) is None
        assert time.monotonic() - started < 5
    finally:
        release.set()
