"""What an attacker on the LAN puts on the wire. mDNS packets are built with python-zeroconf's
own record classes (the same API in Debian 12's 0.47.3 and the newest release), plus
a raw encoder for what zeroconf would refuse to write (bad label lengths, compression
loops, names and TXT that are not UTF-8, oversize datagrams).

Channel lines are JSON (or not) as the liveness channel reads them.

Building is pure; sending happens only inside a LAN host, through `MdnsAgent`
(mdns_agent.py) and `ChanAgent` (chan_agent.py), never in the root namespace.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
from pathlib import Path

from zeroconf import DNSAddress, DNSIncoming, DNSOutgoing, DNSPointer, DNSService, DNSText, const

from tests.helpers import ENV, PYTHON, Output

SERVICE = "_pistop._tcp.local."
AGENT = str(Path(__file__).with_name("mdns_agent.py"))
CHAN_AGENT = str(Path(__file__).with_name("chan_agent.py"))

IN = const._CLASS_IN
FLUSH = const._CLASS_UNIQUE  # the cache-flush bit: replaces what caches hold for the name
TYPE_A, TYPE_AAAA, TYPE_SRV, TYPE_TXT, TYPE_PTR = (const._TYPE_A, const._TYPE_AAAA, const._TYPE_SRV,
                                                   const._TYPE_TXT, const._TYPE_PTR)


def instance(name: str) -> str:
    return f"{name}.{SERVICE}"


def a(host: str, address: str, ttl: int = 120, flush: bool = True) -> DNSAddress:
    return DNSAddress(host, TYPE_A, IN | (FLUSH if flush else 0), ttl, socket.inet_aton(address))


def aaaa(host: str, address: str, ttl: int = 120, flush: bool = True) -> DNSAddress:
    return DNSAddress(host, TYPE_AAAA, IN | (FLUSH if flush else 0), ttl, socket.inet_pton(socket.AF_INET6, address))


def srv(name: str, port: int, target: str, ttl: int = 120, flush: bool = True) -> DNSService:
    return DNSService(name, TYPE_SRV, IN | (FLUSH if flush else 0), ttl, 0, 0, port, target)


def txt(name: str, data: bytes, ttl: int = 4500, flush: bool = True) -> DNSText:
    return DNSText(name, TYPE_TXT, IN | (FLUSH if flush else 0), ttl, data)


def ptr(alias: str, ttl: int = 4500, name: str = SERVICE) -> DNSPointer:
    return DNSPointer(name, TYPE_PTR, IN, ttl, alias)


def txt_bytes(props: dict[str, str]) -> bytes:
    """RFC 6763 6.1: each key=value as one length-prefixed string."""
    out = b""
    for k, v in props.items():
        item = f"{k}={v}".encode()
        out += bytes([len(item)]) + item
    return out


def responses(*records) -> list[bytes]:
    """Multicast response datagrams holding `records` as answers (TTLs as given);
    zeroconf splits them over several datagrams when they do not fit in one."""
    out = DNSOutgoing(const._FLAGS_QR_RESPONSE | const._FLAGS_AA, True, 0)
    for record in records:
        out.add_answer_at_time(record, 0)
    return out.packets()


def response(*records) -> bytes:
    """One multicast response datagram holding `records` as answers."""
    packets = responses(*records)
    assert len(packets) == 1, "keep forged responses to one datagram"
    return packets[0]


def records(packet: bytes) -> list:
    """The answers of a received packet (empty when zeroconf cannot read it)."""
    incoming = DNSIncoming(packet)
    if not incoming.valid:
        return []
    answers = incoming.answers
    return list(answers() if callable(answers) else answers)


# ---------------------------------------------------------------- raw encoding


def raw_name(labels: list[bytes], tail: bytes = b"\x00") -> bytes:
    """A name from labels of any bytes and any length byte (the length is len(label) & 0xff
    unless the label is given as (length, data)); `tail` ends it (b"\\x00", or a pointer)."""
    out = b""
    for label in labels:
        if isinstance(label, tuple):
            out += bytes([label[0]]) + label[1]
        else:
            out += bytes([len(label) & 0xFF]) + label
    return out + tail


def raw_record(name: bytes, type_: int, class_: int, ttl: int, rdata: bytes, rdlength: int | None = None) -> bytes:
    length = len(rdata) if rdlength is None else rdlength
    return name + struct.pack("!HHIH", type_, class_, ttl & 0xFFFFFFFF, length & 0xFFFF) + rdata


def raw_response(*answers: bytes, count: int | None = None) -> bytes:
    """A response header with `count` answers (default: as many as given) and the raw answers."""
    n = len(answers) if count is None else count
    return struct.pack("!HHHHHH", 0, 0x8400, 0, n & 0xFFFF, 0, 0) + b"".join(answers)


# ---------------------------------------------------------------- the agent in a LAN host


class MdnsAgent:
    """`mdns_agent.py` running in a LAN host: sends datagrams to 224.0.0.251:5353 from
    port 5353 on the host's eth0, and (with capture) collects what it hears."""

    def __init__(self, host, capture: bool = False):
        argv = [PYTHON, AGENT, host.address] + (["--capture"] if capture else [])
        self.proc = host.spawn(argv, env=ENV, stdin=subprocess.PIPE)
        self.out = Output(self.proc, f"{host.name}: mdns agent")
        self.out.wait("^ready$", 20)
        self.sent = 0

    def send(self, *packets: bytes, timeout: float = 20) -> None:
        assert self.proc.stdin is not None
        for packet in packets:
            mark = self.out.mark()
            self.proc.stdin.write(f"tx {packet.hex()}\n")
            self.proc.stdin.flush()
            self.sent += 1
            self.out.wait(r"^(sent|error) ", timeout, start=mark)

    def heard(self, start: int = 0) -> list[tuple[str, bytes]]:
        """(source address, datagram) of everything captured from line `start` on."""
        found = []
        with self.out._lock:
            lines = [line for _, line in self.out.lines[start:]]
        for line in lines:
            if line.startswith("rx "):
                _, source, data = line.split(" ", 2)
                found.append((source, bytes.fromhex(data)))
        return found


