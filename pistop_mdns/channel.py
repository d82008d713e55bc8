"""The liveness channel: one TCP connection from each client to its server.

mDNS says when a server leaves only if the server says goodbye. The channel
adds what mDNS cannot: heartbeats (a pulled plug is noticed within the dead
time), the reason a server stops (poweroff / restart / stopping) before it
withdraws its record, the clients' own state (the server knows who is still
up), and remote commands. Protocol 1, one JSON object per line:

    server: {"t": "hello", "proto": 1, "server": NAME, "boot": B, "nonce": N1, "hb": 2.0,
             "record": {TXT key: value, ...}}
    client: {"t": "hello", "proto": 1, "client": NAME, "nonce": N2, "mac": M}
    server: {"t": "welcome", "mac": M}                 (or "error", then close)
    both:   {"t": "hb", "seq": S, "mac": M}            every heartbeat
    server: {"t": "notice", "reason": R, "seq": S, "mac": M}
    client: {"t": "state", "state": "up"|"down"|"off", "seq": S, "mac": M}
    client: {"t": "command", "cmd": "shutdown", "args": [...], "seq": S, "mac": M}
    server: {"t": "result", "ok": true, "msg": "...", "seq": S, "mac": M}

With a key, the handshake is a mutual challenge-response: each side MACs the
other's fresh nonce, and the server's answer also covers its boot id and the
address the client reached it at, so a relay elsewhere on the LAN cannot
pass for it. Every later message carries a MAC made with a session key
derived from both nonces, labelled with its direction, over a sequence
number that must grow: a recorded message cannot be replayed in another
session, twice in one, or reflected back to its sender.

A board that powers off says "off" instead of "down" (torn down, powering off).
The server's shutdown helper then waits, bounded, until that board is gone:
its connection closed and its address no longer answering (`answers`).

Without a key the "mac" fields are absent and anyone on the LAN could speak
for a server; the client says so once in its log.

The hello carries the server's TXT record (signed, with a key), so a board
that reaches a server directly (`static_servers`, where multicast is
filtered) needs no mDNS at all.

Everything a peer sends is checked here (types, lengths, characters) before
anything acts on it; a connection that sends anything else is closed, logged
in one line, and (on the client) dialled again after a back-off.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from pistop_mdns import PROTOCOL, auth
from pistop_mdns.model import SERVER_STATES

log = logging.getLogger(__name__)

MAX_LINE = 4096
HANDSHAKE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 3.0
# Handshakes run at most MAX_PENDING at a time; further connections wait their
# turn (a house of 50 boards all dialling at once is normal after a restart),
# and past MAX_WAITING not yet through their handshake are closed at once.
MAX_PENDING = 16
MAX_WAITING = 256
MAX_RECORD = 1300  # bytes of TXT in a hello, as in an mDNS packet
RESOLVE_TIMEOUT = 5.0
RESOLVE_BACKOFF_MAX = 30.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 8.0

_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,64}\Z")  # a host or instance name: printable, bounded
_BOOT = re.compile(r"[A-Za-z0-9-]{0,64}\Z")
_NONCE = re.compile(r"[0-9a-f]{32}\Z")
_ARG = re.compile(r"[^\x00-\x1f\x7f]{0,64}\Z")


class ChannelError(Exception):
    pass


def _nonce() -> str:
    return secrets.token_hex(16)


def plain_address(address: str) -> str:
    """An address as both ends name it: no IPv4-mapped IPv6 form, no scope."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


# ---------------------------------------------------------------- checking what arrives


def _field(msg: dict[str, Any], key: str, rx: re.Pattern, what: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str) or not rx.match(value):
        raise ChannelError(f"{msg.get('t')} with a bad {what}")
    return value


def _number(msg: dict[str, Any], key: str, low: float, high: float, default: float) -> float:
    value = msg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ChannelError(f"{msg.get('t')} with a bad {key}")
    return float(value)


