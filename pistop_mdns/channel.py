"""The liveness channel: one TCP connection from each client to its server.

mDNS says when a server leaves only if the server says goodbye. The channel
adds what mDNS cannot: heartbeats (a pulled plug is noticed within the dead
time), the reason a server stops (poweroff / restart / stopping) before it
withdraws its record, the clients' own state (the server knows who is still
up), and remote commands. Protocol 1, one JSON object per line:

    server: {"t": "hello", "proto": 1, "server": NAME, "nonce": N1, "hb": 2.0}
    client: {"t": "hello", "proto": 1, "client": NAME, "nonce": N2, "mac": M}
    server: {"t": "welcome", "mac": M}                 (or "error", then close)
    both:   {"t": "hb", "seq": S, "mac": M}            every heartbeat
    server: {"t": "notice", "reason": R, "seq": S, "mac": M}
    client: {"t": "state", "state": "up"|"down", "seq": S, "mac": M}
    client: {"t": "command", "cmd": "shutdown", "args": [...], "seq": S, "mac": M}
    server: {"t": "result", "ok": true, "msg": "...", "seq": S, "mac": M}

With a key, the handshake is a mutual challenge-response (each side MACs the
other's fresh nonce), and every later message carries a MAC made with a
session key derived from both nonces and a sequence number that must grow:
a recorded message cannot be replayed in another session or twice in one.
Without a key the "mac" fields are absent and anyone on the LAN could speak
for a server; the client says so once in its log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from pistop_mdns import PROTOCOL, auth

log = logging.getLogger(__name__)

MAX_LINE = 4096
HANDSHAKE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 3.0


class ChannelError(Exception):
    pass


def _nonce() -> str:
    return secrets.token_hex(16)


@dataclass
class Session:
    """One authenticated (or, without a key, merely established) connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    key: bytes | None
    session_key: bytes | None = None
    send_seq: int = 0
    recv_seq: int = -1
    peer: str = ""

    def _mac(self, msg: dict[str, Any]) -> str:
        assert self.session_key is not None
        body = json.dumps({k: v for k, v in msg.items() if k != "mac"}, sort_keys=True)
        return auth.mac(self.session_key, "msg", body)

    async def send(self, msg: dict[str, Any]) -> None:
        msg = dict(msg)
        msg["seq"] = self.send_seq
        self.send_seq += 1
        if self.session_key is not None:
            msg["mac"] = self._mac(msg)
        self.writer.write(json.dumps(msg).encode() + b"\n")
        await self.writer.drain()

    async def receive(self, timeout: float | None = None) -> dict[str, Any]:
        msg = await read_message(self.reader, timeout)
        if self.session_key is not None:
            if not isinstance(msg.get("mac"), str) or not auth.verify(
                self.session_key, msg["mac"], "msg",
                json.dumps({k: v for k, v in msg.items() if k != "mac"}, sort_keys=True),
            ):
                raise ChannelError(f"message from {self.peer} has a wrong MAC")
        seq = msg.get("seq")
        if not isinstance(seq, int) or seq <= self.recv_seq:
            raise ChannelError(f"message from {self.peer} is out of sequence")
        self.recv_seq = seq
        return msg

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 1)
        except (OSError, asyncio.TimeoutError):
            pass


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
    except ValueError:
        raise ChannelError("not a JSON line") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise ChannelError("not a channel message")
    return msg


