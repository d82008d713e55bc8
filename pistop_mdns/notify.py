"""Telling the room's LCD and the desktop what happened: pistop's host_status.

Targets, as pistop found them:
- LCD (lcd-daemon): `notify.lcd_fifo`, else UDP to `notify.lcd_host`:`lcd_port`
  (1806), else /run/lcd-daemon/lcdfifo when it exists as a FIFO. One line per
  message, `row scroll clear:text`.
- desktop (notify-daemon): `notify.notify_fifo`, else UDP to
  `notify.notify_host`:`notify_port` (1807), else
  /run/notify-desktop/notify-fifo. One message of `summary:` and `body:` lines.

A notification is a courtesy: a FIFO nobody reads (ENXIO), a full pipe, an
unreachable or unresolvable host never blocks and never fails the action.
FIFOs are opened non-blocking and UDP is sent from a non-blocking socket.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import threading
import time
from typing import Callable, Sequence

from pistop_mdns import mdns
from pistop_mdns.config import Config

log = logging.getLogger(__name__)

LCD_FIFO = "/run/lcd-daemon/lcdfifo"
DESKTOP_FIFO = "/run/notify-desktop/notify-fifo"
LOADAVG = "/proc/loadavg"
ON = "On"
SUMMARY = "host-status"
# lcd-daemon re-initialises the display on a line whose clear code is 3;
# pistop waited half a second before sending it more.
LCD_INIT_PAUSE = 0.5
RESOLVE_TIMEOUT = 2.0


# ---------------------------------------------------------------- messages (pure)


def lcd_lines(message: str, hostname: str, load: str, addresses: Sequence[str], now: time.struct_time) -> list[str]:
    """What the LCD shows: "On" fills its four rows, anything else is one row."""
    if message == ON:
        return [
            f"0 0 3:Load {load}",
            f"1 0 0:{' '.join(addresses)}",
            f"2 0 0:{time.strftime('%d-%m-%y %H:%M:%S', now)}",
            f"3 0 0:{hostname} On",
        ]
    return [f"3 0 3:{hostname} {message}"]


def desktop_lines(message: str, hostname: str, load: str, addresses: Sequence[str]) -> list[str]:
    if message == ON:
        return [f"summary:{SUMMARY}", f"body:Load {load}", f"body:{' '.join(addresses)}",
                f"body: Music on for {hostname}"]
    return [f"summary:{SUMMARY}", f"body: {message} {hostname}"]


def load_average(text: str) -> str:
    """"0.15 0.10 0.05" from /proc/loadavg's text."""
    return " ".join(text.split()[:3])


def _clears_display(line: str) -> bool:
    head = line.split(":", 1)[0].split()
    return len(head) == 3 and head[2] == "3"


# ---------------------------------------------------------------- sending


class Notifier:
    def __init__(self, cfg: Config, *, sleep: Callable[[float], None] = time.sleep,
                 addresses: Callable[[], list[str]] | None = None,
                 lcd_fifo: str = LCD_FIFO, desktop_fifo: str = DESKTOP_FIFO):
        self.cfg = cfg
        self.sleep = sleep
        self._addresses = addresses or self._ipv4_addresses
        self.default_fifo = {"LCD": lcd_fifo, "desktop": desktop_fifo}

    def send(self, message: str) -> str:
        """Notify every target found; return where it went, for the step's log line."""
        hostname = self.cfg.general.hostname
        load = self._load()
        addresses = self._addresses()
        n = self.cfg.notify
        sent = []
        lcd = self._target("LCD", n.lcd_fifo, n.lcd_host, n.lcd_port)
        if lcd:
            lines = lcd_lines(message, hostname, load, addresses, time.localtime())
            for i, line in enumerate(lines):
                if not self._deliver(lcd, line + "\n"):
                    break
                if _clears_display(line) and i + 1 < len(lines):
                    self.sleep(LCD_INIT_PAUSE)
            else:
                sent.append(f"LCD ({_label(lcd)})")
        desktop = self._target("desktop", n.notify_fifo, n.notify_host, n.notify_port)
        if desktop and self._deliver(desktop, "".join(
                line + "\n" for line in desktop_lines(message, hostname, load, addresses))):
            sent.append(f"desktop ({_label(desktop)})")
        if sent:
            return f"notified {' and '.join(sent)}: {message}"
        return f"no LCD or desktop notifier reached ({message})"

    def _target(self, what: str, fifo: str, host: str, port: int) -> tuple[str, str, int] | None:
        """("fifo", path, 0) or ("udp", host, port), in pistop's order; None: nowhere to send."""
        if fifo:
            return ("fifo", fifo, 0)
        if host:
            return ("udp", host, port)
        default = self.default_fifo[what]
        try:
            if stat.S_ISFIFO(os.stat(default).st_mode):
                return ("fifo", default, 0)
        except OSError:
            pass
        return None

    def _deliver(self, target: tuple[str, str, int], data: str) -> bool:
        kind, where, port = target
        if kind == "fifo":
            return self._write_fifo(where, data.encode())
        return self._send_udp(where, port, data.encode())

    def _write_fifo(self, path: str, data: bytes) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ENXIO:
                log.debug("%s: nobody reads %s; not notified", self.cfg.general.hostname, path)
            else:
                log.warning("%s: cannot notify through %s: %s; fix: start its daemon or change the "
                            "[notify] setting", self.cfg.general.hostname, path, e.strerror)
            return False
        try:
            # A regular file by that name would be overwritten: only a FIFO is a notifier.
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                log.warning("%s: %s is not a FIFO; not notified (fix: correct the [notify] setting)",
                            self.cfg.general.hostname, path)
                return False
            os.write(fd, data)
            return True
        except OSError as e:  # EAGAIN: the reader is not keeping up; drop rather than wait
            log.debug("%s: writing to %s: %s", self.cfg.general.hostname, path, e.strerror)
            return False
        finally:
            os.close(fd)

    def _send_udp(self, host: str, port: int, data: bytes) -> bool:
        address = _resolve(host, port)
        if address is None:
            log.warning("%s: cannot resolve notifier host %s; not notified", self.cfg.general.hostname, host)
            return False
        family, sockaddr = address
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.setblocking(False)
                s.sendto(data, sockaddr)
            return True
        except OSError as e:
            log.debug("%s: sending to %s port %d: %s", self.cfg.general.hostname, host, port, e.strerror)
            return False

    def _load(self) -> str:
        try:
            with open(LOADAVG) as f:
                return load_average(f.read())
        except OSError:
            return "?"

    def _ipv4_addresses(self) -> list[str]:
        seen: list[str] = []
        for interface in mdns.local_interfaces(self.cfg.general.interfaces, False):
            if interface.address not in seen:
                seen.append(interface.address)
        return seen


def _label(target: tuple[str, str, int]) -> str:
    kind, where, port = target
    return f"fifo {where}" if kind == "fifo" else f"udp {where}:{port}"


def _resolve(host: str, port: int, timeout: float = RESOLVE_TIMEOUT) -> tuple[int, tuple] | None:
    """(family, sockaddr) for a UDP send; a name lookup that hangs is abandoned after `timeout`."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST)
        return info[0][0], info[0][4]
    except socket.gaierror:
        pass
    found: list = []

    def lookup() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM))
        except (socket.gaierror, UnicodeError):
            pass

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(timeout)
    if not found:
        return None
    return found[0][0], found[0][4]