async def read_message(reader: asyncio.StreamReader, timeout: float | None = None) -> dict[str, Any]:
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except asyncio.TimeoutError:
        raise ChannelError("no answer in time") from None
    except (ValueError, asyncio.LimitOverrunError):
        raise ChannelError("line too long") from None
    if not line:
        raise ChannelError("connection closed")
    if len(line) > MAX_LINE:
        raise ChannelError("line too long")
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError):  # "[[[[..." a thousand deep is a RecursionError
        raise ChannelError("not a JSON line") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str) or len(msg["t"]) > 16:
        raise ChannelError("not a channel message")
    return msg


def _write(writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
    writer.write(json.dumps(msg).encode() + b"\n")


def _session_key(key: bytes, server_nonce: str, client_nonce: str) -> bytes:
    return auth.mac(key, "session", server_nonce, client_nonce).encode()


def _body(msg: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in msg.items() if k != "mac"}, sort_keys=True)


@dataclass
class Session:
    """One authenticated (or, without a key, merely established) connection.

    `role` is this end's ("client" or "server"): MACs name their direction.
    """

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    key: bytes | None
    role: str
    session_key: bytes | None = None
    send_seq: int = 0
    recv_seq: int = -1
    peer: str = ""

    def _mac(self, msg: dict[str, Any], sender: str) -> str:
        assert self.session_key is not None
        return auth.mac(self.session_key, "msg from " + sender, _body(msg))

    async def send(self, msg: dict[str, Any]) -> None:
        msg = dict(msg)
        msg["seq"] = self.send_seq
        self.send_seq += 1
        if self.session_key is not None:
            msg["mac"] = self._mac(msg, self.role)
        self.writer.write(json.dumps(msg).encode() + b"\n")
        await self.writer.drain()

    async def receive(self, timeout: float | None = None) -> dict[str, Any]:
        msg = await read_message(self.reader, timeout)
        if self.session_key is not None:
            other = "server" if self.role == "client" else "client"
            if not auth.verify(self.session_key, msg.get("mac"), "msg from " + other, _body(msg)):
                raise ChannelError(f"message from {self.peer} has a wrong MAC")
        seq = msg.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq <= self.recv_seq:
            raise ChannelError(f"message from {self.peer} is out of sequence")
        self.recv_seq = seq
        return msg

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 1)
        except (OSError, asyncio.TimeoutError):
            pass


# ---------------------------------------------------------------- client side


@dataclass(frozen=True)
class ServerHello:
    """What the server said of itself in the handshake (proven with a key)."""

    name: str
    boot: str
    heartbeat: float
    record: dict[str, str] | None = None  # the server's TXT, checked in txt.py like any other


def _record(hello: dict[str, Any]) -> dict[str, str] | None:
    record = hello.get("record")
    if record is None:
        return None
    if not isinstance(record, dict) or len(record) > 32 \
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in record.items()) \
            or sum(len(k) + len(v) + 2 for k, v in record.items()) > MAX_RECORD:
        raise ChannelError("hello with a bad record")
    return record


async def client_handshake(reader, writer, *, name: str, key: bytes | None, peer: str,
                           address: str) -> tuple[Session, ServerHello]:
    """Run the client's half of the handshake with the server reached at `address`."""
    hello = await read_message(reader, HANDSHAKE_TIMEOUT)
    if hello.get("t") != "hello":
        raise ChannelError(f"{peer} did not say hello")
    proto = hello.get("proto")
    if isinstance(proto, bool) or not isinstance(proto, int) or proto > PROTOCOL:
        raise ChannelError(f"{peer} speaks protocol {str(proto)[:16]!r}, this client {PROTOCOL}")
    server_nonce = _field(hello, "nonce", _NONCE, "nonce")
    server = _field(hello, "server", _NAME, "server name")
    boot = _field(hello, "boot", _BOOT, "boot id") if "boot" in hello else ""
    heartbeat = _number(hello, "hb", 0.05, 60.0, 2.0)
    record = _record(hello)
    nonce = _nonce()
    msg: dict[str, Any] = {"t": "hello", "proto": PROTOCOL, "client": name, "nonce": nonce}
    if key is not None:
        msg["mac"] = auth.mac(key, "client", server_nonce, nonce, name)
    _write(writer, msg)
    await writer.drain()
    answer = await read_message(reader, HANDSHAKE_TIMEOUT)
    if answer.get("t") == "error":
        text = answer.get("msg")
        raise ChannelError(f"{peer} refused: {text[:200] if isinstance(text, str) else ''}")
    if answer.get("t") != "welcome":
        raise ChannelError(f"{peer} did not welcome us")
    session = Session(reader, writer, key, "client", peer=peer)
    if key is not None:
        if not auth.verify(key, answer.get("mac"), "server", nonce, server_nonce, server, boot,
                           plain_address(address)):
            raise ChannelError(f"{peer} failed authentication (another key, or not the server it claims to be)")
        session.session_key = _session_key(key, server_nonce, nonce)
    return session, ServerHello(server, boot, heartbeat, record)