def _write(writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
    writer.write(json.dumps(msg).encode() + b"\n")


def _session_key(key: bytes, server_nonce: str, client_nonce: str) -> bytes:
    return auth.mac(key, "session", server_nonce, client_nonce).encode()


# ---------------------------------------------------------------- client side


async def client_handshake(reader, writer, *, name: str, key: bytes | None,
                           peer: str) -> tuple[Session, dict[str, Any]]:
    """Run the client's half of the handshake; returns the session and the server's hello."""
    hello = await read_message(reader, HANDSHAKE_TIMEOUT)
    if hello.get("t") != "hello" or not isinstance(hello.get("nonce"), str):
        raise ChannelError(f"{peer} did not say hello")
    if not isinstance(hello.get("proto"), int) or hello["proto"] > PROTOCOL:
        raise ChannelError(f"{peer} speaks protocol {hello.get('proto')!r}, this client {PROTOCOL}")
    nonce = _nonce()
    msg: dict[str, Any] = {"t": "hello", "proto": PROTOCOL, "client": name, "nonce": nonce}
    if key is not None:
        msg["mac"] = auth.mac(key, "client", hello["nonce"], nonce, name)
    _write(writer, msg)
    await writer.drain()
    answer = await read_message(reader, HANDSHAKE_TIMEOUT)
    if answer.get("t") == "error":
        raise ChannelError(f"{peer} refused: {answer.get('msg', '')}")
    if answer.get("t") != "welcome":
        raise ChannelError(f"{peer} did not welcome us")
    session = Session(reader, writer, key, peer=peer)
    if key is not None:
        server_name = str(hello.get("server", ""))
        if not isinstance(answer.get("mac"), str) or not auth.verify(
            key, answer["mac"], "server", nonce, hello["nonce"], server_name
        ):
            raise ChannelError(f"{peer} failed authentication (another key?)")
        session.session_key = _session_key(key, hello["nonce"], nonce)
    return session, hello


async def connect(address: str, port: int, *, name: str, key: bytes | None) -> tuple[Session, dict[str, Any]]:
    peer = f"{address}:{port}"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address, port, limit=MAX_LINE * 2), CONNECT_TIMEOUT
        )
    except (OSError, asyncio.TimeoutError) as e:
        raise ChannelError(f"cannot connect to {peer}: {getattr(e, 'strerror', None) or 'timeout'}") from None
    try:
        return await client_handshake(reader, writer, name=name, key=key, peer=peer)
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


class Follower:
    """Keeps the client's channel to the server it follows, reconnecting with backoff.

    Calls `on_up(name)`, `on_heartbeat(name)`, `on_lost(name)` and
    `on_notice(name, reason, authenticated)` in the event loop.
    """

    def __init__(self, name: str, key: bytes | None, heartbeat: float,
                 on_up: Callable[[str], None], on_heartbeat: Callable[[str], None],
                 on_lost: Callable[[str], None], on_notice: Callable[[str, str, bool], None]):
        self.name = name
        self.key = key
        self.heartbeat = heartbeat
        self.on_up, self.on_heartbeat, self.on_lost, self.on_notice = on_up, on_heartbeat, on_lost, on_notice
        self._target: tuple[str, str, int] | None = None  # (server name, address, port)
        self._task: asyncio.Task | None = None
        self._session: Session | None = None
        self._state = "down"
        self._warned: set[str] = set()

    def follow(self, server: str | None, address: str | None = None, port: int | None = None) -> None:
        target = (server, address, port) if server and address and port else None
        if target == self._target:
            return
        self._target = target
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if target is not None:
            self._task = asyncio.ensure_future(self._run(*target))

    async def report(self, state: str) -> bool:
        """Tell the server this client's state; False when no channel is up."""
        self._state = state
        if self._session is None:
            return False
        try:
            await self._session.send({"t": "state", "state": state})
            return True
        except (OSError, ChannelError):
            return False

    async def close(self) -> None:
        self.follow(None)
        if self._session is not None:
            await self._session.close()

    async def _run(self, server: str, address: str, port: int) -> None:
        backoff = 0.5
        while True:
            try:
                session, hello = await connect(address, port, name=self.name, key=self.key)
            except ChannelError as e:
                text = str(e)
                if "authentication" in text or "refused" in text:
                    if server not in self._warned:
                        self._warned.add(server)
                        log.warning("channel to %s: %s", server, text)
                else:
                    log.debug("channel to %s: %s", server, text)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 8.0)
                continue
            self._warned.discard(server)
            backoff = 0.5
            self._session = session
            self.on_up(server)
            try:
                await session.send({"t": "state", "state": self._state})
                await self._talk(server, session, float(hello.get("hb", 2.0)))
            except (ChannelError, OSError) as e:
                log.debug("channel to %s lost: %s", server, e)
            finally:
                self._session = None
                await session.close()
                self.on_lost(server)
            await asyncio.sleep(backoff)

    async def _talk(self, server: str, session: Session, server_hb: float) -> None:
        async def beat() -> None:
            while True:
                await asyncio.sleep(self.heartbeat)
                await session.send({"t": "hb"})

        beating = asyncio.ensure_future(beat())
        try:
            while True:
                # A silent server is the core's business (dead time); this
                # timeout only ends a read that waits far longer than that.
                msg = await session.receive(max(60.0, server_hb * 10))
                self.on_heartbeat(server)
                if msg["t"] == "notice" and isinstance(msg.get("reason"), str):
                    self.on_notice(server, msg["reason"], session.session_key is not None)
        finally:
            beating.cancel()