# ---------------------------------------------------------------- channel lines


def line(msg) -> bytes:
    """One channel line: a JSON value, or bytes as they are, with the newline."""
    return (msg if isinstance(msg, bytes) else json.dumps(msg).encode()) + b"\n"


def hello_from_server(name: str = "evil", **over) -> bytes:
    return line({"t": "hello", "proto": 1, "server": name, "boot": "b", "nonce": "0" * 32, "hb": 2.0, **over})


def hello_from_client(name: str = "intruder", **over) -> bytes:
    return line({"t": "hello", "proto": 1, "client": name, "nonce": "1" * 32, **over})


def send(data: bytes) -> list:
    return ["send", data.hex()]


class ChanAgent:
    """`chan_agent.py` in a LAN host: a fake server for boards, a fake client for servers."""

    def __init__(self, host):
        self.host = host
        self.proc = host.spawn([PYTHON, CHAN_AGENT], env=ENV, stdin=subprocess.PIPE)
        self.out = Output(self.proc, f"{host.name}: channel agent")
        self.out.wait(r'"ev": "ready"', 20)
        self._ids = 0

    def _command(self, cmd: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def _event(self, pattern: str, start: int, timeout: float) -> dict:
        _, text = self.out.wait(pattern, timeout, start=start)
        return json.loads(text)

    def listen(self, port: int, scripts: list[list]) -> None:
        mark = self.out.mark()
        self._command({"op": "listen", "host": self.host.address, "port": port, "scripts": scripts})
        self._event(r'"ev": "listening"', mark, 20)

    def queue(self, scripts: list[list]) -> None:
        mark = self.out.mark()
        self._command({"op": "queue", "scripts": scripts})
        self._event(r'"ev": "queued"', mark, 20)

    def close(self, timeout: float = 20) -> None:
        """Stop listening and end the agent."""
        self._command({"op": "quit"})
        self.proc.wait(timeout)

    def connections(self) -> int:
        return self.out.count(r'"ev": "conn"')

    def clear(self) -> int:
        """Forget the queued scripts; how many there were."""
        mark = self.out.mark()
        self._command({"op": "clear"})
        return self._event(r'"ev": "cleared"', mark, 20)["n"]

    def served_from_queue(self) -> int:
        return self.out.count(r'"ev": "conn", "n": \d+, "queued": true')

    def dial(self, address: str, port: int, script: list, wait: float = 15) -> dict:
        self._ids += 1
        mark = self.out.mark()
        self._command({"op": "dial", "id": self._ids, "host": address, "port": port, "script": script,
                       "wait": wait})
        return self._event(rf'"ev": "dialed", "id": {self._ids},', mark, wait + 60)

    def flood(self, address: str, port: int, count: int, script: list, wait: float = 15) -> dict:
        self._ids += 1
        mark = self.out.mark()
        self._command({"op": "flood", "id": self._ids, "host": address, "port": port, "count": count,
                       "script": script, "wait": wait})
        return self._event(rf'"ev": "flood", "id": {self._ids},', mark, wait + 120)