async def connect(address: str, port: int, *, name: str, key: bytes | None) -> tuple[Session, ServerHello]:
    peer = f"{address}:{port}"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address, port, limit=MAX_LINE * 2), CONNECT_TIMEOUT
        )
    except (OSError, asyncio.TimeoutError) as e:
        raise ChannelError(f"cannot connect to {peer}: {getattr(e, 'strerror', None) or 'timeout'}") from None
    try:
        return await client_handshake(reader, writer, name=name, key=key, peer=peer, address=address)
    except BaseException:
        writer.close()
        raise


async def send_command(address: str, port: int, *, name: str, key: bytes | None, cmd: str,
                       args: list[str], timeout: float = 10) -> dict[str, Any]:
    """One remote command (e.g. "shutdown"); returns the server's result message."""
    session, _ = await connect(address, port, name=name, key=key)
    try:
        await session.send({"t": "command", "cmd": cmd, "args": args})
        deadline = time.monotonic() + timeout
        while True:
            msg = await session.receive(max(0.1, deadline - time.monotonic()))
            if msg["t"] == "result":
                return msg
    finally:
        await session.close()


class _Link:
    """The connection to one server, kept up with back-off by its own task.

    A static link is dialled at a configured host and port, without mDNS; the
    server's name is learnt from its hello.
    """

    def __init__(self, address: str, port: int, static: bool = False):
        self.address, self.port, self.static = address, port, static
        self.server: str | None = None  # a static link's server, once it said hello
        self.reached = address  # the address a static link's host name led to
        self.session: Session | None = None
        self.task: asyncio.Task | None = None
        self.wake = asyncio.Event()