# ---------------------------------------------------------------- server side


@dataclass
class ClientInfo:
    name: str
    address: str
    since: float  # wall-clock time
    last_heard: float  # monotonic
    state: str = "unknown"
    authenticated: bool = False
    session: Session | None = field(default=None, repr=False)


class Listener:
    """The server's side: accepts clients, heartbeats them, tells them why it stops."""

    def __init__(self, name: str, key: bytes | None, heartbeat: float,
                 on_command: Callable[[str, list[str], ClientInfo], Awaitable[tuple[bool, str]]] | None = None,
                 on_change: Callable[[], None] | None = None):
        self.name = name
        self.key = key
        self.heartbeat = heartbeat
        self.on_command = on_command
        self.on_change = on_change or (lambda: None)
        self.clients: dict[int, ClientInfo] = {}
        self._server: asyncio.base_events.Server | None = None
        self._ids = 0
        self.notice: str | None = None

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

    async def announce(self, reason: str) -> None:
        """Tell every connected client why the server stops (before the record goes)."""
        self.notice = reason
        await asyncio.gather(*(self._send_notice(c) for c in list(self.clients.values())),
                             return_exceptions=True)

    async def _send_notice(self, c: ClientInfo) -> None:
        if c.session is not None:
            await asyncio.wait_for(c.session.send({"t": "notice", "reason": self.notice}), 2)

    def up_clients(self) -> list[ClientInfo]:
        return [c for c in self.clients.values() if c.state != "down"]

    async def wait_clients_down(self, timeout: float) -> list[ClientInfo]:
        """Wait until every connected client reported "down" (or left); returns those still up."""
        deadline = time.monotonic() + timeout
        while self.up_clients() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return self.up_clients()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = peer[0] if peer else "?"
        try:
            session, hello = await self._handshake(reader, writer, address)
        except (ChannelError, OSError) as e:
            log.info("channel: %s: %s", address, e)
            writer.close()
            return
        self._ids += 1
        cid = self._ids
        info = ClientInfo(str(hello.get("client", "?"))[:64], address, time.time(), time.monotonic(),
                          authenticated=session.session_key is not None, session=session)
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
                if msg["t"] == "state" and msg.get("state") in ("up", "down"):
                    if info.state != msg["state"]:
                        info.state = msg["state"]
                        log.info("client %s is %s", info.name, info.state)
                        self.on_change()
                elif msg["t"] == "command":
                    await self._command(session, info, msg)
        except (ChannelError, OSError) as e:
            log.info("client %s (%s) disconnected: %s", info.name, address, e)
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
        elif self.on_command is None or not isinstance(cmd, str) or not isinstance(args, list):
            ok, text = False, f"unknown command {cmd!r}"
        else:
            ok, text = await self.on_command(cmd, [str(a) for a in args], info)
        log.info("command %r from %s (%s): %s", cmd, info.name, info.address, text)
        await session.send({"t": "result", "ok": ok, "msg": text})

    async def _handshake(self, reader, writer, address: str) -> tuple[Session, dict[str, Any]]:
        nonce = _nonce()
        _write(writer, {"t": "hello", "proto": PROTOCOL, "server": self.name, "nonce": nonce,
                        "hb": self.heartbeat})
        await writer.drain()
        hello = await read_message(reader, HANDSHAKE_TIMEOUT)
        if hello.get("t") != "hello" or not isinstance(hello.get("nonce"), str):
            raise ChannelError("did not say hello")
        session = Session(reader, writer, self.key, peer=address)
        if self.key is None:
            _write(writer, {"t": "welcome"})
            await writer.drain()
            return session, hello
        if not isinstance(hello.get("mac"), str) or not auth.verify(
            self.key, hello["mac"], "client", nonce, hello["nonce"], str(hello.get("client", ""))
        ):
            _write(writer, {"t": "error", "msg": "authentication failed"})
            await writer.drain()
            raise ChannelError(f"client {hello.get('client', '?')!r} failed authentication")
        _write(writer, {"t": "welcome", "mac": auth.mac(self.key, "server", hello["nonce"], nonce, self.name)})
        await writer.drain()
        session.session_key = _session_key(self.key, nonce, hello["nonce"])
        return session, hello