class Follower:
    """Keeps the client's channels to the servers it follows, reconnecting with back-off.

    Calls `on_up(name, address, boot)`, `on_heartbeat(name)`, `on_lost(name)`
    and `on_notice(name, reason, authenticated)` in the event loop; for a
    static link also `on_hello(name, address, port, hello, host)` before `on_up`
    (`host`: the name or address it was dialled as).
    """

    def __init__(self, name: str, key: bytes | None, heartbeat: float,
                 on_up: Callable[[str, str, str], None], on_heartbeat: Callable[[str], None],
                 on_lost: Callable[[str], None], on_notice: Callable[[str, str, bool], None],
                 on_hello: Callable[[str, str, int, ServerHello, str], None] | None = None):
        self.name = name
        self.key = key
        self.heartbeat = heartbeat
        self.on_up, self.on_heartbeat, self.on_lost, self.on_notice = on_up, on_heartbeat, on_lost, on_notice
        self.on_hello = on_hello or (lambda *args: None)
        self._links: dict[str, _Link] = {}
        self._static: dict[tuple[str, int], _Link] = {}
        self._state = "down"
        self._warned: set[str] = set()

    def follow(self, targets: dict[str, tuple[str, int]]) -> None:
        """Be connected to exactly these servers: name -> (address, port).

        A server a static link already reaches at that address needs no second link.
        """
        reached = {(link.server, link.reached, link.port) for link in self._static.values()
                   if link.session is not None}
        targets = {n: t for n, t in targets.items() if (n, *t) not in reached}
        for server, link in list(self._links.items()):
            if targets.get(server) != (link.address, link.port):
                assert link.task is not None
                link.task.cancel()
                del self._links[server]
        for server, (address, port) in targets.items():
            if server not in self._links:
                link = _Link(address, port)
                link.task = asyncio.ensure_future(self._run(server, link))
                self._links[server] = link

    def follow_static(self, endpoints: list[tuple[str, int]]) -> None:
        """Keep a link to each (host, port), found without mDNS."""
        for endpoint, link in list(self._static.items()):
            if endpoint not in endpoints:
                assert link.task is not None
                link.task.cancel()
                del self._static[endpoint]
        for host, port in endpoints:
            if (host, port) not in self._static:
                link = _Link(host, port, static=True)
                link.task = asyncio.ensure_future(self._run_static(link))
                self._static[(host, port)] = link

    def nudge(self, server: str) -> None:
        """Try `server` again now instead of at the end of its back-off (its record came back)."""
        for link in self._all():
            if link.server == server or self._links.get(server) is link:
                link.wake.set()

    def _all(self) -> list[_Link]:
        return [*self._links.values(), *self._static.values()]

    def _session_to(self, server: str) -> Session | None:
        link = self._links.get(server)
        if link is not None and link.session is not None:
            return link.session
        return next((li.session for li in self._static.values() if li.server == server and li.session), None)

    def connected(self, server: str) -> bool:
        return self._session_to(server) is not None

    async def report(self, server: str, state: str) -> bool:
        """Tell `server` this client's state; False when no channel to it is up."""
        self._state = state
        session = self._session_to(server)
        if session is None:
            return False
        try:
            await session.send({"t": "state", "state": state})
            return True
        except (OSError, ChannelError):
            return False

    async def close(self) -> None:
        links = self._all()
        self.follow({})
        self.follow_static([])
        for link in links:
            if link.session is not None:
                await link.session.close()
        tasks = [link.task for link in links if link.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    async def _pause(self, link: _Link, seconds: float) -> None:
        link.wake.clear()
        try:
            await asyncio.wait_for(link.wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _current(self, link: _Link) -> bool:
        # Python 3.11's wait_for can swallow a cancellation that meets a
        # timeout; a link that is no longer followed ends its loop anyway.
        return any(li is link for li in self._all())

    def _refused(self, what: str, error: ChannelError) -> None:
        text = str(error)
        if ("authentication" in text or "refused" in text) and what not in self._warned:
            self._warned.add(what)
            log.warning("channel to %s: %s", what, text)
        else:
            log.debug("channel to %s: %s", what, text)

    async def _run(self, server: str, link: _Link) -> None:
        backoff = BACKOFF_FIRST
        while self._current(link):
            try:
                session, hello = await connect(link.address, link.port, name=self.name, key=self.key)
            except ChannelError as e:
                self._refused(server, e)
                await self._pause(link, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            await self._serve(server, link, session, hello)
            await self._pause(link, backoff)

    async def _run_static(self, link: _Link) -> None:
        backoff = BACKOFF_FIRST
        what = f"{link.address}:{link.port}"
        while self._current(link):
            addresses = await self._resolve(link.address, link.port)
            if not addresses:
                if what not in self._warned:
                    self._warned.add(what)
                    log.warning("static server %s: no address for %s (not in /etc/hosts or DNS?); "
                                "trying again", what, link.address)
                await self._pause(link, RESOLVE_BACKOFF_MAX)
                continue
            try:
                session, hello = await connect(addresses[0], link.port, name=self.name, key=self.key)
            except ChannelError as e:
                self._refused(what, e)
                await self._pause(link, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if hello.record is None:
                # Still registering (or too old to send its record): nothing to act on yet.
                log.debug("static server %s: no record in its hello yet", what)
                await session.close()
                await self._pause(link, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            server = f"{hello.name}._pistop._tcp.local."
            link.server, link.reached = server, addresses[0]
            self.on_hello(server, addresses[0], link.port, hello, link.address)
            await self._serve(server, link, session, hello, address=addresses[0])
            await self._pause(link, backoff)

    @staticmethod
    async def _resolve(host: str, port: int) -> list[str]:
        """The host's addresses, IPv4 first ([] when it has none, or the resolver hangs)."""
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
        except (OSError, asyncio.TimeoutError, UnicodeError):
            return []
        found = list(dict.fromkeys(plain_address(info[4][0]) for info in infos))
        return sorted(found, key=lambda a: ":" in a)

    async def _serve(self, server: str, link: _Link, session: Session, hello: ServerHello,
                     address: str | None = None) -> None:
        self._warned.discard(server)
        self._warned.discard(f"{link.address}:{link.port}")
        link.session = session
        self.on_up(server, address or link.address, hello.boot)
        try:
            await session.send({"t": "state", "state": self._state})
            await self._talk(server, link, session, hello.heartbeat)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # whatever a peer sends ends only this connection
            log.info("channel to %s (%s) closed: %s", server, address or link.address, _short(e))
        finally:
            link.session = None
            await session.close()
            self.on_lost(server)

    async def _talk(self, server: str, link: _Link, session: Session, server_hb: float) -> None:
        async def beat() -> None:
            while True:
                await asyncio.sleep(self.heartbeat)
                await session.send({"t": "hb"})

        beating = asyncio.ensure_future(beat())
        try:
            while self._current(link):
                # A silent server is the core's business (dead time); this
                # timeout only ends a read that waits far longer than that.
                msg = await session.receive(max(60.0, server_hb * 10))
                if msg["t"] == "notice":
                    reason = msg.get("reason")
                    if reason not in SERVER_STATES:
                        raise ChannelError("notice with an unknown reason")
                    self.on_notice(server, reason, session.session_key is not None)
                else:
                    self.on_heartbeat(server)
                if beating.done():
                    beating.result()  # the heartbeat could not be sent: the connection is broken
        finally:
            beating.cancel()


def _short(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if isinstance(e, (ChannelError, OSError)) else f"{type(e).__name__}: {text}"[:200]


# ---------------------------------------------------------------- server side


@dataclass
class ClientInfo:
    name: str
    address: str
    since: float  # wall-clock time
    last_heard: float  # monotonic
    state: str = "unknown"  # then what the client says: up, down, or off (powering off now)
    authenticated: bool = False
    session: Session | None = field(default=None, repr=False)
    peer: tuple = ()  # the socket address it connected from (with an IPv6 scope), for `answers`


# A port nothing listens on as a rule (discard): a host that is on answers a
# connection there, if only with a refusal; a host that is off does not.
PROBE_PORT = 9
PROBE_TIMEOUT = 1.0


async def answers(peer: tuple, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the host at `peer` (a socket address) is still on: its kernel
    answers a TCP connection, accepted or refused, within `timeout`."""
    if not peer:
        return False
    family = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET
    address = (peer[0], PROBE_PORT, *peer[2:])
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, address), timeout)
        return True
    except ConnectionRefusedError:
        return True
    except (OSError, asyncio.TimeoutError):  # no route, host unreachable, no answer at all
        return False
    finally:
        sock.close()


class Listener:
    """The server's side: accepts clients, heartbeats them, tells them why it stops."""

    def __init__(self, name: str, key: bytes | None, heartbeat: float,
                 on_command: Callable[[str, list[str], ClientInfo], Awaitable[tuple[bool, str]]] | None = None,
                 on_change: Callable[[], None] | None = None, boot: str = "",
                 record: Callable[[], dict[str, str]] | None = None):
        self.name = name  # the instance name, as advertised (renamed after a conflict)
        self.record = record  # the TXT record as it stands, for boards that reach us without mDNS
        self.key = key
        self.heartbeat = heartbeat
        self.boot = boot
        self.on_command = on_command
        self.on_change = on_change or (lambda: None)
        self.clients: dict[int, ClientInfo] = {}
        self._server: asyncio.base_events.Server | None = None
        self._ids = 0
        self._waiting = 0
        self._handshakes = asyncio.Semaphore(MAX_PENDING)
        self.notice: str | None = None
        # Clients that said they power off: name -> the socket address they
        # were at, until they are gone (see `wait_clients_off`).
        self.powering_off: dict[str, tuple] = {}
        self.answers: Callable[[tuple], Awaitable[bool]] = answers

    async def start(self, port: int, host: str | list[str] | None = None) -> int:
        """Listen; returns the port (useful with port 0)."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_LINE * 2,
                                                  reuse_address=True)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in list(self.clients.values()):
            if c.session is not None:
                await c.session.close()
        self.clients.clear()

    def client_list(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {"name": c.name, "address": c.address, "since": c.since, "state": c.state,
             "authenticated": c.authenticated, "last_heard_ago": round(now - c.last_heard, 1)}
            for c in self.clients.values()
        ]

    async def announce(self, reason: str | None) -> None:
        """Tell every connected client why the server stops (before the record goes),
        or, with None, that it is up again after all."""
        self.notice = reason
        if reason is None:
            self.powering_off.clear()
        await asyncio.gather(*(self._send_notice(c, reason or "up") for c in list(self.clients.values())),
                             return_exceptions=True)

    async def _send_notice(self, c: ClientInfo, reason: str) -> None:
        if c.session is not None:
            await asyncio.wait_for(c.session.send({"t": "notice", "reason": reason}), 2)

    def up_clients(self) -> list[ClientInfo]:
        return [c for c in self.clients.values() if c.state not in ("down", "off")]

    async def wait_clients_down(self, timeout: float) -> list[ClientInfo]:
        """Wait until every connected client reported "down" (or left); returns those still up."""
        deadline = time.monotonic() + timeout
        while self.up_clients() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return self.up_clients()

    async def wait_clients_off(self, timeout: float, interval: float = 0.5) -> tuple[list[str], list[str]]:
        """Wait until every client that said it powers off is gone: its connection
        closed and its address unanswered twice in a row. Returns (those that
        went off, those still on)."""
        deadline = time.monotonic() + timeout
        quiet: dict[str, int] = {}
        off: list[str] = []
        while True:
            connected = {c.name for c in self.clients.values() if c.state == "off"}
            gone = {name: peer for name, peer in self.powering_off.items() if name not in connected}
            on = await asyncio.gather(*(self.answers(peer) for peer in gone.values()))
            for (name, peer), answered in zip(gone.items(), on):
                quiet[name] = 0 if answered else quiet.get(name, 0) + 1
                if quiet[name] >= 2 and self.powering_off.pop(name, None) is not None:
                    off.append(name)
                    log.info("client %s is off: %s no longer answers", name, plain_address(peer[0]))
            if not self.powering_off or time.monotonic() >= deadline:
                return off, sorted(self.powering_off)
            await asyncio.sleep(interval)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = plain_address(peer[0]) if peer else "?"
        if self._waiting >= MAX_WAITING:
            log.info("channel: %s: too many connections not through their handshake; closed", address)
            writer.close()
            return
        self._waiting += 1
        try:
            await asyncio.wait_for(self._handshakes.acquire(), HANDSHAKE_TIMEOUT)
        except asyncio.TimeoutError:
            self._waiting -= 1
            log.info("channel: %s: no handshake slot within %g s; closed", address, HANDSHAKE_TIMEOUT)
            writer.close()
            return
        try:
            session, client = await asyncio.wait_for(self._handshake(reader, writer, address),
                                                     2 * HANDSHAKE_TIMEOUT)
        except (ChannelError, OSError, asyncio.TimeoutError) as e:
            log.info("channel: %s: %s", address, _short(e) if not isinstance(e, asyncio.TimeoutError)
                     else "handshake took too long")
            writer.close()
            return
        finally:
            self._handshakes.release()
            self._waiting -= 1
        self._ids += 1
        cid = self._ids
        info = ClientInfo(client, address, time.time(), time.monotonic(),
                          authenticated=session.session_key is not None, session=session,
                          peer=tuple(peer) if peer else ())
        self.clients[cid] = info
        log.info("client %s (%s) connected%s", info.name, address,
                 " (authenticated)" if info.authenticated else "")
        self.on_change()
        beating = asyncio.ensure_future(self._beat(session))
        try:
            if self.notice:
                await session.send({"t": "notice", "reason": self.notice})
            while True:
                msg = await session.receive(max(10.0, self.heartbeat * 5))
                info.last_heard = time.monotonic()
                if msg["t"] == "state" and msg.get("state") in ("up", "down", "off"):
                    if info.state != msg["state"]:
                        info.state = msg["state"]
                        if info.state == "off":
                            self.powering_off[info.name] = info.peer
                        else:  # it did not power off after all
                            self.powering_off.pop(info.name, None)
                        log.info("client %s is %s", info.name,
                                 "powering off" if info.state == "off" else info.state)
                        self.on_change()
                elif msg["t"] == "command":
                    await self._command(session, info, msg)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # whatever a peer sends ends only this connection
            log.info("client %s (%s) disconnected: %s", info.name, address, _short(e))
        finally:
            beating.cancel()
            self.clients.pop(cid, None)
            await session.close()
            self.on_change()

    async def _beat(self, session: Session) -> None:
        try:
            while True:
                await session.send({"t": "hb"})
                await asyncio.sleep(self.heartbeat)
        except (OSError, ChannelError):
            pass

    async def _command(self, session: Session, info: ClientInfo, msg: dict[str, Any]) -> None:
        cmd, args = msg.get("cmd"), msg.get("args", [])
        if self.key is None or not info.authenticated:
            ok, text = False, "remote commands need a key on both hosts (pistop-mdns keygen)"
        elif self.on_command is None or not isinstance(cmd, str) or not isinstance(args, list) \
                or len(args) > 8 or not all(isinstance(a, str) and _ARG.match(a) for a in args):
            ok, text = False, f"unknown command {str(cmd)[:32]!r}"
        else:
            ok, text = await self.on_command(cmd, list(args), info)
        log.info("command %r from %s (%s): %s", str(cmd)[:32], info.name, info.address, text)
        await session.send({"t": "result", "ok": ok, "msg": text})

    async def _handshake(self, reader, writer, address: str) -> tuple[Session, str]:
        nonce = _nonce()
        hello: dict[str, Any] = {"t": "hello", "proto": PROTOCOL, "server": self.name, "boot": self.boot,
                                 "nonce": nonce, "hb": self.heartbeat}
        record = self.record() if self.record is not None else None
        if record:  # none yet while the server is still registering
            hello["record"] = record
        _write(writer, hello)
        await writer.drain()
        hello = await read_message(reader, HANDSHAKE_TIMEOUT)
        if hello.get("t") != "hello":
            raise ChannelError("did not say hello")
        client_nonce = _field(hello, "nonce", _NONCE, "nonce")
        client = _field(hello, "client", _NAME, "client name")
        session = Session(reader, writer, self.key, "server", peer=address)
        if self.key is None:
            _write(writer, {"t": "welcome"})
            await writer.drain()
            return session, client
        if not auth.verify(self.key, hello.get("mac"), "client", nonce, client_nonce, client):
            _write(writer, {"t": "error", "msg": "authentication failed"})
            await writer.drain()
            raise ChannelError(f"client {client!r} failed authentication")
        # The address the client reached us at goes into the proof: a relay
        # answering elsewhere would be caught by the client.
        sockname = writer.get_extra_info("sockname")
        here = plain_address(sockname[0]) if sockname else ""
        _write(writer, {"t": "welcome", "mac": auth.mac(self.key, "server", client_nonce, nonce, self.name,
                                                         self.boot, here)})
        await writer.drain()
        session.session_key = _session_key(self.key, nonce, client_nonce)
        return session, client
